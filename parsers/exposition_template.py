"""The previous scrape's structure, kept to parse the next scrape of the same target fast.

A target answers every scrape with the same lines in the same order; only the values change. After
a clean parse (no malformed line, no duplicate, no timestamp, no exemplar) `remember` keeps that
parse's structure: the text before each value, the comment lines, and where every value lands in
the families, samples and histogram buckets. `reuse` then parses a body whose comment lines and
value-less sample lines are exactly equal (compared in C, not assumed from a hash) by converting
the values alone and rebuilding the objects with C-level `map`s: no per-line bytecode, no per-family
state machine. Anything else (one changed label, a new series, a value `float()` rejects) is left to
the full parser, which is also what remembers the new structure.

The rebuilt `Exposition` is equal to what the full parser returns for the same body: `remember`
checks that on the parse it learns from, and does not keep a structure that fails it.

Memory: at most `MAX_TEMPLATES` structures of at most `MAX_TEMPLATE_BYTES` together (estimated at
four times the body size: the value-less lines, indexes, and the last scrape's objects, which the
next scrape shares where its values did not change); the oldest is dropped first.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress, pairwise, repeat
from operator import getitem, itemgetter, ne
from typing import Any, Literal

from phaselens.model import Exposition, FamilyType, Histogram, Labels, MetricFamily, Sample

__all__ = ["MAX_TEMPLATES", "MAX_TEMPLATE_BYTES", "clear", "remember", "reuse"]

MAX_TEMPLATES = 16
"""Structures kept (one per scraped target in the steady state)."""
MAX_TEMPLATE_BYTES = 256 * 1024 * 1024
"""All kept structures together; one larger than this is not kept."""

LabelInfoOf = Callable[[str], Any]
"""Label text with its closing `}` -> (labels, labels without le, le bound), or a reason string."""

Picker = Callable[[Sequence[Any]], Sequence[Any]]


def _picker(indices: Sequence[int]) -> Picker:
    """`lambda seq: [seq[i] for i in indices]`, in C (itemgetter; one index still gives a tuple)."""
    if not indices:
        return lambda seq: ()
    if len(indices) == 1:
        index = indices[0]
        return lambda seq: (seq[index],)
    return itemgetter(*indices)


@dataclass(slots=True)
class _Template:
    openmetrics: bool
    comment_at: Picker  # lines -> the HELP / TYPE / UNIT / EOF lines
    comments: tuple[str, ...]
    free_at: Picker  # lines -> the other comment lines (any text: a capture's `# scrape_time 17...`)
    sample_at: Picker  # lines -> the sample lines
    heads: list[str]  # each sample line up to its value, with the space before it
    value_at: list[slice]  # where each sample line's value starts
    # Samples in result order (families in order, each family's samples in order).
    order: Picker | None  # values in line order -> values in result order (None: same order)
    names: tuple[str, ...]
    labels: tuple[Labels, ...]
    # Histogram series in result order.
    h_names: tuple[str, ...]
    h_labels: tuple[Labels, ...]
    h_bounds: tuple[tuple[float, ...], ...]
    h_slices: tuple[slice, ...]  # bucket values in the line-order value list
    h_sums: tuple[int, ...]  # index in the line-order values + [None]
    h_counts: tuple[int, ...]
    # Families in order: names, types, helps, units, sample slices, histogram slices.
    family_columns: tuple[tuple[Any, ...], ...]
    format: Literal["prometheus", "openmetrics"]
    size: int
    used: bool = False  # reused at least once (a structure never reused is replaced first)
    last: _Last | None = None  # the last scrape's values and objects (when samples are in line order)


@dataclass(frozen=True, slots=True)
class _Last:
    values: list[str]  # value text, line order
    floats: list[float]
    samples: list[Sample]  # result order == line order
    histograms: list[Histogram]


_TEMPLATES: OrderedDict[tuple[bool, int], list[_Template]] = OrderedDict()
_misses: dict[tuple[bool, int], int] = {}
_held = 0


def clear() -> None:
    """Forget every structure (tests and benchmarks: a cold parse)."""
    global _held
    _TEMPLATES.clear()
    _misses.clear()
    _held = 0


def reuse(lines: list[str], openmetrics: bool) -> Exposition | None:
    """The parse of `lines` from a kept structure, or None when no kept structure fits them."""
    templates = _TEMPLATES.get((openmetrics, len(lines)))
    if not templates:
        return None
    for template in templates:
        if template.comment_at(lines) != template.comments or not _still_free(template.free_at(lines)):
            continue
        sample_lines = template.sample_at(lines)
        # each sample line is its head, one space and a value (checked in C; no copy of the heads)
        if not all(map(str.startswith, sample_lines, template.heads)):
            continue
        values: list[str] = list(map(getitem, sample_lines, template.value_at))
        template.used = True
        _misses.pop((openmetrics, len(lines)), None)
        if template.last is not None:
            return _build_changed(template, values, template.last)
        floats = _floats(values)
        return None if floats is None else _build(template, floats)
    return None


def _floats(values: list[str]) -> list[float] | None:
    joined = "".join(values)
    # float() accepts `1_000` and blanks around the number; the format does not. A space means a
    # timestamp or text after the value: a line of another shape, for the full parser.
    if "_" in joined or " " in joined or not joined.isprintable():
        return None
    try:
        return list(map(float, values))
    except ValueError:
        return None


_SLICES: dict[int, slice] = {}


def _from(start: int) -> slice:
    """`slice(start, None)`, one object per start (a structure holds one per sample line)."""
    found = _SLICES.get(start)
    if found is None:
        found = _SLICES[start] = slice(start, None)
    return found


def _still_free(comments: Sequence[str]) -> bool:
    """Every line is still a comment that means nothing to the parser (not HELP/TYPE/UNIT/EOF)."""
    if not comments:
        return True
    joined = "\n" + "\n".join(comments)
    return joined.count("\n#") == len(comments) and not any(word in joined for word in _KEYWORDS)


_KEYWORDS = ("HELP", "TYPE", "UNIT", "EOF")


def _new_samples(names: Sequence[str], labels: Sequence[Labels], values: Sequence[float]) -> list[Sample]:
    set_name, set_labels, set_value, set_timestamp = _SAMPLE_SETTERS
    samples = list(map(object.__new__, repeat(Sample, len(names))))
    _consume(map(set_name, samples, names))
    _consume(map(set_labels, samples, labels))
    _consume(map(set_value, samples, values))
    _consume(map(set_timestamp, samples, repeat(None, len(names))))
    return samples


def _new_histograms(t: _Template, floats: list[float], which: Sequence[int] | None = None) -> list[Histogram]:
    """The histogram series (`which` of them; all when None) with their values from `floats`."""
    pick: Picker = (lambda seq: seq) if which is None else _picker(which)
    hset_name, hset_labels, hset_buckets, hset_sum, hset_count = _HISTOGRAM_SETTERS
    extended = [*floats, None]
    names = pick(t.h_names)
    histograms = list(map(object.__new__, repeat(Histogram, len(names))))
    _consume(map(hset_name, histograms, names))
    _consume(map(hset_labels, histograms, pick(t.h_labels)))
    buckets = map(tuple, map(zip, pick(t.h_bounds), map(floats.__getitem__, pick(t.h_slices))))  # type: ignore[arg-type]
    _consume(map(hset_buckets, histograms, buckets))
    _consume(map(hset_sum, histograms, map(extended.__getitem__, pick(t.h_sums))))
    _consume(map(hset_count, histograms, map(extended.__getitem__, pick(t.h_counts))))
    return histograms


def _build_changed(t: _Template, values: list[str], last: _Last) -> Exposition | None:
    """Only the values that changed since the last scrape are converted; the samples and histogram
    series whose text did not change are the last scrape's (frozen) objects."""
    changed = list(map(ne, values, last.values))
    at = list(compress(range(len(values)), changed))
    if not at:
        return _families(t, last.samples, last.histograms)
    pick = _picker(at)
    new_floats = _floats(list(pick(values)))
    if new_floats is None:
        return None
    floats = last.floats.copy()
    samples = last.samples.copy()
    for index, value, sample in zip(
        at, new_floats, _new_samples(pick(t.names), pick(t.labels), new_floats), strict=True
    ):
        floats[index] = value
        samples[index] = sample
    histograms = last.histograms
    if t.h_names:
        changed.append(False)  # the index of a missing sum or count
        stale = [
            index
            for index, (lines, sum_at, count_at) in enumerate(zip(t.h_slices, t.h_sums, t.h_counts, strict=True))
            if changed[sum_at] or changed[count_at] or True in changed[lines]
        ]
        if stale:
            histograms = histograms.copy()
            for index, histogram in zip(stale, _new_histograms(t, floats, stale), strict=True):
                histograms[index] = histogram
    t.last = _Last(values, floats, samples, histograms)
    return _families(t, samples, histograms)


