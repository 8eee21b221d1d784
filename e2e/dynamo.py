"""A real NVIDIA Dynamo 1.6.1 on loopback for end-to-end runs: the Rust frontend + KV router and
`dynamo.mocker` workers (aggregated, or disaggregated prefill/decode). No GPU, etcd or NATS.

Reusable by every scenario that needs Dynamo (this one, diagnosis, breach prediction, the fleet
lab). Three parts:

- `install()`: Dynamo's own venv `e2e/.venv-dynamo` (e2e/install_dynamo.sh; ~2.5 min, once);
- `make_model()`: the model folder the frontend and the mocker read (e2e/make_dynamo_model.py);
- `Deployment`: starts the frontend and mocker workers, each in its own process group, with the
  loopback environment and a fresh file-discovery folder per deployment; waits until the frontend
  routes to the expected workers; stops one worker or everything by PID (`procs.stop`).

    with dynamo.Deployment(out_dir, http_port=25000) as dep:
        dep.start_frontend()
        dep.start_worker(dynamo.MockerSpec("prefill", 25001, mode="prefill"))
        dep.start_worker(dynamo.MockerSpec("decode", 25002, mode="decode"))
        dep.wait_ready(timeout_s=120)
        ... load against dep.base_url; scrape dep.frontend_metrics_url and spec.metrics_url ...

Ports: every process gets the ports the caller gives it (frontend HTTP, each worker's system
port); the request plane, event plane and response streams pick free ports on 127.0.0.1.
Facts this relies on (Dynamo 1.6.1, checked here): the frontend's `/v1/models` lists the model
once one worker registered; its `dynamo_frontend_worker_*` gauges carry one `worker_id` (decimal)
per worker it routes to, with `worker_type` prefill|decode (an aggregated worker is `decode`);
a worker's `/health` stays 503 "notready" with the file backend, so readiness is read from the
frontend's `/health` (`instances`, one `generate` endpoint per discovered worker).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE / ".venv-dynamo"
DEFAULT_MODEL = HERE / "out" / "dynamo-model"
MODEL_NAME = "tiny"
DYNAMO_VERSION = "1.6.1"

Mode = Literal["aggregated", "prefill", "decode"]


def venv_python(venv: Path = DEFAULT_VENV) -> Path:
    return venv / "bin" / "python"


def install(venv: Path = DEFAULT_VENV) -> Path:
    """Create (once) Dynamo's venv; returns its python. Idempotent (the script keeps a stamp)."""
    env = {**os.environ, "DYNAMO_VENV": str(venv)}
    subprocess.run(["bash", str(HERE / "install_dynamo.sh")], check=True, env=env)
    return venv_python(venv)


def make_model(folder: Path = DEFAULT_MODEL, python: Path | None = None) -> Path:
    """Write (once) the tokenizer + config folder; runs in Dynamo's venv (it has tokenizers)."""
    py = python or venv_python()
    subprocess.run([str(py), str(HERE / "make_dynamo_model.py"), str(folder)], check=True)
    return folder


