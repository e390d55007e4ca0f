"""Loading a repository's YAML definitions and reporting every problem at once.

Each test builds a small repository in ``tmp_path``. The transform module gets a unique name per
test because ``importlib`` caches modules in ``sys.modules`` by name.
"""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from usp_feast.definitions import (
    DefinitionError,
    Problem,
    check_definitions,
    load_definitions,
)
from usp_feast.sessions import SessionSpec
from usp_feast.windows import SlidingWindowSpec

pytestmark = pytest.mark.unit

EXAMPLE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"

TRANSFORMS = """\
from usp_feast.transforms import SignalTransform


class GoodTransform(SignalTransform):
    def transform(self, event):
        return {"query": event["query"]}


class NoMethod:
    pass
"""

# A valid signal. Line numbers matter: tests change one line and expect it in the problem.
#  1 name
#  3 owner
#  7 fields.query   8 fields.guests
#  9 transform     10 retention     11 validation
VALID = """\
name: search
description: Searches a user ran.
owner: discovery-team
source:
  topic: events.search
fields:
  query: string
  guests: int
transform: {module}.GoodTransform
retention: 30d
validation: search
"""


@dataclass
class Repo:
    path: Path
    module: str

    def signal(self, file: str, text: str) -> None:
        (self.path / "signals" / file).write_text(textwrap.dedent(text).format(module=self.module))

    def valid(self, file: str = "search.yaml", *, old: str = "", new: str = "") -> None:
        """Write the valid signal with one line replaced (``old`` must occur in it)."""
        assert old in VALID
        self.signal(file, VALID.replace(old, new, 1))

    def problems(self) -> list[Problem]:
        return check_definitions(self.path)[1]

    def only_problem(self) -> Problem:
        problems = self.problems()
        assert len(problems) == 1, "\n".join(map(str, problems))
        return problems[0]


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    module = f"usp_test_transforms_{uuid.uuid4().hex}"
    path = tmp_path / "repo"
    (path / "signals").mkdir(parents=True)
    (path / "validation").mkdir()
    (path / "validation" / "search.json").write_text('{"name": "search", "expectations": []}')
    (path / f"{module}.py").write_text(TRANSFORMS)
    yield Repo(path, module)
    sys.modules.pop(module, None)


SEARCH = Path("signals/search.yaml")


def test_a_valid_repository_loads(repo: Repo) -> None:
    repo.valid()

    definitions = load_definitions(repo.path)

    assert [s.name for s in definitions.signals] == ["search"]
    assert definitions.signal("search").fields == {"query": "string", "guests": "int"}


def test_unknown_key_suggests_the_close_match(repo: Repo) -> None:
    repo.valid(old="retention: 30d", new="retension: 30d")

    problems = {p.field: p for p in repo.problems()}

    assert sorted(problems) == ["retension", "retention"]
    typo = problems["retension"]
    assert (typo.file, typo.line) == (SEARCH, 10)
    assert typo.message == "unknown key 'retension'; did you mean 'retention'?"
    assert str(typo) == (
        "signals/search.yaml:10: retension: unknown key 'retension'; did you mean 'retention'?"
    )
    # The key the typo stands for is reported missing too, so the user sees both halves.
    assert problems["retention"].message == "required key is missing"


def test_unknown_nested_key_without_a_close_match_lists_the_allowed_keys(repo: Repo) -> None:
    repo.valid(old="  topic: events.search\n", new="  topic: events.search\n  partitions: 3\n")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 6, "source.partitions")
    assert problem.message == "unknown key 'partitions'; allowed keys: topic"


def test_bad_duration(repo: Repo) -> None:
    repo.valid(old="retention: 30d", new="retention: 10mins")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 10, "retention")
    assert problem.message.startswith("invalid duration '10mins': use a whole number")


def test_missing_required_key(repo: Repo) -> None:
    repo.valid(old="owner: discovery-team\n", new="")

    problem = repo.only_problem()

    # A missing key has no line of its own; the problem points at the top of the document.
    assert (problem.file, problem.line, problem.field) == (SEARCH, 1, "owner")
    assert problem.message == "required key is missing"


def test_unknown_field_type(repo: Repo) -> None:
    repo.valid(old="guests: int", new="guests: integer")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 8, "fields.guests")
    assert problem.message == (
        "unknown type 'integer'; use one of string, int, float, bool, timestamp"
    )


