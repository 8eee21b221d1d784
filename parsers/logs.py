"""Recognise the log lines of vLLM (NixlConnector, periodic engine stats), NIXL (C++ Abseil and
Python) and NVIDIA Dynamo (conditional-disaggregation decisions). Pure: text in, `LogEvent` out.

Most lines of a serving log are access lines and start-up chatter. Every parser is guarded by a
plain substring test (`needle in line`), so a line that matches nothing costs a few `in` checks
and no regex. A line that passes its guard but cannot be read is counted as malformed for that
kind (`MalformedLine`), never silently dropped and never a crash.

Times: lines with a full date (NIXL Python, Dynamo) get `time` in Unix seconds (UTC). vLLM and
Abseil lines carry no year; pass `year` to date them (the wall clock is taken as UTC, as in
containers), otherwise their `time` is None and the reader stamps them.
"""

from __future__ import annotations

import calendar
import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeAlias

from phaselens.model import LogEvent, LogValue

# --- kinds (stable names; analyzers and the CLI depend on them)
VLLM_KV_TRANSFER_METRICS: Final = "vllm_kv_transfer_metrics"
VLLM_ENGINE_STATS: Final = "vllm_engine_stats"
VLLM_KV_EXPIRED: Final = "vllm_kv_expired"
VLLM_KV_INVALID_READ: Final = "vllm_kv_invalid_read"
VLLM_NIXL_FAILURE: Final = "vllm_nixl_failure"  # structured `NIXL transfer failure: <type> | Context: ...`
VLLM_NIXL_HANDSHAKE_FAILED: Final = "vllm_nixl_handshake_failed"
VLLM_NIXL_ENGINE_ID_MISMATCH: Final = "vllm_nixl_engine_id_mismatch"
NIXL_BACKEND_INSTANTIATED: Final = "nixl_backend_instantiated"
NIXL_BACKEND_SELECTED: Final = "nixl_backend_selected"
NIXL_BACKEND_BOUND: Final = "nixl_backend_bound"
NIXL_AGENT_INITIALIZED: Final = "nixl_agent_initialized"
NIXL_PLUGIN_LOADED: Final = "nixl_plugin_loaded"
NIXL_VERSION: Final = "nixl_version"
NIXL_TELEMETRY_ENABLED: Final = "nixl_telemetry_enabled"
NIXL_TELEMETRY_DISABLED: Final = "nixl_telemetry_disabled"
NIXL_ERROR: Final = "nixl_error"  # C++ W/E/F lines and Python WARNING/ERROR lines
DYNAMO_DISAGG_DECISION: Final = "dynamo_disagg_decision"
DYNAMO_REMOTE_PREFILL_SUCCEEDED: Final = "dynamo_remote_prefill_succeeded"

