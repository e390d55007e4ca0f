"""The ``usp`` command line.

Commands import their heavy dependencies (Feast, uvicorn) lazily so ``usp query`` and
``usp dev status`` answer quickly.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from usp_feast.durations import DurationError, parse_duration

if TYPE_CHECKING:
    from usp_feast.backfill import SignalBackfill
    from usp_feast.definitions import JobDefinition
    from usp_feast.query import SessionReport
    from usp_feast.scaffold import DefinitionKind

__all__ = ["main"]

REPO_OPTION = click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("feature_repo"),
    show_default=True,
    help="Feature repository (folder with feature_store.yaml).",
)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def main(verbose: bool) -> None:
    """usp: real-time user signals on Feast."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@main.command()
@REPO_OPTION
def validate(repo: Path) -> None:
    """Check every definition; report all problems with file, line and field."""
    from usp_feast.definitions import check_definitions

    definitions, problems = check_definitions(repo)
    for problem in problems:
        click.echo(f"{repo}/{problem}", err=True)
    if problems:
        count = len(problems)
        raise click.ClickException(f"{count} problem{'s' if count != 1 else ''} found")
    joins = f" ({_count(len(definitions.joins), 'join')})" if definitions.joins else ""
    click.echo(
        f"definitions OK: {_count(len(definitions.signals), 'signal')}{joins}, "
        f"{_count(len(definitions.segments), 'segment')}, "
        f"{_count(len(definitions.sessions), 'session')}"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--project",
    help="Feast project name (default: derived from DIRECTORY's name, e.g. my-team -> my_team).",
)
def init(directory: Path, project: str | None) -> None:
    """Create a project in DIRECTORY (new or empty): a feature repository with an example signal.

    DIRECTORY gets feature_repo/ (feature_store.yaml, definitions.py, signals/, transforms/),
    validation/ (the expectation suites) and a README; `usp generate` later writes streaming/,
    backfill/, monitoring/ and deploy/kubernetes/ beside feature_repo/.
    """
    from usp_feast.scaffold import (
        EXAMPLE_SIGNAL,
        ScaffoldError,
        check_empty_folder,
        check_project_name,
        init_files,
        project_name,
        write_files,
    )

    try:
        check_empty_folder(directory)
        name = (
            check_project_name(project)
            if project is not None
            else project_name(directory.resolve().name)
        )
        written = write_files(directory, init_files(name))
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(f"created {path}")
    click.echo(
        f"\nFeast project {name!r} is ready. Next, in {directory}:\n"
        "  usp validate              check the definitions\n"
        "  usp generate              write streaming/, backfill/ and monitoring/\n"
        "  usp apply                 generate, then register with Feast (feast apply)\n"
        f"  usp run {EXAMPLE_SIGNAL:17} run the example signal's job (needs `usp dev up`)\n"
        f"  usp query 42 {EXAMPLE_SIGNAL:12} read user 42's recent events\n"
        "Add definitions with `usp new signal|segment|session NAME`; see README.md."
    )


@main.group()
def new() -> None:
    """Add a definition skeleton that validates as written (then edit it)."""


SIGNAL_OPTION = click.option(
    "--signal",
    help="The signal it is made over (default: the repository's first signal, by file name).",
)


@new.command("signal")
@click.argument("name")
@REPO_OPTION
def new_signal(name: str, repo: Path) -> None:
    """Add signal NAME: its YAML, a transform class and an expectation suite."""
    _add_definition("signal", name, repo, None)


@new.command("segment")
@click.argument("name")
@SIGNAL_OPTION
@REPO_OPTION
def new_segment(name: str, signal: str | None, repo: Path) -> None:
    """Add segment NAME: a live cohort that a signal's events put users in."""
    _add_definition("segment", name, repo, signal)


@new.command("session")
@click.argument("name")
@SIGNAL_OPTION
@REPO_OPTION
def new_session(name: str, signal: str | None, repo: Path) -> None:
    """Add session engagement NAME: per-visit aggregates of a signal's events."""
    _add_definition("session", name, repo, signal)