def test_reserved_field_name(repo: Repo) -> None:
    repo.valid(old="  guests: int\n", new="  guests: int\n  user_id: int\n")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 9, "fields.user_id")
    assert problem.message == "'user_id' is added to every signal row; remove it from fields"


def test_bad_name_pattern(repo: Repo) -> None:
    repo.valid(old="name: search", new="name: Search-Events")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 1, "name")
    assert problem.message == (
        "'Search-Events' is not valid here: "
        "names are lowercase letters, digits and '_', starting with a letter"
    )


def test_bad_field_name_points_at_the_field(repo: Repo) -> None:
    repo.valid(old="guests: int", new="Guests: int")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 8, "fields.Guests")
    assert "'Guests' is not valid here" in problem.message


def test_missing_transform_module(repo: Repo) -> None:
    missing = f"no_such_module_{uuid.uuid4().hex}"
    repo.valid(old="{module}.GoodTransform", new=f"{missing}.SearchTransform")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 9, "transform")
    assert problem.message.startswith(
        f"transform module {missing!r} is neither in the repository nor under an allowed prefix"
    )


def test_a_transform_outside_the_repository_is_refused_before_it_is_imported(
    repo: Repo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Importing `this` prints the Zen of Python: a YAML file must not make a job run module
    # code the repository does not ship.
    sys.modules.pop("this", None)
    repo.valid(old="{module}.GoodTransform", new="this.Zen")
    problem = repo.only_problem()
    assert problem.field == "transform"
    assert problem.message == (
        "transform module 'this' is neither in the repository nor under an allowed prefix "
        "($USP_TRANSFORM_MODULES allows no other prefix); not imported"
    )
    assert "Beautiful is better than ugly" not in capsys.readouterr().out
    assert "this" not in sys.modules

    # An operator may allow a shared package by prefix; the class is then checked as usual.
    monkeypatch.setenv("USP_TRANSFORM_MODULES", "json, shared.transforms")
    repo.valid(old="{module}.GoodTransform", new="json.JSONDecoder")
    assert repo.only_problem().message == (
        "json.JSONDecoder has no transform(event) method; "
        "subclass usp_feast.transforms.SignalTransform"
    )


def test_transform_module_with_a_syntax_error(repo: Repo) -> None:
    broken = f"broken_{uuid.uuid4().hex}"
    (repo.path / f"{broken}.py").write_text("class SearchTransform(:\n    pass\n")
    repo.valid(old="{module}.GoodTransform", new=f"{broken}.SearchTransform")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 9, "transform")
    assert problem.message.startswith(f"cannot import transform module {broken!r}: SyntaxError")


def test_a_suite_with_an_unsupported_expectation_is_rejected(repo: Repo) -> None:
    unsupported = {"type": "expect_column_kl_divergence_to_be_less_than", "kwargs": {}}
    suite = {"name": "search", "expectations": [unsupported]}
    (repo.path / "validation" / "search.json").write_text(json.dumps(suite))
    repo.valid()

    problem = repo.only_problem()

    assert (problem.file, problem.field) == (SEARCH, "validation")
    assert "expect_column_kl_divergence_to_be_less_than" in problem.message
    assert "supported" in problem.message


def test_transform_module_without_the_class(repo: Repo) -> None:
    repo.valid(old="GoodTransform", new="SearchTransfrom")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 9, "transform")
    assert problem.message == f"module {repo.module!r} has no class 'SearchTransfrom'"


def test_transform_class_without_a_transform_method(repo: Repo) -> None:
    repo.valid(old="GoodTransform", new="NoMethod")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 9, "transform")
    assert problem.message == (
        f"{repo.module}.NoMethod has no transform(event) method; "
        "subclass usp_feast.transforms.SignalTransform"
    )


def test_transform_whose_constructor_fails(repo: Repo) -> None:
    (repo.path / f"{repo.module}.py").write_text(
        TRANSFORMS
        + "\n\nclass Broken(GoodTransform):\n"
        + "    def __init__(self):\n        raise RuntimeError('needs a model file')\n"
    )
    repo.valid(old="GoodTransform", new="Broken")

    problem = repo.only_problem()

    assert (problem.line, problem.field) == (9, "transform")
    assert problem.message == f"{repo.module}.Broken() failed: needs a model file"


