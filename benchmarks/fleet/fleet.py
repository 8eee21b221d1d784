"""The fleet: a real Dynamo frontend (KV router) and pools of mocker workers (one aggregated pool,
or a prefill pool and a decode pool), a `phaselens run` sidecar beside each worker and beside the
frontend (as in pods), and a real Prometheus scraping every sidecar and every engine. Workers are
added and removed while it runs, per pool.

A worker's life, as a pod's: `created` (the controller asked for it; it counts as a replica and
costs replica-seconds from here), a cold start, `ready` (the frontend routes to it), `stopping`
(SIGINT: Dynamo deregisters the worker and finishes its in-flight requests), `stopped`.
The cold start is a delay before the mocker process starts plus the process's own start-up:
mocker's `--startup-time` is not used because the worker registers with the router before that
simulated start-up ends, so requests would be routed to a replica that is not ready.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "e2e"))
sys.path.insert(0, str(HERE))

import dynamo  # noqa: E402
import ksm  # noqa: E402
import procs  # noqa: E402
import prom  # noqa: E402

NAMESPACE = "fleet"
AGGREGATED = "aggregated"


@dataclass(frozen=True, slots=True)
class FleetConfig:
    port_base: int
    compression: float  # control-plane time compression K (see docs/fleet.md)
    cold_start_s: float  # wall seconds from "created" to the mocker process starting
    sidecar_interval_s: float
    sidecar_window_s: float
    slo_ttft_s: float
    slo_itl_s: float
    scrape_interval_s: float
    eval_interval_s: float
    worker: dynamo.MockerSpec  # template; name and port are set per worker
    phaselens: tuple[str, ...]
    prometheus_binary: str = "prometheus"
    # P/D: one template per pool role ("prefill", "decode"), each with its --disaggregation-mode;
    # empty = one aggregated pool of `worker`.
    pool_workers: Mapping[str, dynamo.MockerSpec] = field(default_factory=dict)
    frontend_extra: tuple[str, ...] = ()

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.pool_workers) or (AGGREGATED,)

    def template(self, role: str) -> dynamo.MockerSpec:
        return self.pool_workers[role] if self.pool_workers else self.worker


@dataclass
class Worker:
    name: str
    spec: dynamo.MockerSpec
    sidecar_port: int
    created: float
    role: str = AGGREGATED
    started: float | None = None
    ready: float | None = None
    stopping: float | None = None
    stopped: float | None = None
    proc: procs.Proc | None = None
    sidecar: procs.Proc | None = None
    instance_id: int | None = None


@dataclass
class Fleet:
    out: Path
    cfg: FleetConfig
    workers: list[Worker] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dep = dynamo.Deployment(self.out, http_port=self.cfg.port_base, frontend_extra=self.cfg.frontend_extra)
        self.prom_port = self.cfg.port_base + 1
        self.frontend_sidecar_port = self.cfg.port_base + 2
        self.prom_dir = self.out / "prometheus"
        self._others: list[procs.Proc] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._serial = 0
        self._closing = False
        self._ksm: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def prom_url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    @property
    def base_url(self) -> str:
        return self.dep.base_url

    # ------------------------------------------------------------------ lifecycle

    def start(self, replicas: int | Mapping[str, int]) -> None:
        cfg = self.cfg
        per_role = replicas if isinstance(replicas, Mapping) else {AGGREGATED: replicas}
        rules = prom.compressed_rules(cfg.compression)
        self._ksm = ksm.serve(cfg.port_base + 3, self._pods, NAMESPACE)
        config = prom.write_config(self.prom_dir, cfg.scrape_interval_s, cfg.eval_interval_s, rules,
                                   ksm_port=cfg.port_base + 3)  # fmt: skip
        self._others.append(procs.start(
            "prometheus", prom.argv(cfg.prometheus_binary, config, self.prom_dir / "data", self.prom_port),
            self.out / "prometheus.log",
        ))  # fmt: skip
        self.dep.start_frontend()
        for role in cfg.roles:
            for _ in range(per_role[role]):
                self._create(cold=False, role=role)
        self.dep.wait_ready(timeout_s=120, workers=sum(per_role[r] for r in cfg.roles))
        # The frontend serves whole requests: role "aggregated" (README, "NVIDIA Dynamo"), in P/D too.
        self._others.append(procs.start(
            "sidecar-frontend",
            self._sidecar_argv([f"{AGGREGATED}={self.dep.frontend_metrics_url}"], self.frontend_sidecar_port),
            self.out / "sidecar-frontend.log",
        ))  # fmt: skip
        procs.wait_http(f"{self.prom_url}/-/ready", 60, self._others)
        for w in self.workers:
            if w.sidecar is not None:
                procs.wait_http(f"http://127.0.0.1:{w.sidecar_port}/metrics", 60, [w.sidecar])
        procs.wait_http(f"http://127.0.0.1:{self.frontend_sidecar_port}/metrics", 60, self._others)
        self._write_targets()
        self.poll_ready()

    def _sidecar_argv(self, targets: list[str], port: int) -> list[str]:
        cfg = self.cfg
        argv = [*cfg.phaselens, "run"]
        for t in targets:
            argv += ["--target", t]
        return [
            *argv,
            "--listen", f"127.0.0.1:{port}",
            "--interval", str(cfg.sidecar_interval_s),
            "--window", str(cfg.sidecar_window_s),
            "--slo-ttft", str(cfg.slo_ttft_s),
            "--slo-itl", str(cfg.slo_itl_s),
            "--engine", "dynamo",
            # The mocker worker does not export its batch cap; an operator knows it from the engine args.
            "--max-num-seqs", str(max(cfg.template(r).max_num_seqs for r in cfg.roles)),
            "--log-level", "warning",
        ]  # fmt: skip

    def _create(self, cold: bool, role: str = AGGREGATED) -> Worker:
        self._serial += 1
        name = f"{role[0] if self.cfg.pool_workers else 'w'}{self._serial:02d}"
        port = self.cfg.port_base + 100 + 2 * self._serial
        spec = dynamo.MockerSpec(**{**_spec_fields(self.cfg.template(role)), "name": name, "system_port": port})
        w = Worker(name, spec, port + 1, created=time.time(), role=role)
        self.workers.append(w)
        self._event("created", w)
        if cold:
            t = threading.Thread(target=self._cold_start, args=(w,), daemon=True)
            self._threads.append(t)
            t.start()
        else:
            self._launch(w)
        return w

    def _cold_start(self, w: Worker) -> None:
        deadline = w.created + self.cfg.cold_start_s
        while time.time() < deadline:
            if w.stopping is not None or self._closing:
                return
            time.sleep(0.05)
        with self._lock:
            if w.stopping is None and not self._closing:
                self._launch(w)
        self._write_targets()

    def _launch(self, w: Worker) -> None:
        w.proc = self.dep.start_worker(w.spec)
        w.started = time.time()
        w.sidecar = procs.start(
            f"sidecar-{w.name}",
            self._sidecar_argv([f"{w.role}={w.spec.metrics_url}"], w.sidecar_port),
            self.out / f"sidecar-{w.name}.log",
        )
        self._event("process_started", w)

    def _event(self, kind: str, w: Worker) -> None:
        self.events.append({"t": time.time(), "event": kind, "worker": w.name})

    # ------------------------------------------------------------------ scaling

    def active(self, role: str | None = None) -> list[Worker]:
        """Replicas the controller counts: created and not being stopped (a Deployment's replicas);
        one pool's when `role` is given."""
        return [w for w in self.workers if w.stopping is None and (role is None or w.role == role)]

    def ready_count(self, role: str | None = None) -> int:
        return sum(1 for w in self.active(role) if w.ready is not None)

    def scale_to(self, n: int, role: str = AGGREGATED) -> None:
        with self._lock:
            active = self.active(role)
            for _ in range(n - len(active)):
                self._create(cold=True, role=role)
            # Scale-down removes the newest replicas first; not-ready ones go before ready ones.
            victims = sorted(active, key=lambda w: (w.ready is not None, -w.created))[: max(0, len(active) - n)]
            for w in victims:
                w.stopping = time.time()
                self._event("stopping", w)
                t = threading.Thread(target=self._drain, args=(w,), daemon=True)
                self._threads.append(t)
                t.start()
        self._write_targets()

    def _drain(self, w: Worker) -> None:
        if w.proc is not None:
            procs.stop(w.proc, grace_s=30.0)  # SIGINT: Dynamo deregisters, then finishes in-flight work
            self.dep.workers.pop(w.name, None)
        if w.sidecar is not None:
            procs.stop(w.sidecar)
        w.stopped = time.time()
        self._event("stopped", w)
        self._write_targets()

    def poll_ready(self) -> None:
        """Mark workers ready once the frontend lists their `generate` endpoint."""
        pending = [w for w in self.active() if w.ready is None and w.proc is not None]
        if not pending:
            return
        listed = {int(i["instance_id"]) for i in self.dep.generate_instances() if "instance_id" in i}
        for w in pending:
            if w.instance_id is None:
                body = dynamo._get(w.spec.metrics_url, timeout_s=1.0)
                hex_id = dynamo.worker_hex_id(body.decode(errors="replace")) if body else None
                if hex_id is not None:
                    w.instance_id = int(hex_id, 16)
            if w.instance_id is not None and w.instance_id in listed:
                w.ready = time.time()
                self._event("ready", w)

    def _pods(self) -> list[tuple[str, str, bool]]:
        """Replicas as kube-state-metrics would list them: created, not yet stopped; Pending until ready."""
        return [(w.name, w.role, w.ready is None) for w in list(self.workers) if w.stopping is None]

    def _write_targets(self) -> None:
        targets = [prom.ScrapeTarget("phaselens", f"127.0.0.1:{self.frontend_sidecar_port}", "frontend", "frontend"),
                   prom.ScrapeTarget("engine", f"127.0.0.1:{self.cfg.port_base}", "frontend", "frontend")]
        for w in list(self.workers):
            if w.proc is not None and w.stopped is None:
                targets.append(prom.ScrapeTarget("phaselens", f"127.0.0.1:{w.sidecar_port}", w.name, w.role))
                targets.append(prom.ScrapeTarget("engine", f"127.0.0.1:{w.spec.system_port}", w.name, w.role))
        with contextlib.suppress(OSError):
            prom.write_targets(self.prom_dir, targets, NAMESPACE)

    # ------------------------------------------------------------------ teardown

    def stop(self) -> None:
        self._closing = True
        for w in self.workers:
            if w.stopping is None:
                w.stopping = time.time()
        for w in self.workers:
            if w.sidecar is not None:
                procs.stop(w.sidecar)
        for t in self._threads:
            t.join(timeout=40)
        self.dep.stop()
        end = time.time()
        for w in self.workers:
            if w.stopped is None:
                w.stopped = end
        for p in reversed(self._others):
            procs.stop(p)
        if self._ksm is not None:
            self._ksm.shutdown()
            self._ksm.server_close()

    def lifetimes(self) -> list[dict[str, object]]:
        return [
            {"name": w.name, "role": w.role, "created": w.created, "started": w.started, "ready": w.ready,
             "stopping": w.stopping, "stopped": w.stopped}
            for w in self.workers
        ]  # fmt: skip

    def dump(self) -> None:
        (self.out / "workers.json").write_text(json.dumps(self.lifetimes(), indent=1))


def _spec_fields(spec: dynamo.MockerSpec) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(spec)
