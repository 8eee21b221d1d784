#!/usr/bin/env bash
# The Debian packages the integration tests use, installed once and visibly (one line each).
# Safe to re-run: what is already installed is only reported. Needs apt-get, and root or sudo,
# only when something is missing; otherwise it says what to install and exits 1.
#   prometheus          real Prometheus and promtool (rules tests, dashboard queries, scrape tests)
#   chromium            headless browser that opens the HTML report in its test
#   fonts-dejavu-core   the report's font, so Chromium renders it as the charts do
set -euo pipefail

# package | why | how to tell it is already there
present_prometheus() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }
present_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
present_fonts-dejavu-core() { [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; }
PACKAGES=(prometheus chromium fonts-dejavu-core)
declare -A WHY=(
  [prometheus]="Prometheus and promtool, for the integration tests"
  [chromium]="headless Chromium, for the HTML report test"
  [fonts-dejavu-core]="the report's font, for the HTML report test"
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if "present_$pkg"; then
    echo "system-deps: $pkg: already installed"
  else
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

explain() {
  echo "system-deps: cannot install ${missing[*]}: $1." >&2
  echo "  Install them yourself (Debian/Ubuntu: apt-get install --no-install-recommends ${missing[*]})," >&2
  echo "  then run 'make test' again. Or run '.venv/bin/pytest' directly: the tests that need them" >&2
  echo "  are then skipped, and pytest lists them as skipped with the reason." >&2
  exit 1
}
command -v apt-get >/dev/null 2>&1 || explain "apt-get not found (not a Debian-based system)"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || explain "not root and sudo not found"
  SUDO=(sudo)
  echo "system-deps: not root: using sudo for apt-get (it may ask for your password)"
fi

log=$(mktemp -t phaselens-system-deps.XXXXXX)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
echo "system-deps: apt-get update (package lists)..."
"${SUDO[@]}" apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; explain "apt-get update failed (output above)"; }
for pkg in "${missing[@]}"; do
  echo "system-deps: installing $pkg (Debian package): ${WHY[$pkg]}..."
  # --no-install-recommends keeps it small; the prometheus service is not started (tests run their own).
  if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$pkg" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    explain "apt-get install $pkg failed (last lines above)"
  fi
done
