"""Every deploy/ manifest validates: core kinds against the Kubernetes schemas bundled in
kubernetes-validate, custom resources against the CRD schemas in tests/schemas/ (plus strict
unknown-field rejection), kustomize overlays render, and the autoscaling wiring is consistent."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).parent / "schemas"
K8S_VERSION = "1.33"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-monitoring.coreos.com-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda.sh-v1alpha1.json",
    ("karpenter.sh/v1", "NodePool"): "nodepool-karpenter.sh-v1.json",
    ("scheduling.run.ai/v2", "Queue"): "queue-scheduling.run.ai-v2.json",
    ("scheduling.run.ai/v2alpha2", "PodGroup"): "podgroup-scheduling.run.ai-v2alpha2.json",
}
GPU_METRIC = re.compile(r"DCGM_FI_|gpu_util|GPU_UTIL|FB_USED|gpu_memory|duty_cycle", re.IGNORECASE)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ------------------------------------------------------------ minimal kustomize (fallback renderer)


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _apply_json6902(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for op in ops:
        *parents, leaf = _pointer(op["path"])
        node: Any = out
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if op["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if leaf == "-" else int(leaf), op["value"])
        elif op["op"] in ("add", "replace"):
            if isinstance(node, list):
                assert int(leaf) < len(node), f"{op['path']} is out of range"
                node[int(leaf)] = op["value"]
            else:
                assert op["op"] == "add" or leaf in node, f"replace of missing {op['path']}"
                node[leaf] = op["value"]
        else:
            raise AssertionError(f"unsupported op {op['op']}")
    return out


def render_python(directory: Path) -> list[dict[str, Any]]:
    """Enough kustomize for our layout: resources, nameSuffix (and HPA scaleTargetRef), JSON6902 patches."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    resources: list[dict[str, Any]] = []
    for entry in kust.get("resources", []):
        path = directory / entry
        assert path.exists(), f"{directory}/kustomization.yaml lists missing {entry}"
        resources += render_python(path) if path.is_dir() else _docs(path)
    for patch in kust.get("patches", []):
        patch_file = directory / patch["path"]
        assert patch_file.exists(), f"missing patch {patch_file}"
        target = patch["target"]
        hits = [i for i, r in enumerate(resources)
                if r["kind"] == target["kind"] and r["metadata"]["name"] == target["name"]]
        assert hits, f"{patch_file} targets {target} which is not among the resources"
        for i in hits:
            resources[i] = _apply_json6902(resources[i], yaml.safe_load(patch_file.read_text()))
    suffix = kust.get("nameSuffix", "")
    if suffix:
        names = {r["metadata"]["name"] for r in resources}
        for r in resources:
            r["metadata"]["name"] += suffix
            ref = r.get("spec", {}).get("scaleTargetRef")
            if ref and ref["name"] in names:
                ref["name"] += suffix
    return resources


def render_kubectl(directory: Path) -> list[dict[str, Any]] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


KUSTOMIZATIONS = [K8S / "base", K8S / "overlays" / "disaggregated"]


def _rendered(directory: Path) -> list[dict[str, Any]]:
    return render_kubectl(directory) or render_python(directory)


def _all_manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for directory in KUSTOMIZATIONS:
        out += [(f"{directory.relative_to(ROOT)}:{d['kind']}/{d['metadata']['name']}", d)
                for d in _rendered(directory)]
    for path in sorted([*(K8S / "cluster").glob("*.yaml"), *(DEPLOY / "keda").glob("*.yaml")]):
        out += [(f"{path.relative_to(ROOT)}:{d['kind']}/{d['metadata']['name']}", d) for d in _docs(path)]
    return out


MANIFESTS = _all_manifests()


# ------------------------------------------------------------ schema validation


