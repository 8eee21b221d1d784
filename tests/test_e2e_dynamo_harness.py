"""Unit tests of the Dynamo e2e harness's pure parts (e2e/dynamo.py); the live run is `make e2e`.

The metric lines below are copied from a real Dynamo 1.6.1 frontend and mocker worker started by
this harness (1P1D, four requests), see tests/fixtures/dynamo-1.6.1-mocker-pd/README.md.
"""

from __future__ import annotations

from pathlib import Path

import dynamo

FRONTEND_LINES = """\
dynamo_frontend_worker_active_decode_blocks{dp_rank="0",worker_id="2058303831227915729",worker_type="decode"} 0
dynamo_frontend_worker_active_decode_blocks{dp_rank="0",worker_id="300983081872888808",worker_type="prefill"} 0
dynamo_frontend_worker_active_prefill_tokens{dp_rank="0",worker_id="2058303831227915729",worker_type="decode"} 0
"""
WORKER_LINE = 'dynamo_component_uptime_seconds{worker_id="42d4e84ae6f93e8"} 1.8469038690000001\n'


def test_frontend_workers_reads_decimal_ids_and_types() -> None:
    assert dynamo.frontend_workers(FRONTEND_LINES) == {
        "2058303831227915729": "decode",
        "300983081872888808": "prefill",
    }
    assert dynamo.frontend_workers("dynamo_frontend_model_ready 1\n") == {}


def test_worker_hex_id_is_the_same_number_as_the_frontends_decimal_id() -> None:
    hex_id = dynamo.worker_hex_id(WORKER_LINE)
    assert hex_id == "42d4e84ae6f93e8"
    assert int(hex_id, 16) == 300983081872888808
    assert dynamo.worker_hex_id("vllm:num_requests_running 0\n") is None


def test_mocker_argv_carries_the_flags_asked_for() -> None:
    spec = dynamo.MockerSpec(
        "decode", 25002, mode="decode", speedup_ratio=4.0, startup_time=2.5, kv_transfer_bandwidth=10.0,
        num_host_blocks=128, max_num_seqs=8, num_gpu_blocks=200, enable_prefix_caching=False,
    )
    argv = spec.argv(Path("/py"), Path("/model"))
    joined = " ".join(argv)
    for expected in ("-m dynamo.mocker", "--disaggregation-mode decode", "--speedup-ratio 4.0",
                     "--startup-time 2.5", "--kv-transfer-bandwidth 10.0", "--num-host-blocks 128",
                     "--max-num-seqs 8", "--num-gpu-blocks-override 200", "--no-enable-prefix-caching",
                     "--discovery-backend file", "--request-plane tcp", "--event-plane zmq"):
        assert expected in joined, expected
    agg = dynamo.MockerSpec("worker", 25001).argv(Path("/py"), Path("/model"))
    assert "--disaggregation-mode" not in agg and "--no-enable-prefix-caching" not in agg
    assert spec.metrics_url == "http://127.0.0.1:25002/metrics"


def test_loopback_env_keeps_everything_on_127_0_0_1(tmp_path: Path) -> None:
    env = dynamo.loopback_env(tmp_path)
    assert env["DYN_FILE_KV"] == str(tmp_path)
    assert env["DYN_TCP_RESPONSE_STREAM_HOST"] == "127.0.0.1"
    hosts = [v for k, v in env.items() if k.endswith("_HOST")]
    assert hosts and set(hosts) == {"127.0.0.1"}


def test_each_deployment_gets_a_fresh_discovery_folder(tmp_path: Path) -> None:
    a = dynamo.Deployment(tmp_path, http_port=25990)
    b = dynamo.Deployment(tmp_path, http_port=25991)
    assert a.discovery_dir != b.discovery_dir
    assert a.discovery_dir.is_dir() and not any(a.discovery_dir.iterdir())
    assert a.env["DYN_FILE_KV"] == str(a.discovery_dir)
