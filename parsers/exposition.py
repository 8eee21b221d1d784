"""Prometheus text (0.0.4) and OpenMetrics (1.0) exposition parser.

`parse_exposition` turns one scrape body into an `Exposition`: families named exactly as
`prometheus_client.parser.text_string_to_metric_families` (text) or
`prometheus_client.openmetrics.parser.text_string_to_metric_families` (OpenMetrics) names them,
every raw sample, and histogram series grouped into cumulative buckets.

Unlike prometheus_client, a malformed line never aborts the scrape: it becomes a `ParseIssue`
(line number, reason, text), is counted and skipped, and every other line is kept. Only a body that
is not text at all (gzip, undecodable bytes) raises `ExpositionError`.

How it is fast: one loop over `str.split("\n")` in which a well-formed sample line costs a `find`,
an `rfind`, one `split`, a dict lookup and `float()`: the label block is parsed (two regex passes) only
the first time its exact text is seen and cached with its `le` split (label strings recur across
histogram families and across scrapes of one target); HELP/TYPE lines are cached the same way.
Samples are built, deduplicated and grouped into histograms in that same pass, and the frozen value
objects are built by setting their slots (half the cost of their generated `__init__`). The cyclic
GC is paused during a parse (it allocates and frees nothing cyclic). Every line the fast path does
not take (exemplars, blank padding, anything malformed) goes through a general per-line path that
also produces the precise error reasons.
"""

from __future__ import annotations

import gc
import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from itertools import repeat
from operator import itemgetter
from types import MemberDescriptorType
from typing import Any, cast

from phaselens.model import Exposition, FamilyType, Histogram, Labels, MetricFamily, ParseIssue, Sample
from phaselens.parsers import exposition_template

__all__ = ["MAX_STORED_ISSUES", "ExpositionError", "parse_exposition"]

MAX_STORED_ISSUES = 100
"""Issues kept in `Exposition.issues`; `issue_count` counts all of them."""

MAX_LABEL_VALUE_BYTES = 1024
"""A label value (or metric name) longer than this makes its line malformed (docs/hardening.md):
no engine needs more, and one 10 MB `model_name` cost a 1.84 GB peak and was re-exported."""
MAX_LABEL_SET_BYTES = 16 * 1024
"""A whole `{...}` label block longer than this makes its line malformed (checked before any regex)."""
MAX_CACHE_BYTES = 32 * 1024 * 1024
"""Each parse cache is emptied when the text it holds passes this (estimated: keys and values)."""

_MAX_ISSUE_TEXT = 200
_CACHE_LIMIT = 200_000
_MAX_LINE_CHARS = MAX_LABEL_SET_BYTES + 2 * MAX_LABEL_VALUE_BYTES
"""Longer lines are malformed without being matched by a regex (its backtracking stack grows with the line)."""
_ENTRY_OVERHEAD = 200
"""Bytes a cache entry costs beyond its text (dict slot, tuples, float)."""


class ExpositionError(ValueError):
    """The payload is not exposition text at all (compressed, binary, or not UTF-8)."""


# --------------------------------------------------------------------------- lexical rules

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_NAME_RE = re.compile(_NAME)
_QUOTED = r'"(?:[^"\\]|\\.)*"'
# The exact form every client writes (`a="x",b="y"`, optional trailing comma): validated in one pass,
# then split into pairs by `findall`.
_STRICT_LABELS_RE = re.compile(rf"(?:{_NAME}={_QUOTED},)*(?:{_NAME}={_QUOTED})?,?", re.S)
_STRICT_PAIR_RE = re.compile(rf'({_NAME})="((?:[^"\\]|\\.)*)"', re.S)
# Hand-written input may put blanks around names, `=` and commas (prometheus_client accepts them).
_LOOSE_PAIR_RE = re.compile(rf'\s*({_NAME})\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)', re.S)
_ESCAPE_RE = re.compile(r'\\[\\n"]')
_TEXT_HELP_ESCAPE_RE = re.compile(r"\\[\\n]")
_ESCAPES = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}
# General path: name, quote-aware label block, rest (value, timestamp, maybe an exemplar).
_SAMPLE_RE = re.compile(r'([^\s{]*)\s*(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?(.*)', re.S)
# prometheus_client splits comment lines on ASCII blanks only (a help text may start with U+00A0).
_COMMENT_SPLIT_RE = re.compile(r"[ \t\r\n\f\v]+")
_WHITESPACE = " \t\r\n\f\v"

_TYPE_ALIASES: dict[str, FamilyType] = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "gaugehistogram": "gaugehistogram",
    "summary": "summary",
    "info": "info",
    "stateset": "stateset",
    "unknown": "unknown",
    "untyped": "unknown",
}
# Sample-name suffixes that belong to a family, per format, exactly as prometheus_client groups them.
_TEXT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "summary": ("_count", "_sum", ""),
    "histogram": ("_count", "_sum", "_bucket"),
}
_OM_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "histogram": ("_count", "_sum", "_bucket", "_created"),
    "gaugehistogram": ("_gcount", "_gsum", "_bucket"),
    "info": ("_info",),
}

LabelInfo = tuple[Labels, Labels | None, float | None]
"""(labels, labels without `le` or None when there is no `le`, the `le` bound or None if not numeric)."""
_NO_LABELS: LabelInfo = ((), None, None)

_Group = list[Any]
"""One histogram series being grouped: [[(bound, cumulative count), ...], sum, count]."""

RawSample = tuple[str, LabelInfo, float, float | None, int]
"""(sample name, label info, value, timestamp in seconds, line number)."""