KINDS: Final = (
    VLLM_KV_TRANSFER_METRICS, VLLM_ENGINE_STATS, VLLM_KV_EXPIRED, VLLM_KV_INVALID_READ, VLLM_NIXL_FAILURE,
    VLLM_NIXL_HANDSHAKE_FAILED, VLLM_NIXL_ENGINE_ID_MISMATCH, NIXL_BACKEND_INSTANTIATED,
    NIXL_BACKEND_SELECTED, NIXL_BACKEND_BOUND, NIXL_AGENT_INITIALIZED, NIXL_PLUGIN_LOADED, NIXL_VERSION,
    NIXL_TELEMETRY_ENABLED,
    NIXL_TELEMETRY_DISABLED, NIXL_ERROR, DYNAMO_DISAGG_DECISION, DYNAMO_REMOTE_PREFILL_SUCCEEDED,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MalformedLine:
    """A line that looked like `kind` (its guard matched) but could not be read."""

    kind: str
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class LogParseResult:
    events: tuple[LogEvent, ...]
    lines: int
    malformed: dict[str, int] = field(default_factory=dict)

    def counts(self) -> Counter[str]:
        return Counter(e.kind for e in self.events)


# --------------------------------------------------------------------------- prefixes and times

_VLLM_PREFIX = re.compile(
    r"^(?:\((?P<proc>[^)]*?)(?: pid=(?P<pid>\d+))?\) )?(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<month>\d\d)-(?P<day>\d\d) (?P<hms>\d\d:\d\d:\d\d)(?:\.\d+)? \[?(?P<file>[^\]:\s]+):(?P<line>\d+)\] "
)
_ABSL = re.compile(
    r"^(?P<level>[IWEF])(?P<month>\d\d)(?P<day>\d\d) (?P<hms>\d\d:\d\d:\d\d)(?P<frac>\.\d+)\s+(?P<tid>\d+) "
    r"(?P<file>[^:\]\s]+):(?P<line>\d+)\] (?P<msg>.*)$"
)
_ABSL_SHORT = re.compile(r"^(?P<level>[IWEF]) (?P<file>[^:\]\s]+):(?P<line>\d+)\] (?P<msg>.*)$")
_NIXL_PY = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) NIXL (?P<level>[A-Z]+)\s+(?P<file>[^:\s]+):(?P<line>\d+) "
    r"(?P<msg>.*)$"
)
_DYNAMO_TEXT = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\s+(?P<level>[A-Z]+)\s+(?P<target>[^\s:]+(?:::[^\s:]+)*):"
    r" (?P<msg>.*)$"
)
_ABSL_LEVELS: Final = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "FATAL"}


def _time_from_month_day(year: int | None, month: str, day: str, hms: str, frac: str = "") -> float | None:
    if year is None:
        return None
    try:
        h, m, s = (int(x) for x in hms.split(":"))
        stamp = calendar.timegm((year, int(month), int(day), h, m, s, 0, 0, 0))
    except ValueError:
        return None
    return stamp + (float(frac) if frac else 0.0)


def _iso_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _py_time(text: str) -> float | None:
    try:
        return float(calendar.timegm(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timetuple()))
    except ValueError:
        return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


Result: TypeAlias = LogEvent | MalformedLine | None

# --------------------------------------------------------------------------- vLLM


@dataclass(frozen=True, slots=True)
class _VllmLine:
    time: float | None
    level: str
    process: str
    message: str


def _vllm_line(line: str, year: int | None) -> _VllmLine | None:
    m = _VLLM_PREFIX.match(line)
    if m is None:
        return None
    return _VllmLine(
        _time_from_month_day(year, m["month"], m["day"], m["hms"]),
        m["level"],
        m["proc"] or "",
        line[m.end() :].rstrip(),
    )


_KV_METRIC_KEYS: Final = {
    "num_successful_transfers": "successful_transfers",
    "avg_xfer_time_ms": "avg_xfer_time_ms",
    "p90_xfer_time_ms": "p90_xfer_time_ms",
    "avg_post_time_ms": "avg_post_time_ms",
    "p90_post_time_ms": "p90_post_time_ms",
    "avg_mb_per_transfer": "avg_mib_per_transfer",  # vLLM's "MB" is bytes / 2**20
    "throughput_mb_s": "throughput_mib_per_second",
    "avg_number_of_descriptors": "avg_descriptors",
    "num_failed_transfers": "failed_transfers",
    "num_failed_notifications": "failed_notifications",
    "num_kv_expired_reqs": "kv_expired_requests",
    "num_notifs_after_expiry": "notifications_after_expiry",
}


def _kv_transfer_metrics(line: str, year: int | None) -> Result:
    head, sep, body = line.partition("KV Transfer metrics:")
    if not sep:
        return None
    prefix = _vllm_line(head, year) if head else None
    fields: dict[str, LogValue] = {}
    for piece in body.strip().split(", "):
        key, eq, raw = piece.partition("=")
        if not eq:
            return MalformedLine(VLLM_KV_TRANSFER_METRICS, f"piece without '=': {piece!r}", line)
        value = _number(raw.strip())
        if value is None:
            return MalformedLine(VLLM_KV_TRANSFER_METRICS, f"not a number: {piece!r}", line)
        slug = _slug(key)
        fields[_KV_METRIC_KEYS.get(slug, slug)] = value
    if "successful_transfers" not in fields:
        return MalformedLine(VLLM_KV_TRANSFER_METRICS, "no 'Num successful transfers'", line)
    return LogEvent(VLLM_KV_TRANSFER_METRICS, prefix.time if prefix else None, fields)


