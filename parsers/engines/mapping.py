"""One-pass mapping of a parsed exposition onto canonical series (see `canonical.py`).

Each engine module declares `Rule`s keyed by raw family name; `build_table` expands them into a
dict from every spelling a scraper can meet (counter base name and `_total` name, vLLM's Ray
sanitised `vllm_` / `ray_vllm_` names) to a `Binding`. `map_exposition` then walks the families
once, looks each name up, and folds the matching samples into canonical keys.

Precedence. Every rule has a `rank`. For one canonical name and model only the series from the
highest-ranked rule that produced anything survive. That one mechanism covers:
- renames: a payload carrying both `vllm:kv_cache_usage_perc` and the deprecated
  `vllm:gpu_cache_usage_perc` (0.9.2 .. 0.11) keeps the new one;
- Dynamo gap filling: a Dynamo worker that re-exposes `vllm:*` keeps the engine's own series; the
  `dynamo_component_*` and then `dynamo_frontend_*` series only fill names vLLM did not provide.

Aggregation. Labels that are not canonical (`pid` in multiprocess mode, Ray's worker ids, Dynamo's
namespace/endpoint, NIXL's hostname) are dropped; series that then share a canonical key are
combined with the rule's `aggregate`: `sum` for counts and counters (each process or endpoint
counts its own share, so the parts add up), `max` for ratios of one shared pool (every pid of one
engine reports the same KV-cache fraction, or a stale one; a sum could exceed 1, and since the text
format carries no write times, `max` is the safe stand-in for prometheus_client's `mostrecent`).
Histograms with the same bucket layout are merged bucket by bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from phaselens.model import EngineKind, EngineSnapshot, Exposition, Histogram, Labels, MetricFamily, SeriesRejection
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines.validate import validate_snapshot

RuleKind = Literal["counter", "gauge", "histogram", "cache_config_info", "info_gauge", "hex_id_info"]
Source = Literal["vllm", "dynamo", "nixl", "sglang", "trtllm"]
PrefixUnit = Literal["tokens", "blocks"]


@dataclass(frozen=True, slots=True)
class Rule:
    """How one raw family becomes canonical series.

    `keep`: raw labels carried into the canonical labels (besides model_name and engine).
    `only`: (label, allowed values) filter; other samples of the family are ignored.
    `scale`: multiplies values (and histogram bounds and sums), e.g. 1e-6 for microseconds.
    `drop_negative`: V0 hit-rate gauges report -1 when prefix caching is off: no value, not a rate.
    `fraction_or_percent`: Dynamo's `*_gpu_cache_usage_percent`; see `_percent_scale`.
    `prefix_unit`: for prefix-cache counters, the unit, or "help" to read it from the HELP text.
    `info_key`: for `info_gauge` rules, the `EngineSnapshot.info` key the value fills; for
    `hex_id_info` rules, the key that the label `id_label` fills, read as hex and written in decimal
    (a Dynamo worker writes its own id in hex; the frontend names the same worker in decimal).
    `by_label`: (label, ((value, canonical, scale), ...)): one family carrying several quantities
    told apart by a label (Triton's `nv_trt_llm_*{request_type=...}`); the canonical name and scale
    are chosen per sample, values not listed are ignored, and `info:<key>` fills
    `EngineSnapshot.info` instead.
    `aggregate="max"` on a histogram keeps the series with the most observations: for copies of
    one scheduler's view (SGLang's per-TP-rank series), which must not be added up.
    """

    canonical: str
    kind: RuleKind
    source: Source
    rank: int
    keep: tuple[str, ...] = ()
    aggregate: Literal["sum", "max"] = "sum"
    only: tuple[str, frozenset[str]] | None = None
    scale: float = 1.0
    drop_negative: bool = False
    fraction_or_percent: bool = False
    prefix_unit: PrefixUnit | Literal["help"] | None = None
    info_key: str | None = None
    by_label: tuple[str, tuple[tuple[str, str, float], ...]] | None = None
    id_label: str | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    """A rule bound to one spelling of its raw name: `base` is what sample names derive from."""

    rule: Rule
    base: str


Table = Mapping[str, Binding]


def vllm_spellings(name: str) -> tuple[str, ...]:
    """`vllm:x` as exposed directly, and as Ray's stat logger sanitises it (`vllm_x`, `ray_vllm_x`)."""
    if not name.startswith("vllm:"):
        return (name,)
    sanitised = "vllm_" + name[len("vllm:") :]
    return (name, sanitised, "ray_" + sanitised)


