"""Hand-written edge cases for parse_exposition: one behaviour per test."""

from __future__ import annotations

import gzip
import math
import random

import pytest
from phaselens.model import Exposition, Sample
from phaselens.parsers.exposition import MAX_STORED_ISSUES, ExpositionError, parse_exposition


def _values(parsed: Exposition, family: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, s.labels): s.value for s in parsed.families[family].samples}


def _issue_lines(parsed: Exposition) -> list[int]:
    return [issue.line_no for issue in parsed.issues]


def test_label_value_escapes_are_decoded() -> None:
    text = 'm{a="back\\\\slash",b="say \\"hi\\"",c="two\\nlines",d="tab\\t"} 1\n'
    (sample,) = parse_exposition(text).families["m"].samples
    assert dict(sample.labels) == {
        "a": "back\\slash",
        "b": 'say "hi"',
        "c": "two\nlines",
        "d": "tab\\t",  # not an escape in the format: kept as written
    }


def test_labels_are_sorted_tuples_whatever_the_input_order() -> None:
    parsed = parse_exposition('m{z="1", a = "2" ,m="3",} 1\n')
    (sample,) = parsed.families["m"].samples
    assert sample.labels == (("a", "2"), ("m", "3"), ("z", "1"))
    assert parsed.issues == ()


def test_label_value_may_hold_braces_commas_and_hash() -> None:
    text = 'm{path="/a{b},c",q="x # y"} 2\nm{path="}"} 3\n'
    samples = parse_exposition(text).families["m"].samples
    assert [dict(s.labels) for s in samples] == [{"path": "/a{b},c", "q": "x # y"}, {"path": "}"}]
    assert [s.value for s in samples] == [2.0, 3.0]


def test_special_float_values() -> None:
    text = '# TYPE g gauge\ng{v="a"} +Inf\ng{v="b"} -Inf\ng{v="c"} NaN\ng{v="d"} -0.0\n'
    values = [s.value for s in parse_exposition(text).families["g"].samples]
    assert values[0] == math.inf and values[1] == -math.inf and math.isnan(values[2])
    assert values[3] == 0.0 and math.copysign(1.0, values[3]) == -1.0


def test_three_digit_exponent() -> None:
    (sample,) = parse_exposition("vllm:x 1.1701968896e+010\nvllm:y 2E-005\n").families["vllm:x"].samples
    assert sample.value == 11701968896.0
    assert parse_exposition("vllm:y 2E-005\n").families["vllm:y"].samples[0].value == 2e-5


def test_text_timestamps_are_milliseconds() -> None:
    parsed = parse_exposition('# TYPE g gauge\ng 1 1700000000123\ng{a="b"} 2\n')
    first, second = parsed.families["g"].samples
    assert first.timestamp == pytest.approx(1700000000.123)
    assert second.timestamp is None


def test_openmetrics_timestamps_are_seconds() -> None:
    parsed = parse_exposition("# TYPE g gauge\ng 1 1700000000.5\n# EOF\n")
    assert parsed.format == "openmetrics"
    assert parsed.families["g"].samples[0].timestamp == 1700000000.5


def test_help_and_type_without_samples_give_an_empty_family() -> None:
    text = "# HELP idle Nothing yet\n# TYPE idle histogram\n# HELP c a counter\n# TYPE c counter\n"
    parsed = parse_exposition(text)
    assert parsed.families["idle"].type == "histogram"
    assert parsed.families["idle"].help == "Nothing yet"
    assert parsed.families["idle"].samples == ()
    assert parsed.families["idle"].histograms == ()
    assert parsed.families["c"].samples == ()


def test_help_escapes() -> None:
    parsed = parse_exposition('# HELP m a\\\\b\\nc \\"q\\"\nm 1\n')
    assert parsed.families["m"].help == 'a\\b\nc \\"q\\"'  # text format: only \\ and \n


def test_created_series_are_their_own_gauge_family_in_text() -> None:
    text = (
        "# HELP req_total Requests.\n# TYPE req_total counter\nreq_total 7.0\n"
        "# HELP req_created Requests.\n# TYPE req_created gauge\nreq_created 1.7e+09\n"
    )
    parsed = parse_exposition(text)
    assert _values(parsed, "req") == {("req_total", ()): 7.0}
    assert parsed.families["req_created"].type == "gauge"
    assert _values(parsed, "req_created") == {("req_created", ()): 1.7e9}


