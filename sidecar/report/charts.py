"""Timeline charts (matplotlib, rendered to PNG bytes) with episodes shaded.

Every chart's legend sits below the plot, outside the data area, and lists every series drawn on
either y axis and every kind of shaded episode. Ratios are drawn as percentages. Each chart keeps
its layout (plot areas, legend box, series and legend labels, in PNG pixels) so a test can check
that in the rendered page.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display: render to memory only
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from phaselens.analyzers.episodes import Episode
from phaselens.report.frame import RunData

EPISODE_COLOURS = {"kv_pressure": "#d62728", "overload": "#ff7f0e", "idle": "#7f7f7f", "prefix_reuse": "#2ca02c"}
PERCENTILES = ("50", "90", "99")  # the `percentile` label values drawn
DPI = 90  # figure and PNG share it, so the layout boxes are PNG pixels
SIZE_INCHES = (10.5, 3.3)
EPISODE_GID = "episode:"  # gid prefix of the shaded spans
RIGHT = " (right axis)"

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in PNG pixels, origin top left


@dataclass(frozen=True)
class ChartLayout:
    """Where things landed in the PNG: what the browser test checks."""

    width: int
    height: int
    plots: tuple[Box, ...]  # the data area of each y axis
    legend: Box | None
    series: tuple[str, ...]  # every line, band and kind of shaded episode drawn
    legend_labels: tuple[str, ...]


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    png: bytes
    layout: ChartLayout


def _shade(ax: Axes, episodes: tuple[Episode, ...]) -> None:
    labelled: set[str] = set()
    for episode in episodes:
        colour = EPISODE_COLOURS.get(episode.kind, "#cccccc")
        name = episode_label(episode.kind)
        label = f"episode: {name}" if episode.kind not in labelled else "_nolegend_"
        labelled.add(episode.kind)
        span = ax.axvspan(episode.start, max(episode.end, episode.start + 0.5), color=colour, alpha=0.12, label=label)
        span.set_gid(f"{EPISODE_GID}{name}")


def episode_label(kind: str) -> str:
    return kind.replace("_", " ")


def _drawn_series(axes: list[Axes]) -> list[str]:
    """The name of everything drawn on the axes: a data line or band without a label shows up as
    `<unlabelled ...>`, so a test can tell it is missing from the legend."""
    names: list[str] = []
    for axis in axes:
        artists: list[Artist] = [*axis.lines, *axis.collections]
        for artist in artists:
            label = str(artist.get_label())
            names.append(label if not label.startswith("_") else f"<unlabelled {type(artist).__name__}>")
        for patch in axis.patches:
            gid = patch.get_gid() or ""
            if gid.startswith(EPISODE_GID):
                names.append(f"episode: {gid.removeprefix(EPISODE_GID)}")
    return list(dict.fromkeys(names))


def _pixels(box: Bbox, height: float) -> Box:
    return (round(box.x0, 1), round(height - box.y1, 1), round(box.x1, 1), round(height - box.y0, 1))


def _finish(fig: Figure, ax: Axes, title: str, twin: Axes | None = None) -> tuple[bytes, ChartLayout]:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("seconds from start")
    ax.grid(True, alpha=0.3)
    axes = [ax] if twin is None else [ax, twin]
    handles: list[Artist] = []
    labels: list[str] = []
    for axis in axes:
        found, names = axis.get_legend_handles_labels()
        handles += found
        labels += names
    # Data series first, then the episode shading.
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("episode: "))
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    legend = (
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
        if handles
        else None
    )
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    layout = ChartLayout(
        width=width,
        height=height,
        plots=tuple(_pixels(axis.get_window_extent(renderer), height) for axis in axes),
        legend=_pixels(legend.get_window_extent(renderer), height) if legend is not None else None,
        series=tuple(_drawn_series(axes)),
        legend_labels=tuple(labels),
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue(), layout


def _new() -> tuple[Figure, Axes]:
    fig = plt.figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _chart(key: str, caption: str, title: str, fig: Figure, ax: Axes, twin: Axes | None = None) -> Chart:
    png, layout = _finish(fig, ax, title, twin)
    return Chart(key, caption, png, layout)


def _from_zero(axis: Axes) -> None:
    """A y axis of non-negative values starts just below 0, as the left axis does (a series at 0
    stays visible above the frame), and is not centred on 0 when all its values are 0."""
    top = axis.get_ylim()[1]
    top = top if top > 0 else 1.0
    axis.set_ylim(-0.05 * top, top)


def _percent(series: pd.Series) -> pd.Series:
    return series * 100.0


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
        twin = None
        if not backlog.empty:
            twin = ax.twinx()
            twin.plot(
                backlog.index, backlog.values, label=f"prefill backlog, seconds{RIGHT}", color="#9467bd", linestyle="--"
            )
            twin.set_ylabel("seconds")
            _from_zero(twin)
        title = f"{target}: queue depth and prefill backlog"
        charts.append(_chart("queue", title, title, fig, ax, twin))

    kv = run.series("phaselens_decode_kv_utilization_ratio", target)
    if not kv.empty:
        fig, ax = _new()
        _shade(ax, episodes)
        ax.plot(kv.index, _percent(kv).values, label="KV utilization (%)", color="#d62728")
        hit = run.series("phaselens_kv_prefix_cache_hit_ratio", target)
        if not hit.empty:
            ax.plot(hit.index, _percent(hit).values, label="prefix-cache hit ratio (%)", color="#2ca02c")
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        twin = None
        preempt = run.series("phaselens_kv_preemptions_per_second", target)
        if not preempt.empty:
            twin = ax.twinx()
            twin.plot(preempt.index, preempt.values, label=f"preemptions/s{RIGHT}", color="#8c564b", linestyle=":")
            twin.set_ylabel("preemptions/s")
            _from_zero(twin)
        charts.append(_chart("kv", f"{target}: KV cache", f"{target}: KV cache", fig, ax, twin))

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
                ax.plot(series.index, series.values, label=f"{label} p{p} (s)")
        if slo is not None:
            ax.axhline(slo, color="black", linestyle="--", linewidth=1, label=f"SLO {slo:g} s")
            # Headroom above the SLO line, so it never sits on the frame.
            ax.set_ylim(0, max(ax.get_ylim()[1], slo * 1.15))
        ax.set_ylabel("seconds")
        charts.append(_chart(key, f"{target}: {label} quantiles vs SLO", f"{target}: {label} quantiles", fig, ax))

    lower = run.series("phaselens_goodput_requests_per_second", target, bound="lower")
    upper = run.series("phaselens_goodput_requests_per_second", target, bound="upper")
    rate = run.series("phaselens_request_rate_per_second", target)
    if not rate.empty or not lower.empty:
        fig, ax = _new()
        _shade(ax, episodes)
        if not lower.empty and not upper.empty:
            joined = lower.to_frame("lo").join(upper.to_frame("hi"), how="inner")
            # A solid band with solid edges: still a visible line where the bounds meet.
            ax.fill_between(
                joined.index,
                joined["lo"],
                joined["hi"],
                facecolor="#17becf",
                edgecolor="#0e7c87",
                linewidth=2.0,
                alpha=0.55,
                zorder=2.5,
                label="goodput, lower to upper bound (req/s)",
            )
        if not rate.empty:
            ax.plot(
                rate.index,
                rate.values,
                label="completed requests (req/s)",
                color="#333333",
                linestyle="--",
                linewidth=1.2,
                zorder=3,
            )
        ax.set_ylabel("requests/s")
        charts.append(_chart("goodput", f"{target}: goodput bounds", f"{target}: goodput", fig, ax))

    share = run.series("phaselens_phase_prefill_time_share_ratio", target)
    imbalance = run.series("phaselens_phase_imbalance_ratio", target)
    if not share.empty or not imbalance.empty:
        fig, ax = _new()
        _shade(ax, episodes)
        twin = None
        if not share.empty:
            ax.plot(share.index, _percent(share).values, label="prefill share of request time (%)", color="#bcbd22")
            ax.set_ylim(0, 105)
            ax.set_ylabel("%")
        if not imbalance.empty:
            twin = ax.twinx() if not share.empty else None
            where = twin if twin is not None else ax
            suffix = RIGHT if twin is not None else ""
            where.plot(
                imbalance.index, imbalance.values, label=f"imbalance, > 1 is prefill-bound{suffix}", color="#e377c2"
            )
            where.axhline(1.0, color="black", linewidth=0.8, label=f"balanced: imbalance 1{suffix}")
            where.set_ylabel("imbalance (ratio)")
            where.set_ylim(0, max(where.get_ylim()[1], 1.25))  # the balanced line clear of the frame
        charts.append(_chart("phase", f"{target}: phases", f"{target}: phase time share", fig, ax, twin))

    nixl = {p: run.series("phaselens_nixl_transfer_seconds", target, percentile=p) for p in PERCENTILES}
    if any(not s.empty for s in nixl.values()):
        fig, ax = _new()
        _shade(ax, episodes)
        for p, series in nixl.items():
            if not series.empty:
                ax.plot(series.index, series.values * 1000, label=f"transfer p{p} (ms)")
        ax.set_ylabel("ms")
        title = f"{target}: NIXL transfer time"
        charts.append(_chart("nixl", title, title, fig, ax))
    return charts