def _build(t: _Template, floats: list[float]) -> Exposition:
    samples = _new_samples(t.names, t.labels, floats if t.order is None else t.order(floats))
    histograms = _new_histograms(t, floats) if t.h_names else []
    return _families(t, samples, histograms)


def _families(t: _Template, samples: list[Sample], histograms: list[Histogram]) -> Exposition:
    fset_name, fset_type, fset_help, fset_unit, fset_samples, fset_histograms = _FAMILY_SETTERS
    names, types, helps, units, sample_slices, histogram_slices = t.family_columns
    families = list(map(object.__new__, repeat(MetricFamily, len(names))))
    _consume(map(fset_name, families, names))
    _consume(map(fset_type, families, types))
    _consume(map(fset_help, families, helps))
    _consume(map(fset_unit, families, units))
    _consume(map(fset_samples, families, map(tuple, map(samples.__getitem__, sample_slices))))
    _consume(map(fset_histograms, families, map(tuple, map(histograms.__getitem__, histogram_slices))))
    return Exposition(families=dict(zip(names, families, strict=True)), format=t.format)


def remember(lines: list[str], openmetrics: bool, result: Exposition, label_info_of: LabelInfoOf, size: int) -> None:
    """Keep the structure of a clean parse (`result` of `lines`) for `reuse`.

    A body that keeps changing shape would pay this on every scrape: after the first miss of a
    line count it is retried only on the 2nd, 4th, 8th, ... consecutive miss."""
    key = (openmetrics, len(lines))
    misses = _misses.get(key, 0) + 1
    if len(_misses) > 4 * MAX_TEMPLATES:
        _misses.clear()
    _misses[key] = misses
    if misses & (misses - 1) or result.issue_count or result.duplicates or 4 * size > MAX_TEMPLATE_BYTES:
        return
    template = _learn(lines, openmetrics, result, label_info_of, 4 * size)
    if template is not None:
        _keep(key, template)


