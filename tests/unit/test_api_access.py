"""API access: keys with read-only scopes, and the per-client rate limit (pure decisions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usp_feast.api_access import SCOPES, AccessPolicy, TokenBucket

pytestmark = pytest.mark.unit

READER = "r3ader-secret-0123456789"
OPS = "0ps-secret-abcdefghijklmn"
KEYS = f"ranker={READER}:users.read; ops={OPS}:users.read,ops.read,segments.read"


def test_each_route_scope_needs_a_key_that_holds_it() -> None:
    policy = AccessPolicy.parse(KEYS, None)
    bearer = {"authorization": f"Bearer {READER}"}
    assert policy.admit(bearer, "h", "users.read", now=0).status == 200
    refused = policy.admit(bearer, "h", "ops.read", now=0)
    assert (refused.status, refused.detail) == (403, "API key 'ranker' lacks the scope 'ops.read'")
    assert policy.admit({"x-api-key": OPS}, "h", "ops.read", now=0).status == 200


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "an API key is required"),
        ({"authorization": "Basic abc"}, "an API key is required"),
        ({"authorization": "Bearer "}, "an API key is required"),
        ({"authorization": f"Bearer {READER}x"}, "unknown API key"),
        ({"x-api-key": READER[:-1]}, "unknown API key"),
    ],
)
def test_no_key_or_an_unknown_key_is_a_401(headers: dict[str, str], detail: str) -> None:
    found = AccessPolicy.parse(KEYS, None).admit(headers, "h", "users.read", now=0)
    assert found.status == 401 and found.detail.startswith(detail)
    assert READER not in found.detail


def test_without_keys_the_api_is_open() -> None:
    policy = AccessPolicy.parse(None, None)
    assert policy.open
    assert all(policy.admit({}, "h", scope, now=0).status == 200 for scope in SCOPES)


@pytest.mark.parametrize(
    ("keys", "rate", "message"),
    [
        ("ranker", None, "USP_API_KEYS entry 1 (ranker): expected name=secret:scope"),
        (f"ranker={READER}", None, "USP_API_KEYS entry 1 (ranker): expected name=secret:scope"),
        ("ranker=short:users.read", None, "the secret is shorter than 16 characters"),
        (f"ranker={READER}:users.write", None, "unknown scope 'users.write'; known: users.read"),
        (f"ranker={READER}:", None, "no scope"),
        (f"bad name={READER}:users.read", None, "name [A-Za-z0-9_.-]"),
        (f"a={READER}:users.read;a={OPS}:ops.read", None, "entry 2 (a): the name 'a' is used"),
        (None, "fast", "USP_API_RATE_LIMIT='fast': expected <requests>/s or <requests>/m"),
        (None, "0/s", "expected <requests>/s"),
    ],
)
def test_bad_configuration_names_the_variable_and_entry(
    keys: str | None, rate: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        AccessPolicy.parse(keys, rate)
    assert message in str(caught.value)
    assert READER not in str(caught.value) and OPS not in str(caught.value)


def test_the_rate_limit_holds_per_client_and_says_when_to_retry() -> None:
    policy = AccessPolicy.parse(KEYS, "2/s")
    reader, ops = {"x-api-key": READER}, {"x-api-key": OPS}
    assert [policy.admit(reader, "h", "users.read", now=10.0).status for _ in range(3)] == [
        200,
        200,
        429,
    ]
    limited = policy.admit(reader, "h", "users.read", now=10.0)
    assert (limited.status, limited.retry_after) == (429, 1)
    assert "2 requests/s for ranker" in limited.detail
    # Another key has its own budget; half a second refills one request.
    assert policy.admit(ops, "h", "users.read", now=10.0).status == 200
    assert policy.admit(reader, "h", "users.read", now=10.5).status == 200


def test_an_open_api_limits_each_address() -> None:
    policy = AccessPolicy.parse(None, "60/m")
    assert policy.admit({}, "10.0.0.1", "users.read", now=0).status == 200
    assert policy.admit({}, "10.0.0.1", "users.read", now=0).status == 429
    assert policy.admit({}, "10.0.0.2", "users.read", now=0).status == 200


@given(
    rate=st.floats(min_value=0.5, max_value=500),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_a_bucket_never_admits_more_than_burst_plus_rate_times_time(
    rate: float, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, max(1.0, rate))
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        admitted += bucket.take(now) == 0
    assert admitted <= max(1.0, rate) + rate * now + 1e-6


def test_idle_clients_are_forgotten_so_the_table_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import usp_feast.api_access as access

    monkeypatch.setattr(access, "_MAX_CLIENTS", 3)
    policy = AccessPolicy.parse(None, "1/s")
    for n in range(3):
        assert policy.admit({}, f"10.0.0.{n}", "users.read", now=0).status == 200
    # Still within its second: .0 is not idle, so a fourth client does not reset it.
    assert policy.admit({}, "10.0.0.9", "users.read", now=0.5).status == 200
    assert policy.admit({}, "10.0.0.0", "users.read", now=0.5).status == 429
    # Later every bucket has refilled: the table is pruned before it grows again.
    assert policy.admit({}, "10.0.1.0", "users.read", now=5.0).status == 200
    assert len(policy._buckets) <= 3
