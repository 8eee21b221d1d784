"""Records the fixture tests/fixtures/dynamo-1.6.1-mocker-pd-router-queue: a real Dynamo 1.6.1
1P1D deployment with the KV router's queue on (`--router-queue-threshold 1.0`), a prefill worker
slowed to `--speedup-ratio 0.15` (as in the fleet lab's P/D pools) and a prefill-heavy load step,
so the prefill pool's queue forms in the frontend's router. One scrape of each process per second.

Usage: python e2e/record_dynamo_router_queue.py OUT [PORT_BASE]
(then the README's selection: scrapes 6-55, each prefixed with `# scrape_time <unix time>`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import dynamo  # noqa: E402
import procs  # noqa: E402


def main(out: Path, port: int) -> None:
    dynamo.install()
    dynamo.make_model()
    dep = dynamo.Deployment(out, http_port=port, frontend_extra=("--router-queue-threshold", "1.0"))
    prefill = dynamo.MockerSpec("prefill", port + 11, mode="prefill", speedup_ratio=0.15, num_gpu_blocks=1024)
    decode = dynamo.MockerSpec("decode", port + 12, mode="decode", num_gpu_blocks=1024)
    dep.start_frontend()
    dep.start_worker(prefill)
    dep.start_worker(decode)
    try:
        dep.wait_ready(120)
        client = procs.start("client", [
            sys.executable, str(HERE.parent / "benchmarks" / "fleet" / "client.py"), dep.base_url,
            str(out / "ground_truth.jsonl"), "0",
            "low:12:@2-2:600-1200:4-12", "high:20:@8-8:600-1200:4-12", "low2:15:@1-1:600-1200:4-12",
        ], out / "client.log")  # fmt: skip
        urls = {"frontend": dep.frontend_metrics_url, "prefill": prefill.metrics_url, "decode": decode.metrics_url}
        for name in urls:
            (out / "scrapes" / name).mkdir(parents=True, exist_ok=True)
        i = 0
        while client.alive:
            t = time.time()
            i += 1
            for name, url in urls.items():
                body = dynamo._get(url) or b""
                (out / "scrapes" / name / f"{i:04d}.prom").write_bytes(b"# scrape_time %.3f\n" % t + body)
            time.sleep(max(0.0, 1.0 - (time.time() - t)))
    finally:
        dep.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), int(sys.argv[2]) if len(sys.argv) > 2 else 28000)
