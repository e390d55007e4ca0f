"""The Redis key layout: one hash tag per user, SCAN patterns that match exactly."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from redis.crc import key_slot

from usp_feast.keys import entity_tag, project_pattern, signal_key, view_pattern

pytestmark = pytest.mark.unit

VIEWS = ["search", "view", "wishlist", "booking"]


def test_a_signal_key_names_prefix_project_user_and_view() -> None:
    assert signal_key("usp", "usp_demo", "42", "search") == "usp:usp_demo:{42}:search"


@pytest.mark.parametrize(("values", "tag"), [([42], "42"), ([7, "fr"], "7,fr"), (["a"], "a")])
def test_the_entity_tag_joins_the_join_key_values(values: list[object], tag: str) -> None:
    assert entity_tag(values) == tag


@pytest.mark.parametrize("user", ["1", "42", "1000000007", "7,fr"])
def test_every_signal_of_one_user_lives_in_one_cluster_slot(user: str) -> None:
    # Redis Cluster hashes only the text inside {...}: one slot per user, so reading all of a
    # user's signals is a single-slot operation.
    slots = {key_slot(signal_key("usp", "usp_demo", user, view).encode()) for view in VIEWS}

    assert slots == {key_slot(user.encode())}


def test_a_view_pattern_matches_that_view_for_every_user_and_nothing_else() -> None:
    pattern = view_pattern("usp", "usp_demo", "view")

    assert fnmatchcase(signal_key("usp", "usp_demo", "1", "view"), pattern)
    assert fnmatchcase(signal_key("usp", "usp_demo", "7,fr", "view"), pattern)
    assert not fnmatchcase(signal_key("usp", "usp_demo", "1", "listing_view"), pattern)
    assert not fnmatchcase(signal_key("usp", "usp_demo", "1", "views"), pattern)
    assert not fnmatchcase(signal_key("usp", "other", "1", "view"), pattern)


def test_a_project_pattern_matches_the_project_and_not_one_with_a_longer_name() -> None:
    pattern = project_pattern("usp", "demo")

    assert all(fnmatchcase(signal_key("usp", "demo", "1", view), pattern) for view in VIEWS)
    assert not fnmatchcase(signal_key("usp", "demo2", "1", "search"), pattern)
    assert not fnmatchcase(signal_key("other", "demo", "1", "search"), pattern)