def test_created_series_belong_to_the_family_in_openmetrics() -> None:
    text = "# TYPE req counter\nreq_total 7.0\nreq_created 1.7e+09\n# EOF\n"
    parsed = parse_exposition(text)
    assert set(parsed.families) == {"req"}
    assert _values(parsed, "req") == {("req_total", ()): 7.0, ("req_created", ()): 1.7e9}


def test_counter_family_names_drop_total_and_samples_keep_it() -> None:
    text = '# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{engine="0"} 5\n'
    parsed = parse_exposition(text)
    family = parsed.families["vllm:prompt_tokens"]
    assert family.type == "counter"
    assert [s.name for s in family.samples] == ["vllm:prompt_tokens_total"]


def test_counter_declared_without_total_gets_total_samples_like_prometheus_client() -> None:
    parsed = parse_exposition("# TYPE hits counter\nhits 3\n")
    assert [s.name for s in parsed.families["hits"].samples] == ["hits_total"]


def test_histogram_named_total_is_not_a_counter() -> None:
    text = (
        "# TYPE vllm:iteration_tokens_total histogram\n"
        'vllm:iteration_tokens_total_bucket{le="1.0"} 1\n'
        'vllm:iteration_tokens_total_bucket{le="+Inf"} 2\n'
        "vllm:iteration_tokens_total_sum 9\nvllm:iteration_tokens_total_count 2\n"
    )
    family = parse_exposition(text).families["vllm:iteration_tokens_total"]
    assert family.type == "histogram"
    (histogram,) = family.histograms
    assert histogram.buckets == ((1.0, 1.0), (math.inf, 2.0))
    assert (histogram.sum, histogram.count) == (9.0, 2.0)


def test_multiprocess_histogram_sum_and_count_before_buckets_with_pid_labels() -> None:
    text = (
        "# HELP vllm:e2e_request_latency_seconds Latency.\n"
        "# TYPE vllm:e2e_request_latency_seconds histogram\n"
        'vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 12.5\n'
        'vllm:e2e_request_latency_seconds_sum{engine="1",model_name="m"} 3.0\n'
        'vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 4.0\n'
        'vllm:e2e_request_latency_seconds_count{engine="1",model_name="m"} 1.0\n'
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0\n'
        'vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.5",model_name="m"} 1.0\n'
        'vllm:e2e_request_latency_seconds_bucket{engine="1",le="0.5",model_name="m"} 0.0\n'
        'vllm:e2e_request_latency_seconds_bucket{engine="1",le="+Inf",model_name="m"} 1.0\n'
        "# HELP vllm:kv_cache_usage_perc Usage.\n# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="273"} 0.25\n'
        'vllm:kv_cache_usage_perc{engine="0",model_name="m",pid="274"} 0.5\n'
    )
    parsed = parse_exposition(text)
    histograms = {dict(h.labels)["engine"]: h for h in parsed.families["vllm:e2e_request_latency_seconds"].histograms}
    assert histograms["0"].buckets == ((0.5, 1.0), (math.inf, 4.0))
    assert (histograms["0"].sum, histograms["0"].count) == (12.5, 4.0)
    assert histograms["1"].buckets == ((0.5, 0.0), (math.inf, 1.0))
    assert (histograms["1"].sum, histograms["1"].count) == (3.0, 1.0)
    assert "le" not in dict(histograms["0"].labels)
    pids = {dict(s.labels)["pid"]: s.value for s in parsed.families["vllm:kv_cache_usage_perc"].samples}
    assert pids == {"273": 0.25, "274": 0.5}


def test_crlf_line_endings() -> None:
    text = '# HELP g A gauge.\r\n# TYPE g gauge\r\ng{a="x"} 1.5\r\ng{a="y"} 2\r\n'
    parsed = parse_exposition(text)
    assert parsed.issues == ()
    assert parsed.families["g"].help == "A gauge."
    assert _values(parsed, "g") == {("g", (("a", "x"),)): 1.5, ("g", (("a", "y"),)): 2.0}


def test_duplicate_series_drops_every_copy_and_reports_it() -> None:
    """Which copy is true is unknown: keeping either would export a confident wrong value."""
    text = '# TYPE g gauge\ng{a="x"} 1\ng{a="y"} 5\ng{a="x"} 2\n'
    parsed = parse_exposition(text)
    assert _values(parsed, "g") == {("g", (("a", "y"),)): 5.0}
    (issue,) = parsed.issues
    assert issue.line_no == 4 and "duplicate" in issue.reason and issue.text == 'g{a="x"} 2'
    assert parsed.issue_count == 1
    assert parsed.duplicates == (("g", (("a", "x"),)),)


