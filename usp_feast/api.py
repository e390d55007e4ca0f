"""HTTP query API (DESIGN.md section 7), a thin layer over :class:`SignalClient`.

Every bad request gets a 4xx with a one-line ``detail``; Redis being down is a 503; nothing the
caller sends produces a 500. The same app serves the signals explorer (``/explorer/``), static
pages that read only the routes below (docs/explorer.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from usp_feast.api_access import AccessPolicy
from usp_feast.durations import DurationError, format_duration, parse_duration
from usp_feast.job_status import JobMonitor
from usp_feast.query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    LimitExceededError,
    QueryError,
    SignalClient,
    UnknownSegmentError,
    UnknownSessionError,
    UnknownSignalError,
)
from usp_feast.segments import iso_ms
from usp_feast.spec import JoinSignalSpec, SegmentSpec, SessionEngagementSpec, SignalSpec
from usp_feast.store import StoreUnavailableError

__all__ = ["ApiError", "create_app", "create_app_from_env", "definitions_body"]

logger = logging.getLogger(__name__)

_SIGNAL_PARAMS = ("within", "limit", "as_of", "where", "fields", "order")
_AGGREGATE_PARAMS = ("signals", "agg", "within", "where", "as_of")
_SESSION_PARAMS = ("signals", "gap", "within", "max_length", "as_of")
_SEGMENT_PARAMS = ("at",)
_ENGAGEMENT_PARAMS = ("recent",)
_MEMBERS_PARAMS = ("cursor", "limit")


class ApiError(Exception):
    """A request the API refuses, with its HTTP status and a one-line reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_app(
    client: SignalClient, monitor: JobMonitor | None = None, access: AccessPolicy | None = None
) -> FastAPI:
    """Build the API application for one repository's client.

    Args:
        client: The repository's query client (its definitions too).
        monitor: Samples the running jobs for ``/v1/jobs``; by default one reading the local
            state directory's job registry.
        access: API keys, scopes and rate limit (:mod:`usp_feast.api_access`); by default
            what ``USP_API_KEYS`` and ``USP_API_RATE_LIMIT`` configure (unset: open).

    Example:
        >>> app = create_app(SignalClient.from_repo(repo_path))
        >>> for path in sorted(r.path for r in app.routes if r.path.startswith("/v1")):
        ...     print(path)
        /v1/definitions
        /v1/jobs
        /v1/segments/{segment}/members
        /v1/users/{user_id}/aggregates
        /v1/users/{user_id}/segments
        /v1/users/{user_id}/segments/{segment}
        /v1/users/{user_id}/sessions
        /v1/users/{user_id}/sessions/{name}
        /v1/users/{user_id}/signals/{signal}

    """
    app = FastAPI(title="usp-feast query API", version="1", docs_url="/docs", redoc_url=None)
    monitor = JobMonitor() if monitor is None else monitor
    access = AccessPolicy.from_env(os.environ) if access is None else access
    # One sample at a time: the monitor keeps the previous one to compute rates.
    sampling = asyncio.Lock()
    registry = CollectorRegistry()
    requests = Counter(
        "usp_http_requests", "HTTP requests served", ["route", "status"], registry=registry
    )
    latency = Histogram(
        "usp_http_request_seconds",
        "HTTP request latency",
        ["route"],
        registry=registry,
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    )

    def observe(route: str, status: int, started: float) -> None:
        requests.labels(route, str(status)).inc()
        latency.labels(route).observe(time.perf_counter() - started)

    def refused(request: Request, scope: str) -> Response | None:
        """The 401/403/429 answer when the caller may not use a route of ``scope`` now."""
        host = request.client.host if request.client else "unknown"
        admission = access.admit(request.headers, host, scope, time.monotonic())
        if admission.status == 200:
            return None
        response = _json({"detail": admission.detail}, admission.status)
        if admission.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="usp"'
        if admission.retry_after is not None:
            response.headers["Retry-After"] = str(admission.retry_after)
        return response

    async def answer(
        request: Request,
        route: str,
        allowed: tuple[str, ...],
        compute: Any,
        scope: str = "users.read",
    ) -> Response:
        # Plain Starlette endpoints: they parse their own parameters (for one-line 4xx
        # reasons), so FastAPI's per-request dependency solving would be pure overhead.
        started = time.perf_counter()
        denied = refused(request, scope)
        if denied is not None:
            observe(route, denied.status_code, started)
            return denied
        try:
            params = request.query_params
            unknown = sorted(set(params) - set(allowed))
            if unknown:
                raise ApiError(
                    400, f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(allowed)}"
                )
            if "user_id" in request.path_params:
                user = _user_id(request.path_params["user_id"])
                response = _json({"user_id": user, **await compute(user, params)})
            else:
                response = _json(await compute(None, params))
        except ApiError as exc:
            response = _json({"detail": exc.detail}, exc.status)
        except (UnknownSignalError, UnknownSegmentError, UnknownSessionError) as exc:
            response = _json({"detail": str(exc)}, 404)
        except LimitExceededError as exc:
            response = _json({"detail": str(exc)}, 422)
        except QueryError as exc:
            response = _json({"detail": str(exc)}, 400)
        except StoreUnavailableError as exc:
            logger.warning("store unavailable: %s", exc)
            response = _json({"detail": "signal store unavailable, retry later"}, 503)
        observe(route, response.status_code, started)
        return response

    async def recent_signals(request: Request) -> Response:
        signal = request.path_params["signal"]

        async def compute(user: int, params: Any) -> dict[str, Any]:
            events = await client.recent_dicts_async(
                user,
                signal,
                within=_within(params.get("within")),
                limit=_limit(params.get("limit")),
                as_of=_as_of(params.get("as_of")),
                where=params.get("where"),
                fields=_names(params.get("fields"), "fields"),
                order=params.get("order", "newest"),
            )
            return {"signal": signal, "count": len(events), "events": events}

        return await answer(request, "signals", _SIGNAL_PARAMS, compute)

    async def aggregates(request: Request) -> Response:
        async def compute(user: int, params: Any) -> dict[str, Any]:
            signals = _names(params.get("signals"), "signals") or []
            aggs = params.getlist("agg")
            if not aggs:
                raise ApiError(400, "name at least one aggregate: agg=count, agg=top_k:city:3, ...")
            values = client.aggregate(
                user,
                signals,
                aggs,
                _required_duration(params, "within", "1h"),
                where=params.get("where"),
                as_of=_as_of(params.get("as_of")),
            )
            return {"signals": signals, "within": params["within"], "aggregates": values}

        return await answer(request, "aggregates", _AGGREGATE_PARAMS, compute)

    async def sessions(request: Request) -> Response:
        async def compute(user: int, params: Any) -> dict[str, Any]:
            signals = _names(params.get("signals"), "signals") or []
            found = client.sessions(
                user,
                signals,
                _required_duration(params, "gap", "30m"),
                _within(params.get("within")) or timedelta(hours=24),
                max_length=_within(params.get("max_length"), "max_length"),
                as_of=_as_of(params.get("as_of")),
            )
            return {
                "signals": signals,
                "count": len(found),
                "sessions": [session.to_dict() for session in found],
            }

        return await answer(request, "sessions", _SESSION_PARAMS, compute)

    async def user_session(request: Request) -> Response:
        name = request.path_params["name"]

        async def compute(user: int, params: Any) -> dict[str, Any]:
            text = params.get("recent", "5")
            if not text.isdigit() or int(text) > 100:
                raise ApiError(400, f"recent must be an integer from 0 to 100, got {text!r}")
            return client.session(user, name, recent=int(text)).to_dict()

        return await answer(request, "user_session", _ENGAGEMENT_PARAMS, compute)

    async def user_segments(request: Request) -> Response:
        async def compute(user: int, params: Any) -> dict[str, Any]:
            found = client.segments(user, at=_as_of(params.get("at"), "at"))
            return {"segments": [m.to_dict() for m in found]}

        return await answer(request, "user_segments", _SEGMENT_PARAMS, compute)

    async def user_segment(request: Request) -> Response:
        segment = request.path_params["segment"]

        async def compute(user: int, params: Any) -> dict[str, Any]:
            found = client.membership(user, segment, at=_as_of(params.get("at"), "at"))
            if found is None:  # never a member (an unknown segment raised a 404 already)
                return {"segment": segment, "in_segment": False, "change": None}
            return found.to_dict()

        return await answer(request, "user_segment", _SEGMENT_PARAMS, compute)

    async def segment_members(request: Request) -> Response:
        segment = request.path_params["segment"]

        async def compute(_: None, params: Any) -> dict[str, Any]:
            page = client.members(
                segment, cursor=params.get("cursor"), limit=_limit(params.get("limit"))
            )
            return {
                "segment": segment,
                "count": len(page.members),
                "members": [
                    {
                        "user_id": m.user_id,
                        "entered_at": iso_ms(m.entered_at_ms),
                        "expires_at": iso_ms(m.expires_at_ms),
                    }
                    for m in page.members
                ],
                "next_cursor": page.next_cursor,
            }

        return await answer(request, "segment_members", _MEMBERS_PARAMS, compute, "segments.read")

    catalog = definitions_body(client)  # the client's definitions are fixed for its life

    async def definitions(request: Request) -> Response:
        async def compute(_: None, params: Any) -> dict[str, Any]:
            return catalog

        return await answer(request, "definitions", (), compute)

    async def jobs(request: Request) -> Response:
        async def compute(_: None, params: Any) -> dict[str, Any]:
            # The monitor scrapes each job's endpoint over HTTP: off the event loop.
            async with sampling:
                try:
                    found = await asyncio.to_thread(monitor.sample)
                except (OSError, ValueError) as exc:  # an unreadable registry or metrics text
                    logger.warning("job health unavailable: %s", exc)
                    reason = " ".join(str(exc).split())  # one line, like every detail
                    raise ApiError(503, f"job health could not be read: {reason}") from None
            return {"count": len(found), "jobs": [job.to_dict() for job in found]}

        return await answer(request, "jobs", (), compute, "ops.read")

    app.router.add_route(
        "/v1/users/{user_id}/signals/{signal}", recent_signals, methods=["GET"], name="signals"
    )
    app.router.add_route(
        "/v1/users/{user_id}/segments", user_segments, methods=["GET"], name="user_segments"
    )
    app.router.add_route(
        "/v1/users/{user_id}/segments/{segment}", user_segment, methods=["GET"], name="user_segment"
    )
    app.router.add_route(
        "/v1/segments/{segment}/members", segment_members, methods=["GET"], name="members"
    )
    app.router.add_route(
        "/v1/users/{user_id}/aggregates", aggregates, methods=["GET"], name="aggregates"
    )
    app.router.add_route("/v1/users/{user_id}/sessions", sessions, methods=["GET"], name="sessions")
    app.router.add_route(
        "/v1/users/{user_id}/sessions/{name}", user_session, methods=["GET"], name="user_session"
    )
    app.router.add_route("/v1/definitions", definitions, methods=["GET"], name="definitions")
    app.router.add_route("/v1/jobs", jobs, methods=["GET"], name="jobs")
    app.mount(
        "/explorer", StaticFiles(packages=[("usp_feast", "explorer")], html=True), name="explorer"
    )

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/explorer/")

    @app.get("/healthz")
    async def healthz() -> Response:
        started = time.perf_counter()
        reader = client.async_reader
        healthy = await reader.ping() if reader is not None else client.ping()
        response = _json(
            {"status": "ok" if healthy else "unavailable", "redis": healthy},
            200 if healthy else 503,
        )
        observe("healthz", response.status_code, started)
        return response

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        denied = refused(request, "ops.read")
        if denied is not None:
            return denied
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _json({"detail": f"{where}: {first.get('msg')}".strip(": ")}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            detail = f"no such endpoint: {request.url.path}"
        return _json({"detail": detail}, exc.status_code)

    return app


def definitions_body(client: SignalClient) -> dict[str, Any]:
    """What ``GET /v1/definitions`` answers: every definition the client serves, by kind.

    Each entry is the definition as its YAML file gives it (durations as text like ``30d``)
    plus what the platform derives from it: topics, Feast names, the online TTL in force.
    """
    signals: list[dict[str, Any]] = []
    joins: list[dict[str, Any]] = []
    for name in client.signals:
        spec = client.spec(name)
        body = {
            **spec.model_dump(mode="json"),
            "fields": dict(spec.fields),
            "online_ttl": format_duration(spec.online_ttl),
            "topics_read": list(spec.topics_read),
            "signal_topic": spec.signal_topic,
            "dead_letter_topic": spec.dead_letter_topic,
            "push_source": spec.push_source,
        }
        if isinstance(spec, JoinSignalSpec):
            joins.append({"kind": "join", **body, "summary": spec.describe()})
        elif isinstance(spec, SignalSpec):
            signals.append({"kind": "signal", **body})
    segments = [_segment_body(client.segment_spec(name)) for name in client.segment_names]
    sessions = [_session_body(client.session_spec(name)) for name in client.session_names]
    return {"signals": signals, "joins": joins, "segments": segments, "sessions": sessions}


def _segment_body(spec: SegmentSpec) -> dict[str, Any]:
    return {
        "kind": "segment",
        **spec.model_dump(mode="json"),
        "view": spec.view,
        "topic": spec.topic,
    }


def _session_body(spec: SessionEngagementSpec) -> dict[str, Any]:
    return {
        **spec.model_dump(mode="json"),
        "kind": spec.kind,
        "summary": spec.describe(),
        "view": spec.view,
        "topic": spec.topic,
    }


def create_app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory``: the repository comes from ``USP_REPO``."""
    return create_app(SignalClient.from_repo(os.environ.get("USP_REPO", "feature_repo")))


def _user_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"user_id must be an integer, got {text!r}") from None
    if value <= 0:
        raise ApiError(400, f"user_id must be positive, got {value}")
    return value


def _within(text: str | None, name: str = "within") -> Any:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise ApiError(400, f"{name}: {exc}") from None


def _required_duration(params: Any, name: str, example: str) -> Any:
    if params.get(name) is None:
        raise ApiError(400, f"{name} is required, e.g. {name}={example}")
    return _within(params[name], name)


def _names(text: str | None, name: str) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ApiError(400, f"{name} must be a comma-separated list of names, got {text!r}")
    return names


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise ApiError(
            400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {text!r}"
        ) from None
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}, got {value}")
    return value


def _as_of(text: str | None, name: str = "as_of") -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, f"{name} must be an ISO-8601 time such as 2026-11-26T12:00:00Z, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise ApiError(400, f"{name} must carry a timezone, e.g. 2026-11-26T12:00:00Z")
    return moment
