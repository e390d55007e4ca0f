#!/usr/bin/env bash
# Set up, start the local stack and run the tests: the one command the README gives for testing.
#
# Usage: scripts/test.sh [pytest arguments]     e.g. scripts/test.sh -m unit
#                                                    scripts/test.sh tests/integration -x
# With no arguments every test runs. The local stack (Redis, Kafka broker) keeps running
# afterwards so that the next run starts fast; stop it with `.venv/bin/usp dev down`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh

printf '==> %s\n' "local stack: .venv/bin/usp dev up"
.venv/bin/usp dev up

printf '==> %s\n' "tests: .venv/bin/python -m pytest ${*:-(all tests)}"
status=0
.venv/bin/python -m pytest "$@" || status=$?

if [ "$status" -eq 5 ]; then
    # pytest's "no tests collected" is a success to pytest but means nothing was checked.
    printf 'error: pytest collected no tests for: %s; check the paths and -m/-k filters.\n' "${*:-all tests}" >&2
fi
printf '==> %s\n' "the local stack is still running; stop it with .venv/bin/usp dev down"
exit "$status"