def test_missing_validation_suite(repo: Repo) -> None:
    repo.valid(old="validation: search", new="validation: serach")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 11, "validation")
    expected_file = repo.path.resolve() / "validation" / "serach.json"
    assert problem.message == (
        f"expectation suite 'serach' not found; expected the file {expected_file}"
    )


def test_validation_suites_beside_the_repository_are_found(repo: Repo) -> None:
    # The example layout: feature_repo/ and validation/ side by side.
    (repo.path / "validation" / "search.json").rename(repo.path.parent / "search.json")
    (repo.path / "validation").rmdir()
    (repo.path.parent / "validation").mkdir()
    (repo.path.parent / "search.json").rename(repo.path.parent / "validation" / "search.json")
    repo.valid()

    assert repo.problems() == []


def test_duplicate_names_across_files_name_both_places(repo: Repo) -> None:
    repo.valid("a_search.yaml")
    repo.valid("b_search.yaml", old="description: Searches a user ran.\n", new="")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (Path("signals/b_search.yaml"), 1, "name")
    assert problem.message == "signal 'search' is already defined in signals/a_search.yaml:1"


def test_invalid_yaml_syntax(repo: Repo) -> None:
    repo.signal("search.yaml", "name: search\n  owner: discovery-team\n")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (SEARCH, 2, "")
    assert problem.message == "not valid YAML: mapping values are not allowed here"
    assert str(problem) == (
        "signals/search.yaml:2: not valid YAML: mapping values are not allowed here"
    )


def test_duplicate_yaml_key(repo: Repo) -> None:
    repo.valid(old="retention: 30d\n", new="retention: 30d\nretention: 90d\n")

    problem = repo.only_problem()

    assert (problem.line, problem.field) == (11, "")
    assert 'duplicate key "retention"' in problem.message


@pytest.mark.parametrize("text", ["- search\n- view\n", "just a sentence\n", ""])
def test_a_file_that_is_not_a_mapping(repo: Repo, text: str) -> None:
    repo.signal("search.yaml", text)

    problem = repo.only_problem()

    assert (problem.file, problem.line) == (SEARCH, 1)
    assert problem.message == "expected a mapping of keys to values"


def test_a_control_character_is_a_problem_not_a_crash(repo: Repo) -> None:
    repo.valid(old="owner: discovery-team", new="owner: discovery\x07team")

    problem = repo.only_problem()

    assert (problem.file, problem.line) == (SEARCH, 3)
    assert problem.message.startswith("not valid YAML: unacceptable character #x0007")


def test_a_file_that_is_not_utf8_is_a_problem_not_a_crash(repo: Repo) -> None:
    text = VALID.format(module=repo.module).replace("Searches", "Recherches d\xe9j\xe0")
    (repo.path / "signals" / "search.yaml").write_bytes(text.encode("latin-1"))

    problem = repo.only_problem()

    assert (problem.file, problem.line) == (SEARCH, 2)
    assert problem.message.startswith("not UTF-8 text")


def test_every_problem_in_every_file_is_reported_at_once(repo: Repo) -> None:
    # Six problems in one file ...
    repo.signal(
        "a.yaml",
        """\
        name: Search-Events
        owner: discovery-team
        source:
          topic: events.search
        fields:
          query: string
          user_id: int
          guests: integer
        transform: {module}.GoodTransform
        retension: 30d
        ttl: 10mins
        validation: search
        """,
    )
    # ... one in a file that is not a mapping ...
    repo.signal("b.yaml", "- search\n")
    # ... and two that need the definition to be valid first (imports and suites).
    repo.signal(
        "c.yaml",
        VALID.replace("name: search", "name: booking")
        .replace("GoodTransform", "NoMethod")
        .replace("validation: search", "validation: booking"),
    )

    with pytest.raises(DefinitionError) as caught:
        load_definitions(repo.path)

    located = sorted((str(p.file), p.line or 0, p.field) for p in caught.value.problems)
    assert located == [
        ("signals/a.yaml", 1, "name"),
        ("signals/a.yaml", 1, "retention"),
        ("signals/a.yaml", 7, "fields.user_id"),
        ("signals/a.yaml", 8, "fields.guests"),
        ("signals/a.yaml", 10, "retension"),
        ("signals/a.yaml", 11, "ttl"),
        ("signals/b.yaml", 1, ""),
        ("signals/c.yaml", 9, "transform"),
        ("signals/c.yaml", 11, "validation"),
    ]
    message = str(caught.value)
    assert message.startswith("9 problems in definitions:\n")
    assert all(f"  {p}" in message for p in caught.value.problems)