# Caches of pure functions of their key (label text with its closing `}` -> LabelInfo; labels without le,
# interned so that one `is` test tells consecutive buckets of one series apart from the next series).
_LABEL_CACHE: dict[str, LabelInfo] = {}
_VALID_NAMES: set[str] = set()
_ALLOWED_CACHE: dict[tuple[bool, str, str], frozenset[str]] = {}
# comment line -> (keyword, name, argument); per format, as help unescaping differs
_TEXT_COMMENT_CACHE: dict[str, tuple[str, str, str]] = {}
_OM_COMMENT_CACHE: dict[str, tuple[str, str, str]] = {}
_GROUP_INTERN: dict[Labels, Labels] = {}
_cache_bytes: dict[int, int] = {}
_valid_names_bytes = 0
"""id(cache) -> estimated bytes it holds (only this module's caches)."""


def _remember(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """`cache[key] = value`, emptying the cache first when its count or its bytes would pass the limit
    (a payload that churns distinct or long label sets cannot grow memory without bound)."""
    held = _cache_bytes.get(id(cache), 0) + size + _ENTRY_OVERHEAD
    if len(cache) >= _CACHE_LIMIT or held > MAX_CACHE_BYTES:
        cache.clear()
        held = size + _ENTRY_OVERHEAD
    _cache_bytes[id(cache)] = held
    cache[key] = value


def _labels_size(labels: Labels) -> int:
    return sum(len(k) + len(v) for k, v in labels)


def cache_bytes() -> dict[str, int]:
    """Estimated bytes held by each parse cache (for tests and benchmarks)."""
    caches = {"labels": _LABEL_CACHE, "groups": _GROUP_INTERN, "text_comments": _TEXT_COMMENT_CACHE,
              "openmetrics_comments": _OM_COMMENT_CACHE}
    held = {name: _cache_bytes.get(id(cache), 0) if cache else 0 for name, cache in caches.items()}
    return held | {"names": _valid_names_bytes if _VALID_NAMES else 0}


# --------------------------------------------------------------------------- value construction


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...] | None:
    """Setters of a frozen slots dataclass's fields, or None if setting them one by one would not be
    exactly what its constructor does (other fields, a `__post_init__`)."""
    if tuple(f.name for f in fields(cls)) != names or hasattr(cls, "__post_init__"):
        return None
    descriptors = [cls.__dict__.get(name) for name in names]
    if not all(isinstance(d, MemberDescriptorType) for d in descriptors):
        return None
    return tuple(d.__set__ for d in descriptors)  # type: ignore[union-attr]


# The generated __init__ of a frozen dataclass calls object.__setattr__ once per field: half the
# parse time went there. These build the same objects (equal, same class) by setting the slots.
_SAMPLE_SETTERS = _slot_setters(Sample, ("name", "labels", "value", "timestamp"))
_HISTOGRAM_SETTERS = _slot_setters(Histogram, ("name", "labels", "buckets", "sum", "count"))


_FAMILY_SETTERS = _slot_setters(MetricFamily, ("name", "type", "help", "unit", "samples", "histograms"))


def _unused_setter(obj: Any, value: Any) -> None:
    raise AssertionError("fast constructor used without its slot setters")


def _setters(found: tuple[Callable[[Any, Any], None], ...] | None, count: int) -> tuple[Callable[..., None], ...]:
    return found if found is not None else (_unused_setter,) * count


# Setters are bound as default arguments: a local read per field instead of a global lookup.
def _new_sample(
    name: str,
    labels: Labels,
    value: float,
    timestamp: float | None,
    _new: Callable[[type], Any] = object.__new__,
    _setters: tuple[Callable[..., None], ...] = _setters(_SAMPLE_SETTERS, 4),
) -> Sample:
    sample = _new(Sample)
    set_name, set_labels, set_value, set_timestamp = _setters
    set_name(sample, name)
    set_labels(sample, labels)
    set_value(sample, value)
    set_timestamp(sample, timestamp)
    return sample


def _new_histogram(
    name: str,
    labels: Labels,
    buckets: tuple[tuple[float, float], ...],
    sum_: float | None,
    count: float | None,
    _new: Callable[[type], Any] = object.__new__,
    _setters: tuple[Callable[..., None], ...] = _setters(_HISTOGRAM_SETTERS, 5),
) -> Histogram:
    histogram = _new(Histogram)
    set_name, set_labels, set_buckets, set_sum, set_count = _setters
    set_name(histogram, name)
    set_labels(histogram, labels)
    set_buckets(histogram, buckets)
    set_sum(histogram, sum_)
    set_count(histogram, count)
    return histogram


def _new_family(
    name: str,
    type_: FamilyType,
    help_: str,
    unit: str,
    samples: tuple[Sample, ...],
    histograms: tuple[Histogram, ...],
    _new: Callable[[type], Any] = object.__new__,
    _setters: tuple[Callable[..., None], ...] = _setters(_FAMILY_SETTERS, 6),
) -> MetricFamily:
    family = _new(MetricFamily)
    set_name, set_type, set_help, set_unit, set_samples, set_histograms = _setters
    set_name(family, name)
    set_type(family, type_)
    set_help(family, help_)
    set_unit(family, unit)
    set_samples(family, samples)
    set_histograms(family, histograms)
    return family


make_sample: Callable[[str, Labels, float, float | None], Sample] = (
    _new_sample if _SAMPLE_SETTERS is not None else Sample
)
make_histogram: Callable[..., Histogram] = _new_histogram if _HISTOGRAM_SETTERS is not None else Histogram
make_family: Callable[..., MetricFamily] = _new_family if _FAMILY_SETTERS is not None else MetricFamily