def build_table(rules: Iterable[tuple[str, Rule]], ray_aliases: bool = False) -> dict[str, Binding]:
    """Expand (raw family name, rule) pairs into a lookup by every family name a parser may produce.

    prometheus_client names counter families without `_total` (OpenMetrics too) but an untyped
    family keeps the sample name, so counters are bound under both names. OpenMetrics `info`
    families drop the `_info` suffix, so `cache_config_info` is bound under both as well.
    """
    table: dict[str, Binding] = {}
    for raw, rule in rules:
        names = vllm_spellings(raw) if ray_aliases else (raw,)
        for name in names:
            binding = Binding(rule, name)
            _bind(table, name, binding)
            if rule.kind == "counter":
                _bind(table, name + "_total", binding)
            elif rule.kind == "cache_config_info" and name.endswith("_info"):
                _bind(table, name[: -len("_info")], Binding(rule, name))
    return table


def _bind(table: dict[str, Binding], name: str, binding: Binding) -> None:
    if name in table and table[name] != binding:
        raise ValueError(f"two rules claim raw family {name!r}")
    table[name] = binding


def merge_tables(*tables: Table) -> dict[str, Binding]:
    merged: dict[str, Binding] = {}
    for table in tables:
        for name, binding in table.items():
            _bind(merged, name, binding)
    return merged


# --------------------------------------------------------------------------- the pass

_InternalKey = tuple[str, str | None, str, Labels]
"""(canonical name, model or None when the raw series had none, engine, kept labels)."""


_Split = tuple[str | None, str, Labels]
_SPLIT_CACHE: dict[tuple[Labels, tuple[str, ...], bool], _Split] = {}
_CACHE_LIMIT = 200_000  # entries: 10,000 models x their series fit, so a many-model target does not thrash
_CACHE_BYTES_LIMIT = 32 * 1024 * 1024  # and bytes of label text: label values are <= 1 KiB (the parser)
_cache_bytes: dict[int, int] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any, labels: Labels) -> None:
    """`cache[key] = value`, emptying the cache first when its count or label bytes pass the limits."""
    size = 200 + sum(len(k) + len(v) for k, v in labels)
    held = _cache_bytes.get(id(cache), 0) + size
    if len(cache) >= _CACHE_LIMIT or held > _CACHE_BYTES_LIMIT:
        cache.clear()
        held = size
    _cache_bytes[id(cache)] = held
    cache[key] = value


def _split_labels(labels: Labels, keep: tuple[str, ...], name_is_model: bool = False) -> _Split:
    """`_split_raw_labels`, cached: the same raw label sets recur in every scrape."""
    cache_key = (labels, keep, name_is_model)
    split = _SPLIT_CACHE.get(cache_key)
    if split is None:
        split = _split_raw_labels(labels, keep, name_is_model)
        _remember(_SPLIT_CACHE, cache_key, split, labels)
    return split


def _split_raw_labels(labels: Labels, keep: tuple[str, ...], name_is_model: bool = False) -> _Split:
    """Model, engine and the kept extra labels of a raw series.

    `model_name` (vLLM) wins over `model` (Dynamo), and `model` over `name` (SGLang <= 0.3, read
    only for SGLang rules: `name` means something else elsewhere);
    `engine` (vLLM DP index) over `dp_rank` (Dynamo, SGLang). A series without an engine label is
    engine "0" (single engine, or V0).
    """
    model: str | None = None
    alt_model: str | None = None
    old_model: str | None = None
    engine: str | None = None
    alt_engine: str | None = None
    kept: list[tuple[str, str]] = []
    for key, value in labels:
        if key == "model_name":
            model = value
        elif key == "model":
            alt_model = value
        elif key == "name" and name_is_model:
            old_model = value
        elif key == "engine":
            engine = value
        elif key == "dp_rank":
            alt_engine = value
        elif key in keep:
            kept.append((key, value))
    return (
        model if model is not None else alt_model if alt_model is not None else old_model,
        engine if engine is not None else (alt_engine if alt_engine is not None else "0"),
        tuple(kept),
    )