def loopback_env(discovery_dir: Path) -> dict[str, str]:
    """Everything on 127.0.0.1, discovery through files, no etcd and no NATS (the recipe).

    Without DYN_TCP_RESPONSE_STREAM_HOST the frontend advertises the machine's network address.
    """
    return {
        "DYN_DISCOVERY_BACKEND": "file",
        "DYN_FILE_KV": str(discovery_dir),
        "DYN_REQUEST_PLANE": "tcp",
        "DYN_EVENT_PLANE": "zmq",
        "DYN_TCP_RPC_HOST": "127.0.0.1",
        "DYN_EVENT_PLANE_HOST": "127.0.0.1",
        "DYN_SYSTEM_HOST": "127.0.0.1",
        "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


_PLANE_ARGS = ("--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq")


@dataclass(frozen=True)
class MockerSpec:
    """One `dynamo.mocker` process (one worker unless `num_workers` > 1).

    `speedup_ratio` > 1 runs the simulated time faster (less wall time per request);
    `startup_time` simulates a cold start (seconds); `kv_transfer_bandwidth` (GB/s) times the
    simulated KV transfer in P/D; `num_host_blocks` adds a host (offload) KV tier.
    """

    name: str
    system_port: int
    mode: Mode = "aggregated"
    block_size: int = 16
    num_gpu_blocks: int = 384
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 2048
    speedup_ratio: float = 1.0
    startup_time: float | None = None
    kv_transfer_bandwidth: float | None = None
    num_host_blocks: int | None = None
    num_workers: int = 1
    enable_prefix_caching: bool = True
    extra: tuple[str, ...] = ()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.system_port}/metrics"

    def argv(self, python: Path, model: Path, model_name: str = MODEL_NAME) -> list[str]:
        argv = [
            str(python), "-m", "dynamo.mocker",
            "--model-path", str(model),
            "--model-name", model_name,
            *_PLANE_ARGS,
            "--block-size", str(self.block_size),
            "--num-gpu-blocks-override", str(self.num_gpu_blocks),
            "--max-num-seqs", str(self.max_num_seqs),
            "--max-num-batched-tokens", str(self.max_num_batched_tokens),
            "--speedup-ratio", str(self.speedup_ratio),
        ]  # fmt: skip
        if self.mode != "aggregated":
            argv += ["--disaggregation-mode", self.mode]
        if self.startup_time is not None:
            argv += ["--startup-time", str(self.startup_time)]
        if self.kv_transfer_bandwidth is not None:
            argv += ["--kv-transfer-bandwidth", str(self.kv_transfer_bandwidth)]
        if self.num_host_blocks is not None:
            argv += ["--num-host-blocks", str(self.num_host_blocks)]
        if self.num_workers != 1:
            argv += ["--num-workers", str(self.num_workers)]
        if not self.enable_prefix_caching:
            argv.append("--no-enable-prefix-caching")
        return [*argv, *self.extra]