def test_check_imports_false_skips_transforms_and_suites(repo: Repo) -> None:
    repo.valid(old="GoodTransform", new="NoMethod")
    (repo.path / "validation" / "search.json").unlink()

    definitions, problems = check_definitions(repo.path, check_imports=False)

    assert problems == []
    assert [s.name for s in definitions.signals] == ["search"]


def test_valid_signals_are_returned_beside_the_problems(repo: Repo) -> None:
    repo.valid("search.yaml")
    repo.signal("broken.yaml", "- not a signal\n")

    definitions, problems = check_definitions(repo.path)

    assert [s.name for s in definitions.signals] == ["search"]
    assert [p.file for p in problems] == [Path("signals/broken.yaml")]


def test_a_repository_without_signals_has_none(tmp_path: Path) -> None:
    assert load_definitions(tmp_path).signals == ()


def test_asking_for_an_unknown_signal_lists_the_known_ones(repo: Repo) -> None:
    repo.valid()

    with pytest.raises(KeyError, match="unknown signal 'serach'; known signals: search"):
        load_definitions(repo.path).signal("serach")


def test_the_example_repository_loads_without_problems() -> None:
    definitions, problems = check_definitions(EXAMPLE_REPO)

    assert problems == []
    assert sorted(s.name for s in definitions.signals) == [
        "booking",
        "search",
        "view",
        "wishlist",
        "wishlist_enriched",
    ]
    assert definitions.signal("search").source.topic == "events.search"


# A valid segment over the valid `search` signal (and a `booking` that does not exist).
#  1 name  3 trigger  4 trigger.signal  5 trigger.where  6 expires_after  7 exit  8 exit.0.signal
SEGMENT = """\
name: planner
owner: growth-team
trigger:
  signal: search
  where: guests >= 2
expires_after: 14d
exit:
  - signal: search
    where: query == "cancel"
"""
PLANNER = Path("segments/planner.yaml")


def write_segment(repo: Repo, text: str) -> None:
    (repo.path / "segments").mkdir(exist_ok=True)
    (repo.path / "segments" / "planner.yaml").write_text(text)


def test_a_valid_segment_loads_with_its_rules(repo: Repo) -> None:
    repo.valid()
    write_segment(repo, SEGMENT)
    definitions = load_definitions(repo.path)
    segment = definitions.segment("planner")
    assert segment.rules().describe() == (
        'enter on search where guests >= 2, leave on search where query == "cancel" '
        "or after 2w without search"
    )
    assert definitions.job_definition("planner") is segment
    assert definitions.topics([segment]) == [
        "usp.signal.search",
        "usp.segment.planner",
        "usp.late.segment.planner",
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "words"),
    [
        (
            "  signal: search\n  where",
            "  signal: serch\n  where",
            4,
            "trigger.signal",
            "unknown signal 'serch'; defined signals: search",
        ),
        ("guests >= 2", 'city == "x"', 5, "trigger.where", "unknown field 'city' in filter"),
        ("guests >= 2", "guests >=", 5, "trigger.where", "expected a value"),
        ("expires_after: 14d", "expires_after: 14days", 6, "expires_after", "invalid duration"),
        (
            "expires_after: 14d",
            "expires_after: 14d\nstart_delay: 14d",
            1,
            "",
            "start_delay (2w) must be shorter than expires_after (2w)",
        ),
        (
            "expires_after: 14d",
            "expires_after: 14d\ncooldown: 1x",
            7,
            "cooldown",
            "invalid duration",
        ),
        ("    where: query", "    wher: query", 9, "exit.0.wher", "did you mean 'where'?"),
    ],
)
def test_segment_problems_name_file_line_and_field(
    repo: Repo, old: str, new: str, line: int, field: str, words: str
) -> None:
    repo.valid()
    assert old in SEGMENT
    write_segment(repo, SEGMENT.replace(old, new, 1))
    problem = repo.only_problem()
    assert (problem.file, problem.line, problem.field) == (PLANNER, line, field)
    assert words in problem.message, problem.message