def _strict_unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare (kubectl --validate=strict rejects them)."""
    errors: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            if key not in schema["properties"]:
                if path != "" or key not in ("status",):
                    errors.append(f"{path}.{key}")
            else:
                errors += _strict_unknown_fields(sub, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _strict_unknown_fields(item, schema["items"], f"{path}[{i}]")
    return errors


def validate_custom_resource(doc: dict[str, Any]) -> None:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(doc["apiVersion"], doc["kind"])]).read_text())
    jsonschema.validate(doc, schema)
    unknown = _strict_unknown_fields(doc.get("spec", {}), schema["properties"]["spec"], "spec")
    assert not unknown, f"unknown fields: {unknown}"


@pytest.mark.parametrize(("name", "doc"), MANIFESTS, ids=[m[0] for m in MANIFESTS])
def test_manifest_validates(name: str, doc: dict[str, Any]) -> None:
    if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
        validate_custom_resource(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_rejects_bad_resources() -> None:
    nodepool = _docs(K8S / "cluster" / "karpenter-nodepool-gpu.yaml")[0]
    bad = copy.deepcopy(nodepool)
    bad["spec"]["disruption"]["consolidationPolicy"] = "WhenUnderutilized"  # v1beta1 name, gone in v1
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(bad)
    typo = copy.deepcopy(nodepool)
    typo["spec"]["disruption"]["consolidateAftr"] = "1h"
    with pytest.raises(AssertionError, match="consolidateAftr"):
        validate_custom_resource(typo)
    deployment = next(d for _, d in MANIFESTS if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_plan_output_validates() -> None:
    from phaselens import plan as planmod

    doc = yaml.safe_load((DEPLOY / "examples" / "plan-disaggregated-h100.yaml").read_text())
    result = planmod.build_plan(planmod.parse_plan(doc))
    for rendered in (planmod.nodepool_yaml(result), planmod.kai_yaml(result)):
        for resource in yaml.safe_load_all(rendered):
            validate_custom_resource(resource)


# ------------------------------------------------------------ kustomize rendering


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(ROOT)))
def test_python_render_matches_kubectl(directory: Path) -> None:
    python = render_python(directory)
    kubectl = render_kubectl(directory)
    if kubectl is None:
        pytest.skip("kubectl not installed: only the Python renderer checked the overlay")

    def key(r: dict[str, Any]) -> str:
        return f"{r['kind']}/{r['metadata']['name']}"
    assert sorted(map(key, python)) == sorted(map(key, kubectl))
    by_key = {key(r): r for r in kubectl}
    for resource in python:
        # kubectl adds the common labels; compare the specs, which carry every patch
        assert resource.get("spec") == by_key[key(resource)].get("spec"), key(resource)


def test_disaggregated_overlay_pools() -> None:
    rendered = render_python(K8S / "overlays" / "disaggregated")
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    assert set(deployments) == {"vllm-prefill", "vllm-decode"}
    for role, kv_role in (("prefill", "kv_producer"), ("decode", "kv_consumer")):
        pod = deployments[f"vllm-{role}"]["spec"]["template"]
        assert pod["metadata"]["labels"]["phaselens.io/role"] == role
        engine, sidecar = pod["spec"]["containers"]
        transfer = [a for a in engine["args"] if a.startswith("--kv-transfer-config=")]
        assert len(transfer) == 1
        config = json.loads(transfer[0].split("=", 1)[1])
        assert config == {"kv_connector": "NixlConnector", "kv_role": kv_role}
        assert f"{role}=http://127.0.0.1:8000/metrics" in sidecar["args"]
    hpas = {h["metadata"]["name"]: h for h in rendered if h["kind"] == "HorizontalPodAutoscaler"}
    assert hpas["vllm-prefill"]["spec"]["scaleTargetRef"]["name"] == "vllm-prefill"
    assert [m["external"]["metric"]["name"] for m in hpas["vllm-prefill"]["spec"]["metrics"]] == [
        "phaselens_pool_prefill_backlog_seconds", "phaselens_pool_prefill_saturation_ratio"]
    assert [m["external"]["metric"]["name"] for m in hpas["vllm-decode"]["spec"]["metrics"]] == [
        "phaselens_pool_decode_saturation_ratio"]


# ------------------------------------------------------------ pod hardening and autoscaling policy


def test_sidecar_container_is_hardened() -> None:
    deployments = [d for _, d in MANIFESTS if d["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        sidecar = next(c for c in pod["containers"] if c["name"] == "phaselens")
        ctx = sidecar["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"]["drop"] == ["ALL"]
        assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"requests", "limits"} <= set(sidecar["resources"])
        mounts = {m["name"] for m in sidecar["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert {"nixl-telemetry", "engine-logs"} <= mounts
        assert "emptyDir" in volumes["nixl-telemetry"] and "emptyDir" in volumes["engine-logs"]
        engine_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert engine_env["NIXL_TELEMETRY_DIR"] in sidecar["args"]
        assert engine_env["NIXL_TELEMETRY_ENABLE"]


def _scaler_behaviours() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, doc in MANIFESTS:
        if doc["kind"] == "HorizontalPodAutoscaler":
            out.append((name, doc["spec"]["behavior"]))
        elif doc["kind"] == "ScaledObject":
            out.append((name, doc["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]))
    return out


def test_gpu_aware_scaling_behaviour() -> None:
    behaviours = _scaler_behaviours()
    assert len(behaviours) >= 6
    for name, behaviour in behaviours:
        down, up = behaviour["scaleDown"], behaviour["scaleUp"]
        assert down["stabilizationWindowSeconds"] == 300, name
        assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}], name
        # scale up at once to what the held backlog asks, at most +4 pods or x2 per 60 s (docs/fleet.md)
        assert up["stabilizationWindowSeconds"] == 0, name
        assert up.get("selectPolicy", "Max") == "Max", name
        assert sorted((p["type"], p["value"], p["periodSeconds"]) for p in up["policies"]) == [
            ("Percent", 100, 60), ("Pods", 4, 60)
        ], name


def test_every_scaler_keeps_a_warm_pod() -> None:
    # A load jump during a cold start must be absorbed by running pods: one warm pod over the
    # steady one (docs/autoscaling.md, docs/fleet.md). The overlays patch the base HPA, so they
    # inherit its minReplicas.
    floors = {}
    for name, doc in MANIFESTS:
        if doc["kind"] == "HorizontalPodAutoscaler":
            floors[name] = doc["spec"]["minReplicas"]
        elif doc["kind"] == "ScaledObject":
            floors[name] = doc["spec"]["minReplicaCount"]
    assert len(floors) >= 4
    assert all(v == 2 for v in floors.values()), floors
    for h in render_python(K8S / "overlays" / "disaggregated"):
        if h["kind"] == "HorizontalPodAutoscaler":
            assert h["spec"]["minReplicas"] == 2, h["metadata"]["name"]


def test_never_scale_on_gpu_utilization() -> None:
    sources = [*(DEPLOY / "keda").glob("*.yaml"), DEPLOY / "prometheus-adapter" / "values.yaml"]
    texts = [p.read_text() for p in sources]
    texts += [yaml.safe_dump(d) for _, d in MANIFESTS if d["kind"] == "HorizontalPodAutoscaler"]
    for text in texts:
        assert not GPU_METRIC.search(text)


def test_autoscaler_metrics_exist_in_recording_rules() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "phaselens-rules.yaml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    values = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    adapter = values["rules"]["external"][0]
    series = re.compile(adapter["seriesQuery"].split('__name__=~"')[1].split('"')[0])
    exposed = {re.sub(adapter["name"]["matches"], adapter["name"]["as"].replace("${1}", r"\1"), name)
               for name in recorded if series.match(name)}
    assert exposed == {"phaselens_pool_prefill_backlog_seconds", "phaselens_pool_prefill_queue_depth",
                       "phaselens_pool_prefill_saturation_ratio",
                       "phaselens_pool_decode_kv_utilization_ratio", "phaselens_pool_decode_saturation_ratio"}
    for _, doc in MANIFESTS:
        if doc["kind"] == "HorizontalPodAutoscaler":
            for metric in doc["spec"]["metrics"]:
                assert metric["type"] == "External" and metric["external"]["target"]["type"] == "AverageValue"
                assert metric["external"]["metric"]["name"] in exposed
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] == "prometheus":
                    query = trigger["metadata"]["query"]
                    assert query.startswith("sum(") and query.endswith("or vector(0)")
                    assert trigger["metricType"] == "AverageValue"
                    assert set(re.findall(r"phaselens:[a-z_:]+", query)) <= recorded
                else:
                    assert trigger["metadata"]["valueLocation"].startswith("signals.phaselens_")


def test_karpenter_cel_rules_we_rely_on() -> None:
    for _, doc in MANIFESTS:
        if doc["kind"] == "NodePool":
            disruption = doc["spec"]["disruption"]
            # a GPU pool: never WhenEmptyOrUnderutilized
            assert disruption["consolidationPolicy"] == "WhenEmpty"
            assert disruption["consolidateAfter"] == "1h"
            assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule"
                       for t in doc["spec"]["template"]["spec"]["taints"])
