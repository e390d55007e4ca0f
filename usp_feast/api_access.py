"""Who may call the HTTP API, for what, and how often: API keys with scopes, per-client limits.

Configured from the environment only, so no secret is ever written into a file the project
generates or checks in:

* ``USP_API_KEYS``: ``name=secret:scope,scope;name=secret:scope`` (secrets of at least 16
  characters, without ``:`` or ``;``; scopes from :data:`SCOPES`). With keys configured every
  ``/v1`` route and ``/metrics`` needs one, sent as ``Authorization: Bearer <secret>`` or
  ``X-API-Key: <secret>``: none or an unknown one is a 401, a key without the route's scope a
  403. Without keys the API is open (the local default).
* ``USP_API_RATE_LIMIT``: ``<requests>/<s|m>`` per client (the key's name, or the client address
  when the API is open), e.g. ``200/s``; beyond it a 429 with ``Retry-After``. Unset: no limit.

Every scope is read-only: the API has no route that writes.

Example:
    >>> policy = AccessPolicy.parse("ranker=kSd83nd92Ld0aPq1:users.read", "2/s")
    >>> policy.admit({"authorization": "Bearer kSd83nd92Ld0aPq1"}, "h", "users.read", now=0.0)
    Admission(status=200, detail='', client='ranker', retry_after=None)
    >>> policy.admit({"x-api-key": "kSd83nd92Ld0aPq1"}, "h", "ops.read", now=0.0).detail
    "API key 'ranker' lacks the scope 'ops.read'"
    >>> policy.admit({}, "h", "users.read", now=0.0).status
    401
    >>> key = {"x-api-key": "kSd83nd92Ld0aPq1"}
    >>> [policy.admit(key, "h", "users.read", now=0.1).status for _ in "ab"]
    [200, 429]
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["KEYS_ENV", "RATE_ENV", "SCOPES", "AccessPolicy", "Admission", "ApiKey", "TokenBucket"]

KEYS_ENV = "USP_API_KEYS"
RATE_ENV = "USP_API_RATE_LIMIT"
SCOPES = {
    "users.read": "a user's signals, aggregates, sessions and segments (/v1/users/...) and "
    "the definitions (/v1/definitions)",
    "segments.read": "segment member listings (/v1/segments/{segment}/members)",
    "ops.read": "job health and the API's own metrics (/v1/jobs, /metrics)",
}
_MAX_CLIENTS = 10_000  # rate-limit buckets kept before idle ones are dropped
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m)\s*$")


@dataclass(frozen=True)
class ApiKey:
    """One client's key: its name (in logs and limits), the secret's digest, its scopes."""

    name: str
    digest: bytes
    scopes: frozenset[str]


@dataclass(frozen=True)
class Admission:
    """The answer for one request: 200 to go on, else the status and the one-line reason."""

    status: int
    detail: str
    client: str
    retry_after: int | None = None


@dataclass
class TokenBucket:
    """Up to ``burst`` requests at once, refilled at ``rate`` per second (pure: time is given)."""

    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> float:
        """0 when a request may go now (and counts it), else the seconds until one may."""
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class AccessPolicy:
    """API keys and the per-client rate limit; :meth:`admit` decides each request."""

    keys: tuple[ApiKey, ...] = ()
    rate: float | None = None  # requests per second per client
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    @classmethod
    def parse(cls, keys: str | None, rate: str | None) -> AccessPolicy:
        """Read ``USP_API_KEYS`` and ``USP_API_RATE_LIMIT`` values (see the module docs).

        Raises:
            ValueError: Naming the variable and the entry that is wrong (never the secret).
        """
        return cls(_parse_keys(keys or ""), _parse_rate(rate))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AccessPolicy:
        """The policy the environment configures."""
        return cls.parse(environ.get(KEYS_ENV), environ.get(RATE_ENV))

    @property
    def open(self) -> bool:
        """No keys configured: every client may call every route."""
        return not self.keys

    def admit(
        self, headers: Mapping[str, str], client_host: str, scope: str, now: float
    ) -> Admission:
        """Whether this request (lower-case ``headers``) may use a route needing ``scope`` now."""
        client = f"address {client_host}"
        if self.keys:
            secret = _secret(headers)
            if secret is None:
                return Admission(
                    401,
                    "an API key is required: send 'Authorization: Bearer <key>' or "
                    "'X-API-Key: <key>'",
                    client,
                )
            digest = _digest(secret)
            key = next((k for k in self.keys if hmac.compare_digest(k.digest, digest)), None)
            if key is None:
                return Admission(401, "unknown API key", client)
            if scope not in key.scopes:
                return Admission(403, f"API key {key.name!r} lacks the scope {scope!r}", key.name)
            client = key.name
        if self.rate is not None:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= _MAX_CLIENTS:
                    self._forget_idle(now)
                bucket = self._buckets[client] = TokenBucket(self.rate, max(1.0, self.rate))
            wait = bucket.take(now)
            if wait > 0:
                return Admission(
                    429,
                    f"rate limit of {self.rate:g} requests/s for {client} exceeded; retry later",
                    client,
                    retry_after=max(1, math.ceil(wait)),
                )
        return Admission(200, "", client)

    def _forget_idle(self, now: float) -> None:
        # A bucket refilled to its burst says nothing a new one would not: drop those, so
        # that many distinct addresses cannot grow the table without bound.
        for client, bucket in list(self._buckets.items()):
            if bucket.at + bucket.burst / bucket.rate <= now:
                del self._buckets[client]


def _secret(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def _digest(secret: str) -> bytes:
    # Held as digests: compared in constant time, never logged or shown.
    return hashlib.sha256(secret.encode()).digest()


def _parse_keys(text: str) -> tuple[ApiKey, ...]:
    keys: list[ApiKey] = []
    for position, entry in enumerate((e.strip() for e in text.split(";")), 1):
        if not entry:
            continue
        name, equals, rest = entry.partition("=")
        secret, colon, scope_text = rest.rpartition(":")
        where = f"{KEYS_ENV} entry {position} ({name.strip() or '?'})"
        if not equals or not _NAME.match(name.strip()):
            raise ValueError(f"{where}: expected name=secret:scope[,scope], name [A-Za-z0-9_.-]")
        if not colon or not secret:
            raise ValueError(f"{where}: expected name=secret:scope[,scope]")
        if len(secret) < 16:
            raise ValueError(f"{where}: the secret is shorter than 16 characters")
        scopes = frozenset(s.strip() for s in scope_text.split(",") if s.strip())
        unknown = sorted(scopes - set(SCOPES))
        if not scopes or unknown:
            raise ValueError(
                f"{where}: unknown scope {unknown[0]!r}; known: {', '.join(SCOPES)}"
                if unknown
                else f"{where}: no scope; known: {', '.join(SCOPES)}"
            )
        if any(k.name == name.strip() for k in keys):
            raise ValueError(f"{where}: the name {name.strip()!r} is used twice")
        keys.append(ApiKey(name.strip(), _digest(secret), scopes))
    return tuple(keys)


def _parse_rate(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    match = _RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{RATE_ENV}={text!r}: expected <requests>/s or <requests>/m, e.g. 200/s")
    return float(match.group(1)) / (60 if match.group(2) == "m" else 1)