def test_a_signal_named_like_a_segment_view_is_rejected(repo: Repo) -> None:
    repo.valid(old="name: search", new="name: segment_x")
    problem = repo.only_problem()
    assert (problem.field, problem.line) == ("name", 1)
    assert "reserved for segment views" in problem.message


def test_asking_for_an_unknown_segment_or_job_lists_the_known_ones(repo: Repo) -> None:
    repo.valid()
    write_segment(repo, SEGMENT)
    definitions = load_definitions(repo.path)
    with pytest.raises(KeyError, match="unknown segment 'nope'; known segments: planner"):
        definitions.segment("nope")
    with pytest.raises(KeyError, match="signals: search; segments: planner"):
        definitions.job_definition("nope")


# A second signal for session engagements over more than one signal.
VIEW = """\
name: view
owner: discovery-team
source:
  topic: events.listing_view
fields:
  listing_id: int
  city: string
  price: float
transform: {module}.GoodTransform
retention: 30d
validation: view
"""

# A valid session over `search` and `view`.
#  1 name  3 signals  4 session  5 session.gap  6 session.max_length  7 allowed_lateness
#  8 features  9 events  10 top_queries  11 avg_price  12 span
SESSION = """\
name: visit
owner: discovery-team
signals: [search, view]
session:
  gap: 30m
  max_length: 4h
allowed_lateness: 1m
features:
  events: count
  top_queries: top_k:query:3
  avg_price: avg:price
  span: duration
"""
# A valid sliding window over `view`.
#  1 name  3 signals  4 window  5 window.size  6 window.step  7 features  8 count  9 max_price
WINDOW = """\
name: views_10m
owner: discovery-team
signals: [view]
window:
  size: 10m
  step: 5m
features:
  count: count
  max_price: max:price
"""
VISIT = Path("sessions/visit.yaml")


def write_session(repo: Repo, text: str, file: str = "visit.yaml") -> None:
    """Write a session engagement, with the `search` and `view` signals it reads."""
    repo.valid()
    repo.signal("view.yaml", VIEW)
    (repo.path / "validation" / "view.json").write_text('{"name": "view", "expectations": []}')
    (repo.path / "sessions").mkdir(exist_ok=True)
    (repo.path / "sessions" / file).write_text(text)


def test_a_valid_session_loads(repo: Repo) -> None:
    write_session(repo, SESSION)
    definitions = load_definitions(repo.path)
    visit = definitions.session("visit")
    assert visit.kind == "session"
    assert visit.describe() == "session: 30m gap, at most 4h, over search, view"
    assert list(visit.aggregates()) == ["events", "top_queries", "avg_price", "span"]
    assert str(visit.aggregates()["top_queries"]) == "top_k:query:3"
    assert visit.session_spec() == SessionSpec(
        gap=timedelta(minutes=30), max_length=timedelta(hours=4)
    )
    assert visit.allowed_lateness == timedelta(minutes=1)
    assert visit.retention == timedelta(days=90)  # the default
    assert (visit.view, visit.push_source) == ("visit", "visit_push")
    with pytest.raises(ValueError, match="visit is a session, not a sliding window"):
        visit.window_spec()
    assert definitions.job_definition("visit") is visit
    assert definitions.topics([visit]) == [
        "usp.signal.search",
        "usp.signal.view",
        "usp.session.visit",
        "usp.late.session.visit",
    ]


