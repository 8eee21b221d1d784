"""A real Prometheus for the fleet: generated config, file service discovery the fleet rewrites as
workers come and go, the shipped recording rules (durations compressed like everything else), and
instant queries over the HTTP API.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "phaselens-rules.yaml"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_RANGE = re.compile(r"\[(\d+)(s|m|h)(:[^\]]*)?\]")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(text: str) -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def ms(value_s: float) -> str:
    return f"{max(1, round(value_s * 1000))}ms"


def compress_ranges(promql: str, factor: float) -> str:
    """Every range selector (and subquery range) of a PromQL expression divided by factor."""
    return _RANGE.sub(lambda m: f"[{ms(float(m.group(1)) * _UNIT[m.group(2)] / factor)}{m.group(3) or ''}]", promql)


def compressed_rules(factor: float, rules: Path = RULES) -> str:
    """The shipped rules with every duration (group interval, range selectors, `for`) / factor."""
    doc = yaml.safe_load(rules.read_text())
    for group in doc["groups"]:
        if "interval" in group:
            group["interval"] = ms(seconds(group["interval"]) / factor)
        for rule in group["rules"]:
            rule["expr"] = compress_ranges(rule["expr"], factor)
            if "for" in rule:
                rule["for"] = ms(seconds(rule["for"]) / factor)
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    job: str  # "phaselens" (sidecars) or "engine" (workers' and the frontend's own /metrics)
    address: str  # host:port
    pod: str
    role: str  # pool role label for the engine job (aggregated|prefill|decode|frontend)


def write_config(
    folder: Path, scrape_interval_s: float, eval_interval_s: float, rules_text: str, ksm_port: int | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(rules_text)
    for job in ("phaselens", "engine"):
        sd = folder / f"sd-{job}.json"
        if not sd.exists():
            sd.write_text("[]")
    job_common = {
        "scrape_interval": ms(scrape_interval_s),
        "scrape_timeout": ms(min(scrape_interval_s, 1.0) * 0.9),
    }
    config = {
        "global": {"scrape_interval": ms(scrape_interval_s), "evaluation_interval": ms(eval_interval_s)},
        "rule_files": [str(folder / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "phaselens",
                **job_common,
                "file_sd_configs": [{"files": [str(folder / "sd-phaselens.json")], "refresh_interval": "1s"}],
                # The frontend's sidecar watches the frontend, which serves whole requests (role
                # "aggregated" in the sidecar). It is a pod of its own, not one of the pool's
                # replicas: give those series the role of its pod so the aggregated pool's sums
                # skip it. In P/D the same sidecar also exports the prefill pool's queue held in
                # the frontend's router (role "prefill"): that one stays the prefill pool's.
                "metric_relabel_configs": [
                    {
                        "source_labels": ["pod_role", "role"],
                        "regex": "frontend;aggregated",
                        "target_label": "role",
                        "replacement": "frontend",
                    }
                ],
            },
            {
                "job_name": "engine",
                **job_common,
                "file_sd_configs": [{"files": [str(folder / "sd-engine.json")], "refresh_interval": "1s"}],
            },
        ],
    }
    if ksm_port is not None:
        config["scrape_configs"].append({  # type: ignore[attr-defined]
            "job_name": "kube-state-metrics",
            **job_common,
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{ksm_port}"]}],
        })  # fmt: skip
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_targets(folder: Path, targets: Sequence[ScrapeTarget], namespace: str = "fleet") -> None:
    """Rewrite the file-SD lists (atomically: Prometheus watches the files)."""
    for job in ("phaselens", "engine"):
        groups = [
            {
                "targets": [t.address],
                "labels": {"namespace": namespace, "pod": t.pod, "pod_role": t.role},
            }
            for t in targets
            if t.job == job
        ]
        tmp = folder / f".sd-{job}.json.tmp"
        tmp.write_text(json.dumps(groups))
        tmp.replace(folder / f"sd-{job}.json")


def argv(binary: str, config: Path, data: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]


def query(base: str, promql: str, timeout_s: float = 2.0) -> list[tuple[dict[str, str], float]]:
    """An instant query; [(labels, value)]. Raises on an HTTP or query error."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body}")
    out = []
    for item in body["data"]["result"]:
        out.append((dict(item["metric"]), float(item["value"][1])))
    return out


def scalar(base: str, promql: str) -> float | None:
    """The sum of an instant query's values; None when it returns no series."""
    result = query(base, promql)
    return sum(v for _, v in result) if result else None