def test_duplicate_series_in_labels_written_in_another_order() -> None:
    parsed = parse_exposition('# TYPE g gauge\ng{a="1",b="2"} 1\ng{b="2",a="1"} 3\n')
    assert [s.value for s in parsed.families["g"].samples] == []
    assert _issue_lines(parsed) == [3]


def test_a_duplicated_bucket_drops_its_whole_histogram_series() -> None:
    text = (
        "# TYPE h histogram\n"
        'h_bucket{m="a",le="1"} 1\nh_bucket{m="a",le="+Inf"} 2\nh_sum{m="a"} 1\nh_count{m="a"} 2\n'
        'h_bucket{m="b",le="1"} 1\nh_bucket{m="b",le="1"} 9\nh_bucket{m="b",le="+Inf"} 2\n'
        'h_sum{m="b"} 1\nh_count{m="b"} 2\n'
    )
    parsed = parse_exposition(text)
    assert [dict(h.labels)["m"] for h in parsed.families["h"].histograms] == ["a"]
    assert parsed.issue_count == 1


def test_openmetrics_unit() -> None:
    text = "# TYPE lat_seconds gauge\n# UNIT lat_seconds seconds\n# HELP lat_seconds Latency.\nlat_seconds 0.2\n# EOF\n"
    family = parse_exposition(text).families["lat_seconds"]
    assert (family.unit, family.help, family.type) == ("seconds", "Latency.", "gauge")


