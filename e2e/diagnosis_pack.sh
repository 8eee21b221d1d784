# bash e2e/diagnosis_pack.sh NAME HELD_OUT(0|1): e2e/out/diag/NAME -> tests/fixtures/dynamo-1.6.1-mocker-diagnosis/NAME.tar.gz (+ labels.json entry)
# Keeps worker scrapes whole; frontend scrapes keep only the families the Dynamo adapter maps
# (parsers/engines/dynamo.py DYNAMO_TABLE), which cuts each archive from ~900 KB to ~100 KB.
set -e
cd "$(dirname "$0")/.."
name=$1; held=$2; src=e2e/out/diag/$name; dst=tests/fixtures/dynamo-1.6.1-mocker-diagnosis
tmp=$(mktemp -d)
.venv/bin/python - "$src" "$tmp" <<'PY'
import re, sys, shutil
from pathlib import Path
from phaselens.parsers.engines.dynamo import DYNAMO_TABLE
src, out = Path(sys.argv[1]), Path(sys.argv[2])
keep = set(DYNAMO_TABLE)
def family(line):
    name = line.split()[2] if line.startswith("# ") else re.split(r"[{ ]", line, 1)[0]
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created", "_info"):
        if name.endswith(suffix) and name[: -len(suffix)] in keep:
            return name[: -len(suffix)]
    return name
for role in ("aggregated", "prefill", "decode", "frontend"):
    if not (src / role).is_dir():
        continue
    (out / role).mkdir()
    for f in sorted((src / role).glob("*.prom")):
        if role != "frontend":
            shutil.copy(f, out / role / f.name)
            continue
        lines = f.read_text().splitlines(keepends=True)
        kept = [l for l in lines if l.startswith("# scrape_time") or (l.strip() and family(l) in keep)]
        (out / role / f.name).write_text("".join(kept))
PY
tar czf $dst/$name.tar.gz -C $tmp $(cd $tmp && ls)
rm -rf $tmp
python3 - "$name" "$held" <<'PY'
import json, sys
from pathlib import Path
name, held = sys.argv[1], sys.argv[2] == "1"
dst = Path("tests/fixtures/dynamo-1.6.1-mocker-diagnosis/labels.json")
labels = json.loads(dst.read_text()) if dst.exists() else {}
meta = json.loads(Path(f"e2e/out/diag/{name}/label.json").read_text())
gt = [json.loads(l) for l in open(f"e2e/out/diag/{name}/groundtruth.jsonl")]
reqs = [g for g in gt if g.get("kind") == "request"]
ok = [g for g in reqs if g["outcome"] == "ok"]
ttft = sorted(g["ttft"] for g in ok if g["ttft"] is not None)
labels[name] = {"label": meta["label"], "held_out": held, "note": meta["note"], "workers": meta["workers"],
                "phases": meta["phases"], "engine": "Dynamo 1.6.1 frontend + mocker",
                "client_requests": len(reqs), "client_errors": len(reqs) - len(ok),
                "client_ttft_p50_seconds": round(ttft[len(ttft)//2], 3) if ttft else None,
                "client_ttft_p90_seconds": round(ttft[int(len(ttft)*0.9)], 3) if ttft else None}
dst.write_text(json.dumps(labels, indent=1, sort_keys=True) + "\n")
PY
ls -la $dst/$name.tar.gz
