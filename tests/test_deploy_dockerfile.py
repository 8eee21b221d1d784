"""Static checks of the Dockerfile: pinned base, non-root user, entrypoint.

The image itself is built and run by scripts/docker-smoke.sh (podman on a debootstrap base; in .ci/run).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _arg_defaults() -> dict[str, str]:
    return dict(rest.partition("=")[::2] for keyword, rest in _instructions() if keyword == "ARG" and "=" in rest)


def test_base_images_are_pinned_slim_python() -> None:
    args = _arg_defaults()
    froms = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for keyword, rest in _instructions()
        if keyword == "FROM"
    ]
    assert len(froms) == 2
    for image in froms:
        name, _, tag = image.partition(":")
        assert name == "python" and tag and tag != "latest", image
        assert re.match(r"^\d+\.\d+\.\d+-slim", tag), image


def test_runs_as_non_root_with_phaselens_run() -> None:
    instructions = _instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000  # numeric, so runAsNonRoot can verify it
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    assert any(keyword == "USER" for keyword, _ in instructions[last_from:])
    entrypoint = [json.loads(rest) for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert entrypoint == [["phaselens", "run"]]
    assert ("EXPOSE", "9469") in instructions
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any("pip install --no-cache-dir" in rest and rest.endswith(" .") for rest in runs)


def test_copied_sources_exist_and_uid_matches_manifests() -> None:
    for keyword, rest in _instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists() or source == "README.md", source
    deployment = (ROOT / "deploy" / "kubernetes" / "base" / "deployment.yaml").read_text()
    assert "runAsUser: 10001" in deployment
