"""Credentials never leave the process: every output of a run with known secrets is searched.

Secrets: the password in a target URL's userinfo, token-like query values, and the content of
`--target-auth-file`. Paths exercised: `--check-config`, configuration errors, the `settings`
log line, `scrape_failed` (a dead target), and the endpoints /metrics, /signals, /healthz,
/readyz of a live `phaselens run` scraping a real HTTP engine double (recorded vLLM scrapes).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from engine_replay import ReplayEngine, free_port
from phaselens.redact import redact
from phaselens.sources.auth_file import AuthFile, AuthFileError, authorization_header

PASSWORD = "pw-S3cr3tUserinfo"
TOKEN = "tok-S3cr3tQuery"
API_KEY = "key-S3cr3tQuery"
FILE_SECRET = "file-S3cr3tBearer"
SECRETS = (PASSWORD, TOKEN, API_KEY, FILE_SECRET)


def _phaselens(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phaselens", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}:\n{text[-3000:]}"


def test_redact_masks_userinfo_and_sensitive_query_values() -> None:
    url = f"http://scraper:{PASSWORD}@10.0.0.1:8000/metrics?token={TOKEN}&api_key={API_KEY}&model=m1"
    assert redact(url) == "http://***@10.0.0.1:8000/metrics?token=***&api_key=***&model=m1"
    assert redact(f"Cannot connect: 'user:{PASSWORD}@host:1/x'") == "Cannot connect: '***@host:1/x'"
    assert redact('{"u":"http://a/?X-Amz-Signature=abc\\"x"}') == '{"u":"http://a/?X-Amz-Signature=***\\"x"}'
    assert redact("plain text, model=m1, 12:30") == "plain text, model=m1, 12:30"


@pytest.mark.parametrize(
    "target",
    [
        f"http://scraper:{PASSWORD}@127.0.0.1:9/metrics?token={TOKEN}&api_key={API_KEY}",
        f"ftp://scraper:{PASSWORD}@127.0.0.1:9/metrics?token={TOKEN}",  # not http(s)
        f"bogusrole=http://scraper:{PASSWORD}@127.0.0.1:9/metrics?token={TOKEN}",  # unknown role
    ],
)
def test_check_config_and_config_errors_never_print_secrets(target: str) -> None:
    result = _phaselens("run", "--check-config", "--target", target, "--interval", "-1")
    assert result.returncode == 1
    assert "invalid configuration" in result.stderr
    _assert_clean(result.stdout + result.stderr, "a configuration error")
    if target.startswith("http"):
        ok = _phaselens("run", "--check-config", "--target", target)
        assert ok.returncode == 0, ok.stderr
        shown = json.loads(ok.stdout)["settings"]["targets"][0]["url"]
        assert shown == "http://***@127.0.0.1:9/metrics?token=***&api_key=***"
        _assert_clean(ok.stdout + ok.stderr, "--check-config")


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def test_live_run_with_secrets_leaks_none_and_auth_file_is_sent(tmp_path: Path) -> None:
    auth_file = tmp_path / "token"
    auth_file.write_text(FILE_SECRET + "\n")
    dead = free_port()
    with ReplayEngine(required_auth=f"Bearer {FILE_SECRET}") as engine:
        port = free_port()
        args = [
            "run",
            "--target",
            f"decode=http://127.0.0.1:{engine.port}/metrics?token={TOKEN}",
            "--target",
            f"prefill=http://scraper:{PASSWORD}@127.0.0.1:{dead}/metrics?api_key={API_KEY}",
            "--target-auth-file",
            str(auth_file),
            "--listen",
            f"127.0.0.1:{port}",
            "--interval",
            "0.2",
            "--no-gpu-telemetry",
            "--log-level",
            "debug",
        ]
        child = subprocess.Popen(
            [sys.executable, "-m", "phaselens", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            time.sleep(1.0)
            bodies = {path: _get(base + path) for path in ("/metrics", "/signals", "/healthz", "/readyz")}
        finally:
            child.send_signal(signal.SIGTERM)
            stdout, stderr = child.communicate(timeout=30)
    for path, body in bodies.items():
        _assert_clean(body, path)
    _assert_clean(stdout, "stdout")
    _assert_clean(stderr, "stderr")
    events = [json.loads(line) for line in stderr.splitlines()]
    failed = [e for e in events if e["event"] == "scrape_failed"]
    assert failed and failed[0]["url"] == f"http://***@127.0.0.1:{dead}/metrics?api_key=***"
    settings = next(e for e in events if e["event"] == "settings")["settings"]
    assert settings["target_auth_file"] == str(auth_file)
    assert 'phaselens_target_up{role="decode",target="decode"} 1.0' in bodies["/metrics"]
    # The file's token went to the engine, and only as the header it asked for.
    assert engine.seen_auth and set(engine.seen_auth) == {f"Bearer {FILE_SECRET}"}
    assert engine.paths[0] == f"/metrics?token={TOKEN}"


@pytest.mark.parametrize(
    ("content", "header"),
    [
        ("abc.def-ghi\n", "Bearer abc.def-ghi"),
        ("Bearer a:b", "Bearer a:b"),
        ("scraper:p@ss:word\n", "Basic " + base64.b64encode(b"scraper:p@ss:word").decode()),
        ("Basic scraper:pw", "Basic " + base64.b64encode(b"scraper:pw").decode()),
    ],
)
def test_auth_file_formats(content: str, header: str) -> None:
    assert authorization_header(content) == header


def test_auth_file_is_reread_when_it_changes_and_errors_never_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token")
    auth = AuthFile(path)
    assert auth.header() == "Bearer first-token"
    path.write_text("second-token-longer")  # a rotated Secret: new size and mtime
    assert auth.header() == "Bearer second-token-longer"
    path.write_text(f"two words {FILE_SECRET}")
    with pytest.raises(AuthFileError) as info:
        auth.header()
    assert FILE_SECRET not in str(info.value) and str(path) in str(info.value)
    path.unlink()
    with pytest.raises(AuthFileError, match="No such file"):
        auth.header()