def _percent_scale(family: MetricFamily) -> float:
    """Dynamo documents its `gpu_cache_usage_percent` as 0.0-1.0 (HELP "(0.0-1.0)", checked on the
    public sample). Trust a HELP range when there is one; otherwise a value above 1 can only be a
    percentage, so the whole family is then read as 0-100."""
    help_text = family.help
    if "0.0-1.0" in help_text or "0-1)" in help_text:
        return 1.0
    if "0-100" in help_text:
        return 0.01
    return 0.01 if any(s.value > 1.0 for s in family.samples if not math.isnan(s.value)) else 1.0


def _prefix_unit_from_help(help_text: str) -> PrefixUnit | None:
    """V1 `gpu_prefix_cache_*` counted blocks before vLLM 302f3aca7 (2025-05-12; HELP "...number of
    queried blocks") and tokens after (HELP "...queried tokens", even with the "queriedtokens"
    typo). Ray or hand-made payloads may have no HELP: then the unit is unknown (None)."""
    lowered = help_text.lower()
    if "block" in lowered:
        return "blocks"
    if "token" in lowered:
        return "tokens"
    return None


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _merge_histograms(a: Histogram, b: Histogram) -> Histogram:
    if [bound for bound, _ in a.buckets] != [bound for bound, _ in b.buckets]:
        # Different layouts cannot be added; keep the series with more observations.
        return a if (a.count or 0.0) >= (b.count or 0.0) else b
    buckets = tuple((bound, ca + cb) for (bound, ca), (_, cb) in zip(a.buckets, b.buckets, strict=True))
    total = None if a.sum is None or b.sum is None else a.sum + b.sum
    count = None if a.count is None or b.count is None else a.count + b.count
    return Histogram(name=a.name, labels=a.labels, buckets=buckets, sum=total, count=count)


def _scaled(hist: Histogram, scale: float) -> Histogram:
    buckets = tuple((bound * scale, count) for bound, count in hist.buckets)
    total = None if hist.sum is None else hist.sum * scale
    return Histogram(name=hist.name, labels=hist.labels, buckets=buckets, sum=total, count=hist.count)