def _get(url: str, timeout_s: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bytes(resp.read()) if resp.status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


_WORKER_GAUGE = re.compile(
    r'^dynamo_frontend_worker_active_decode_blocks\{(?P<labels>[^}]*)\}', re.MULTILINE
)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def frontend_workers(metrics_text: str) -> dict[str, str]:
    """worker_id (decimal) -> worker_type, as the frontend's per-worker gauges list them."""
    found: dict[str, str] = {}
    for match in _WORKER_GAUGE.finditer(metrics_text):
        labels = dict(_LABEL.findall(match.group("labels")))
        if "worker_id" in labels:
            found[labels["worker_id"]] = labels.get("worker_type", "")
    return found


def worker_hex_id(metrics_text: str) -> str | None:
    """The worker's own id as its system port writes it (hex), from `dynamo_component_uptime_seconds`."""
    match = re.search(r'^dynamo_component_uptime_seconds\{[^}]*worker_id="([0-9a-f]+)"', metrics_text, re.MULTILINE)
    return match.group(1) if match else None


class Deployment:
    """One Dynamo deployment: a frontend and any number of mocker processes, all on loopback."""

    def __init__(
        self,
        out: Path,
        *,
        http_port: int,
        python: Path | None = None,
        model: Path = DEFAULT_MODEL,
        model_name: str = MODEL_NAME,
        router_mode: str = "kv",
        frontend_extra: tuple[str, ...] = (),
    ) -> None:
        self.out = out
        self.http_port = http_port
        self.python = python or venv_python()
        self.model = model
        self.model_name = model_name
        self.router_mode = router_mode
        self.frontend_extra = frontend_extra
        out.mkdir(parents=True, exist_ok=True)
        # A fresh discovery folder per deployment: stale registrations confuse the router.
        self.discovery_dir = Path(tempfile.mkdtemp(prefix="dynamo-discovery-", dir=out))
        self.env = loopback_env(self.discovery_dir)
        self.frontend: procs.Proc | None = None
        self.workers: dict[str, tuple[MockerSpec, procs.Proc]] = {}

    # ------------------------------------------------------------------ addresses

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def frontend_metrics_url(self) -> str:
        return f"{self.base_url}/metrics"

    @property
    def started(self) -> list[procs.Proc]:
        out = [self.frontend] if self.frontend is not None else []
        return out + [proc for _, proc in self.workers.values()]

    # ------------------------------------------------------------------ start

    def start_frontend(self) -> procs.Proc:
        argv = [
            str(self.python), "-m", "dynamo.frontend",
            "--http-host", "127.0.0.1",
            "--http-port", str(self.http_port),
            *_PLANE_ARGS,
            "--router-mode", self.router_mode,
            *self.frontend_extra,
        ]  # fmt: skip
        self.frontend = procs.start("frontend", argv, self.out / "frontend.log", env=self.env)
        return self.frontend

    def start_worker(self, spec: MockerSpec) -> procs.Proc:
        if spec.name in self.workers:
            raise ValueError(f"worker {spec.name!r} already started")
        env = {**self.env, "DYN_SYSTEM_ENABLED": "true", "DYN_SYSTEM_PORT": str(spec.system_port)}
        proc = procs.start(spec.name, spec.argv(self.python, self.model, self.model_name),
                           self.out / f"{spec.name}.log", env=env)
        self.workers[spec.name] = (spec, proc)
        return proc

    # ------------------------------------------------------------------ readiness

    def wait_ready(self, timeout_s: float = 180.0, workers: int | None = None) -> float:
        """Wait until the frontend serves the model and routes to `workers` workers (default: the
        number of worker processes started x num_workers), and every worker's system port answers.
        Returns seconds waited; fails fast when a process died."""
        expected = workers if workers is not None else sum(s.num_workers for s, _ in self.workers.values())
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            self._check_alive()
            if self._ready(expected):
                return time.monotonic() - t0
            time.sleep(0.5)
        tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.started)
        raise TimeoutError(f"Dynamo not ready after {timeout_s:.0f} s ({expected} workers expected)\n{tails}")

    def _ready(self, expected: int) -> bool:
        models = _get(f"{self.base_url}/v1/models")
        if models is None:
            return False
        try:
            ids = {m.get("id") for m in json.loads(models).get("data", [])}
        except (json.JSONDecodeError, AttributeError):
            return False
        if self.model_name not in ids:
            return False
        for spec, _ in self.workers.values():
            if _get(spec.metrics_url) is None:
                return False
        return len(self.generate_instances()) >= expected

    def generate_instances(self) -> list[dict[str, object]]:
        """The `generate` endpoints the frontend has discovered (its /health `instances`), one per
        worker: component `backend` for aggregated/decode workers, `prefill` for prefill workers."""
        body = _get(f"{self.base_url}/health")
        if body is None:
            return []
        try:
            instances = json.loads(body).get("instances", [])
        except (json.JSONDecodeError, AttributeError):
            return []
        return [i for i in instances if isinstance(i, dict) and i.get("endpoint") == "generate"]

    def _check_alive(self) -> None:
        for p in self.started:
            if not p.alive:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.log_tail()}")

    def worker_ids(self) -> dict[str, str]:
        """worker name -> its hex id, read from each worker's system port."""
        ids: dict[str, str] = {}
        for name, (spec, _) in self.workers.items():
            body = _get(spec.metrics_url)
            hex_id = worker_hex_id(body.decode(errors="replace")) if body else None
            if hex_id is not None:
                ids[name] = hex_id
        return ids

    # ------------------------------------------------------------------ stop

    def stop_worker(self, name: str) -> None:
        spec_proc = self.workers.pop(name, None)
        if spec_proc is not None:
            procs.stop(spec_proc[1])

    def stop(self) -> None:
        """Workers first (the frontend then sees them leave), then the frontend; each by its PID group."""
        for name in list(self.workers)[::-1]:
            self.stop_worker(name)
        if self.frontend is not None:
            procs.stop(self.frontend)
            self.frontend = None

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