def _add_definition(kind: DefinitionKind, name: str, repo: Path, signal: str | None) -> None:
    from usp_feast.scaffold import ScaffoldError, plan_definition, write_files

    try:
        root, files = plan_definition(kind, name, repo, signal=signal)
        written = write_files(root, files)
    except ScaffoldError as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        try:
            shown = path.relative_to(Path.cwd())
        except ValueError:
            shown = path
        click.echo(f"created {shown}")
    click.echo(
        f"Next: edit {'them' if len(written) > 1 else 'it'}, then `usp validate --repo {repo}`."
    )


STREAMING_OPTION = click.option(
    "--streaming",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of generated job configs (default: streaming/ beside the repository).",
)


def _streaming_dir(repo: Path, streaming: Path | None) -> Path:
    return streaming if streaming is not None else repo.resolve().parent / "streaming"


@main.command()
@REPO_OPTION
@STREAMING_OPTION
@click.option("--check", is_flag=True, help="Exit non-zero if a generated file is stale.")
def generate(repo: Path, streaming: Path | None, check: bool) -> None:
    """Generate the streaming, backfill, monitoring and Kubernetes files of every definition.

    Beside the repository: streaming/ (job configs), backfill/, monitoring/ (Prometheus rules,
    Grafana dashboards) and deploy/kubernetes/ (a Flink Kubernetes Operator deployment, see
    docs/kubernetes.md). Deterministic: --check fails while any of them is stale.
    """
    _generate(repo, streaming, check)


def _generate(repo: Path, streaming: Path | None, check: bool) -> None:
    from usp_feast.definitions import DefinitionError, load_definitions
    from usp_feast.jobs import render_backfill_configs, render_job_configs
    from usp_feast.kubernetes import KubernetesError, render_kubernetes
    from usp_feast.monitoring import MonitoringError, by_folder, render_monitoring
    from usp_feast.runner import stale_files, write_files

    try:
        definitions = load_definitions(repo)
        monitoring = by_folder(render_monitoring(definitions))
        kubernetes = render_kubernetes(definitions)
    except (DefinitionError, MonitoringError, KubernetesError) as exc:
        raise click.ClickException(str(exc)) from None
    outputs = {
        _streaming_dir(repo, streaming): render_job_configs(definitions),
        _backfill_dir(repo): render_backfill_configs(definitions),
        **{_monitoring_dir(repo) / sub: files for sub, files in monitoring.items()},
        _deploy_dir(repo) / "kubernetes": kubernetes,
    }
    if check:
        stale = [path for folder, files in outputs.items() for path in stale_files(files, folder)]
        if stale:
            raise click.ClickException(
                f"generated files are stale: {', '.join(stale)}; run `usp generate`"
            )
        click.echo("generated files are up to date")
        return
    for folder, files in outputs.items():
        for path, changed in write_files(files, folder).items():
            click.echo(f"{'wrote    ' if changed else 'unchanged'} {path}")


def _backfill_dir(repo: Path) -> Path:
    return repo.resolve().parent / "backfill"


def _monitoring_dir(repo: Path) -> Path:
    return repo.resolve().parent / "monitoring"


def _deploy_dir(repo: Path) -> Path:
    return repo.resolve().parent / "deploy"