def _keep(key: tuple[bool, int], template: _Template) -> None:
    """Keep `template` first for its line count, dropping the ones of that count never reused (a
    target whose structure keeps changing holds one structure, not one per scrape)."""
    global _held
    kept = _TEMPLATES.setdefault(key, [])
    _TEMPLATES.move_to_end(key)
    for old in [old for old in kept if not old.used]:
        kept.remove(old)
        _held -= old.size
    kept.insert(0, template)
    _held += template.size
    while _TEMPLATES and (_held > MAX_TEMPLATE_BYTES or sum(map(len, _TEMPLATES.values())) > MAX_TEMPLATES):
        oldest_key = next(iter(_TEMPLATES))
        oldest = _TEMPLATES[oldest_key]
        _held -= oldest.pop().size
        if not oldest:
            del _TEMPLATES[oldest_key]


def _learn(
    lines: list[str], openmetrics: bool, result: Exposition, label_info_of: LabelInfoOf, size: int
) -> _Template | None:
    comment_index: list[int] = []
    free_index: list[int] = []
    sample_index: list[int] = []
    heads: list[str] = []
    values: list[str] = []
    positions: dict[tuple[str, Labels], int] = {}  # (sample name as written, labels) -> value index
    buckets: dict[tuple[str, Labels], list[int]] = {}  # (bucket name, labels without le) -> value indices
    for index, line in enumerate(lines):
        if line[:1] == "#":
            (free_index if _still_free((line,)) else comment_index).append(index)
            continue
        head, space, value = line.rpartition(" ")
        brace = head.find("{")
        if not space or not value or not value.isprintable():
            return None
        if brace < 0:
            if not head or not head.isprintable() or " " in head:
                return None
            name, info = head, ((), None, None)
        else:
            if not head.endswith("}"):
                return None
            name = head[:brace]
            info = label_info_of(head[brace + 1 :])
            if isinstance(info, str):
                return None
        if (name, info[0]) in positions:
            return None
        positions[(name, info[0])] = len(values)
        if info[1] is not None:
            buckets.setdefault((name, info[1]), []).append(len(values))
        sample_index.append(index)
        heads.append(head)
        values.append(value)
    try:
        floats = [float(v) for v in values]
    except ValueError:
        return None
    order: list[int] = []
    names: list[str] = []
    labels: list[Labels] = []
    h_names: list[str] = []
    h_labels: list[Labels] = []
    h_bounds: list[tuple[float, ...]] = []
    h_slices: list[slice] = []
    h_sums: list[int] = []
    h_counts: list[int] = []
    families: list[tuple[str, FamilyType, str, str, slice, slice]] = []
    missing = len(values)  # index of the None appended to the values
    for family in result.families.values():
        s_lo, h_lo = len(order), len(h_names)
        for sample in family.samples:
            if sample.timestamp is not None:
                return None
            at = positions.get((sample.name, sample.labels))
            if at is None and sample.name.endswith("_total"):  # text counters gain `_total`
                at = positions.get((sample.name[:-6], sample.labels))
            if at is None:
                return None
            order.append(at)
            names.append(sample.name)
            labels.append(sample.labels)
        for histogram in family.histograms:
            at_buckets = buckets.get((histogram.name + "_bucket", histogram.labels), [])
            bounds = tuple(bound for bound, _ in histogram.buckets)
            first = at_buckets[0] if at_buckets else 0
            if at_buckets != list(range(first, first + len(bounds))) or any(not a < b for a, b in pairwise(bounds)):
                return None  # buckets not consecutive and ascending in the text: rare, not worth it
            sums = [positions.get((histogram.name + suffix, histogram.labels)) for suffix in ("_sum", "_gsum")]
            counts = [positions.get((histogram.name + suffix, histogram.labels)) for suffix in ("_count", "_gcount")]
            if None not in sums or None not in counts:
                return None  # both spellings: which one wins is the full parser's business
            h_names.append(histogram.name)
            h_labels.append(histogram.labels)
            h_bounds.append(bounds)
            h_slices.append(slice(first, first + len(bounds)))
            h_sums.append(next((at for at in sums if at is not None), missing))
            h_counts.append(next((at for at in counts if at is not None), missing))
        families.append(
            (family.name, family.type, family.help, family.unit, slice(s_lo, len(order)), slice(h_lo, len(h_names)))
        )
    if sorted(order) != list(range(len(values))):
        return None  # a line that is no sample of the result, or one used twice
    template = _Template(
        openmetrics=openmetrics,
        comment_at=_picker(comment_index),
        comments=tuple(lines[i] for i in comment_index),
        free_at=_picker(free_index),
        sample_at=_picker(sample_index),
        heads=[head + " " for head in heads],
        value_at=[_from(len(head) + 1) for head in heads],
        order=None if order == list(range(len(order))) else _picker(order),
        names=tuple(names),
        labels=tuple(labels),
        h_names=tuple(h_names),
        h_labels=tuple(h_labels),
        h_bounds=tuple(h_bounds),
        h_slices=tuple(h_slices),
        h_sums=tuple(h_sums),
        h_counts=tuple(h_counts),
        family_columns=tuple(zip(*families, strict=True)) or ((),) * 6,
        format="openmetrics" if openmetrics else "prometheus",
        size=size,
    )
    if not same_exposition(_build(template, floats), result):
        return None
    if template.order is None:
        samples = [sample for family in result.families.values() for sample in family.samples]
        histograms = [h for family in result.families.values() for h in family.histograms]
        template.last = _Last(values, floats, samples, histograms)
    return template