# --------------------------------------------------------------------------- public entry point


def parse_exposition(payload: str | bytes, content_type: str | None = None) -> Exposition:
    """Parse one `/metrics` body; OpenMetrics when `content_type` says so or it ends in `# EOF`.

    Raises `ExpositionError` only when the body is not text. Every malformed line is reported in
    `issues` (the first `MAX_STORED_ISSUES`) and `issue_count` (all), and skipped.
    A body whose last line has no line feed was cut mid-line: that line is reported, not parsed
    (the format requires a final line feed, and a cut number would otherwise parse as a wrong value).
    """
    text = _decode(payload, content_type)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    openmetrics = _is_openmetrics(text, content_type)
    cut = text.rfind("\n") + 1
    body, partial = text[:cut], text[cut:]
    if partial and openmetrics and partial.strip() == "# EOF":
        body, partial = text + "\n", ""
    lines = body.split("\n")
    lines.pop()  # the empty string after the last line feed
    state = _ParseState(openmetrics, lines)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the parse allocates ~3 objects per sample and frees none: cycle scans are waste
    try:
        if not partial:
            reused = exposition_template.reuse(lines, openmetrics)
            if reused is not None:
                return reused
        _parse_lines(lines, state)
        result = state.result()
        if not partial and not state.issue_count and (state.eof_seen or not openmetrics):
            exposition_template.remember(lines, openmetrics, result, _label_info_of, len(body))
    finally:
        if gc_was_enabled:
            gc.enable()
    line_count = len(lines)
    if partial:
        state.issue(line_count + 1, "truncated: last line has no line feed (body cut mid-line)", partial)
    if openmetrics and not state.eof_seen and text.strip():
        state.issue(line_count + 1 + bool(partial), "truncated: OpenMetrics body has no '# EOF'", "")
    if state.issue_count != result.issue_count:
        result = replace(result, issues=tuple(state.issues), issue_count=state.issue_count)
    return result