def test_openmetrics_exemplars_are_ignored() -> None:
    text = (
        "# TYPE h histogram\n"
        'h_bucket{le="0.1"} 2 # {trace_id="abc"} 0.05 1700000000.0\n'
        'h_bucket{le="+Inf"} 3 # {trace_id="d # e"} 7\n'
        "h_count 3\nh_sum 7.1\n"
        "# TYPE c counter\n"
        'c_total{x="1"} 4 1700000000 # {id="z"} 1\n'
        "# EOF\n"
    )
    parsed = parse_exposition(text, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert parsed.issues == ()
    (histogram,) = parsed.families["h"].histograms
    assert histogram.buckets == ((0.1, 2.0), (math.inf, 3.0))
    (counter,) = parsed.families["c"].samples
    assert counter == Sample("c_total", (("x", "1"),), 4.0, 1700000000.0)


def test_openmetrics_gaugehistogram_groups_gsum_and_gcount() -> None:
    text = '# TYPE q gaugehistogram\nq_bucket{le="1.0"} 1\nq_bucket{le="+Inf"} 3\nq_gcount 3\nq_gsum 4.5\n# EOF\n'
    (histogram,) = parse_exposition(text).families["q"].histograms
    assert histogram.buckets == ((1.0, 1.0), (math.inf, 3.0))
    assert (histogram.sum, histogram.count) == (4.5, 3.0)


def test_openmetrics_detected_by_content_type_and_missing_eof_reported() -> None:
    text = "# TYPE c counter\nc_total 1\n"
    parsed = parse_exposition(text, "application/openmetrics-text; version=1.0.0")
    assert parsed.format == "openmetrics"
    assert _values(parsed, "c") == {("c_total", ()): 1.0}
    (issue,) = parsed.issues
    assert "EOF" in issue.reason and issue.line_no == 3


def test_lines_after_openmetrics_eof_are_reported() -> None:
    parsed = parse_exposition("g 1\n# EOF\ng 2\n", "application/openmetrics-text")
    assert _values(parsed, "g") == {("g", ()): 1.0}
    assert _issue_lines(parsed) == [3]


def test_text_without_eof_is_prometheus_format() -> None:
    parsed = parse_exposition(b"# TYPE c counter\nc_total 1\n", "text/plain; version=0.0.4")
    assert parsed.format == "prometheus"
    assert parsed.issues == ()


def test_truncated_payload_keeps_lines_before_the_cut() -> None:
    full = '# TYPE g gauge\ng{a="1"} 10\ng{a="2"} 20\ng{a="3"} 345.5\n'
    cut = full[: full.index("345") + 2]  # "...g{a="3"} 34": would silently read 34
    parsed = parse_exposition(cut)
    assert _values(parsed, "g") == {("g", (("a", "1"),)): 10.0, ("g", (("a", "2"),)): 20.0}
    (issue,) = parsed.issues
    assert issue.line_no == 4 and "truncated" in issue.reason and issue.text == 'g{a="3"} 34'


def test_truncated_inside_a_label_value() -> None:
    parsed = parse_exposition('# TYPE g gauge\ng{a="1"} 10\ng{a="unfini')
    assert _values(parsed, "g") == {("g", (("a", "1"),)): 10.0}
    assert _issue_lines(parsed) == [3]


@pytest.mark.parametrize(
    ("bad_line", "reason_part"),
    [
        ('g{a="1",b} 3', "'b' has no '='"),
        ("g{a=1} 3", "not quoted"),
        ('g{a="1"', "unterminated"),
        ('g{a="1} 3', "closing quote"),
        ('g{1a="x"} 3', "invalid label name"),
        ('g{a="1",a="2"} 3', "duplicate label name"),
        ('g{a="1"}', "missing value"),
        ("g", "missing value"),
        ("g abc", "not a number"),
        ("g 1_000", "not a number"),
        ("g 1 notatime", "timestamp"),
        ("g 1 2 3", "after the timestamp"),
        ('{a="1"} 3', "without a metric name"),
        ("9g 3", "invalid metric name"),
        ("g-h 3", "invalid metric name"),
        ("# TYPE g bogus", "unknown metric type"),
        ("# TYPE", "without a metric name"),
    ],
)
def test_malformed_line_is_reported_and_neighbours_kept(bad_line: str, reason_part: str) -> None:
    text = f'# TYPE g gauge\ng{{a="before"}} 1\n{bad_line}\ng{{a="after"}} 2\n'
    parsed = parse_exposition(text)
    assert [(i.line_no, i.text) for i in parsed.issues] == [(3, bad_line)]
    assert reason_part in parsed.issues[0].reason
    assert parsed.issue_count == 1
    values = {dict(s.labels)["a"]: s.value for s in parsed.families["g"].samples}
    assert values == {"before": 1.0, "after": 2.0}


def test_bucket_with_bad_le_is_reported_and_the_rest_grouped() -> None:
    text = '# TYPE h histogram\nh_bucket{le="x"} 1\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 1\n'
    parsed = parse_exposition(text)
    assert _issue_lines(parsed) == [2]
    (histogram,) = parsed.families["h"].histograms
    assert histogram.buckets == ((math.inf, 2.0),)


def test_untyped_samples_and_comments() -> None:
    text = '# scrape_time 1795369565.439\n# just a note\nfoo 1\nfoo{x="y"} 2\n\nbar 3\n'
    parsed = parse_exposition(text)
    assert parsed.issues == ()
    assert parsed.families["foo"].type == "unknown"
    assert len(parsed.families["foo"].samples) == 2
    assert _values(parsed, "bar") == {("bar", ()): 3.0}


def test_empty_payload() -> None:
    parsed = parse_exposition(b"")
    assert parsed.families == {} and parsed.issues == () and parsed.issue_count == 0


def test_bytes_with_bom_are_decoded() -> None:
    parsed = parse_exposition('\ufeffg{a="é"} 1\n'.encode())
    assert _values(parsed, "g") == {("g", (("a", "é"),)): 1.0}


def test_gzip_body_is_not_text() -> None:
    with pytest.raises(ExpositionError, match="gzip"):
        parse_exposition(gzip.compress(b"g 1\n"))


def test_undecodable_bytes_are_not_text() -> None:
    with pytest.raises(ExpositionError, match="UTF-8"):
        parse_exposition(bytes(range(128, 256)) * 4)


def test_random_garbage_body_gives_capped_issues_and_no_exception() -> None:
    rng = random.Random(1234)
    alphabet = 'abcxyz019 _:{}="\\,#+-.e\t'
    line = "".join(rng.choice(alphabet) for _ in range(4096))
    chunks = []
    for _ in range(50 * 256):  # ~50 MB of printable junk in short random lines
        start = rng.randrange(0, 4000)
        chunks.append(line[start : start + rng.randrange(5, 90)])
    garbage = "\n".join(chunks) * 1 + "\n"
    body = (garbage * (50_000_000 // len(garbage) + 1))[:50_000_000]
    parsed = parse_exposition(body.encode())
    assert len(parsed.issues) == MAX_STORED_ISSUES
    assert parsed.issue_count > 100_000
    assert all(len(issue.text) <= 200 for issue in parsed.issues)
    assert parsed.issues[0].line_no < parsed.issues[-1].line_no


def test_one_huge_line_is_one_issue() -> None:
    parsed = parse_exposition("x" * 5_000_000 + " y\n")
    assert parsed.issue_count == 1
    assert len(parsed.issues[0].text) == 200