# --------------------------------------------------------------------------- equality


def _same_number(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def same_exposition(a: Exposition, b: Exposition) -> bool:
    """Equal families, samples and histograms, NaN equal to NaN (dataclass `==` says NaN != NaN)."""
    if list(a.families) != list(b.families) or a.format != b.format or a.issue_count != b.issue_count:
        return False
    for name, fa in a.families.items():
        fb = b.families[name]
        if (fa.name, fa.type, fa.help, fa.unit) != (fb.name, fb.type, fb.help, fb.unit):
            return False
        if len(fa.samples) != len(fb.samples) or len(fa.histograms) != len(fb.histograms):
            return False
        for sa, sb in zip(fa.samples, fb.samples, strict=True):
            if (sa.name, sa.labels) != (sb.name, sb.labels) or not _same_number(sa.value, sb.value):
                return False
            if not _same_number(sa.timestamp, sb.timestamp):
                return False
        for ha, hb in zip(fa.histograms, fb.histograms, strict=True):
            if (ha.name, ha.labels, len(ha.buckets)) != (hb.name, hb.labels, len(hb.buckets)):
                return False
            if not (_same_number(ha.sum, hb.sum) and _same_number(ha.count, hb.count)):
                return False
            for (bound_a, count_a), (bound_b, count_b) in zip(ha.buckets, hb.buckets, strict=True):
                if bound_a != bound_b or not _same_number(count_a, count_b):
                    return False
    return True


# --------------------------------------------------------------------------- construction


def _slot_setters(cls: type, count: int) -> tuple[Callable[[Any, Any], None], ...]:
    names = cls.__slots__  # type: ignore[attr-defined]
    assert len(names) == count
    return tuple(getattr(cls, name).__set__ for name in names)


# Frozen slots dataclasses: setting the slots builds the same object as the generated __init__
# (which calls object.__setattr__ per field), at half the cost; checked by `same_exposition` above.
_SAMPLE_SETTERS = _slot_setters(Sample, 4)
_HISTOGRAM_SETTERS = _slot_setters(Histogram, 5)
_FAMILY_SETTERS = _slot_setters(MetricFamily, 6)


def _consume(iterator: Any) -> None:
    deque(iterator, maxlen=0)
