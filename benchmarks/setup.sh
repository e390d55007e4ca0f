#!/usr/bin/env bash
# Install what the benchmarks need beyond the project's venv: the `wrk` HTTP load generator
# (Debian package, pinned) used by bench_http.py. Idempotent: does nothing when wrk is present.
set -euo pipefail

WRK_VERSION="4.1.0-3+b2"   # Debian bookworm, as shown by `apt-cache policy wrk`

if command -v wrk >/dev/null 2>&1; then
    echo "wrk already installed: $(command -v wrk)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "wrk is missing and apt-get is unavailable; install wrk ${WRK_VERSION%%-*} by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
if ! apt-cache policy wrk 2>/dev/null | grep -q "${WRK_VERSION}"; then
    $SUDO apt-get update -q
fi
$SUDO apt-get install -y -q "wrk=${WRK_VERSION}"
echo "installed $(dpkg-query -W -f='${Package} ${Version}' wrk)" >&2
