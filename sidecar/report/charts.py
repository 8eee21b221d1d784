"""Timeline charts (matplotlib, rendered to PNG bytes) with episodes shaded."""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display: render to memory only
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from phaselens.analyzers.episodes import Episode
from phaselens.report.frame import RunData

EPISODE_COLOURS = {"kv_pressure": "#d62728", "overload": "#ff7f0e", "idle": "#7f7f7f", "prefix_reuse": "#2ca02c"}
PERCENTILES = ("50", "90", "99")  # the `percentile` label values drawn


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    png: bytes


def _shade(ax: Axes, episodes: tuple[Episode, ...]) -> None:
    labelled: set[str] = set()
    for episode in episodes:
        colour = EPISODE_COLOURS.get(episode.kind, "#cccccc")
        label = episode.kind.replace("_", " ") if episode.kind not in labelled else None
        labelled.add(episode.kind)
        ax.axvspan(episode.start, max(episode.end, episode.start + 0.5), color=colour, alpha=0.12, label=label)


def _finish(fig: plt.Figure, ax: Axes, title: str) -> bytes:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("seconds from start")
    ax.grid(True, alpha=0.3)
    handles, _labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="upper left", ncol=3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _new() -> tuple[plt.Figure, Axes]:
    fig, ax = plt.subplots(figsize=(9, 2.6))
    return fig, ax


def target_charts(
    run: RunData, target: str, episodes: tuple[Episode, ...], slo_ttft: float | None, slo_itl: float | None
) -> list[Chart]:
    charts: list[Chart] = []

    queue = run.series("phaselens_prefill_queue_depth", target)
    backlog = run.series("phaselens_prefill_backlog_seconds", target)
    if not queue.empty:
        fig, ax = _new()
        _shade(ax, episodes)
        ax.plot(queue.index, queue.values, label="queue depth (requests)", color="#1f77b4")
        ax.set_ylabel("requests")
        if not backlog.empty:
            twin = ax.twinx()
            twin.plot(backlog.index, backlog.values, label="prefill backlog (s)", color="#9467bd", linestyle="--")
            twin.set_ylabel("seconds")
        charts.append(
            Chart(
                "queue",
                f"{target}: queue depth and prefill backlog",
                _finish(fig, ax, f"{target}: queue depth and prefill backlog"),
            )
        )

    kv = run.series("phaselens_decode_kv_utilization_ratio", target)
    if not kv.empty:
        fig, ax = _new()
        _shade(ax, episodes)
        ax.plot(kv.index, kv.values, label="KV utilization", color="#d62728")
        ax.set_ylim(0, 1.05)
        preempt = run.series("phaselens_kv_preemptions_per_second", target)
        if not preempt.empty:
            twin = ax.twinx()
            twin.plot(preempt.index, preempt.values, label="preemptions/s", color="#8c564b", linestyle=":")
            twin.set_ylabel("preemptions/s")
        hit = run.series("phaselens_kv_prefix_cache_hit_ratio", target)
        if not hit.empty:
            ax.plot(hit.index, hit.values, label="prefix hit ratio", color="#2ca02c")
        charts.append(Chart("kv", f"{target}: KV cache", _finish(fig, ax, f"{target}: KV cache")))

    for key, name, slo, label in (
        ("ttft", "phaselens_ttft_seconds", slo_ttft, "TTFT"),
        ("itl", "phaselens_itl_seconds", slo_itl, "ITL"),
    ):
        lines = {p: run.series(name, target, percentile=p) for p in PERCENTILES}
        if all(s.empty for s in lines.values()):
            continue
        fig, ax = _new()
        _shade(ax, episodes)
        for p, series in lines.items():
            if not series.empty:
                ax.plot(series.index, series.values, label=f"p{p}")
        if slo is not None:
            ax.axhline(slo, color="black", linestyle="--", linewidth=1, label=f"SLO {slo:g} s")
        ax.set_ylabel("seconds")
        charts.append(
            Chart(key, f"{target}: {label} quantiles vs SLO", _finish(fig, ax, f"{target}: {label} quantiles"))
        )

    lower = run.series("phaselens_goodput_requests_per_second", target, bound="lower")
    upper = run.series("phaselens_goodput_requests_per_second", target, bound="upper")
    rate = run.series("phaselens_request_rate_per_second", target)
    if not rate.empty or not lower.empty:
        fig, ax = _new()
        _shade(ax, episodes)
        if not rate.empty:
            ax.plot(rate.index, rate.values, label="completed req/s", color="#7f7f7f")
        if not lower.empty and not upper.empty:
            joined = lower.to_frame("lo").join(upper.to_frame("hi"), how="inner")
            ax.fill_between(
                joined.index, joined["lo"], joined["hi"], alpha=0.35, color="#17becf", label="goodput bounds"
            )
        ax.set_ylabel("requests/s")
        charts.append(Chart("goodput", f"{target}: goodput bounds", _finish(fig, ax, f"{target}: goodput")))

    share = run.series("phaselens_phase_prefill_time_share_ratio", target)
    imbalance = run.series("phaselens_phase_imbalance_ratio", target)
    if not share.empty or not imbalance.empty:
        fig, ax = _new()
        _shade(ax, episodes)
        if not share.empty:
            ax.plot(share.index, share.values, label="prefill time share", color="#bcbd22")
        if not imbalance.empty:
            ax.plot(imbalance.index, imbalance.values, label="imbalance (>1 prefill-bound)", color="#e377c2")
            ax.axhline(1.0, color="black", linewidth=0.8)
        charts.append(Chart("phase", f"{target}: phases", _finish(fig, ax, f"{target}: phase time share")))

    nixl = {p: run.series("phaselens_nixl_transfer_seconds", target, percentile=p) for p in PERCENTILES}
    if any(not s.empty for s in nixl.values()):
        fig, ax = _new()
        _shade(ax, episodes)
        for p, series in nixl.items():
            if not series.empty:
                ax.plot(series.index, series.values * 1000, label=f"p{p}")
        ax.set_ylabel("ms")
        charts.append(Chart("nixl", f"{target}: NIXL transfer time", _finish(fig, ax, f"{target}: NIXL transfer time")))
    return charts
