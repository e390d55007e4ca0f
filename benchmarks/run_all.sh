#!/usr/bin/env bash
# Run every benchmark; each prints one JSON object, saved to $OUT/<name>.json.
#   benchmarks/run_all.sh            full sizes (about 46 minutes on 2 cores, 29 of them bench_backfill)
#   benchmarks/run_all.sh --quick    smoke run (about 4 minutes)
# Needs the local stack (`.venv/bin/usp dev up`, Redis on 127.0.0.1:16379) and wrk
# (installed by benchmarks/setup.sh, which this script runs first).
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${USP_BENCH_OUT:-benchmarks/results}"
mkdir -p "$OUT"
PY=.venv/bin/python

benchmarks/setup.sh || { echo "benchmarks/setup.sh failed: wrk is needed by bench_http" >&2; exit 1; }

failed=()
for name in write online_read recent http api_load query job_metrics backfill; do
    echo "== bench_${name} $*" >&2
    if "$PY" "benchmarks/bench_${name}.py" "$@" >"$OUT/${name}.json"; then
        echo "   -> $OUT/${name}.json" >&2
    else
        echo "   bench_${name} FAILED (exit $?)" >&2
        failed+=("$name")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
# Goals at a glance (never an assertion: a missed goal is reported, not a failure).
"$PY" - "$OUT" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    goal = json.loads(path.read_text()).get("goal", {})
    if not goal:
        print(f"{path.stem:12} no goal   ratios in {path.name}, see benchmarks/README.md")
        continue
    measured = goal.get("measured", goal.get("measured_p99_us"))
    state = "met" if goal.get("met") else "MISSED"
    print(f"{path.stem:12} {state:6} {goal.get('metric')}: {measured} (target {goal.get('target')})")
PY