def test_a_valid_window_loads(repo: Repo) -> None:
    write_session(repo, WINDOW.replace("signals: [view]", "signals: [view]\nallowed_lateness: 30s"))
    window = load_definitions(repo.path).session("views_10m")
    assert window.kind == "window"
    assert window.describe() == "10m window every 5m over view"
    assert window.window_spec() == SlidingWindowSpec(
        size=timedelta(minutes=10),
        step=timedelta(minutes=5),
        allowed_lateness=timedelta(seconds=30),
    )
    assert (window.topic, window.late_topic) == (
        "usp.session.views_10m",
        "usp.late.session.views_10m",
    )
    with pytest.raises(ValueError, match="views_10m is a sliding window, not a session"):
        window.session_spec()


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "words"),
    [
        (
            "session:\n  gap: 30m\n  max_length: 4h\n",
            "",
            1,
            "window",
            "set one of session (visits ending after a gap, e.g. session: {gap: 30m}) or window",
        ),
        (
            "allowed_lateness",
            "window:\n  size: 10m\n  step: 5m\nallowed_lateness",
            7,
            "window",
            "set either session or window, not both",
        ),
        (
            "signals: [search, view]",
            "signals: [search, veiw]",
            3,
            "signals.1",
            "unknown signal 'veiw'; defined signals: search, view",
        ),
        (
            "signals: [search, view]",
            "signals: [view, view]",
            3,
            "signals",
            "lists 'view' more than once",
        ),
        ("signals: [search, view]", "signals: []", 3, "signals", "at least 1 item"),
        (
            "top_k:query:3",
            "top_k:qeury:3",
            10,
            "features.top_queries",
            "aggregate 'top_k:qeury:3' uses unknown field 'qeury'; known fields: city, event_id, "
            "guests, listing_id, price, query (signals: search, view)",
        ),
        (
            "avg:price",
            "avg:city",
            11,
            "features.avg_price",
            "aggregate 'avg:city' needs an int or float field, but 'city' is string",
        ),
        ("events: count", "events: counts", 9, "features.events", "invalid aggregate 'counts'"),
        (
            "  span: duration",
            "  closed: duration",
            12,
            "features.closed",
            "'closed' is a column of every session engagement row; rename the feature",
        ),
        (
            "features:\n  events: count\n  top_queries: top_k:query:3\n  avg_price: avg:price\n"
            "  span: duration\n",
            "features: {}\n",
            8,
            "features",
            "at least 1 item",
        ),
        (
            "name: visit",
            "name: view",
            1,
            "name",
            "signal 'view' already has this name; definitions of every kind need names of their "
            "own, so rename the session",
        ),
        (
            "name: visit",
            "name: search_history",
            1,
            "name",
            "its view 'search_history' would be named like the query-features view of signal "
            "'search' (Feast object names are shared by every definition); rename the session",
        ),
        (
            "name: visit",
            "name: view_push",
            1,
            "name",
            "its view 'view_push' would be named like the push source of signal 'view'",
        ),
        (
            "  max_length: 4h",
            "  max_lenght: 4h",
            6,
            "session.max_lenght",
            "unknown key 'max_lenght'; did you mean 'max_length'?",
        ),
        ("gap: 30m", "gap: 30mins", 5, "session.gap", "invalid duration '30mins'"),
        ("gap: 30m", "gap: 0s", 5, "session.gap", "must be longer than zero"),
        (
            "allowed_lateness: 1m",
            "allowed_lateness: soon",
            7,
            "allowed_lateness",
            "invalid duration",
        ),
        ("allowed_lateness: 1m", "retention: 0d", 7, "retention", "must be longer than zero"),
    ],
)
def test_session_problems_name_file_line_and_field(
    repo: Repo, old: str, new: str, line: int, field: str, words: str
) -> None:
    assert old in SESSION
    write_session(repo, SESSION.replace(old, new, 1))
    problem = repo.only_problem()
    assert (problem.file, problem.line, problem.field) == (VISIT, line, field)
    assert words in problem.message, problem.message


def test_a_typo_in_a_required_session_key_suggests_it_and_reports_it_missing(repo: Repo) -> None:
    write_session(repo, SESSION.replace("features:", "featurs:"))
    problems = {p.field: p for p in repo.problems()}
    assert sorted(problems) == ["features", "featurs"]
    assert (problems["featurs"].line, problems["featurs"].message) == (
        8,
        "unknown key 'featurs'; did you mean 'features'?",
    )
    assert (problems["features"].line, problems["features"].message) == (
        1,
        "required key is missing",
    )


def test_a_window_size_must_be_a_whole_multiple_of_the_step(repo: Repo) -> None:
    write_session(repo, WINDOW.replace("step: 5m", "step: 4m"), "views_10m.yaml")
    problem = repo.only_problem()
    assert (problem.file, problem.line, problem.field) == (
        Path("sessions/views_10m.yaml"),
        4,
        "window",
    )
    assert "must be a whole multiple of the step" in problem.message