class _Accumulator:
    """Mutable state of one pass; turned into a frozen EngineSnapshot by `snapshot`."""

    def __init__(self) -> None:
        self.scalars: dict[_InternalKey, tuple[int, float, str]] = {}
        self.histograms: dict[_InternalKey, tuple[int, Histogram]] = {}
        self.engine_info: dict[str, dict[str, str]] = {}
        self.fill_info: dict[str, dict[str, str]] = {}
        self.prefix_unit: tuple[int, PrefixUnit | None] | None = None
        self.needs_model_resolution = False

    def add_scalar(self, key: _InternalKey, rank: int, value: float, aggregate: str) -> None:
        held = self.scalars.get(key)
        if held is None or rank > held[0]:
            self.scalars[key] = (rank, value, aggregate)
        elif rank == held[0]:
            merged = held[1] + value if aggregate == "sum" else max(held[1], value)
            self.scalars[key] = (rank, merged, aggregate)

    def add_histogram(self, key: _InternalKey, rank: int, hist: Histogram, aggregate: str = "sum") -> None:
        held = self.histograms.get(key)
        if held is None or rank > held[0]:
            self.histograms[key] = (rank, hist)
        elif rank == held[0]:
            if aggregate == "max":
                kept = held[1] if (held[1].count or 0.0) >= (hist.count or 0.0) else hist
                self.histograms[key] = (rank, kept)
            else:
                self.histograms[key] = (rank, _merge_histograms(held[1], hist))

    def add_family(self, family: MetricFamily, binding: Binding) -> None:
        rule = binding.rule
        kind = rule.kind
        if kind == "histogram":
            self._add_histograms(family, rule)
            return
        if kind == "cache_config_info":
            self._add_cache_config(family, binding)
            return
        if kind == "hex_id_info":
            self._add_hex_id(family, rule)
            return
        wanted = binding.base + "_total" if kind == "counter" else binding.base
        samples = [s for s in family.samples if s.name == wanted]
        if not samples and kind == "counter" and family.type == "counter":
            # Exporters outside prometheus_client may type a counter without `_total` (NIXL 1.0).
            # Only when no `_total` sample exists: NIXL >= 1.1 also has a last-operation gauge
            # named like its counter minus `_total`, which parsers fold into the counter family.
            samples = [s for s in family.samples if s.name == binding.base]
        scale = _percent_scale(family) * rule.scale if rule.fraction_or_percent else rule.scale
        matched = False
        for sample in samples:
            value = sample.value
            if math.isnan(value) or (rule.drop_negative and value < 0):
                continue
            if rule.only is not None and not _passes(sample.labels, rule.only):
                continue
            canonical = rule.canonical
            sample_scale = scale
            if rule.by_label is not None:
                chosen = _by_label(sample.labels, rule.by_label)
                if chosen is None:
                    continue
                canonical, sample_scale = chosen[0], scale * chosen[1]
            model, engine, kept = _split_labels(sample.labels, rule.keep, rule.source == "sglang")
            matched = True
            if canonical.startswith("info:"):
                self.fill_info.setdefault(engine, {})[canonical[len("info:") :]] = _format_number(value * sample_scale)
                continue
            if kind == "info_gauge":
                if rule.info_key is not None:
                    self.fill_info.setdefault(engine, {})[rule.info_key] = _format_number(value * scale)
                if not rule.canonical:
                    continue
            if model is None or rule.source == "dynamo":
                self.needs_model_resolution = True
            self.add_scalar((canonical, model, engine, kept), rule.rank, value * sample_scale, rule.aggregate)
        if matched and rule.prefix_unit is not None:
            unit: PrefixUnit | None = (
                _prefix_unit_from_help(family.help) if rule.prefix_unit == "help" else rule.prefix_unit
            )
            if self.prefix_unit is None or rule.rank > self.prefix_unit[0]:
                self.prefix_unit = (rule.rank, unit)

    def _add_histograms(self, family: MetricFamily, rule: Rule) -> None:
        for hist in family.histograms:
            if rule.only is not None and not _passes(hist.labels, rule.only):
                continue
            model, engine, kept = _split_labels(hist.labels, rule.keep, rule.source == "sglang")
            if model is None or rule.source == "dynamo":
                self.needs_model_resolution = True
            scaled = hist if rule.scale == 1.0 else _scaled(hist, rule.scale)
            self.add_histogram((rule.canonical, model, engine, kept), rule.rank, scaled, rule.aggregate)

    def _add_hex_id(self, family: MetricFamily, rule: Rule) -> None:
        if rule.info_key is None or rule.id_label is None:
            return
        for sample in family.samples:
            raw = next((v for k, v in sample.labels if k == rule.id_label), None)
            if raw is None:
                continue
            try:
                decimal = str(int(raw, 16))
            except ValueError:  # not an id we can join on: leave it out rather than guess
                continue
            _, engine, _ = _split_labels(sample.labels, ())
            self.fill_info.setdefault(engine, {})[rule.info_key] = decimal

    def _add_cache_config(self, family: MetricFamily, binding: Binding) -> None:
        names = (binding.base, binding.base + "_info")
        for sample in family.samples:
            if sample.name not in names:
                continue
            engine = "0"
            fields: dict[str, str] = {}
            for key, value in sample.labels:
                if key == "engine":
                    engine = value
                elif key != "pid":
                    fields[key] = value
            self.engine_info.setdefault(engine, {}).update(fields)

    # ------------------------------------------------------------------ assembly

    def _model_resolver(self) -> dict[str | None, str]:
        """Map raw model spellings to the one spelling used in canonical labels.

        Dynamo's frontend lowercases `model` on request metrics but not on its `model_*` gauges,
        so spellings equal up to case are one model; the spelling that is not all lower case is
        kept (lowercasing loses information), matching what vLLM's `model_name` says. Series with no
        model label (Dynamo kvstats, stage_requests) belong to the payload's model when it has
        exactly one, else to "".
        """
        spellings: set[str] = {m for (_, m, _, _) in self.scalars if m is not None}
        spellings.update(m for (_, m, _, _) in self.histograms if m is not None)
        by_folded: dict[str, str] = {}
        for spelling in sorted(spellings):
            folded = spelling.lower()
            held = by_folded.get(folded)
            if held is None or (held == held.lower() and spelling != spelling.lower()):
                by_folded[folded] = spelling
        resolver: dict[str | None, str] = {s: by_folded[s.lower()] for s in spellings}
        resolver[None] = next(iter(by_folded.values())) if len(by_folded) == 1 else ""
        return resolver

    def snapshot(self, kind: EngineKind, time: float, parse_issues: int) -> EngineSnapshot:
        resolver = self._model_resolver() if self.needs_model_resolution else None
        scalars = _resolve(self.scalars, resolver)
        histograms = _resolve_histograms(self.histograms, resolver)
        info: dict[str, dict[str, str]] = {}
        for engine in {*self.engine_info, *self.fill_info}:
            merged = {**self.fill_info.get(engine, {}), **self.engine_info.get(engine, {})}
            _complete_kv_cache_size(merged)
            info[engine] = merged
        return EngineSnapshot(
            engine_kind=kind,
            time=time,
            scalars=scalars,
            histograms=histograms,
            info=info,
            prefix_cache_unit=self.prefix_unit[1] if self.prefix_unit is not None else None,
            parse_issues=parse_issues,
        )