_ENGINE_LABELS: Final = {
    "avg prompt throughput": "prompt_throughput_tokens_per_second",
    "avg generation throughput": "generation_throughput_tokens_per_second",
    "running": "running_requests",
    "waiting": "waiting_requests",
    "pending": "waiting_requests",  # V0 wording
    "swapped": "swapped_requests",
    "deferred": "deferred_requests",
    "prefix cache hit rate": "prefix_cache_hit_ratio",
    "external prefix cache hit rate": "external_prefix_cache_hit_ratio",
    "gpu kv cache usage": "gpu_kv_cache_usage_ratio",
    "cpu kv cache usage": "cpu_kv_cache_usage_ratio",
    "xpu kv cache usage": "xpu_kv_cache_usage_ratio",
}
_LEADING_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(%?)\s*(.*)$")


def _engine_stats(line: str, year: int | None) -> Result:
    """`Engine 000: Avg prompt throughput: ... KV cache usage: x%, Prefix cache hit rate: y%` (V1)
    and the V0 line without the `Engine NNN:` part. The fallback when /metrics is unreachable."""
    parsed = _vllm_line(line, year)
    message = parsed.message if parsed else line
    engine = "0"
    if message.startswith("Engine "):
        label, sep, message = message.partition(": ")
        engine = label.removeprefix("Engine ").lstrip("0") or "0"
        if not sep or not engine.isdigit():
            return MalformedLine(VLLM_ENGINE_STATS, "bad 'Engine NNN:' label", line)
    if not message.startswith("Avg prompt throughput"):
        return None
    fields: dict[str, LogValue] = {"engine": engine}
    group = ""
    for piece in message.rstrip(".").split(", "):
        label, colon, rest = piece.partition(": ")
        if colon:
            group = _slug(label)
            num = _LEADING_NUMBER.match(rest)
        else:  # "0 in progress" continues "KV fetch: 0 waiting to start"
            num = _LEADING_NUMBER.match(piece)
            label = ""
        if num is None:
            return MalformedLine(VLLM_ENGINE_STATS, f"no number in {piece!r}", line)
        value = float(num[1]) / 100.0 if num[2] == "%" else float(num[1])
        if label:
            key = _ENGINE_LABELS.get(label.lower().strip())
            if key is None:
                unit = _slug(num[3])
                key = group if not unit or unit in ("reqs", "tokens_s") else f"{group}_{unit}"
        else:
            key = f"{group}_{_slug(num[3])}"
        fields[key] = value
    if "prompt_throughput_tokens_per_second" not in fields:
        return MalformedLine(VLLM_ENGINE_STATS, "no prompt throughput", line)
    # The engine's own KV pool: GPU (or XPU) when printed; a CPU build prints only "CPU KV cache
    # usage". V0 printed both, the CPU one being swap space.
    for device in ("gpu", "xpu", "cpu"):
        usage = fields.get(f"{device}_kv_cache_usage_ratio")
        if usage is not None:
            fields["kv_cache_usage_ratio"] = usage
            fields["kv_cache_device"] = device.upper()
            break
    return LogEvent(VLLM_ENGINE_STATS, parsed.time if parsed else None, fields)


