"""Record one real NVIDIA Dynamo run (frontend + KV router + `dynamo.mocker` workers) for the predictor benchmark.

A thin driver: it starts the Dynamo 1.6.1 frontend and the mocker worker processes (the recipe in
/work/shared/recipes/REAL-DYNAMO.md, loopback only, file discovery), waits until the model is
served, then runs `e2e/recorder.py` (1 Hz scrapes, `phaselens record` format) and `e2e/loadgen.py`
(open-loop phases, per-request client ground truth) side by side, and stops everything it started
by process group. Output: `<out>/scrapes/<role>/NNNN.prom`, `<out>/ground_truth.jsonl`,
`<out>/meta.json` (the exact command, flags and seed, so that the run can be made again).

Roles recorded: `frontend` (the Dynamo frontend: `dynamo_frontend_requests_started_total`, the
arrival counter that comes before any queue), and `aggregated` (the mocker's system port, whose
`vllm:*` engine metrics are what a vLLM-alone sidecar sees). `--engine-only` records the worker
alone: what the sidecar sees next to plain vLLM, without a frontend's arrival counter.

Dynamo's own venv (`e2e/dynamo.py`'s install, or DYNAMO_PYTHON) runs the servers; the phaselens
venv runs this script, the recorder and the load client. The deployment is e2e/dynamo.py's.
Usage: python e2e/dynamo_record.py --out e2e/out/dyn-01 --seed 1 --port-base 28100 \
         [--workers 2] [--mocker-arg=--max-num-seqs=8 ...] [--engine-only] --phases PHASE ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dynamo  # noqa: E402
import procs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port-base", type=int, required=True, help="frontend HTTP port; workers use the next ones")
    ap.add_argument("--workers", type=int, default=1, help="mocker worker processes")
    ap.add_argument("--max-num-seqs", type=int, default=16)
    ap.add_argument("--num-gpu-blocks", type=int, default=384)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--no-prefix-caching", action="store_true")
    ap.add_argument("--mocker-arg", action="append", default=[], help="extra mocker flag, e.g. --speedup-ratio=1")
    ap.add_argument("--engine-only", action="store_true", help="record the worker only (no frontend metrics)")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--phases", required=True, nargs="+")
    ap.add_argument("--dynamo-python", type=Path, default=Path(os.environ.get("DYNAMO_PYTHON", dynamo.venv_python())))
    ap.add_argument("--model-dir", type=Path, default=dynamo.DEFAULT_MODEL)
    args = ap.parse_args(argv)
    if args.engine_only and args.workers != 1:
        ap.error("--engine-only records one worker (vLLM alone is one engine)")

    out: Path = args.out
    if (out / "ground_truth.jsonl").exists():
        print(f"dynamo_record: {out} already holds a run", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    dynamo.make_model(args.model_dir, args.dynamo_python)
    meta: dict[str, object] = {
        "kind": "dynamo-mocker",
        "argv": ["python", "e2e/dynamo_record.py", *(sys.argv[1:] if argv is None else argv)],
        "seed": args.seed,
        "workers": args.workers,
        "max_num_seqs": args.max_num_seqs,
        "num_gpu_blocks": args.num_gpu_blocks,
        "engine_only": args.engine_only,
        "phases": args.phases,
        "interval_s": args.interval,
        "window_s": 30.0,
        "dynamo": f"ai-dynamo {dynamo.DYNAMO_VERSION}",
    }
    extra: list[procs.Proc] = []
    with dynamo.Deployment(
        out / "logs", http_port=args.port_base, python=args.dynamo_python, model=args.model_dir
    ) as dep:
        try:
            dep.start_frontend()
            specs = [
                dynamo.MockerSpec(
                    f"worker{i}",
                    args.port_base + 1 + i,
                    num_gpu_blocks=args.num_gpu_blocks,
                    max_num_seqs=args.max_num_seqs,
                    max_num_batched_tokens=args.max_num_batched_tokens,
                    enable_prefix_caching=not args.no_prefix_caching,
                    extra=tuple(args.mocker_arg),
                )
                for i in range(args.workers)
            ]
            for spec in specs:
                dep.start_worker(spec)
            dep.wait_ready(timeout_s=180)
            targets = [] if args.engine_only else ["--target", f"frontend={dep.frontend_metrics_url}"]
            # several workers: one folder each (aggregated, aggregated-1, ...); the benchmark pools them
            for i, spec in enumerate(specs):
                targets += ["--target", f"{'aggregated' if i == 0 else f'aggregated-{i}'}={spec.metrics_url}"]
            recorder = [sys.executable, str(HERE / "recorder.py"), "--out", str(out), "--interval", str(args.interval)]
            extra.append(procs.start("recorder", [*recorder, *targets], out / "logs" / "recorder.log"))
            time.sleep(2 * args.interval)
            meta["started"] = time.time()
            client = procs.start(
                "loadgen",
                [
                    sys.executable,
                    str(HERE / "loadgen.py"),
                    "--url",
                    dep.base_url,
                    "--no-token-ids",
                    "--carry-over",
                    "--out",
                    str(out / "ground_truth.jsonl"),
                    "--seed",
                    str(args.seed),
                    "--phases",
                    *args.phases,
                ],
                out / "logs" / "loadgen.log",
            )
            extra.append(client)
            meta["loadgen_rc"] = client.popen.wait()
            time.sleep(3 * args.interval)  # the last first tokens reach a scrape
            meta["finished"] = time.time()
            print(client.log_tail(2))
        finally:
            for p in reversed(extra):
                procs.stop(p, grace_s=10)
            (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return 0 if meta.get("loadgen_rc") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