def _by_label(labels: Labels, by_label: tuple[str, tuple[tuple[str, str, float], ...]]) -> tuple[str, float] | None:
    name, choices = by_label
    for key, value in labels:
        if key == name:
            return next(((canonical, scale) for wanted, canonical, scale in choices if wanted == value), None)
    return None


def _passes(labels: Labels, only: tuple[str, frozenset[str]]) -> bool:
    name, allowed = only
    return any(key == name and value in allowed for key, value in labels)


_LABELS_CACHE: dict[tuple[str, str, Labels], Labels] = {}


def _canonical_labels(model: str, engine: str, kept: Labels) -> Labels:
    """Sorted canonical label tuple; cached because the same few combinations recur every scrape."""
    key = (model, engine, kept)
    labels = _LABELS_CACHE.get(key)
    if labels is None:
        labels = tuple(sorted((("engine", engine), ("model_name", model), *kept)))
        _remember(_LABELS_CACHE, key, labels, labels)
    return labels


def _resolve(
    held: dict[_InternalKey, tuple[int, float, str]], resolver: dict[str | None, str] | None
) -> dict[tuple[str, Labels], float]:
    best: dict[tuple[str, str], int] = {}
    rows: list[tuple[str, str, str, Labels, int, float, str]] = []
    for (name, model, engine, kept), (rank, value, aggregate) in held.items():
        resolved = resolver[model] if resolver is not None else (model or "")
        if rank > best.get((name, resolved), -1):
            best[(name, resolved)] = rank
        rows.append((name, resolved, engine, kept, rank, value, aggregate))
    out: dict[tuple[str, Labels], float] = {}
    for name, model, engine, kept, rank, value, aggregate in rows:
        if rank != best[(name, model)]:
            continue
        key = (name, _canonical_labels(model, engine, kept))
        if key in out:  # two spellings of one model collapsed onto the same key
            out[key] = out[key] + value if aggregate == "sum" else max(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_histograms(
    held: dict[_InternalKey, tuple[int, Histogram]], resolver: dict[str | None, str] | None
) -> dict[tuple[str, Labels], Histogram]:
    best: dict[tuple[str, str], int] = {}
    rows: list[tuple[str, str, str, Labels, int, Histogram]] = []
    for (name, model, engine, kept), (rank, hist) in held.items():
        resolved = resolver[model] if resolver is not None else (model or "")
        if rank > best.get((name, resolved), -1):
            best[(name, resolved)] = rank
        rows.append((name, resolved, engine, kept, rank, hist))
    out: dict[tuple[str, Labels], Histogram] = {}
    for name, model, engine, kept, rank, hist in rows:
        if rank != best[(name, model)]:
            continue
        labels = _canonical_labels(model, engine, kept)
        relabelled = Histogram(name=name, labels=labels, buckets=hist.buckets, sum=hist.sum, count=hist.count)
        key = (name, labels)
        out[key] = _merge_histograms(out[key], relabelled) if key in out else relabelled
    return out


def _complete_kv_cache_size(info: dict[str, str]) -> None:
    """kv_cache_size_tokens = block_size * num_gpu_blocks when the engine did not label it
    (the label is recent; older `cache_config_info` only has the two factors)."""
    if c.INFO_KV_CACHE_SIZE_TOKENS in info:
        return
    try:
        block_size = int(float(info[c.INFO_BLOCK_SIZE]))
        blocks = int(float(info[c.INFO_NUM_GPU_BLOCKS]))
    except (KeyError, ValueError):  # absent, or "None" before the engine profiled memory
        return
    info[c.INFO_KV_CACHE_SIZE_TOKENS] = str(block_size * blocks)


def kind_of(sources: set[Source], saw_dynamo_prefix: bool) -> EngineKind:
    """A Dynamo payload may carry vLLM series (worker system port): it is still a Dynamo target."""
    if saw_dynamo_prefix or "dynamo" in sources:
        return "dynamo"
    if "vllm" in sources:
        return "vllm"
    if "sglang" in sources:
        return "sglang"
    if "trtllm" in sources:
        return "trtllm"
    if "nixl" in sources:
        return "nixl"
    return "unknown"


def map_exposition(
    exposition: Exposition, table: Table, time: float, kind: EngineKind | None
) -> EngineSnapshot:
    """Walk the families once; `kind` None means detect it from what matched."""
    acc = _Accumulator()
    sources: set[Source] = set()
    saw_dynamo = False
    for name, family in exposition.families.items():
        binding = table.get(name)
        if binding is None:
            if not saw_dynamo and name.startswith("dynamo_"):
                saw_dynamo = True
            continue
        sources.add(binding.rule.source)
        acc.add_family(family, binding)
    resolved_kind = kind if kind is not None else kind_of(sources, saw_dynamo)
    issues = max(exposition.issue_count, len(exposition.issues))
    snapshot = acc.snapshot(resolved_kind, time, issues)
    # duplicates were counted as parse issues by the parser: named here for the log and for their siblings
    return validate_snapshot(snapshot, _duplicates(exposition.duplicates, table))


_SAMPLE_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")


def _duplicates(duplicates: Iterable[tuple[str, Labels]], table: Table) -> tuple[SeriesRejection, ...]:
    """The parser dropped every copy of a duplicated series; name the canonical series it fed."""
    out: list[SeriesRejection] = []
    for name, labels in duplicates:
        binding = table.get(name)
        if binding is None:
            base = next((name[: -len(s)] for s in _SAMPLE_SUFFIXES if name.endswith(s)), None)
            binding = table.get(base) if base is not None else None
        if binding is not None and binding.rule.canonical:
            model, engine, kept = _split_raw_labels(labels, binding.rule.keep)
            canonical = _canonical_labels(model or "", engine, kept)
            out.append(SeriesRejection(binding.rule.canonical, canonical, "duplicate series"))
    return tuple(out)