def test_signals_that_type_an_aggregated_field_differently_are_a_problem(repo: Repo) -> None:
    write_session(repo, SESSION.replace("avg:price", "count_distinct:guests"))
    repo.signal("view.yaml", VIEW.replace("price: float", "price: float\n  guests: string"))
    problem = repo.only_problem()
    assert (problem.file, problem.line, problem.field) == (VISIT, 11, "features.avg_price")
    assert problem.message == (
        "field 'guests' is int in search but string in view; an aggregate needs one type, "
        "so list only signals that agree on it"
    )


def test_a_field_in_one_listed_signal_is_enough(repo: Repo) -> None:
    # `query` is only in search, `price` only in view: each aggregate reads the rows that have it.
    write_session(repo, SESSION)
    assert repo.problems() == []


def test_two_sessions_of_one_name_and_a_clash_with_a_segment(repo: Repo) -> None:
    write_session(repo, SESSION, "a.yaml")
    write_session(repo, SESSION, "b.yaml")
    write_segment(repo, SEGMENT.replace("name: planner", "name: visit"))
    problems = sorted(repo.problems(), key=str)
    assert [(str(p.file), p.line, p.field) for p in problems] == [
        ("sessions/a.yaml", 1, "name"),
        ("sessions/b.yaml", 1, "name"),
        ("sessions/b.yaml", 1, "name"),
    ]
    messages = [p.message for p in problems]
    assert "session 'visit' is already defined in sessions/a.yaml:1" in messages
    assert (
        messages.count(
            "segment 'visit' already has this name; definitions of every kind need names of their "
            "own, so rename the session"
        )
        == 2
    )


def test_a_signal_named_like_a_session_job_config_is_rejected(repo: Repo) -> None:
    repo.valid(old="name: search", new="name: session_x")
    problem = repo.only_problem()
    assert (problem.file, problem.field, problem.line) == (SEARCH, "name", 1)
    assert problem.message == (
        "names starting with 'session_' are reserved for session engagement job configs; "
        "rename the signal"
    )


def test_asking_for_an_unknown_session_or_job_lists_the_known_ones(repo: Repo) -> None:
    write_session(repo, SESSION)
    definitions = load_definitions(repo.path)
    with pytest.raises(KeyError, match="unknown session 'nope'; known sessions: visit"):
        definitions.session("nope")
    with pytest.raises(KeyError, match="signals: search, view; segments: none; sessions: visit"):
        definitions.job_definition("nope")


def test_the_example_sessions_load() -> None:
    definitions = load_definitions(EXAMPLE_REPO)
    assert [(s.name, s.kind) for s in definitions.sessions] == [
        ("browse_session", "session"),
        ("views_10m", "window"),
    ]
    browse = definitions.session("browse_session")
    assert browse.describe() == "session: 30m gap, at most 4h, over search, view"
    assert list(browse.features) == [
        "events",
        "top_cities",
        "listings_viewed",
        "avg_price",
        "last_listings",
        "duration_s",
    ]


# A valid join signal. Line numbers matter, as for VALID:
#  1 name   4 left   9 fields.listing_id   10 right   11 topic   12 validation
# 15 fields.price   16 how   17 state_ttl   18 missing_right   19 wait   20 retention
JOIN = """\
name: wishlist_enriched
owner: discovery-team
# comment
left:
  topic: events.wishlist_add
  validation: search
  key: listing_id
  fields:
    listing_id: int
right:
  topic: events.listing_update
  validation: search
  key: listing_id
  fields:
    price: float
how: latest
state_ttl: 30d
missing_right:
  wait: 1m
retention: 90d
"""
ENRICHED = Path("joins/wishlist_enriched.yaml")


def write_join(repo: Repo, *, old: str = "", new: str = "") -> None:
    assert old in JOIN
    (repo.path / "joins").mkdir(exist_ok=True)
    (repo.path / "joins" / "wishlist_enriched.yaml").write_text(JOIN.replace(old, new, 1))