def _decode(payload: str | bytes, content_type: str | None) -> str:
    if isinstance(payload, bytes | bytearray | memoryview):
        raw = bytes(payload)
        if raw[:2] == b"\x1f\x8b":
            raise ExpositionError("payload is gzip-compressed; decompress it before parsing")
        if content_type and "protobuf" in content_type.lower():
            raise ExpositionError(f"payload is protobuf ({content_type}), not exposition text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExpositionError(f"payload is not UTF-8 text: {exc}") from None
    elif isinstance(payload, str):
        text = payload
    else:
        raise ExpositionError(f"payload must be str or bytes, not {type(payload).__name__}")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def _is_openmetrics(text: str, content_type: str | None) -> bool:
    if content_type and "application/openmetrics-text" in content_type.lower():
        return True
    tail = text[-64:].rstrip()
    return tail.endswith("# EOF") and (len(tail) == 5 or tail[-6] == "\n")


# --------------------------------------------------------------------------- fast loop


def _parse_lines(lines: list[str], state: _ParseState) -> None:
    """Parse every line: each long run of sample lines between two comment lines as a block
    (`_fast_block`), everything else (comments, short families) line by line (`_parse_span`)."""
    end = len(lines)
    pos = 0  # lines before `pos` are parsed
    previous = -1  # the last comment line seen
    for mark in [index for index, line in enumerate(lines) if line[:1] == "#"] + [end]:
        lo = previous + 1  # sample lines [lo, mark) lie between two comment lines
        previous = mark
        if mark - lo < _BLOCK_MIN:
            continue
        if lo > pos and _parse_span(lines, pos, lo, state):
            return  # OpenMetrics `# EOF`
        if not _fast_block(lines, lo, mark, state):
            _parse_span(lines, lo, mark, state)
        pos = mark
    if pos < end:
        _parse_span(lines, pos, end, state)


_BLOCK_MIN = 4
"""Shorter runs of sample lines are parsed line by line (the block path's set-up costs more)."""


def _fast_block(lines: list[str], lo: int, hi: int, state: _ParseState) -> bool:
    """Parse `lines[lo:hi]` (sample lines of the current family) with one C-level pass per step
    (`map`/`zip` over the whole block instead of bytecode per line), or return False having changed
    nothing when any line is not the plain `name{labels} value` form of the current family, is a
    duplicate, or has a label set not seen before that does not parse."""
    allowed = state.allowed
    occ = state.current
    if occ is None:
        return False
    count = hi - lo
    heads, _, values = zip(*map(_rpartition, lines[lo:hi], repeat(" ", count)), strict=True)
    names, braces, label_keys = zip(*map(_partition, heads, repeat("{", count)), strict=True)
    if not allowed.issuperset(names):
        return False  # another family's sample, an invalid name, a timestamp, blanks: line by line
    if braces.count("{") + label_keys.count("") != count:
        return False  # `name{ 1`: a brace with nothing after it
    cache = _LABEL_CACHE
    found: list[LabelInfo | None] = list(map(cache.get, label_keys))
    if None in found:
        for index, info in enumerate(found):
            if info is None:
                key = label_keys[index]
                if not key.endswith("}"):
                    return False
                parsed = _label_info(key[:-1])
                if isinstance(parsed, str):
                    return False
                _remember(cache, key, parsed, 2 * len(key))
                found[index] = parsed
    infos = cast("list[LabelInfo]", found)  # every None was replaced just above
    try:
        floats = list(map(float, values))
    except ValueError:
        return False
    if "_" in "".join(values):
        return False  # float() accepts `1_000`, the format does not
    keys = list(zip(names, map(_first, infos), strict=True))
    series = occ.series
    before = len(series)
    if before and not series.keys().isdisjoint(keys):
        return False
    samples = _new_samples(names, infos, floats, count)
    series.update(zip(keys, samples, strict=True))
    if len(series) != before + count:  # a duplicate inside the block: undo, report line by line
        for key in keys:
            series.pop(key, None)
        return False
    bucket_name = state.bucket_name
    if bucket_name:
        sum_count_names = state.sum_count_names
        last_group: Labels | None = None
        bucket_append: Callable[[tuple[float, float]], None] = _no_bucket
        for index, (name, info, value) in enumerate(zip(names, infos, floats, strict=True)):
            if name == bucket_name:
                bound = info[2]
                if bound is None:
                    line_no = lo + 1 + index
                    state.issue(line_no, _BAD_LE, lines[line_no - 1])
                elif info[1] is last_group:
                    bucket_append((bound, value))
                else:
                    last_group = info[1]
                    bucket_append = state.buckets_of(last_group).append
                    bucket_append((bound, value))
            elif name in sum_count_names:
                state.set_sum_or_count(name, info[0], value)
    return True


def _new_samples(names: tuple[str, ...], infos: list[LabelInfo], values: list[float], count: int) -> list[Sample]:
    """Samples for parallel columns, built by C-level `map`s (no bytecode per sample)."""
    if _SAMPLE_SETTERS is None:
        return [Sample(name, info[0], value, None) for name, info, value in zip(names, infos, values, strict=True)]
    set_name, set_labels, set_value, set_timestamp = _SAMPLE_SETTERS
    samples = list(map(object.__new__, repeat(Sample, count)))
    _consume(map(set_name, samples, names))
    _consume(map(set_labels, samples, map(_first, infos)))
    _consume(map(set_value, samples, values))
    _consume(map(set_timestamp, samples, repeat(None, count)))
    return samples


_rpartition = str.rpartition
_partition = str.partition
_first = itemgetter(0)


def _consume(iterator: Iterable[object]) -> None:
    deque(iterator, maxlen=0)


def _parse_span(lines: list[str], lo: int, hi: int, state: _ParseState) -> bool:
    """Parse `lines[lo:hi]` line by line (True if it ended at an OpenMetrics `# EOF`); well-formed
    sample lines never leave this loop (no call per line)."""
    openmetrics = state.openmetrics
    ts_scale = 1.0 if openmetrics else 0.001  # OpenMetrics timestamps are seconds, text ones ms
    label_cache = _LABEL_CACHE
    valid_names = _VALID_NAMES
    general = _general_line
    no_labels = _NO_LABELS
    new = object.__new__
    set_name, set_labels, set_value, set_timestamp = _setters(_SAMPLE_SETTERS, 4)
    inline_samples = _SAMPLE_SETTERS is not None
    allowed, keep, bucket_name, sum_count_names = state.fast_context()
    last_group: Labels | None = None
    bucket_append: Callable[[tuple[float, float]], None] = _no_bucket
    # A slice, not islice: islice walks from the list start, quadratic over many short spans.
    for line_no, line in enumerate(lines[lo:hi], lo + 1):
        if not line:
            continue
        if line[0] == "#":
            if openmetrics and line.rstrip() == "# EOF":
                state.eof_seen = True
                _after_eof(lines, line_no, state)
                return True
            _comment(line, line_no, state)
            allowed, keep, bucket_name, sum_count_names = state.fast_context()
            last_group = None
            continue
        brace = line.find("{")
        if brace < 0:
            parts = line.split()
            if not 1 < len(parts) < 4:
                general(line, line_no, state)  # reports it (or skips a blank line)
                allowed, keep, bucket_name, sum_count_names = state.fast_context()
                last_group = None
                continue
            name = parts[0]
            value_text = parts[1]
            ts_text = parts[2] if len(parts) == 3 else None
            info = no_labels
        else:
            # The last `}` closes the label set unless an exemplar follows; then the label text
            # holds an unquoted `}` and fails below, and the general path handles the line.
            close = line.rfind("}")
            parts = line[close + 1 :].split()
            if close < brace or not 0 < len(parts) < 3:
                general(line, line_no, state)
                allowed, keep, bucket_name, sum_count_names = state.fast_context()
                last_group = None
                continue
            name = line[:brace]
            label_key = line[brace + 1 : close + 1]  # the label text and its `}` (the cache key)
            info = label_cache.get(label_key)  # type: ignore[assignment]
            if info is None:
                parsed = _label_info(label_key[:-1])
                if isinstance(parsed, str):
                    general(line, line_no, state)
                    allowed, keep, bucket_name, sum_count_names = state.fast_context()
                    last_group = None
                    continue
                _remember(label_cache, label_key, parsed, 2 * len(label_key))
                info = parsed
            value_text = parts[0]
            ts_text = parts[1] if len(parts) == 2 else None
        if name not in valid_names and not _remember_valid_name(name):
            general(line, line_no, state)
            allowed, keep, bucket_name, sum_count_names = state.fast_context()
            last_group = None
            continue
        try:
            value = float(value_text)
            timestamp = None if ts_text is None else float(ts_text) * ts_scale
        except ValueError:
            timestamp = value = math.nan
            value_text = "_"  # reported just below
        if "_" in value_text or (ts_text is not None and ("_" in ts_text or not -math.inf < timestamp < math.inf)):  # type: ignore[operator]
            general(line, line_no, state)  # float() accepted `1_000` or an inf/nan timestamp, or failed
            allowed, keep, bucket_name, sum_count_names = state.fast_context()
            last_group = None
            continue
        if name not in allowed:
            state.add_sample(name, info, value, timestamp, line_no)
            allowed, keep, bucket_name, sum_count_names = state.fast_context()
            last_group = None
            continue
        # The same steps as _ParseState.add_sample, inlined: this runs once per sample.
        labels = info[0]
        if inline_samples:
            sample = new(Sample)
            set_name(sample, name)
            set_labels(sample, labels)
            set_value(sample, value)
            set_timestamp(sample, timestamp)
        else:
            sample = Sample(name, labels, value, timestamp)
        if keep((name, labels), sample) is not sample:
            state.duplicate(sample, line_no)
        if name == bucket_name:
            bound = info[2]
            if bound is None:
                state.issue(line_no, _BAD_LE, line)
            elif info[1] is last_group:  # the next bucket of the same series
                bucket_append((bound, value))
            else:
                last_group = info[1]
                bucket_append = state.buckets_of(last_group).append
                bucket_append((bound, value))
        elif name in sum_count_names:
            state.set_sum_or_count(name, labels, value)
    return False


def _after_eof(lines: list[str], eof_line_no: int, state: _ParseState) -> None:
    for line_no in range(eof_line_no + 1, len(lines) + 1):
        text = lines[line_no - 1]
        if text.strip():
            state.issue(line_no, "line after '# EOF'", text)


def _remember_valid_name(name: str) -> bool:
    if _NAME_RE.fullmatch(name) is None:
        return False
    if len(name) > MAX_LABEL_VALUE_BYTES:
        return False
    global _valid_names_bytes
    _valid_names_bytes += len(name) + _ENTRY_OVERHEAD
    if len(_VALID_NAMES) >= _CACHE_LIMIT or _valid_names_bytes > MAX_CACHE_BYTES:
        _VALID_NAMES.clear()
        _valid_names_bytes = len(name) + _ENTRY_OVERHEAD
    _VALID_NAMES.add(name)
    return True


# --------------------------------------------------------------------------- general line path


def _general_line(line: str, line_no: int, state: _ParseState) -> None:
    """Any line the fast pattern did not take: comment, blank-padded, exemplar, or malformed."""
    if len(line) > _MAX_LINE_CHARS and line.lstrip()[:1] != "#":
        state.issue(line_no, f"sample line longer than {_MAX_LINE_CHARS} bytes (a label value over "
                    f"{MAX_LABEL_VALUE_BYTES} bytes?)", line)
        return
    line = line.strip()
    if not line:
        return
    if line[0] == "#":
        if state.openmetrics and line == "# EOF":
            state.eof_seen = True
        else:
            _comment(line, line_no, state)
        return
    parsed = _parse_sample_line(line, state.openmetrics)
    if isinstance(parsed, str):
        state.issue(line_no, parsed, line)
        return
    name, info, value, timestamp = parsed
    state.add_sample(name, info, value, timestamp, line_no)


def _parse_sample_line(line: str, openmetrics: bool) -> tuple[str, LabelInfo, float, float | None] | str:
    """(name, label info, value, timestamp) of one sample line, or why it is malformed."""
    match = _SAMPLE_RE.match(line)
    assert match is not None  # the pattern matches any string
    name, label_text, rest = match.groups()
    if rest.lstrip().startswith("{"):
        if re.sub(r"\\.", "", rest).count('"') % 2:
            return "label value has no closing quote"
        return "unterminated label set: no closing '}'"
    if not name:
        return "line without a metric name"
    if len(name) > MAX_LABEL_VALUE_BYTES:
        return f"metric name longer than {MAX_LABEL_VALUE_BYTES} bytes"
    if _NAME_RE.fullmatch(name) is None:
        return f"invalid metric name {name[:64]!r}"
    info = _NO_LABELS
    if label_text:
        parsed = _LABEL_CACHE.get(label_text + "}") or _label_info(label_text)
        if isinstance(parsed, str):
            return parsed
        info = parsed
    hash_at = rest.find("#")
    if hash_at >= 0:
        rest = rest[:hash_at]  # exemplar (` # {trace_id="..."} 1.0`): ignored
    tokens = rest.split()
    if not tokens:
        return "missing value"
    if len(tokens) > 2:
        return "unexpected text after the timestamp"
    value = _number(tokens[0])
    if value is None:
        return f"value is not a number: {tokens[0]!r}"
    timestamp = None
    if len(tokens) == 2:
        timestamp = _number(tokens[1])
        if timestamp is None or math.isnan(timestamp) or math.isinf(timestamp):
            return f"timestamp is not a number: {tokens[1]!r}"
        if not openmetrics:
            timestamp *= 0.001
    return name, info, value, timestamp


def _number(text: str) -> float | None:
    if "_" in text:  # float() accepts 1_000, the format does not
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _comment(line: str, line_no: int, state: _ParseState) -> None:
    """A line starting with `#`: HELP, TYPE and UNIT drive the family state machine."""
    cache = _OM_COMMENT_CACHE if state.openmetrics else _TEXT_COMMENT_CACHE
    meta = cache.get(line)
    if meta is None:
        parsed = _parse_comment(line, state.openmetrics)
        if parsed is None:
            return  # a free comment (e.g. `# scrape_time ...`): not cached, it changes every scrape
        found, problem = parsed
        if problem:
            state.issue(line_no, problem, line)
        if found is None:
            return
        if not problem and len(line) <= MAX_LABEL_SET_BYTES:  # a huge HELP is used, never cached
            _remember(cache, line, found, 2 * len(line))
        meta = found
    keyword, name, arg = meta
    current = state.current
    occ = current if current is not None and current.name == name else None
    if keyword == "HELP":
        if occ is not None:
            occ.help = arg
        else:
            state.start(name, None, arg)
    elif keyword == "TYPE":
        state.set_type(occ if occ is not None else state.start(name, None), arg)
    elif state.openmetrics:  # UNIT starts a family in OpenMetrics; the text parser ignores it
        (occ if occ is not None else state.start(name, None)).unit = arg
    elif occ is not None:
        occ.unit = arg


def _parse_comment(line: str, openmetrics: bool) -> tuple[tuple[str, str, str] | None, str] | None:
    """((keyword, metric name, help / type / unit), problem) for HELP/TYPE/UNIT; None otherwise.

    A TYPE naming an unknown type comes back as type "unknown" with the problem set."""
    stripped = line.strip()
    if "  " in stripped or "\t" in stripped or "\x0b" in stripped or "\x0c" in stripped:
        parts = _COMMENT_SPLIT_RE.split(stripped, 3)
    else:  # single spaces (what every client writes): the same split, five times faster
        parts = stripped.split(" ", 3)
    if parts[0] != "#" or len(parts) < 2 or parts[1] not in ("HELP", "TYPE", "UNIT"):
        return None
    keyword = parts[1]
    if len(parts) < 3:
        return None, f"# {keyword} without a metric name"
    name = parts[2]
    if name not in _VALID_NAMES and not _remember_valid_name(name):
        return None, f"# {keyword} with an invalid metric name {name[:64]!r}"
    arg = parts[3] if len(parts) > 3 else ""
    if keyword == "HELP":
        return (keyword, name, _unescape_help(arg, openmetrics)), ""
    arg = arg.strip()
    if keyword == "TYPE" and (arg not in _TYPE_ALIASES or (openmetrics and arg == "untyped")):
        return (keyword, name, "unknown"), f"unknown metric type {arg!r}"
    return (keyword, name, arg), ""


def _unescape_help(text: str, openmetrics: bool) -> str:
    if "\\" not in text:
        return text
    pattern = _ESCAPE_RE if openmetrics else _TEXT_HELP_ESCAPE_RE
    return pattern.sub(_unescape_match, text)


def _unescape_match(match: re.Match[str]) -> str:
    return _ESCAPES[match.group(0)]


# --------------------------------------------------------------------------- labels


def _label_info(text: str) -> LabelInfo | str:
    """`a="x",le="0.5"` -> (sorted labels, labels without le, 0.5), or a string saying what is wrong."""
    if len(text) > MAX_LABEL_SET_BYTES:
        return _TOO_LONG_SET
    if _STRICT_LABELS_RE.fullmatch(text) is not None:
        pairs = _STRICT_PAIR_RE.findall(text)
    else:
        pairs = []
        pos, end = 0, len(text)
        while pos < end:
            match = _LOOSE_PAIR_RE.match(text, pos)
            if match is None:
                if text[pos:].strip() in ("", ","):
                    break
                return _label_error(text[pos:])
            pairs.append((match.group(1), match.group(2)))
            pos = match.end()
    if len(pairs) > 1 and len({name for name, _ in pairs}) != len(pairs):
        return "duplicate label name"
    for name, value in pairs:
        # characters <= UTF-8 bytes <= 4 x characters: encode only when it can matter
        if len(value) > MAX_LABEL_VALUE_BYTES or (
            len(value) > MAX_LABEL_VALUE_BYTES // 4 and len(value.encode()) > MAX_LABEL_VALUE_BYTES
        ):
            return f"label {name[:64]!r} value longer than {MAX_LABEL_VALUE_BYTES} bytes"
    if "\\" in text:
        pairs = [(k, _ESCAPE_RE.sub(_unescape_match, v) if "\\" in v else v) for k, v in pairs]
    labels: Labels = tuple(sorted(pairs))
    if "le=" not in text and "le =" not in text:
        return labels, None, None
    group: Labels | None = None
    bound: float | None = None
    for index, (key, value) in enumerate(labels):
        if key == "le":
            without = labels[:index] + labels[index + 1 :]
            group = _GROUP_INTERN.get(without)
            if group is None:
                _remember(_GROUP_INTERN, without, without, _labels_size(without))
                group = without
            bound = _number(value.strip())
            if bound is not None and math.isnan(bound):
                bound = None
            break
    return labels, group, bound


_TOO_LONG_SET = f"label set longer than {MAX_LABEL_SET_BYTES} bytes"


def _label_info_of(key: str) -> LabelInfo | str:
    """`_label_info` of a label block with its closing `}` (the cache key), cached."""
    return _LABEL_CACHE.get(key) or _label_info(key[:-1])


def _label_error(fragment: str) -> str:
    """A precise reason for the first label that does not parse."""
    stripped = fragment.strip().lstrip(",").strip()
    name, eq, value = stripped.partition("=")
    name = name.strip()
    if stripped.startswith('"'):
        return "quoted label names are not supported"
    if not eq:
        return f"label {name!r} has no '='"
    if not name or _NAME_RE.fullmatch(name) is None:
        return f"invalid label name {name!r}"
    value = value.strip()
    if not value.startswith('"'):
        return f"label {name!r} value is not quoted"
    if re.match(_QUOTED, value) is None:
        return f"label {name!r} value has no closing quote"
    return 'invalid label syntax (expected name="value" pairs separated by commas)'


# --------------------------------------------------------------------------- families


_BAD_LE = "histogram bucket without a numeric 'le' label"
_NO_NAMES: frozenset[str] = frozenset()


class _Occurrence:
    """One run of lines that prometheus_client would yield as one family object.

    Samples land in `series` (deduplicated) as they are parsed; when the family's TYPE said
    histogram before its samples (always, in practice), buckets/sum/count are grouped on the fly."""

    __slots__ = ("grouped", "groups", "help", "last_line", "name", "regroup", "series", "type", "unit")

    def __init__(self, name: str, type_: str | None, help_: str = "") -> None:
        self.name = name
        self.type = type_
        self.help = help_
        self.unit = ""
        self.series: dict[tuple[str, Labels], Sample] = {}
        self.groups: dict[Labels, _Group] = {}
        self.grouped = False  # buckets/sum/count were grouped as they arrived
        self.regroup = False  # grouping must be redone from `series` (a duplicate, a late TYPE)
        self.last_line = 0


@dataclass(slots=True)
class _FamilyAcc:
    """A family being built: occurrences with the same final name are merged into it."""

    name: str
    type: FamilyType
    help: str
    unit: str
    series: dict[tuple[str, Labels], Sample]
    groups: dict[Labels, _Group]  # labels without le -> [[(bound, count), ...], sum, count]
    regroup: bool


class _ParseState:
    """Family state machine mirroring prometheus_client's, so family names match it exactly."""

    def __init__(self, openmetrics: bool, lines: list[str]) -> None:
        self.openmetrics = openmetrics
        self.lines = lines
        self.families: dict[str, _FamilyAcc] = {}
        self.issues: list[ParseIssue] = []
        self.issue_count = 0
        self.duplicated: set[tuple[str, Labels]] = set()
        self.eof_seen = False
        self.current: _Occurrence | None = None
        self.allowed: frozenset[str] = _NO_NAMES
        self.bucket_name = ""
        self.sum_count_names: frozenset[str] = _NO_NAMES

    def issue(self, line_no: int, reason: str, text: str) -> None:
        self.issue_count += 1
        if len(self.issues) < MAX_STORED_ISSUES:
            self.issues.append(ParseIssue(line_no, reason, text[:_MAX_ISSUE_TEXT]))

    def line_text(self, line_no: int) -> str:
        return self.lines[line_no - 1] if 0 < line_no <= len(self.lines) else ""

    def fast_context(
        self,
    ) -> tuple[frozenset[str], Callable[[tuple[str, Labels], Sample], Sample], str, frozenset[str]]:
        """What the inlined sample path needs: names of the current family, its series' setdefault,
        and the sample names it groups as histogram buckets / sums and counts."""
        occ = self.current
        keep = occ.series.setdefault if occ is not None else _no_keep
        return self.allowed, keep, self.bucket_name, self.sum_count_names

    # ---- family boundaries

    def start(self, name: str, type_: str | None, help_: str = "") -> _Occurrence:
        self.finish()
        occ = _Occurrence(name, type_, help_)
        self.current = occ
        self.allowed = frozenset((name,))
        return occ

    def set_type(self, occ: _Occurrence, type_: str) -> None:
        occ.type = type_
        key = (self.openmetrics, occ.name, type_)
        allowed = _ALLOWED_CACHE.get(key)
        if allowed is None:
            table = _OM_SUFFIXES if self.openmetrics else _TEXT_SUFFIXES
            allowed = frozenset([occ.name + suffix for suffix in table.get(type_, ("",))])
            _remember(_ALLOWED_CACHE, key, allowed, 5 * len(occ.name))
        self.allowed = allowed
        if occ.series or occ.grouped:
            occ.regroup = True  # TYPE after samples, or a second TYPE: group at the end instead
        occ.grouped = type_ in ("histogram", "gaugehistogram")
        if occ.grouped:
            base = occ.name
            self.bucket_name = base + "_bucket"
            self.sum_count_names = frozenset((base + "_sum", base + "_gsum", base + "_count", base + "_gcount"))
        else:
            self.bucket_name = ""
            self.sum_count_names = _NO_NAMES

    def add_sample(self, name: str, info: LabelInfo, value: float, timestamp: float | None, line_no: int) -> None:
        """The general path for one sample (`_parse_lines` inlines the same steps)."""
        if name not in self.allowed:
            # Not part of the current family: prometheus_client starts an untyped family for it.
            self.start(name, "unknown" if self.openmetrics else None)
            self.add_sample(name, info, value, timestamp, line_no)
            if not self.openmetrics:
                self.finish()  # the text parser yields it alone and leaves the next line familyless
            return
        occ = self.current
        assert occ is not None  # `allowed` is empty without a current family
        occ.last_line = line_no
        labels = info[0]
        sample = make_sample(name, labels, value, timestamp)
        if occ.series.setdefault((name, labels), sample) is not sample:
            self.duplicate(sample, line_no)
        if name == self.bucket_name:
            if info[2] is None:
                self.issue(line_no, _BAD_LE, self.line_text(line_no))
            else:
                self.buckets_of(info[1]).append((info[2], value))
        elif name in self.sum_count_names:
            self.set_sum_or_count(name, labels, value)

    def duplicate(self, sample: Sample, line_no: int) -> None:
        occ = self.current
        assert occ is not None
        occ.series[(sample.name, sample.labels)] = sample  # both copies are dropped in `result`
        occ.regroup = True  # its bucket was grouped twice
        self.duplicated.add((sample.name, sample.labels))
        reason = "duplicate series: an earlier line has the same name and labels (both are dropped)"
        self.issue(line_no, reason, self.line_text(line_no))

    def buckets_of(self, group: Labels) -> list[tuple[float, float]]:
        assert self.current is not None
        groups = self.current.groups
        entry = groups.get(group)
        if entry is None:
            entry = groups[group] = [[], None, None]
        return entry[0]

    def set_sum_or_count(self, name: str, labels: Labels, value: float) -> None:
        assert self.current is not None
        groups = self.current.groups
        entry = groups.get(labels)
        if entry is None:
            entry = groups[labels] = [[], None, None]
        entry[1 if name.endswith("sum") else 2] = value

    def finish(self) -> None:
        occ = self.current
        if occ is None:
            return
        self.current = None
        self.allowed = _NO_NAMES
        self.bucket_name = ""
        self.sum_count_names = _NO_NAMES
        family_type = _TYPE_ALIASES.get(occ.type or "unknown", "unknown")
        name = occ.name
        series = occ.series
        if family_type == "counter" and not self.openmetrics:
            # prometheus_client's text parser names counter families without `_total` and gives
            # samples of a counter declared without `_total` the `_total` suffix.
            if name.endswith("_total"):
                name = name[:-6]
            else:
                series = {
                    (n + "_total", labels): make_sample(n + "_total", labels, s.value, s.timestamp)
                    for (n, labels), s in series.items()
                }
        is_histogram = family_type == "histogram" or family_type == "gaugehistogram"
        acc = self.families.get(name)
        if acc is None:
            regroup = is_histogram and (occ.regroup or not occ.grouped)
            self.families[name] = _FamilyAcc(name, family_type, occ.help, occ.unit, series, occ.groups, regroup)
            return
        # A second block with the same family name (rare): merge it into the first.
        if acc.type == "unknown":
            acc.type = family_type
        acc.help = acc.help or occ.help
        acc.unit = acc.unit or occ.unit
        acc.regroup = True
        keep = acc.series.setdefault
        for key, sample in series.items():
            if keep(key, sample) is not sample:
                acc.series[key] = sample
                self.duplicated.add(key)
                reason = f"duplicate series: family {name!r} appears twice and repeats this series (both dropped)"
                self.issue(occ.last_line, reason, self.line_text(occ.last_line))

    # ---- output

    def result(self) -> Exposition:
        self.finish()
        families: dict[str, MetricFamily] = {}
        new_histogram = make_histogram
        duplicated = self.duplicated
        for name, acc in self.families.items():
            dropped = _drop_duplicates(acc, duplicated) if duplicated else set()
            samples = tuple(acc.series.values())
            histograms: tuple[Histogram, ...] = ()
            if acc.type == "histogram" or acc.type == "gaugehistogram":
                groups = _group_from_samples(name, samples) if acc.regroup or dropped else acc.groups
                if dropped:
                    groups = {labels: group for labels, group in groups.items() if labels not in dropped}
                histograms = tuple(
                    [
                        new_histogram(name, labels, tuple(sorted(buckets)), sum_, count)
                        for labels, (buckets, sum_, count) in groups.items()
                    ]
                )
            families[name] = make_family(name, acc.type, acc.help, acc.unit, samples, histograms)
        return Exposition(
            families=families,
            issues=tuple(self.issues),
            format="openmetrics" if self.openmetrics else "prometheus",
            issue_count=self.issue_count,
            duplicates=tuple(sorted(duplicated)[:MAX_STORED_ISSUES]),
        )


def _drop_duplicates(acc: _FamilyAcc, duplicated: set[tuple[str, Labels]]) -> set[Labels]:
    """Remove every copy of a duplicated series from the family: which copy is true is unknown, and
    keeping either would be a confident wrong value. Returns the histogram series (labels without
    `le`) that lost a bucket, a sum or a count: those are dropped whole."""
    dropped: set[Labels] = set()
    renamed = {(name + "_total", labels) for name, labels in duplicated}  # text counters gain `_total`
    for key in [key for key in acc.series if key in duplicated or key in renamed]:
        del acc.series[key]
        name, labels = key
        dropped.add(tuple(pair for pair in labels if pair[0] != "le") if name.endswith("_bucket") else labels)
    return dropped


def _no_keep(key: tuple[str, Labels], sample: Sample) -> Sample:
    raise AssertionError("sample kept with no current family")  # `allowed` is empty then


def _no_bucket(item: tuple[float, float]) -> None:
    raise AssertionError("bucket appended before its series was looked up")


def _group_from_samples(name: str, samples: Iterable[Sample]) -> dict[Labels, _Group]:
    """Group histogram samples from scratch (only after duplicates replaced some)."""
    groups: dict[Labels, _Group] = {}
    for sample in samples:
        if sample.name == name + "_bucket":
            le = dict(sample.labels).get("le")
            bound = _number(le.strip()) if le is not None else None
            if bound is None or math.isnan(bound):
                continue
            key = tuple(pair for pair in sample.labels if pair[0] != "le")
            groups.setdefault(key, [[], None, None])[0].append((bound, sample.value))
        elif sample.name in (name + "_sum", name + "_gsum"):
            groups.setdefault(sample.labels, [[], None, None])[1] = sample.value
        elif sample.name in (name + "_count", name + "_gcount"):
            groups.setdefault(sample.labels, [[], None, None])[2] = sample.value
    return groups