_EXPIRED = re.compile(
    r"Releasing expired KV blocks for request (?P<req>\S+) which were retrieved by (?P<n>\d+) "
    r"(?:decode|remote) worker\(s\)(?: within (?P<s>\d+(?:\.\d+)?) seconds)?"
)
_INVALID_READ = re.compile(r"Potentially invalid KV blocks for unrecognized request (?P<req>\S+)")
_NIXL_FAILURE = re.compile(
    r"NIXL transfer failure: (?P<type>[A-Za-z_]+)(?P<rest>.*?)(?: \| Context: (?P<ctx>.*))?$"
)
_HANDSHAKE = re.compile(r"Handshake failed(?: for request (?P<req>\S+))?")


def _kv_expired(line: str, year: int | None) -> Result:
    m = _EXPIRED.search(line)
    if m is None:
        return MalformedLine(VLLM_KV_EXPIRED, "unexpected wording", line)
    parsed = _vllm_line(line, year)
    fields: dict[str, LogValue] = {"request_id": m["req"], "retrieved_by_workers": int(m["n"])}
    if m["s"] is not None:
        fields["lease_seconds"] = float(m["s"])
    return LogEvent(VLLM_KV_EXPIRED, parsed.time if parsed else None, fields)


def _kv_invalid_read(line: str, year: int | None) -> Result:
    m = _INVALID_READ.search(line)
    if m is None:
        return MalformedLine(VLLM_KV_INVALID_READ, "no request id", line)
    parsed = _vllm_line(line, year)
    return LogEvent(VLLM_KV_INVALID_READ, parsed.time if parsed else None, {"request_id": m["req"]})


def _nixl_failure(line: str, year: int | None) -> Result:
    m = _NIXL_FAILURE.search(line)
    if m is None:
        return MalformedLine(VLLM_NIXL_FAILURE, "no failure type", line)
    parsed = _vllm_line(line, year)
    failure_type = m["type"]
    category = (
        "handshake" if "handshake" in failure_type
        else "notification" if "notif" in failure_type
        else "transfer"
    )  # fmt: skip
    fields: dict[str, LogValue] = {"failure_type": failure_type, "category": category}
    detail = (m["rest"] or "").lstrip(". ").strip()
    if detail:
        fields["detail"] = detail[:200]
    return LogEvent(VLLM_NIXL_FAILURE, parsed.time if parsed else None, fields)


def _handshake_failed(line: str, year: int | None) -> Result:
    m = _HANDSHAKE.search(line)
    if m is None:
        return None
    parsed = _vllm_line(line, year)
    fields: dict[str, LogValue] = {"request_id": m["req"]} if m["req"] else {}
    return LogEvent(VLLM_NIXL_HANDSHAKE_FAILED, parsed.time if parsed else None, fields)


def _engine_id_mismatch(line: str, year: int | None) -> Result:
    parsed = _vllm_line(line, year)
    return LogEvent(VLLM_NIXL_ENGINE_ID_MISMATCH, parsed.time if parsed else None, {})


# --------------------------------------------------------------------------- NIXL

_SELECTED = re.compile(r"Selected backend: (?P<b>[A-Za-z0-9_]+)")
_INSTANTIATED = re.compile(r"Backend (?P<b>[A-Za-z0-9_]+) was instantiated")
_AGENT_INIT = re.compile(r"Initialized NIXL agent: (?P<a>\S+)")
_LOADED = re.compile(r"^(?:\([^)]*\) )?Loaded plugin (?P<b>[A-Za-z0-9_]+)\s*$")
_VERSION = re.compile(r"NIXL version: (?P<v>\S+)(?: \(git: (?P<g>[^)]+)\))?")
_BOUND = re.compile(r"NIXL (?P<b>[A-Za-z0-9_]+) backend bound to (?P<lib>[A-Za-z0-9_]+) (?P<v>\S+)")
_TELEMETRY_ON = re.compile(r"Telemetry enabled, using buffer path: (?P<p>\S+) with size: (?P<n>\d+)")


@dataclass(frozen=True, slots=True)
class _NixlLine:
    time: float | None
    level: str
    file: str
    line: int
    message: str


