"""Unit tests of the end-to-end load client's bookkeeping (e2e/loadgen.py, e2e/corpus.py).

The streamed-response parsing is exercised against the bytes a real vLLM 0.32 server sent
(captured below from the e2e engine); the live run itself is `make e2e`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import corpus
import loadgen
import pytest
from aiohttp import web

E2E = Path(__file__).resolve().parent.parent / "e2e"


# A real `/v1/completions` stream from vLLM 0.32 (CPU) serving the e2e tiny model: prompt "the
# quick brown fox", max_tokens 4, ignore_eos, return_token_ids, include_usage. The random model's
# first token is an incomplete UTF-8 byte, so the first chunk carries two token ids: chunks are not
# tokens, which is why the client takes the output length from the usage block.
REAL_STREAM = (E2E / "testdata" / "vllm-0.32-stream.txt").read_bytes() if (E2E / "testdata").exists() else b""


def test_phase_parse_roundtrip_and_errors() -> None:
    p = loadgen.Phase.parse("overload:35:32:120-260:150-300")
    assert (p.name, p.seconds, p.concurrency, p.prompt_words, p.output_tokens, p.shared_prefix) == (
        "overload", 35.0, 32, (120, 260), (150, 300), False,
    )  # fmt: skip
    assert loadgen.Phase.parse("prefix:25:4:10-40:16:prefix").output_tokens == (16, 16)
    assert loadgen.Phase.parse("prefix:25:4:10-40:16:prefix").shared_prefix
    for bad in ("x:1:2:3", "x:1:2:5-3:1-2", "x:1:2:1-2:1-2:shared", "x:-1:2:1-2:1-2"):
        with pytest.raises(ValueError):
            loadgen.Phase.parse(bad)


def test_finish_timing_follows_vllm_benchmark_definitions() -> None:
    rec = loadgen.RequestRecord(start=100.0, end=101.0, output_tokens=11)
    loadgen.finish_timing(rec, 100.2, [100.2, 100.3, 100.35, 101.0])
    assert rec.ttft == pytest.approx(0.2)
    assert rec.tpot == pytest.approx(0.8 / 10)  # (end - first token) / (output tokens - 1)
    assert rec.itl_max == pytest.approx(0.65)
    one = loadgen.RequestRecord(start=5.0, end=5.1, output_tokens=1)
    loadgen.finish_timing(one, 5.1, [5.1])
    assert one.tpot is None and one.itl_max is None


def test_prompts_use_only_training_words() -> None:
    rng = random.Random(3)
    vocab = set(corpus.WORDS)
    for n in (0, 1, 17, 200):
        words = corpus.random_prompt(rng, n).split()
        assert len(words) == n
        assert set(words) <= vocab
    with_prefix = corpus.random_prompt(rng, 10, corpus.SHARED_PREFIX)
    assert with_prefix.startswith(corpus.SHARED_PREFIX)
    with pytest.raises(ValueError):
        corpus.random_prompt(rng, -1)


@pytest.mark.skipif(not REAL_STREAM, reason="captured stream missing")
async def test_stream_parsing_on_a_real_vllm_stream(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    seen: list[dict[str, object]] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        # split at odd places: the parser must reassemble events across reads
        for i in range(0, len(REAL_STREAM), 37):
            await resp.write(REAL_STREAM[i : i + 37])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    client = await aiohttp_client(app)
    rec = loadgen.RequestRecord(id="t")
    base = str(client.make_url("")).rstrip("/")
    out = await loadgen.one_request(client.session, base, "the quick brown fox", 4, rec)
    assert out.outcome == "ok"
    body = seen[0]
    assert body["stream"] is True and body["ignore_eos"] is True and body["return_token_ids"] is True
    events = [json.loads(line[5:]) for line in REAL_STREAM.decode().split("\n") if line.startswith("data: {")]
    usage = next(e["usage"] for e in events if e.get("usage"))
    assert out.output_tokens == usage["completion_tokens"] == 4
    assert out.prompt_tokens == usage["prompt_tokens"]
    assert out.ttft is not None and out.ttft >= 0
    assert out.tpot is not None and out.tpot >= 0


async def test_http_error_is_recorded_not_raised(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    async def fail(_request: web.Request) -> web.Response:
        return web.json_response({"error": "max-model-len exceeded"}, status=400)

    app = web.Application()
    app.router.add_post("/v1/completions", fail)
    client = await aiohttp_client(app)
    rec = loadgen.RequestRecord(id="e")
    out = await loadgen.one_request(client.session, str(client.make_url("")).rstrip("/"), "x", 4, rec)
    assert out.outcome.startswith("error: RuntimeError: HTTP 400")
    assert out.ttft is None and out.end >= out.start


async def _one_token_stream(request: web.Request) -> web.StreamResponse:
    """A streamed completion of one token, as a server answers once its work is done."""
    resp = web.StreamResponse()
    await resp.prepare(request)
    usage = {"prompt_tokens": 3, "completion_tokens": 1}
    await resp.write(b"data: " + json.dumps({"choices": [{"text": "a"}], "usage": usage}).encode() + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


def test_open_loop_phase_parses_a_rate_ramp() -> None:
    p = loadgen.Phase.parse("ramp:50:@1-20:40-120:20-60")
    assert p.rate == (1.0, 20.0) and p.concurrency == 0
    assert p.rate_at(0.0) == 1.0 and p.rate_at(25.0) == 10.5 and p.rate_at(80.0) == 20.0
    assert loadgen.Phase.parse("hold:10:@5:1-2:1-2").rate == (5.0, 5.0)
    for bad in ("x:1:@0-0:1-2:1-2", "x:1:@-1-2:1-2:1-2", "x:1:@a:1-2:1-2"):
        with pytest.raises(ValueError):
            loadgen.Phase.parse(bad)


async def test_open_loop_phase_sends_poisson_arrivals_without_waiting_for_answers(aiohttp_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Arrivals keep coming while earlier requests are still in flight (each answer takes 0.5 s)."""
    import asyncio

    in_flight = [0, 0]  # now, peak

    async def slow(_request: web.Request) -> web.StreamResponse:
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        await asyncio.sleep(0.5)
        in_flight[0] -= 1
        return await _one_token_stream(_request)

    app = web.Application()
    app.router.add_post("/v1/completions", slow)
    client = await aiohttp_client(app)
    phase = loadgen.Phase.parse("hold:2:@20:1-2:1-1")
    with (tmp_path / "gt.jsonl").open("a") as stream:
        done = await loadgen.run_phase(
            client.session, str(client.make_url("")).rstrip("/"), phase, loadgen.GroundTruthWriter(stream),
            random.Random(7), [0],
        )  # fmt: skip
    # 40 expected (Poisson, sd 6.3); every request finished and was recorded
    assert 15 <= len(done) <= 70
    assert all(r.outcome == "ok" for r in done)
    assert in_flight[1] >= 4  # a closed loop with one worker would never exceed 1
    starts = sorted(r.start for r in done)
    assert starts[-1] - starts[0] <= 2.2


