"""One settings object, built from flags, `PHASELENS_*` environment variables and an optional file,
validated in one place (`load_settings`). Nothing below this module reads `os.environ`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phaselens.model import Target
from phaselens.redact import redact


class ConfigError(ValueError):
    """Invalid configuration: reported at start-up (and by --check-config), never at run time.

    The message is redacted when the error is made: it often quotes the target that was wrong.
    """

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Recommendation thresholds (documented in docs/recommendations.md)."""

    kv_pressure_utilization: float = 0.90
    kv_pressure_min_preemptions_per_second: float = 0.0
    bottleneck_imbalance_high: float = 1.5
    bottleneck_imbalance_low: float = 1 / 1.5
    bottleneck_min_queue: float = 2.0
    prefix_reuse_low_hit_ratio: float = 0.10
    prefix_repeat_min_prompt_tokens_per_second: float = 1.0
    slo_at_risk_attainment: float = 0.90
    nixl_slow_ttft_share: float = 0.30
    nixl_slow_p90_seconds: float = 0.100
    nixl_failure_ratio: float = 0.01
    utilization_knee: float = 0.80
    min_requests_for_latency: float = 1.0
    # analyzers/recommend.py (documented in docs/recommendations.md)
    kv_pressure_clear_preemptions_per_second: float = 1.0
    bottleneck_min_load: float = 0.8
    disaggregation_score_low: float = 0.3
    min_requests_for_confidence: float = 10.0
    prefix_reuse_min_prefill_load: float = 0.25
    # analyzers/diagnosis.py (documented in docs/diagnosis.md)
    diagnosis_recent_seconds: float = 10.0
    diagnosis_enter_ticks: float = 3.0
    diagnosis_exit_ticks: float = 5.0
    diagnosis_waiting_share: float = 0.5
    diagnosis_pinned_share: float = 0.7
    diagnosis_plateau_share: float = 0.8
    diagnosis_plateau_min_samples: float = 10.0
    diagnosis_prefill_share: float = 0.5
    diagnosis_transfer_share: float = 0.5
    diagnosis_frontend_gap_share: float = 0.5


@dataclass(frozen=True, slots=True)
class Settings:
    targets: tuple[Target, ...] = ()
    listen_host: str = "0.0.0.0"
    listen_port: int = 9469
    interval_seconds: float = 1.0
    jitter_ratio: float = 0.1
    scrape_timeout_seconds: float = 2.0
    window_seconds: float = 30.0
    stale_after_seconds: float = 5.0
    slo_ttft_seconds: float | None = 0.5
    slo_itl_seconds: float | None = 0.1
    thresholds: Thresholds = field(default_factory=Thresholds)
    recommendation_min_interval_seconds: float = 60.0
    calibration_error_limit: float = 0.05
    nixl_telemetry_dir: str | None = None
    nixl_ring_mode: str = "consume"  # "consume" advances read_pos; "readonly" never writes the file
    log_files: tuple[str, ...] = ()
    otlp_enabled: bool = False
    otlp_temporality: str = "cumulative"  # or "delta"
    otlp_interval_seconds: float = 10.0
    state_file: str | None = None
    target_auth_file: str | None = None  # bearer token or user:password, re-read when it changes
    state_save_interval_seconds: float = 60.0  # QueueIntelligence state (daily profile, model weights)
    gpu_telemetry: bool = True
    kv_offload_tier: bool = False  # a host/offload KV tier is active (analyzers/kv_pressure.py)
    max_num_seqs: int | None = None  # the engines' batch cap where they do not export it (analyzers/saturation.py)
    shutdown_timeout_seconds: float = 5.0
    max_models_per_target: int = 20  # busiest (model_name, engine) groups kept; the rest sum into __other__
    # runtime (sidecar/config.py validates them)
    max_response_bytes: int = 32 * 1024 * 1024
    # our HTTP server (sidecar/http_guard.py)
    http_header_timeout_seconds: float = 10.0
    http_keepalive_timeout_seconds: float = 75.0
    http_max_connections: int | None = None  # None: 1024, or fewer under a low open-file limit
    log_level: str = "info"