@main.command()
@REPO_OPTION
def apply(repo: Path) -> None:
    """Generate every definition's files, then register the repository with `feast apply`."""
    import subprocess

    if not (repo / "feature_store.yaml").is_file():
        raise click.ClickException(
            f"{repo} has no feature_store.yaml; pass --repo the feature repository"
        )
    click.echo("==> usp generate")
    try:
        _generate(repo, None, check=False)
    except click.ClickException as exc:
        raise click.ClickException(f"usp generate failed, feast apply not run: {exc}") from None
    feast = Path(sys.executable).with_name("feast")
    if not feast.is_file():
        raise click.ClickException(f"{feast} is missing; run scripts/setup.sh to install Feast")
    click.echo(f"==> feast apply (in {repo})")
    # Run as a user runs it, in the repository; its output is passed on as it comes.
    with subprocess.Popen(
        [str(feast), "apply"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout or ():
            click.echo(line, nl=False)
    if process.returncode != 0:
        raise click.ClickException(
            f"feast apply failed (exit {process.returncode}; its output is above); "
            "the generated files are written"
        )
    click.echo("applied: generated files written and the repository registered with Feast")


@main.command()
@click.argument("names", nargs=-1)
@click.option(
    "--all",
    "run_all",
    is_flag=True,
    help="Run every signal, join, segment and session engagement in one Flink job.",
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--cluster",
    "on_cluster",
    is_flag=True,
    help="Run on the cluster of `usp cluster up` (parallel, with failover) instead of in-process.",
)
@click.option(
    "--parallelism",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel tasks per step (default: 1 locally; every working slot on --cluster).",
)
@REPO_OPTION
@STREAMING_OPTION
def run(
    names: tuple[str, ...],
    run_all: bool,
    duration: float | None,
    on_cluster: bool,
    parallelism: int | None,
    repo: Path,
    streaming: Path | None,
) -> None:
    """Run signal, segment and session jobs by name on Flink until Ctrl-C.

    Locally by default (a mini-cluster in the job's process); with --cluster, submitted to the
    standalone cluster of `usp cluster up`, this command staying attached (Ctrl-C cancels it).
    """
    from usp_feast import devstack
    from usp_feast.definitions import DefinitionError, load_definitions
    from usp_feast.jobs import config_file
    from usp_feast.runner import RunnerError, ensure_topics, job_command, run_foreground

    if bool(names) == run_all:
        raise click.UsageError("name one or more signals, segments or sessions, or pass --all")
    try:
        definitions = load_definitions(repo)
        specs: list[JobDefinition] = (
            [*definitions.signals, *definitions.segments, *definitions.sessions]
            if run_all
            else [definitions.job_definition(n) for n in names]
        )
    except (DefinitionError, KeyError) as exc:
        raise click.ClickException(str(exc).strip('"')) from None
    folder = _streaming_dir(repo, streaming)
    configs = [folder / config_file(spec) for spec in specs]
    missing = [str(c) for c in configs if not c.is_file()]
    if missing:
        raise click.ClickException(f"no job config {', '.join(missing)}; run `usp generate`")
    jobmanager = None
    if on_cluster:
        from usp_feast import cluster

        running = cluster.info()
        if running is None:
            raise click.ClickException("no cluster runs here; start one with `usp cluster up`")
        jobmanager = running["rest"]
        parallelism = parallelism or cluster.ClusterSpec(**running["spec"]).parallelism
    parallelism = parallelism or 1
    try:
        # A topic needs a partition per parallel reader, or the extra readers idle.
        ensure_topics(devstack.endpoints().kafka, definitions.topics(specs), parallelism)
        command = job_command(
            configs, repo.resolve(), parallelism=parallelism, jobmanager=jobmanager
        )
        code = run_foreground(command, duration)
    except RunnerError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.group("cluster")
def cluster_group() -> None:
    """Manage a standalone Flink cluster on this machine (JobManager + TaskManagers)."""


@cluster_group.command("up")
@click.option(
    "--taskmanagers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="TaskManagers whose slots jobs fill.",
)
@click.option(
    "--standby",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Extra TaskManagers kept warm with free slots, for fast failover.",
)
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Task slots per TaskManager.",
)
def cluster_up(taskmanagers: int, standby: int, slots: int) -> None:
    """Start the cluster and wait until every TaskManager has registered (idempotent)."""
    from usp_feast import cluster

    port = int(os.environ.get("USP_FLINK_REST_PORT") or 18081)
    spec = cluster.ClusterSpec(taskmanagers=taskmanagers, standby=standby, slots=slots,
                               rest_port=port)  # fmt: skip
    click.echo(f"starting Flink: 1 JobManager, {spec.processes} TaskManagers ...")
    try:
        record = cluster.up(spec)
    except cluster.ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"cluster up: http://{record['rest']} (web UI), parallelism {spec.parallelism}, "
        f"{standby} standby TaskManager(s); logs in {cluster.cluster_dir() / 'log'}"
    )