def _nixl_line(line: str, year: int | None) -> _NixlLine | None:
    """An Abseil (C++) or Python-logging NIXL line; bare pre-0.6 prints give level ''."""
    if line[:1] in "IWEF":
        m = _ABSL.match(line)
        if m is not None:
            return _NixlLine(
                _time_from_month_day(year, m["month"], m["day"], m["hms"], m["frac"]),
                _ABSL_LEVELS[m["level"]], m["file"], int(m["line"]), m["msg"],
            )  # fmt: skip
        m = _ABSL_SHORT.match(line)
        if m is not None:
            return _NixlLine(None, _ABSL_LEVELS[m["level"]], m["file"], int(m["line"]), m["msg"])
    if line[:1].isdigit():
        m = _NIXL_PY.match(line)
        if m is not None:
            return _NixlLine(_py_time(m["date"]), m["level"], m["file"], int(m["line"]), m["msg"])
    return None


def _nixl_message(line: str, year: int | None) -> tuple[float | None, str, str]:
    parsed = _nixl_line(line, year)
    if parsed is None:
        return None, "", line
    return parsed.time, parsed.level, parsed.message


def _nixl_selected(line: str, year: int | None) -> Result:
    time, _, msg = _nixl_message(line, year)
    m = _SELECTED.search(msg)
    if m is None:
        return MalformedLine(NIXL_BACKEND_SELECTED, "no backend name", line)
    return LogEvent(NIXL_BACKEND_SELECTED, time, {"backend": m["b"]})


def _nixl_instantiated(line: str, year: int | None) -> Result:
    time, _, msg = _nixl_message(line, year)
    m = _INSTANTIATED.search(msg)
    if m is None:
        return MalformedLine(NIXL_BACKEND_INSTANTIATED, "no backend name", line)
    return LogEvent(NIXL_BACKEND_INSTANTIATED, time, {"backend": m["b"]})


def _nixl_agent_init(line: str, year: int | None) -> Result:
    time, _, msg = _nixl_message(line, year)
    m = _AGENT_INIT.search(msg)
    if m is None:
        return MalformedLine(NIXL_AGENT_INITIALIZED, "no agent name", line)
    # The agent name is the telemetry ring's file name in NIXL_TELEMETRY_DIR.
    return LogEvent(NIXL_AGENT_INITIALIZED, time, {"agent": m["a"]})


def _nixl_loaded(line: str, year: int | None) -> Result:
    m = _LOADED.match(line)
    if m is None:
        return None
    return LogEvent(NIXL_PLUGIN_LOADED, None, {"backend": m["b"]})


def _nixl_version(line: str, year: int | None) -> Result:
    time, _, msg = _nixl_message(line, year)
    m = _VERSION.search(msg)
    if m is None:
        return MalformedLine(NIXL_VERSION, "no version", line)
    fields: dict[str, LogValue] = {"version": m["v"]}
    if m["g"]:
        fields["git"] = m["g"]
    return LogEvent(NIXL_VERSION, time, fields)


def _nixl_bound(line: str, year: int | None) -> Result:
    time, _, msg = _nixl_message(line, year)
    m = _BOUND.search(msg)
    if m is None:
        return MalformedLine(NIXL_BACKEND_BOUND, "unexpected wording", line)
    return LogEvent(
        NIXL_BACKEND_BOUND, time, {"backend": m["b"], "library": m["lib"], "library_version": m["v"]}
    )


def _nixl_telemetry_on(line: str, year: int | None) -> Result:
    time, _, msg = _nixl_message(line, year)
    m = _TELEMETRY_ON.search(msg)
    if m is None:
        return MalformedLine(NIXL_TELEMETRY_ENABLED, "unexpected wording", line)
    return LogEvent(NIXL_TELEMETRY_ENABLED, time, {"path": m["p"], "capacity_events": int(m["n"])})


def _nixl_telemetry_off(line: str, year: int | None) -> Result:
    time, _, _ = _nixl_message(line, year)
    # vLLM then counts every transfer as failed on some versions (vLLM PR #58038).
    return LogEvent(NIXL_TELEMETRY_DISABLED, time, {})


