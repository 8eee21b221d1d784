"""What the scraper asks the engine for: no compression on loopback, gzip elsewhere."""

from __future__ import annotations

import gzip

import aiohttp
import pytest
from aiohttp import web
from phaselens.sources.scraper import accept_encoding, fetch_metrics

BODY = b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 3\n"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000/metrics", "identity"),
        ("http://127.1.2.3:8000/metrics", "identity"),
        ("http://[::1]:8000/metrics", "identity"),
        ("http://localhost:8000/metrics", "identity"),
        ("http://LOCALHOST/metrics", "identity"),
        ("http://engine.localhost:8000/metrics", "identity"),
        ("http://10.0.0.5:8000/metrics", "gzip"),
        ("http://vllm.serving.svc.cluster.local:8000/metrics", "gzip"),
        ("https://user:pw@frontend:8443/metrics", "gzip"),
    ],
)
def test_accept_encoding_by_host(url: str, expected: str) -> None:
    assert accept_encoding(url) == expected


async def test_loopback_scrape_asks_identity_and_still_reads_gzip(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    """The engine is asked for identity; a server that gzips anyway is still read."""
    seen: list[str] = []

    async def plain(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        return web.Response(body=BODY, content_type="text/plain")

    async def gzipped_anyway(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        return web.Response(body=gzip.compress(BODY), headers=headers)

    app = web.Application()
    app.router.add_get("/metrics", plain)
    app.router.add_get("/gz", gzipped_anyway)
    client = await aiohttp_client(app)
    base = str(client.make_url("")).rstrip("/")
    assert base.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession(auto_decompress=True) as session:
        body, _ = await fetch_metrics(session, base + "/metrics", 5.0)
        assert body == BODY
        body, _ = await fetch_metrics(session, base + "/gz", 5.0)
        assert body == BODY
    assert seen == ["identity", "identity"]
