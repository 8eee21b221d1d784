#!/usr/bin/env bash
# Builds the Dockerfile and runs the image against a recorded vLLM scrape, then reads its /metrics.
#
# No Docker engine or image registry is needed: the base image is made by debootstrap from Debian's
# packages (bookworm, python3 3.11), imported into podman, and the Dockerfile is built on it with
# `--build-arg BASE=...`. Needs root and apt-get for podman, runc and debootstrap (installed here,
# one line each, when missing). The image's own entrypoint (`phaselens run`) is started as the
# image's user; it scrapes one recorded scrape of the bundled capture, served over HTTP on
# 127.0.0.1, and must report the target up with its KV-cache signal. Then `phaselens demo --once`
# runs inside the image (the bundled capture is package data of the wheel).
#
# Environment: PHASELENS_SMOKE_DIR (work folder, default /var/tmp/phaselens-docker-smoke; the base
# root filesystem is kept there and reused), DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${PHASELENS_SMOKE_DIR:-/var/tmp/phaselens-docker-smoke}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/phaselens-base:bookworm
IMAGE=localhost/phaselens:smoke
NAME=phaselens-smoke-$$
say() { echo "docker-smoke: $*"; }
fail() { echo "docker-smoke: FAILED: $*" >&2; exit 1; }

# ---- tools
missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    fail "needs ${missing[*]} (Debian packages) and root; install them, or run as root on Debian"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  for pkg in "${missing[@]}"; do
    say "installing $pkg (Debian package) to build and run the image..."
    apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  done
fi
[ "$(id -u)" -eq 0 ] || fail "debootstrap and podman's chroot builds need root"
# crun (podman's default) refuses this kernel's hybrid cgroup layout; runc runs it.
RUN_FLAGS=(--runtime runc --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

started=$SECONDS
server_pid=""
cleanup() {
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

# ---- base image: Debian bookworm with python3, from Debian's packages
mkdir -p "$WORK"
if ! podman image exists "$BASE"; then
  if [ ! -x "$WORK/rootfs/usr/bin/python3" ]; then
    say "debootstrap: Debian bookworm with python3 into $WORK/rootfs (about a minute)..."
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$WORK/rootfs" \
      "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
  fi
  # pip inside the build must trust what this machine trusts (a TLS-inspecting proxy's CA, say).
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$WORK/rootfs/etc/pip.conf"
  say "importing the root filesystem as $BASE..."
  tar -C "$WORK/rootfs" -c . | podman import -q - "$BASE" >/dev/null
fi
say "base ready after $((SECONDS - started)) s"

# ---- the image, from the repository's Dockerfile
say "building $IMAGE from Dockerfile (pip installs phaselens from PyPI's packages)..."
podman build -q --isolation chroot --network host --build-arg "BASE=$BASE" -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
  || { tail -n 30 "$WORK/build.log" >&2; fail "podman build"; }
say "built after $((SECONDS - started)) s"

# ---- a target: one recorded scrape of the bundled capture, served on 127.0.0.1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rm -rf "$WORK/target" && mkdir -p "$WORK/target"
tar -xzOf sidecar/data/vllm-0.32.0-cpu-aggregated.tar.gz aggregated/0060.prom >"$WORK/target/metrics"
target_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/target" "$target_port" >/dev/null 2>&1 &
server_pid=$!
listen_port=$(free_port)

# ---- the image's entrypoint, as the image's user
podman run -d --name "$NAME" "${RUN_FLAGS[@]}" "$IMAGE" \
  --target "aggregated=http://127.0.0.1:$target_port/metrics" --listen "127.0.0.1:$listen_port" --interval 0.5 \
  >/dev/null
metrics=""
for _ in $(seq 60); do
  if metrics=$(python3 - "$listen_port" 2>/dev/null <<'EOF'
import sys, urllib.request
port = sys.argv[1]
urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read()
print(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
EOF
  ); then break; fi
  sleep 0.5
done
[ -n "$metrics" ] || { podman logs "$NAME" 2>&1 | tail -n 20 >&2; fail "/readyz never answered 200"; }
grep -q '^phaselens_target_up{.*target="aggregated".*} 1' <<<"$metrics" || fail "target not up in /metrics"
grep -q '^phaselens_decode_kv_utilization_ratio{' <<<"$metrics" || fail "no KV-cache signal in /metrics"
pid=$(podman inspect --format '{{.State.Pid}}' "$NAME")
uid=$(stat -c %u "/proc/$pid")
[ "$uid" = 10001 ] || fail "the sidecar runs as uid $uid, not 10001"
say "phaselens run in the image: /metrics has $(grep -c '^phaselens_' <<<"$metrics") phaselens series, target up, uid $uid"
podman rm -f "$NAME" >/dev/null

demo=$(podman run --rm "${RUN_FLAGS[@]}" --entrypoint phaselens "$IMAGE" demo --once) || fail "phaselens demo --once"
grep -q '^Replayed ' <<<"$demo" || fail "demo printed no summary"
say "phaselens demo --once in the image: $(grep '^Replayed ' <<<"$demo")"
say "passed in $((SECONDS - started)) s"
