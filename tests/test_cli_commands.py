"""The command line: replay --jsonl, record -> replay, bad input, --check-config."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from phaselens.cli import main
from phaselens.sources.recording import load_sources

FIXTURES = Path(__file__).parent / "fixtures"
AGG_TAR = FIXTURES / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"


def test_replay_jsonl_one_line_per_scrape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", f"aggregated={AGG_TAR}", "--jsonl", "--slo-ttft", "0.5"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (source,) = load_sources(str(AGG_TAR))
    assert [line["ts"] for line in lines] == [s.time for s in source.scrapes]
    names = {s["name"] for line in lines[20:] for s in line["signals"]}
    assert {
        "phaselens_target_up",
        "phaselens_prefill_queue_depth",
        "phaselens_decode_kv_utilization_ratio",
        "phaselens_request_rate_per_second",
    } <= names
    assert any(line["recommendations"] for line in lines)
    up = [s for s in lines[0]["signals"] if s["name"] == "phaselens_target_up"]
    assert up == [
        {"name": "phaselens_target_up", "labels": {"role": "aggregated", "target": "aggregated"}, "value": 1.0}
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "/no/such/path", "--jsonl"], "no such file"),
        (["replay", "wrong=/x"], "unknown role"),
        (["replay", str(AGG_TAR), "--window", "-1"], "--window"),
    ],
)
def test_replay_bad_input_exits_2_with_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_replay_truncated_archive_via_console(tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(AGG_TAR.read_bytes()[:80_000])
    done = subprocess.run(
        [sys.executable, "-m", "phaselens", "replay", str(cut), "--jsonl"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "not a readable .tar.gz" in done.stderr and "Traceback" not in done.stderr


def test_check_config_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert main(["run", "--check-config", "--target", "prefill=http://127.0.0.1:8000/metrics"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["settings"]["targets"][0]["name"] == "prefill"
    assert main(["run", "--check-config"]) == 1
    assert "no target" in capsys.readouterr().err
    assert main(["run", "--check-config", "--target", "ftp://x/metrics"]) == 1
    config = tmp_path / "phaselens.yaml"
    config.write_text(
        "targets: ['decode=http://127.0.0.1:8001/metrics']\ninterval: 0.5\nthresholds: {kv_pressure_utilization: 0.8}\n"
    )
    monkeypatch.setenv("PHASELENS_INTERVAL", "0.25")  # env beats the file
    assert main(["run", "--check-config", "--config", str(config)]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert settings["interval_seconds"] == 0.25
    assert settings["thresholds"]["kv_pressure_utilization"] == 0.8
    config.write_text("intervall: 1\n")
    assert main(["run", "--check-config", "--config", str(config)]) == 1
    assert "unknown setting 'intervall'" in capsys.readouterr().err


@pytest.fixture
def engine_url(aggregated_dir: Path) -> Iterator[str]:
    """A real HTTP server (own thread and loop) serving the captured scrapes in sequence."""
    import asyncio

    bodies = [p.read_bytes().split(b"\n", 1)[1] for p in sorted(aggregated_dir.glob("*.prom"))]
    served = {"n": 0}
    started = threading.Event()
    state: dict[str, object] = {}

    async def handle(request: web.Request) -> web.Response:
        body = bodies[served["n"] % len(bodies)]
        served["n"] += 1
        return web.Response(body=body, content_type="text/plain")

    def serve() -> None:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = runner.addresses[0][1]
        state["loop"], state["runner"] = loop, runner
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    yield f"http://127.0.0.1:{state['port']}/metrics"
    loop = state["loop"]
    loop.call_soon_threadsafe(loop.stop)  # type: ignore[attr-defined]
    thread.join(10)


def test_record_then_replay(engine_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec"
    assert main(["record", "--target", engine_url, "--out", str(out), "--interval", "0.05", "--count", "4"]) == 0
    files = sorted(out.glob("*.prom"))
    assert [f.name for f in files] == ["0000.prom", "0001.prom", "0002.prom", "0003.prom"]
    assert all(f.read_bytes().startswith(b"# scrape_time ") for f in files)
    capsys.readouterr()
    assert main(["replay", str(out), "--jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4
    assert all(any(s["name"] == "phaselens_prefill_queue_depth" for s in line["signals"]) for line in lines)


def test_record_against_dead_endpoint_fails(tmp_path: Path) -> None:
    assert (
        main(
            [
                "record",
                "--target",
                "http://127.0.0.1:9/metrics",
                "--out",
                str(tmp_path / "r"),
                "--interval",
                "0.05",
                "--duration",
                "0.2",
            ]
        )
        == 1
    )


def test_demo_once_prints_recommendations_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--once"]) == 0
    out = capsys.readouterr().out
    assert "Replayed 84 scrapes" in out
    assert "KV_CACHE_PRESSURE" in out
    # The verdict comes before anything else: cause, time range, remedy, expected effect.
    lines = out.splitlines()
    assert lines[0].startswith("Verdict")
    assert "KV_CAPACITY from +" in lines[1]
    assert lines[2].strip().startswith("remedy: add_replicas")
    assert lines[3].strip().startswith("expected: KV utilization")
    first_line = next(i for i, line in enumerate(lines) if line.startswith("[+") and "KV_CACHE_PRESSURE" in line)
    assert lines.index("Details:") < first_line


def test_replay_without_json_prints_the_verdict_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", f"aggregated={AGG_TAR}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Verdict") and "KV_CAPACITY" in out[1]
    assert out[-1].startswith("Replayed ") and "DIAGNOSIS" in out[-1]


def test_replay_json_prints_pod_log_lines_with_cause_and_remedy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", f"aggregated={AGG_TAR}", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines and all(line["event"] == "recommendation" for line in lines)
    assert {line["cause"] for line in lines if line["code"] != "SLO_BREACH_PREDICTED"} == {"KV_CAPACITY"}
    assert all(line["remedy"] != "add_prefill_capacity" for line in lines)


def test_replay_names_the_bundled_capture_as_the_demo_does(capsys: pytest.CaptureFixture[str]) -> None:
    """`phaselens replay` on the capture the demo ships calls its target `aggregated`, as the demo does."""
    from phaselens.demo import bundled_capture, load_demo_sources

    with bundled_capture() as path:
        assert main(["replay", str(path), "--jsonl"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    targets = {s["labels"]["target"] for s in first["signals"] if "target" in s["labels"]}
    assert targets == {source.name for source in load_demo_sources()} == {"aggregated"}
