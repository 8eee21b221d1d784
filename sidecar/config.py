"""Build and validate the one `Settings` object from flags, `PHASELENS_*` variables and a file.

Precedence: command-line flag > environment variable > config file (YAML or JSON) > default.
Every option is one row of `OPTIONS`: its flag, its environment variable, the Settings field it
sets and how to convert it, so flags, variables, the file keys and the docs cannot drift apart.
This is the only module that reads the environment (`load_settings(env=os.environ)` at the top).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from phaselens.model import ROLES, Role, Target
from phaselens.redact import redact_value
from phaselens.settings import ConfigError, Settings, Thresholds
from phaselens.sources.auth_file import AuthFile, AuthFileError

ENV_PREFIX = "PHASELENS_"
OTEL_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
ENGINES = ("auto", "vllm", "dynamo", "nixl", "sglang", "trtllm")


# --------------------------------------------------------------------------- converters


def _float(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{text!r} is not a finite number")
    return value


def _optional_seconds(text: Any) -> float | None:
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none", "off")):
        return None
    return _float(text)


def _int(text: Any) -> int:
    try:
        return int(str(text))
    except ValueError:
        raise ConfigError(f"{text!r} is not an integer") from None


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{text!r} is not a boolean (true/false)")


def _text(text: Any) -> str:
    return str(text)


def _list(value: Any) -> list[str]:
    """A list from a file (list) or from a flag/variable (comma- or whitespace-separated)."""
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return [part for part in str(value).replace(",", " ").split() if part]


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep:
        raise ConfigError(f"listen address {text!r} must be HOST:PORT")
    port_number = _int(port)
    if not 0 <= port_number <= 65535:
        raise ConfigError(f"listen port {port_number} is out of range")
    return host.strip("[]") or "0.0.0.0", port_number


def parse_target(spec: str | Mapping[str, Any], engine: str = "auto") -> Target:
    """`[ROLE=]URL` (or a mapping with url/role/name/engine from a file) -> Target."""
    if isinstance(spec, Mapping):
        url = str(spec.get("url", ""))
        role = str(spec.get("role", "aggregated"))
        name = str(spec.get("name") or role)
        engine = str(spec.get("engine", engine))
    else:
        head, sep, tail = spec.partition("=")
        if sep and "://" not in head:
            role, url = head, tail
        else:
            role, url = "aggregated", spec
        name = role
    if role not in ROLES:
        raise ConfigError(f"target {spec!r}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"target {spec!r}: {url!r} is not an http(s) URL (e.g. http://localhost:8000/metrics)")
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    return Target(name=name, role=cast(Role, role), url=url, engine=cast(Any, engine))


def unique_names(targets: Sequence[Target]) -> tuple[Target, ...]:
    """Targets named by role get `-2`, `-3` ... when a role repeats; explicit names must be unique."""
    seen: dict[str, int] = {}
    out = []
    for target in targets:
        count = seen.get(target.name, 0) + 1
        seen[target.name] = count
        out.append(target if count == 1 else dataclasses.replace(target, name=f"{target.name}-{count}"))
    return tuple(out)


# --------------------------------------------------------------------------- the option table


@dataclass(frozen=True, slots=True)
class Option:
    flag: str  # "--interval"
    field: str  # Settings field (or a pseudo-field handled in load_settings)
    convert: Callable[[Any], Any]
    help: str
    metavar: str | None = None
    repeatable: bool = False  # flag may repeat; variable/file value is a list
    boolean: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flag.removeprefix("--").replace("-", "_").upper()

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--target", "targets", _text, "engine metrics endpoint, [ROLE=]URL (repeatable)", "[ROLE=]URL", True),
    Option("--engine", "engine", _text, "engine kind of the targets: auto|vllm|dynamo|sglang|trtllm", "KIND"),
    Option("--listen", "listen", _text, "serve /metrics, /healthz, /readyz, /signals here", "HOST:PORT"),
    Option("--interval", "interval_seconds", _float, "scrape interval in seconds (default 1)", "S"),
    Option("--jitter", "jitter_ratio", _float, "random jitter of the interval, as a fraction (default 0.1)", "R"),
    Option("--scrape-timeout", "scrape_timeout_seconds", _float, "per-scrape timeout in seconds", "S"),
    Option("--window", "window_seconds", _float, "analysis window in seconds (default 30)", "S"),
    Option(
        "--stale-after",
        "stale_after_seconds",
        _float,
        "withhold a target's signals when its last good scrape is older than this",
        "S",
    ),
    Option("--slo-ttft", "slo_ttft_seconds", _optional_seconds, "TTFT SLO in seconds ('none' to disable)", "S"),
    Option("--slo-itl", "slo_itl_seconds", _optional_seconds, "ITL SLO in seconds ('none' to disable)", "S"),
    Option(
        "--recommendation-interval",
        "recommendation_min_interval_seconds",
        _float,
        "print the same recommendation for a target at most once per this many seconds",
        "S",
    ),
    Option(
        "--calibration-error-limit",
        "calibration_error_limit",
        _float,
        "rolling calibration error above which predictions only escalate",
        "E",
    ),
    Option(
        "--nixl-telemetry",
        "nixl_telemetry_dir",
        _text,
        "NIXL telemetry ring folder (NIXL_TELEMETRY_DIR)",
        "DIR",
        aliases=("--nixl-telemetry-dir",),
    ),
    Option("--nixl-ring-mode", "nixl_ring_mode", _text, "consume (advance read position) or readonly", "MODE"),
    Option(
        "--log-file",
        "log_files",
        _text,
        "engine log to follow, [ROLE=]PATH (repeatable)",
        "[ROLE=]PATH",
        True,
    ),
    Option(
        "--otlp",
        "otlp_enabled",
        _bool,
        "push metrics over OTLP/HTTP (endpoint from OTEL_* variables)",
        boolean=True,
    ),
    Option("--otlp-temporality", "otlp_temporality", _text, "cumulative or delta", "KIND"),
    Option("--otlp-interval", "otlp_interval_seconds", _float, "OTLP export interval in seconds", "S"),
    Option("--state-file", "state_file", _text, "where learned state survives restarts", "PATH"),
    Option(
        "--target-auth-file",
        "target_auth_file",
        _text,
        "file with the targets' credentials: a bearer token, or user:password for basic auth "
        "(re-read when it changes; never logged)",
        "PATH",
    ),
    Option(
        "--gpu-telemetry",
        "gpu_telemetry",
        _bool,
        "read GPU telemetry through NVML when present",
        boolean=True,
    ),
    Option(
        "--kv-offload-tier",
        "kv_offload_tier",
        _bool,
        "the engines keep KV in a host/offload tier their metrics may not show (LMCache, "
        "Dynamo mocker --num-host-blocks): a pinned KV utilization is then not read as pressure",
        boolean=True,
    ),
    Option(
        "--max-num-seqs",
        "max_num_seqs",
        _int,
        "the engines' batch cap (max_num_seqs) where their metrics do not export it (the Dynamo "
        "mocker worker): phaselens_decode_saturation_ratio counts running / this",
        "N",
    ),
    Option("--shutdown-timeout", "shutdown_timeout_seconds", _float, "graceful shutdown limit in seconds", "S"),
    Option(
        "--max-models-per-target",
        "max_models_per_target",
        _int,
        "(model_name, engine) groups with their own series per target, busiest first; the rest sum into "
        "model_name=__other__ (default 20)",
        "N",
    ),
    Option("--max-response-bytes", "max_response_bytes", _int, "reject metrics bodies larger than this", "N"),
    Option("--log-level", "log_level", _text, "debug|info|warning|error", "LEVEL"),
    Option(
        "--http-header-timeout",
        "http_header_timeout_seconds",
        _float,
        "close a connection that has not sent a whole request within S seconds (default 10)",
        "S",
    ),
    Option(
        "--http-keepalive-timeout",
        "http_keepalive_timeout_seconds",
        _float,
        "close a keep-alive connection idle for S seconds after a response (default 75)",
        "S",
    ),
    Option(
        "--http-max-connections",
        "http_max_connections",
        _int,
        "most HTTP connections held; above it the longest idle are closed (default 1024, "
        "or the open-file limit less 64)",
        "N",
    ),
)
OPTIONS_BY_DEST = {option.dest: option for option in OPTIONS}
_FILE_KEYS = {option.field: option for option in OPTIONS} | OPTIONS_BY_DEST


def add_options(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """Add the option table's flags (or the named subset) to a subcommand's parser."""
    for option in OPTIONS:
        if only is not None and option.dest not in only:
            continue
        text = f"{option.help} [env {option.env}]"
        if option.boolean:
            parser.add_argument(
                option.flag,
                *option.aliases,
                dest=option.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        elif option.repeatable:
            parser.add_argument(
                option.flag,
                *option.aliases,
                dest=option.dest,
                action="append",
                default=None,
                metavar=option.metavar,
                help=text,
            )
        else:
            parser.add_argument(
                option.flag, *option.aliases, dest=option.dest, default=None, metavar=option.metavar, help=text
            )


# --------------------------------------------------------------------------- loading


def read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        if file.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise several types; all mean "not parseable"
        raise ConfigError(
            f"config file {path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
    return data


def _raw_values(flags: Mapping[str, Any], env: Mapping[str, str], file_data: Mapping[str, Any]) -> dict[str, Any]:
    """Option dest -> raw value, the highest-precedence source winning."""
    raw: dict[str, Any] = {}
    for key, value in file_data.items():
        normal = str(key).replace("-", "_")
        if normal == "thresholds":
            continue
        option = _FILE_KEYS.get(normal)
        if option is None:
            raise ConfigError(f"config file: unknown setting {key!r}")
        raw[option.dest] = value
    for option in OPTIONS:
        if option.env in env:
            raw[option.dest] = env[option.env]
    for dest, value in flags.items():
        if value is not None and dest in OPTIONS_BY_DEST:
            raw[dest] = value
    return raw


def _thresholds(data: Any) -> Thresholds:
    if data is None:
        return Thresholds()
    if not isinstance(data, Mapping):
        raise ConfigError("thresholds must be a mapping of name: number")
    known = {f.name for f in dataclasses.fields(Thresholds)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown threshold(s) {unknown}; known: {sorted(known)}")
    return Thresholds(**{key: _float(value) for key, value in data.items()})


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Settings from the three sources, validated; ConfigError with a clear message otherwise."""
    env = env or {}
    file_path = config_file or env.get(ENV_PREFIX + "CONFIG")
    file_data = read_config_file(file_path) if file_path else {}
    raw = _raw_values(flags or {}, env, file_data)
    values: dict[str, Any] = {}
    engine = "auto"
    targets: list[Target] = []
    target_values: Any = None
    for dest, value in raw.items():
        option = OPTIONS_BY_DEST[dest]
        try:
            if option.field == "engine":
                engine = str(value)
            elif option.field == "listen":
                values["listen_host"], values["listen_port"] = parse_listen(str(value))
            elif option.field == "targets":
                target_values = value  # parsed below, once the engine is known
            elif option.repeatable:
                values[option.field] = tuple(option.convert(item) for item in _list(value))
            else:
                values[option.field] = option.convert(value)
        except ConfigError as exc:
            raise ConfigError(f"{option.flag} / {option.env}: {exc}") from None
    if target_values is not None:
        items = target_values if isinstance(target_values, list | tuple) else _list(target_values)
        # Flags arrive as a list of strings that may still hold commas (several in one flag).
        flat: list[Any] = []
        for item in items:
            flat.extend(_list(item) if isinstance(item, str) else [item])
        targets = [parse_target(item, engine) for item in flat]
    if "otlp" not in raw:  # not set explicitly: on when the standard OTLP endpoint variable is set
        values["otlp_enabled"] = any(env.get(name) for name in OTEL_ENDPOINT_VARS)
    values["targets"] = unique_names(targets)
    values["thresholds"] = _thresholds(file_data.get("thresholds"))
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    positive = {
        "--interval": settings.interval_seconds,
        "--scrape-timeout": settings.scrape_timeout_seconds,
        "--window": settings.window_seconds,
        "--stale-after": settings.stale_after_seconds,
        "--otlp-interval": settings.otlp_interval_seconds,
        "--shutdown-timeout": settings.shutdown_timeout_seconds,
        "--max-response-bytes": float(settings.max_response_bytes),
        "--http-header-timeout": settings.http_header_timeout_seconds,
        "--http-keepalive-timeout": settings.http_keepalive_timeout_seconds,
        "--http-max-connections": float(settings.http_max_connections or 1),
    }
    for flag, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{flag} must be positive (got {value:g})")
    if settings.max_num_seqs is not None and settings.max_num_seqs < 1:
        raise ConfigError(f"--max-num-seqs must be at least 1 (got {settings.max_num_seqs})")
    if settings.max_models_per_target < 1:
        raise ConfigError(f"--max-models-per-target must be at least 1 (got {settings.max_models_per_target})")
    if not 0 <= settings.jitter_ratio < 1:
        raise ConfigError(f"--jitter must be in [0, 1) (got {settings.jitter_ratio:g})")
    if settings.recommendation_min_interval_seconds < 0:
        raise ConfigError("--recommendation-interval must not be negative")
    for flag, slo in (("--slo-ttft", settings.slo_ttft_seconds), ("--slo-itl", settings.slo_itl_seconds)):
        if slo is not None and not slo > 0:
            raise ConfigError(f"{flag} must be positive or 'none' (got {slo:g})")
    if settings.window_seconds < 2 * settings.interval_seconds:
        raise ConfigError(
            f"--window ({settings.window_seconds:g} s) must hold at least two scrapes "
            f"(2 x --interval = {2 * settings.interval_seconds:g} s)"
        )
    if settings.otlp_temporality not in ("cumulative", "delta"):
        raise ConfigError(f"--otlp-temporality must be cumulative or delta (got {settings.otlp_temporality!r})")
    if settings.nixl_ring_mode not in ("consume", "readonly"):
        raise ConfigError(f"--nixl-ring-mode must be consume or readonly (got {settings.nixl_ring_mode!r})")
    if settings.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"--log-level must be debug, info, warning or error (got {settings.log_level!r})")
    if settings.target_auth_file:
        try:
            AuthFile(settings.target_auth_file).header()
        except AuthFileError as exc:
            raise ConfigError(f"--target-auth-file: {exc}") from None
    names = [target.name for target in settings.targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"target names must be unique (got {names})")


def require_targets(settings: Settings) -> None:
    if not settings.targets:
        raise ConfigError(f"no target: give --target [ROLE=]URL (or {ENV_PREFIX}TARGET, or targets: in the file)")


def settings_for_log(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain JSON-able data, credentials in URLs redacted."""
    data = dataclasses.asdict(settings)
    data["targets"] = [{"name": t.name, "role": t.role, "url": t.url, "engine": t.engine} for t in settings.targets]
    redacted: dict[str, Any] = redact_value(data)
    return redacted