@cluster_group.command("down")
def cluster_down() -> None:
    """Stop the cluster's TaskManagers and JobManager (idempotent)."""
    from usp_feast import cluster

    try:
        cluster.down()
    except cluster.ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("cluster stopped")


@cluster_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def cluster_status(as_json: bool) -> None:
    """Show the cluster's TaskManagers, free slots and running jobs."""
    from usp_feast import cluster

    state = cluster.status()
    if as_json:
        click.echo(json.dumps(state, indent=2, sort_keys=True))
    elif not state["running"]:
        click.echo("no cluster runs (start one with `usp cluster up`)")
    elif "error" in state:
        raise click.ClickException(state["error"])
    else:
        click.echo(
            f"cluster at http://{state['rest']}: {state['jobs_running']} job(s) running, "
            f"{state['slots_available']}/{state['slots_total']} slots free"
        )
        for tm_id, slots in sorted(state["taskmanagers"].items()):
            click.echo(f"  {tm_id:12} {slots['slots'] - slots['free']}/{slots['slots']} slots busy")


@main.group()
def dev() -> None:
    """Manage the local stack (Redis and a Kafka-protocol broker)."""


@dev.command("up")
def dev_up() -> None:
    """Start the local stack (idempotent)."""
    from usp_feast import devstack

    try:
        endpoints = devstack.up()
    except devstack.DevStackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"kafka  {endpoints.kafka}\nredis  {endpoints.redis}")


@dev.command("down")
def dev_down() -> None:
    """Stop the local stack (idempotent)."""
    from usp_feast import devstack

    devstack.down()
    click.echo("local stack stopped")


@dev.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print endpoints as JSON.")
def dev_status(as_json: bool) -> None:
    """Show the local stack's endpoints and processes."""
    from usp_feast import devstack

    status = devstack.status()
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True))
        return
    for name, service in sorted(status["services"].items()):
        state = "running" if service["running"] else "stopped"
        click.echo(f"{name:6} {state:8} {status[name]}  (log: {service['log']})")