def test_heavy_tailed_output_lengths_are_log_uniform() -> None:
    heavy = loadgen.Phase.parse("x:10:@1:1-2:10~800")
    flat = loadgen.Phase.parse("x:10:@1:1-2:10-800")
    assert heavy.heavy_tail and not flat.heavy_tail and heavy.output_tokens == flat.output_tokens == (10, 800)
    rng = random.Random(5)
    draws = sorted(heavy.draw_output_tokens(rng) for _ in range(4000))
    assert draws[0] >= 10 and draws[-1] <= 800
    # log-uniform: median near sqrt(10 * 800) = 89 (uniform would give ~405), a long right tail
    assert 70 <= draws[2000] <= 110 and draws[3960] >= 600


async def test_carry_over_starts_the_next_phase_while_requests_are_in_flight(aiohttp_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With carry_over the second phase's first arrival comes before the first phase's answers."""
    import asyncio

    # 3 s answers: b's first arrival (~0.5 s) must come before a's last answer (>= 3 s) with a
    # margin a loaded CI machine's event-loop stalls cannot eat (with 1 s it failed once under load)
    async def slow(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3.0)
        return await _one_token_stream(_request)

    app = web.Application()
    app.router.add_post("/v1/completions", slow)
    client = await aiohttp_client(app)
    phases = [loadgen.Phase.parse("a:0.5:@30:1-2:1-1"), loadgen.Phase.parse("b:0.5:@30:1-2:1-1")]
    url = str(client.make_url("")).rstrip("/")
    recs = await loadgen.run_phases(url, phases, tmp_path / "gt.jsonl", seed=3, carry_over=True, token_ids=False)
    first = [r for r in recs if r.phase == "a"]
    second = [r for r in recs if r.phase == "b"]
    assert first and second and all(r.outcome == "ok" for r in recs)
    # waiting for phase a's answers (3 s each) would have pushed phase b's arrivals past a's last end
    assert min(r.start for r in second) < max(r.end for r in first)


async def test_a_sparse_phase_ends_at_its_deadline(aiohttp_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A gap between arrivals that reaches past the phase's end is not slept through: at 0.2
    requests/s a phase of 0.4 s would otherwise last ~5 s on average (the memoryless gap)."""
    app = web.Application()
    app.router.add_post("/v1/completions", _one_token_stream)
    client = await aiohttp_client(app)
    phases = [loadgen.Phase.parse("sparse:0.4:@0.2:1-2:1-1"), loadgen.Phase.parse("next:0.4:@0.2:1-2:1-1")]
    url = str(client.make_url("")).rstrip("/")
    out = tmp_path / "gt.jsonl"
    for seed in range(3):
        out.unlink(missing_ok=True)
        await loadgen.run_phases(url, phases, out, seed=seed, carry_over=True, token_ids=False)
        events = [json.loads(line) for line in out.read_text().splitlines()]
        starts = {e["phase"]: e["t"] for e in events if e["kind"] == "phase_start"}
        ends = {e["phase"]: e["t"] for e in events if e["kind"] == "phase_end"}
        # generous for a loaded CI machine, far under the ~5 s a slept-through gap takes
        assert ends["sparse"] - starts["sparse"] < 1.5, seed
        assert ends["next"] - starts["next"] < 1.5, seed
