"""The two kube-state-metrics series the shipped rules read, for the fleet's replicas: a replica
that was created but does not serve yet is a Pending pod (`kube_pod_status_phase{phase="Pending"}`)
and `kube_pod_labels{label_phaselens_io_role=...}` names its pool. With them the rules'
`phaselens:pool_pending_pods:count` and the scale-down hold while pods are Pending work as in a
cluster. Served over HTTP for Prometheus to scrape, from a daemon thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (pod, role, pending)
PodList = Callable[[], list[tuple[str, str, bool]]]


def exposition(pods: list[tuple[str, str, bool]], namespace: str) -> str:
    lines = ["# TYPE kube_pod_status_phase gauge", "# TYPE kube_pod_labels gauge"]
    for pod, role, pending in pods:
        for phase, on in (("Pending", pending), ("Running", not pending)):
            lines.append(f'kube_pod_status_phase{{namespace="{namespace}",pod="{pod}",phase="{phase}"}} {int(on)}')
        lines.append(f'kube_pod_labels{{namespace="{namespace}",pod="{pod}",label_phaselens_io_role="{role}"}} 1')
    return "\n".join(lines) + "\n"


def serve(port: int, pods: PodList, namespace: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(pods(), namespace).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            try:
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # Prometheus gave up on a slow scrape (loaded machine): it scrapes again

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
