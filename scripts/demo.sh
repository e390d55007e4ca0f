#!/usr/bin/env bash
# Set up, start the local stack and run the demo: the one command the README gives for the demo.
#
# Usage: scripts/demo.sh [usp demo arguments]
# The local stack keeps running afterwards; stop it with `.venv/bin/usp dev down`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh

printf '==> %s\n' "local stack: .venv/bin/usp dev up"
.venv/bin/usp dev up

printf '==> %s\n' "demo: .venv/bin/usp demo $*"
exec .venv/bin/usp demo "$@"