@main.command()
@click.argument("user_id", type=int)
@click.argument("signal")
@click.option("--within", help="Only events this recent, e.g. 10m, 2h, 7d.")
@click.option("--limit", type=int, default=50, show_default=True, help="Maximum events.")
@click.option("--as-of", "as_of", help="Processing time to read as of, ISO-8601 with zone.")
@click.option("--where", help="Filter on fields, e.g. 'city == \"Paris\" and guests >= 2'.")
@click.option("--fields", help="Only these fields, comma-separated.")
@click.option(
    "--order", type=click.Choice(["newest", "oldest"]), default="newest", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@REPO_OPTION
def query(
    user_id: int,
    signal: str,
    within: str | None,
    limit: int,
    as_of: str | None,
    where: str | None,
    fields: str | None,
    order: str,
    as_json: bool,
    repo: Path,
) -> None:
    """Print USER_ID's recent SIGNAL events, newest first (or filtered, projected, oldest first).

    SIGNAL may also name a session engagement: then USER_ID's current session (or window) and
    the --limit most recent closed ones (at most 100) are printed.
    """
    from usp_feast.query import QueryError, SignalClient
    from usp_feast.store import StoreUnavailableError

    try:
        client = SignalClient.from_repo(repo)
        if signal in client.session_names:
            report = client.session(user_id, signal, recent=min(limit, 100))
            _print_session(report, as_json)
            return
        window = parse_duration(within) if within else None
        moment = datetime.fromisoformat(as_of.replace("Z", "+00:00")) if as_of else None
        keep = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
        events = client.recent(
            user_id,
            signal,
            within=window,
            limit=limit,
            as_of=moment,
            where=where,
            fields=keep,
            order=order,
        )
    except (DurationError, QueryError, StoreUnavailableError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # as_of that is not ISO-8601
        raise click.ClickException(f"--as-of: {exc}") from None
    if as_json:
        for event in events:
            click.echo(json.dumps(event.to_dict()))
        return
    from rich.console import Console
    from rich.table import Table

    spec = client.spec(signal)
    table = Table(title=f"user {user_id} · {signal} · {len(events)} events", title_justify="left")
    shown = [f for f in spec.fields if keep is None or f in keep]
    columns = ["event_ts", "processed_at", "event_id", *shown]
    for column in columns:
        table.add_column(column)
    for event in events:
        data = event.to_dict()
        table.add_row(*(str(data.get(c, "")) for c in columns))
    Console().print(table)


def _print_session(report: SessionReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    from rich.console import Console
    from rich.table import Table

    shown = ([("current", report.current)] if report.current else []) + [
        (f"closed {i}", e) for i, e in enumerate(report.recent, 1)
    ]
    title = f"user {report.user_id} · {report.session} ({report.kind})"
    if not report.current:
        title += " · nothing open now"
    # One column per session, one row per time or feature: features are many, sessions few.
    table = Table("", *(label for label, _ in shown), title=title, title_justify="left")
    dicts = [e.to_dict() for _, e in shown]
    for key in ("started_at", "last_event_at", "expires_at"):
        table.add_row(key, *(str(d[key] or "") for d in dicts))
    for name in dict.fromkeys(name for _, e in shown for name in e.values):
        table.add_row(name, *(json.dumps(e.values.get(name)) for _, e in shown))
    Console().print(table)


@main.command()
@click.argument("user_id", type=int)
@click.option("--at", help="Answer for this time (from history), ISO-8601 with zone.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@REPO_OPTION
def segments(user_id: int, at: str | None, as_json: bool, repo: Path) -> None:
    """Print USER_ID's segment memberships now (or at --at): every segment, in or out."""
    from usp_feast.query import QueryError, SignalClient
    from usp_feast.store import StoreUnavailableError

    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00")) if at else None
        client = SignalClient.from_repo(repo)
        found = {name: client.membership(user_id, name, moment) for name in client.segment_names}
    except (QueryError, StoreUnavailableError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(f"--at: {exc}") from None
    if as_json:
        for name, membership in found.items():
            click.echo(json.dumps(membership.to_dict() if membership else {"segment": name}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"user {user_id} · segments", title_justify="left")
    table.add_column("segment", no_wrap=True)
    for column in ("member", "since", "until", "last change"):
        table.add_column(column)
    for name, m in found.items():
        if m is None:
            table.add_row(name, "never", "", "", "")
        else:
            table.add_row(
                name,
                "yes" if m.in_segment else "no",
                f"{m.entered_at:%Y-%m-%d %H:%M:%S}",
                f"{m.expires_at:%Y-%m-%d %H:%M:%S}",
                f"{m.change}: {m.reason}",
            )
    Console().print(table)


@main.command()
@click.argument("segment")
@click.option("--limit", type=int, default=50, show_default=True, help="Members per page.")
@click.option("--cursor", help="next_cursor of the previous page.")
@REPO_OPTION
def members(segment: str, limit: int, cursor: str | None, repo: Path) -> None:
    """Print a page of SEGMENT's current members, newest entry first, then the next cursor."""
    from usp_feast.query import QueryError, SignalClient
    from usp_feast.segments import iso_ms
    from usp_feast.store import StoreUnavailableError

    try:
        page = SignalClient.from_repo(repo).members(segment, cursor=cursor, limit=limit)
    except (QueryError, StoreUnavailableError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    for member in page.members:
        click.echo(
            f"{member.user_id}\tentered {iso_ms(member.entered_at_ms)}"
            f"\texpires {iso_ms(member.expires_at_ms)}"
        )
    click.echo(f"next cursor: {page.next_cursor}" if page.next_cursor else "(end of listing)")


@main.command()
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds per refresh.")
@click.option("--once", is_flag=True, help="Sample twice, --interval apart, print and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one sample as JSON (implies --once).")
def status(interval: float, once: bool, as_json: bool) -> None:
    """Live dashboard of the running jobs: rates, lag, latencies, last checkpoint (Ctrl-C stops).

    Reads each job's own metrics endpoint (the jobs register under the stack's state folder).
    """
    import time

    from rich.console import Console
    from rich.live import Live

    from usp_feast.job_status import JobMonitor, status_view

    if interval <= 0:
        raise click.BadParameter("must be above 0", param_hint="--interval")
    monitor = JobMonitor()
    monitor.sample()  # rates need a sample before
    if once or as_json:
        time.sleep(interval)
        jobs = monitor.sample()
        if as_json:
            click.echo(json.dumps([job.to_dict() for job in jobs], indent=2))
        else:
            Console().print(status_view(jobs))
        return
    with Live(status_view([]), console=Console(), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(status_view(monitor.sample()), refresh=True)
        except KeyboardInterrupt:
            pass


@main.command()
@REPO_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
def serve(repo: Path, host: str, port: int, workers: int) -> None:
    """Serve the HTTP query API (/v1/..., /healthz, /metrics) and the signals explorer (/)."""
    import os

    import uvicorn

    from usp_feast.api_access import AccessPolicy
    from usp_feast.query import RepoSettings

    try:
        RepoSettings.read(repo.resolve())  # fail here, not in each worker
        AccessPolicy.from_env(os.environ)  # API keys and rate limit: same
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    os.environ["USP_REPO"] = str(repo.resolve())
    uvicorn.run(
        "usp_feast.api:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


def _moment(value: str, option: str) -> datetime:
    """A ``--start``/``--end`` value (see :func:`usp_feast.backfill.parse_bound`)."""
    from usp_feast.backfill import BackfillError, parse_bound

    try:
        return parse_bound(value)
    except BackfillError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _backfill_job(
    repo: Path, signal: str, start: str, end: str, source: str | None, report: bool
) -> SignalBackfill:
    from usp_feast.backfill import BackfillError, SignalBackfill, TimeRange
    from usp_feast.definitions import DefinitionError
    from usp_feast.jobs import load_backfill_config

    config_path = _backfill_dir(repo) / f"{signal}.json"
    if not config_path.is_file():
        raise click.ClickException(f"no backfill config {config_path}; run `usp generate`")
    try:
        window = TimeRange(_moment(start, "--start"), _moment(end, "--end"))
        return SignalBackfill(
            repo, load_backfill_config(config_path), window, source=source, report=report
        )
    except (BackfillError, DefinitionError, KeyError) as exc:
        raise click.ClickException(str(exc).strip('"')) from None


SOURCE_OPTION = click.option(
    "--source",
    help="Raw history: a folder, a Parquet file or a glob (default: the backfill config's).",
)


@main.command()
@click.argument("signal")
@click.option("--start", required=True, help="First event time, a date or ISO-8601 (inclusive).")
@click.option("--end", required=True, help="End of the range, a date or ISO-8601 (exclusive).")
@SOURCE_OPTION
@click.option("--fresh", is_flag=True, help="Redo units an earlier run of this backfill finished.")
@click.option("--no-report", is_flag=True, help="Skip the Great Expectations HTML reports.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@REPO_OPTION
def backfill(
    signal: str,
    start: str,
    end: str,
    source: str | None,
    fresh: bool,
    no_report: bool,
    as_json: bool,
    repo: Path,
) -> None:
    """Recompute SIGNAL from raw history in Parquet with the stream's code; write new versions."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from usp_feast.backfill import unit_rows
    from usp_feast.raw_history import HistoryError
    from usp_feast.store import StoreUnavailableError

    job = _backfill_job(repo, signal, start, end, source, not no_report)
    console = Console(stderr=True)
    try:
        units = job.units()
        total = sum(unit_rows(unit) for unit in units)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=as_json,
        ) as bar:
            task = bar.add_task(f"backfill {signal}", total=total)
            summary = job.run(
                fresh=fresh,
                on_unit=lambda unit, _: bar.update(task, description=f"{signal} {unit.name}"),
                progress=lambda done: bar.advance(task, done),
            )
    except (HistoryError, StoreUnavailableError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
        return
    totals = summary.to_dict()
    console.print(
        f"{signal}: {len(summary.units)} units ({len(summary.skipped)} already done), "
        f"{totals['read']:,} events read, {totals['rejected']:,} rejected, "
        f"{totals['outside']:,} outside the range, {totals['rows']:,} signal rows; "
        f"written: {totals['store_versions']:,} new versions to the store, "
        f"{totals['offline_rows']:,} offline rows "
        f"({totals['beyond_retention']:,} older than retention: offline only); "
        f"{totals['seconds']:.1f} s",
        highlight=False,
    )
    if totals["rejected"]:
        console.print(f"rejects and validation reports: {job.work_dir}", highlight=False)


@main.command()
@click.argument("signal")
@click.option("--start", required=True, help="First event time, a date or ISO-8601 (inclusive).")
@click.option("--end", required=True, help="End of the range, a date or ISO-8601 (exclusive).")
@SOURCE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@REPO_OPTION
def reconcile(
    signal: str, start: str, end: str, source: str | None, as_json: bool, repo: Path
) -> None:
    """Compare what the stream wrote for SIGNAL with what a backfill computes (exit 1: unequal)."""
    from usp_feast.raw_history import HistoryError
    from usp_feast.reconcile import reconcile as compare_stream
    from usp_feast.store import StoreUnavailableError

    job = _backfill_job(repo, signal, start, end, source, report=False)
    try:
        report = compare_stream(job)
    except (HistoryError, StoreUnavailableError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), default=str))
    else:
        click.echo(
            f"{signal} {report.start} .. {report.end}: {report.batch_rows:,} rows computed, "
            f"{report.rejected:,} events rejected"
        )
        for side, result in (("store", report.store), ("offline", report.offline)):
            counts = ", ".join(
                f"{n:,} {kind.replace('_', ' ')}" for kind, n in result.counts.items()
            )
            click.echo(f"  {side:8} {result.matched:,} of {result.compared:,} match; {counts}")
            for example in result.examples:
                click.echo(
                    f"    {example.kind} {example.event_id}: stream={example.stream} "
                    f"batch={example.batch}"
                )
    sys.exit(1 if report.differences else 0)


@main.command()
@click.option("--users", type=int, default=1000, show_default=True, help="Users to simulate.")
@click.option("--start", "start_text", required=True, help="Journeys start, date or ISO-8601.")
@click.option("--end", "end_text", required=True, help="Journeys end, date or ISO-8601.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write into (default: <repo>/data/raw, where backfill configs look).",
)
@REPO_OPTION
def history(
    users: int, start_text: str, end_text: str, seed: int, out: Path | None, repo: Path
) -> None:
    """Write the example domain's raw events as Parquet history (what a topic archiver keeps)."""
    from usp_feast.raw_history import write_history
    from usp_feast.traffic import TrafficConfig, generate

    start, end = _moment(start_text, "--start"), _moment(end_text, "--end")
    if end <= start:
        raise click.BadParameter("must be after --start", param_hint="--end")
    folder = out or repo / "data" / "raw"
    chunk = 5_000  # users per generator run: memory stays flat however many users
    written = 0
    for first in range(0, users, chunk):
        config = TrafficConfig(
            users=min(chunk, users - first),
            seed=seed + first,
            start=start,
            span=end - start,
            first_user_id=first + 1,
        )
        written += len(write_history(generate(config), folder))
    click.echo(f"wrote {written} Parquet files of raw events under {folder}")


@main.command()
@REPO_OPTION
@click.option("--users", type=int, default=20, show_default=True, help="Users to simulate.")
@click.option("--rate", type=float, default=100, show_default=True, help="Events per second.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def demo(repo: Path, users: int, rate: float, duration: float | None) -> None:
    """Live demo: traffic into Kafka, the signal jobs on Flink, readers' view (Ctrl-C stops)."""
    from rich.console import Console

    from usp_feast.definitions import DefinitionError
    from usp_feast.demo import run_demo
    from usp_feast.runner import RunnerError
    from usp_feast.store import StoreUnavailableError

    try:
        run_demo(repo.resolve(), users=users, rate=rate, duration=duration, console=Console())
    except (DefinitionError, StoreUnavailableError, RunnerError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