def _nixl_problem(line: str, year: int | None) -> Result:
    parsed = _nixl_line(line, year)
    if parsed is None or parsed.level not in ("WARNING", "ERROR", "FATAL", "CRITICAL"):
        return None
    fields: dict[str, LogValue] = {
        "level": parsed.level,
        "file": parsed.file,
        "line": parsed.line,
        "message": parsed.message[:300],
    }
    return LogEvent(NIXL_ERROR, parsed.time, fields)


# --------------------------------------------------------------------------- Dynamo

_OLD_DECISION = re.compile(
    r"Remote prefill: (?P<remote>True|False) \(prefill length: (?P<abs>\d+)/(?P<prompt>\d+), "
    r"prefill queue size: (?P<q>\d+)/(?P<qmax>\d+)\)"
)
_KV_PAIR = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")
_DECISION_INT_FIELDS: Final = (
    "worker_id", "dp_rank", "prompt_tokens", "net_new_tokens", "overlap_tokens", "cached_tokens",
    "potential_decode_blocks",
)  # fmt: skip


def _bool(text: object) -> bool | None:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip('"').lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return None


def _decision_fields(raw: dict[str, object], line: str) -> dict[str, LogValue] | MalformedLine:
    fields: dict[str, LogValue] = {}
    for name in _DECISION_INT_FIELDS:
        if name in raw:
            value = _number(str(raw[name]).strip('"'))
            if value is None:
                return MalformedLine(DYNAMO_DISAGG_DECISION, f"{name} is not a number", line)
            fields[name] = int(value)
    bypass = _bool(raw.get("bypass"))
    if bypass is None:
        return MalformedLine(DYNAMO_DISAGG_DECISION, "no bypass=true|false", line)
    fields["bypass"] = bypass
    fields["remote_prefill"] = not bypass
    gate = raw.get("decode_gate_decision")
    if gate is not None:
        fields["decode_gate_decision"] = str(gate).strip('"')
    return fields


def _dynamo_json(line: str) -> tuple[dict[str, object], float | None] | MalformedLine | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    flat: dict[str, object] = {}
    for key, value in record.items():
        if isinstance(value, dict):  # some layouts nest span/fields objects
            flat.update(value)
        else:
            flat[key] = value
    time = _iso_time(str(flat["time"])) if "time" in flat else None
    return flat, time


def _dynamo_decision(line: str, year: int | None) -> Result:
    stripped = line.lstrip()
    if stripped.startswith("{"):
        parsed = _dynamo_json(stripped)
        if parsed is None:
            return MalformedLine(DYNAMO_DISAGG_DECISION, "invalid JSON", line)
        if isinstance(parsed, MalformedLine):
            return parsed
        flat, time = parsed
        fields = _decision_fields(flat, line)
        return fields if isinstance(fields, MalformedLine) else LogEvent(DYNAMO_DISAGG_DECISION, time, fields)
    m = _DYNAMO_TEXT.match(line)
    time = _iso_time(m["time"]) if m else None
    _, _, tail = line.partition("Conditional disagg decision")
    pairs = {k: v for k, v in _KV_PAIR.findall(tail)}
    fields = _decision_fields(dict(pairs), line)
    return fields if isinstance(fields, MalformedLine) else LogEvent(DYNAMO_DISAGG_DECISION, time, fields)


def _dynamo_old_decision(line: str, year: int | None) -> Result:
    m = _OLD_DECISION.search(line)
    if m is None:
        return MalformedLine(DYNAMO_DISAGG_DECISION, "unexpected 'Remote prefill:' wording", line)
    text = _DYNAMO_TEXT.match(line)
    remote = m["remote"] == "True"
    fields: dict[str, LogValue] = {
        "remote_prefill": remote,
        "bypass": not remote,
        "net_new_tokens": int(m["abs"]),
        "prompt_tokens": int(m["prompt"]),
        "prefill_queue_size": int(m["q"]),
        "prefill_queue_max": int(m["qmax"]),
    }
    return LogEvent(DYNAMO_DISAGG_DECISION, _iso_time(text["time"]) if text else None, fields)