def test_a_join_signal_loads_as_a_signal(repo: Repo) -> None:
    repo.valid()
    write_join(repo)

    definitions = load_definitions(repo.path)

    [join] = definitions.joins
    assert definitions.signal("wishlist_enriched") is join
    assert [s.name for s in definitions.signals] == ["search", "wishlist_enriched"]
    assert join.fields == {"listing_id": "int", "price": "float", "right_event_ts": "string"}
    assert join.rules().wait_ms == 60_000 and join.rules().emit_missing
    assert definitions.topics([join]) == [
        "events.wishlist_add",
        "events.listing_update",
        "usp.signal.wishlist_enriched",
        "usp.dlq.wishlist_enriched",
        "usp.late.join.wishlist_enriched",
    ]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        (
            "how: latest",
            "how: interval",
            1,
            "",
            "how: interval needs within: {before: ..., after: ...}",
        ),
        (
            "    price: float",
            "    listing_id: int",
            1,
            "",
            "'listing_id' is in both left.fields and right.fields",
        ),
        ("how: latest", "hw: latest", 16, "hw", "unknown key 'hw'; did you mean 'how'?"),
        (
            "    price: float",
            "    right_event_ts: string",
            15,
            "right.fields.right_event_ts",
            "'right_event_ts' is added to every join signal row",
        ),
        (
            "  topic: events.listing_update",
            "  topic: events.wishlist_add",
            1,
            "",
            "left and right read the same topic",
        ),
        ("state_ttl: 30d", "state_ttl: 0s", 17, "state_ttl", "must be longer than zero"),
        ("    price: float", "    price: money", 15, "right.fields.price", "unknown type 'money'"),
    ],
)
def test_join_problems_name_file_line_and_field(
    repo: Repo, old: str, new: str, line: int, field: str, message: str
) -> None:
    repo.valid()
    write_join(repo, old=old, new=new)

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (ENRICHED, line, field)
    assert message in problem.message


def test_an_interval_join_checks_its_durations_against_each_other(repo: Repo) -> None:
    repo.valid()
    write_join(
        repo,
        old="how: latest\nstate_ttl: 30d\nmissing_right:\n  wait: 1m\n",
        new="how: interval\nwithin: {before: 2d, after: 1m}\nstate_ttl: 1d\n",
    )

    problem = repo.only_problem()

    assert (problem.file, problem.field) == (ENRICHED, "")
    assert "state_ttl" in problem.message and "before" in problem.message


def test_a_missing_suite_of_one_side_points_at_that_side(repo: Repo) -> None:
    repo.valid()
    write_join(
        repo,
        old="  validation: search\n  key: listing_id\n  fields:\n    price",
        new="  validation: listing_update\n  key: listing_id\n  fields:\n    price",
    )

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (ENRICHED, 12, "right.validation")
    assert "expectation suite 'listing_update' not found" in problem.message


def test_a_join_cannot_share_a_name_with_a_signal(repo: Repo) -> None:
    repo.valid()
    write_join(repo, old="name: wishlist_enriched", new="name: search")

    problem = repo.only_problem()

    assert (problem.file, problem.line, problem.field) == (ENRICHED, 1, "name")
    assert "signal 'search' is already defined in signals/search.yaml:1" in problem.message


def test_join_prefix_is_reserved_for_join_job_configs(repo: Repo) -> None:
    repo.valid(old="name: search", new="name: join_search")

    problem = repo.only_problem()

    assert problem.field == "name" and "reserved for join signal job configs" in problem.message


def test_a_signal_named_like_the_user_entity_or_another_signals_object_is_rejected(
    repo: Repo,
) -> None:
    repo.valid(old="name: search", new="name: user")
    problem = repo.only_problem()
    assert (problem.file, problem.line, problem.field) == (SEARCH, 1, "name")
    assert problem.message == (
        "its view 'user' would be named like the user entity (Feast object names are shared by "
        "every definition); rename the signal"
    )

    (repo.path / "signals" / "search.yaml").unlink()
    repo.valid("a.yaml")
    repo.valid("b.yaml", old="name: search", new="name: search_push")
    problems = sorted(repo.problems(), key=str)
    assert [(str(p.file), p.line, p.field) for p in problems] == [
        ("signals/a.yaml", 1, "name"),
        ("signals/b.yaml", 1, "name"),
    ]
    assert problems[0].message.startswith(
        "its push source 'search_push' would be named like the view of signal 'search_push'"
    )
    assert problems[1].message.startswith(
        "its view 'search_push' would be named like the push source of signal 'search'"
    )
