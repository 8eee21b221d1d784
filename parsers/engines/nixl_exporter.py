"""NIXL's own Prometheus exporter (`NIXL_TELEMETRY_EXPORTER=prometheus|prometheus_mp`) -> canonical.

Source: /work/shared/research/dynamo-nixl.md §1.2 and the real scrape
tests/fixtures/nixl-1.5.1-cpu-ucx-loopback/nixl-prometheus-exporter.prom.

Counters `agent_{tx,rx}_bytes_total`, `agent_{tx,rx}_requests_num_total`,
`agent_memory_{registered,deregistered}_total`, `agent_telemetry_events_dropped_total`,
`agent_errors_total{status}` keep the `agent_name` label (one series per NIXL agent; `hostname`,
and `pid`/`agent_instance`/`local_rank` of `prometheus_mp`, are summed away). Times are
microseconds in NIXL (`agent_xfer_time_total`, `agent_xfer_post_time_total`, histograms
`agent_xfer_time_us`, `agent_xfer_post_time_us`) and become seconds here. The histograms feed the
same canonical transfer histograms as vLLM's `vllm:nixl_*_seconds` (summed over agents: the
bucket bounds are one process-wide setting), ranked below vLLM's so an engine payload wins.

The last-operation gauges (`agent_xfer_time`, `agent_tx_last_bytes`, ...) are ignored: a sampled
single value says nothing about a window. NIXL 1.0 spelled the counters without `_total`; a
counter-typed family with the bare name is accepted (mapping.py).
"""

from __future__ import annotations

from typing import Final

from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines.mapping import Binding, Rule, build_table

MICROSECONDS: Final = 1e-6
RANK: Final = 15
"""Below vLLM's own `vllm:nixl_*` (20+), above Dynamo's series (which never overlap)."""

_AGENT: Final = ("agent_name",)


def _counter(canonical: str, scale: float = 1.0, keep: tuple[str, ...] = _AGENT) -> Rule:
    return Rule(canonical, "counter", "nixl", RANK, keep=keep, scale=scale)


NIXL_EXPORTER_RULES: Final[tuple[tuple[str, Rule], ...]] = (
    ("agent_tx_bytes", _counter(c.NIXL_AGENT_TX_BYTES)),
    ("agent_rx_bytes", _counter(c.NIXL_AGENT_RX_BYTES)),
    ("agent_tx_requests_num", _counter(c.NIXL_AGENT_TX_REQUESTS)),
    ("agent_rx_requests_num", _counter(c.NIXL_AGENT_RX_REQUESTS)),
    ("agent_xfer_time", _counter(c.NIXL_AGENT_XFER_TIME_SECONDS, scale=MICROSECONDS)),
    ("agent_xfer_post_time", _counter(c.NIXL_AGENT_XFER_POST_TIME_SECONDS, scale=MICROSECONDS)),
    ("agent_memory_registered", _counter(c.NIXL_AGENT_MEMORY_REGISTERED_BYTES)),
    ("agent_memory_deregistered", _counter(c.NIXL_AGENT_MEMORY_DEREGISTERED_BYTES)),
    ("agent_telemetry_events_dropped", _counter(c.NIXL_AGENT_EVENTS_DROPPED)),
    ("agent_errors", _counter(c.NIXL_AGENT_ERRORS, keep=("agent_name", "status"))),
    ("agent_xfer_time_us", Rule(c.NIXL_XFER_SECONDS, "histogram", "nixl", RANK, scale=MICROSECONDS)),
    ("agent_xfer_post_time_us", Rule(c.NIXL_POST_SECONDS, "histogram", "nixl", RANK, scale=MICROSECONDS)),
)

NIXL_EXPORTER_TABLE: Final[dict[str, Binding]] = build_table(NIXL_EXPORTER_RULES)