def _dynamo_prefill_ok(line: str, year: int | None) -> Result:
    stripped = line.lstrip()
    time: float | None = None
    if stripped.startswith("{"):
        parsed = _dynamo_json(stripped)
        if isinstance(parsed, tuple):
            time = parsed[1]
    else:
        m = _DYNAMO_TEXT.match(line)
        time = _iso_time(m["time"]) if m else None
    return LogEvent(DYNAMO_REMOTE_PREFILL_SUCCEEDED, time, {})


# --------------------------------------------------------------------------- dispatch

Handler: TypeAlias = Callable[[str, int | None], Result]

# (needle, handler): the first needle found in the line picks the parser. Ordered so the
# frequent periodic lines are tested first.
_TRIGGERS: Final[tuple[tuple[str, Handler], ...]] = (
    ("Avg prompt throughput", _engine_stats),
    ("KV Transfer metrics:", _kv_transfer_metrics),
    ("NIXL transfer failure:", _nixl_failure),
    ("Releasing expired KV blocks", _kv_expired),
    ("Potentially invalid KV blocks", _kv_invalid_read),
    ("engine ID mismatch", _engine_id_mismatch),
    ("Handshake failed", _handshake_failed),
    ("Selected backend:", _nixl_selected),
    ("was instantiated", _nixl_instantiated),
    ("Initialized NIXL agent", _nixl_agent_init),
    ("Loaded plugin", _nixl_loaded),
    ("NIXL version:", _nixl_version),
    ("backend bound to", _nixl_bound),
    ("Telemetry enabled, using buffer path", _nixl_telemetry_on),
    ("NIXL telemetry is disabled", _nixl_telemetry_off),
    ("Conditional disagg decision", _dynamo_decision),
    ("Remote prefill:", _dynamo_old_decision),
    ("Prefill succeeded, using disaggregated params", _dynamo_prefill_ok),
)


def parse_line(line: str, year: int | None = None) -> Result:
    """One line (without its newline) -> a LogEvent, a MalformedLine, or None (not ours)."""
    for needle, handler in _TRIGGERS:
        if needle in line:
            return handler(line, year)
    # NIXL warnings and errors: Abseil `W0421 ...`/`E0421 ...` and Python `... NIXL ERROR ...`.
    first = line[:1]
    if first in ("W", "E", "F") and (line[1:2].isdigit() or line[1:2] == " ") and "] " in line:
        return _nixl_problem(line, year)
    if first == "2" and (" NIXL WARNING" in line or " NIXL ERROR" in line or " NIXL CRITICAL" in line):
        return _nixl_problem(line, year)
    return None


def parse_lines(lines: Iterable[str], year: int | None = None, source: str = "") -> LogParseResult:
    events: list[LogEvent] = []
    malformed: Counter[str] = Counter()
    count = 0
    for count, line in enumerate(lines, 1):  # noqa: B007 - count is the total afterwards
        result = parse_line(line, year)
        if result is None:
            continue
        if isinstance(result, MalformedLine):
            malformed[result.kind] += 1
            continue
        if source:
            result = LogEvent(result.kind, result.time, result.fields, source)
        events.append(result)
    return LogParseResult(tuple(events), count, dict(malformed))


def nixl_backend(events: Iterable[LogEvent]) -> str | None:
    """The KV-transfer backend the logs name: the last selected one, else the last instantiated."""
    selected: str | None = None
    instantiated: str | None = None
    for event in events:
        backend = event.fields.get("backend")
        if not isinstance(backend, str):
            continue
        if event.kind == NIXL_BACKEND_SELECTED:
            selected = backend
        elif event.kind in (NIXL_BACKEND_INSTANTIATED, NIXL_BACKEND_BOUND, NIXL_PLUGIN_LOADED):
            instantiated = backend
    return selected or instantiated
