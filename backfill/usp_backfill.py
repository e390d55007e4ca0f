r"""Deployable entry point of the generated backfills (one signal per run).

What ``usp backfill`` runs, without the terminal niceties: for a scheduler (cron, Airflow, a
Kubernetes Job) that wants one process, a JSON summary on stdout and progress lines on stderr::

    python backfill/usp_backfill.py backfill/search.json --repo feature_repo \
        --start 2026-10-01 --end 2026-11-01 [--source 's3-mount/events.search/**/*.parquet']

Re-running the same command after an interruption skips the units already finished (see
``usp_feast.backfill``); ``--fresh`` redoes them (still writing only new versions). Redis comes
from the repository's ``feature_store.yaml``; the exit status is 0 when every unit finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path


def moment(text: str) -> datetime:
    """A range bound for argparse (see :func:`usp_feast.backfill.parse_bound`)."""
    from usp_feast.backfill import BackfillError, parse_bound

    try:
        return parse_bound(text)
    except BackfillError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main() -> int:
    """Parse arguments, run the backfill, print its summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "config", type=Path, help="generated backfill config (backfill/<signal>.json)"
    )
    parser.add_argument("--repo", type=Path, default=Path("feature_repo"))
    parser.add_argument("--start", type=moment, required=True, help="first event time (inclusive)")
    parser.add_argument("--end", type=moment, required=True, help="end of the range (exclusive)")
    parser.add_argument("--source", help="raw history folder, file or glob (default: the config's)")
    parser.add_argument("--fresh", action="store_true", help="redo units an earlier run finished")
    parser.add_argument("--no-report", action="store_true", help="skip the GE HTML reports")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    from usp_feast.backfill import SignalBackfill, TimeRange
    from usp_feast.jobs import load_backfill_config

    backfill = SignalBackfill(
        args.repo,
        load_backfill_config(args.config),
        TimeRange(args.start, args.end),
        source=args.source,
        report=not args.no_report,
    )
    summary = backfill.run(
        fresh=args.fresh,
        on_unit=lambda unit, rows: logging.info("unit %s: %d records", unit.name, rows),
    )
    print(json.dumps(summary.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
