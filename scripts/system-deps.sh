#!/usr/bin/env bash
# Installs the Debian packages the integration tests need, once. Safe to re-run.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Headless Chromium opens the HTML report in its tests.
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# --no-install-recommends keeps it small; the service is not started (tests run their own).
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
