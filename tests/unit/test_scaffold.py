"""Scaffolding: what `usp init` and `usp new` write validates, works and is refused when it must.

Repositories are written to ``tmp_path``. Every one has a ``transforms`` package, and
``importlib`` caches modules by name, so the ``transforms`` modules are dropped around each test.
"""

from __future__ import annotations

import doctest
import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from usp_feast import scaffold
from usp_feast.contracts import Contract
from usp_feast.definitions import Definitions, check_definitions, load_transform
from usp_feast.scaffold import (
    ScaffoldError,
    check_empty_folder,
    check_new_name,
    check_project_name,
    class_name,
    init_files,
    plan_definition,
    project_name,
    segment_files,
    session_files,
    signal_files,
    write_files,
)
from usp_feast.spec import SegmentSpec, SessionEngagementSpec, SignalSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _forget_transforms() -> None:
    for module in [m for m in sys.modules if m == "transforms" or m.startswith("transforms.")]:
        del sys.modules[module]


@pytest.fixture(autouse=True)
def fresh_transforms() -> Iterator[None]:
    _forget_transforms()
    yield
    _forget_transforms()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder as `usp init` writes it."""
    folder = tmp_path / "shop"
    write_files(folder, init_files("shop"))
    return folder


def _ok(repo: Path) -> Definitions:
    definitions, problems = check_definitions(repo)
    assert problems == [], "\n".join(map(str, problems))
    return definitions


def _add(kind: scaffold.DefinitionKind, name: str, repo: Path, signal: str | None = None) -> None:
    root, files = plan_definition(kind, name, repo, signal=signal)
    write_files(root, files)


# --- usp init ------------------------------------------------------------------------------------


def test_a_new_project_validates_with_its_example_signal(project: Path) -> None:
    definitions = _ok(project / "feature_repo")

    assert [s.name for s in definitions.signals] == ["item_view"]
    spec = definitions.signal("item_view")
    assert isinstance(spec, SignalSpec)
    assert spec.source.topic == "events.item_view"
    assert spec.transform == "transforms.item_view.ItemViewTransform"
    assert spec.validation == "item_view"


def test_the_project_is_wired_to_the_plugin_like_the_example_repo(project: Path) -> None:
    yaml = YAML(typ="safe")
    ours = yaml.load((project / "feature_repo" / "feature_store.yaml").read_text())
    example = yaml.load((ROOT / "feature_repo" / "feature_store.yaml").read_text())

    assert ours["project"] == "shop"
    assert ours["registry"] == "data/registry.db"
    for key in ("provider", "online_store", "offline_store", "entity_key_serialization_version"):
        assert ours[key] == example[key], key
    definitions_py = (project / "feature_repo" / "definitions.py").read_text()
    assert definitions_py == (ROOT / "feature_repo" / "definitions.py").read_text()


def test_the_example_transform_and_contract_agree_with_the_definition(project: Path) -> None:
    repo = project / "feature_repo"
    spec = _ok(repo).signal("item_view")
    assert isinstance(spec, SignalSpec)
    contract = Contract.load(project / "validation" / "item_view.json")
    event = {
        "event_id": "e1",
        "event_ts": "2026-11-26T17:00:00.123Z",
        "user_id": 42,
        "item_id": " sku-7 ",
        "extra": "ignored",
    }

    assert contract.check(event) == []
    row = load_transform(spec, repo).transform(event)
    assert row == {"item_id": "sku-7"}
    assert set(row) == set(spec.fields)
    broken = {**event, "user_id": 0, "event_ts": "yesterday"}
    del broken["item_id"]
    # None: the expectation on the event's set of keys, which lacks item_id.
    violated = {v.column for v in contract.check(broken)}
    assert violated == {None, "user_id", "event_ts", "item_id"}


def test_the_example_suite_is_one_great_expectations_accepts(project: Path) -> None:
    import great_expectations as gx

    data = json.loads((project / "validation" / "item_view.json").read_text())
    suite = gx.ExpectationSuite(name=data["name"], expectations=data["expectations"])

    # GE keeps every expectation as written: nothing dropped, renamed or defaulted differently.
    kept = [
        {key: e[key] for key in ("kwargs", "meta", "severity", "type")}
        for e in suite.to_json_dict()["expectations"]
    ]
    assert kept == data["expectations"]


def test_the_readme_names_the_two_files_and_the_commands(project: Path) -> None:
    readme = (project / "README.md").read_text()

    for text in (
        "feature_repo/signals/item_view.yaml",
        "feature_repo/transforms/item_view.py",
        "validation/item_view.json",
        "`usp validate`",
        "`usp generate`",
        "`usp apply`",
        "`usp run item_view`",
        "`usp query 42 item_view`",
    ):
        assert text in readme, text


def test_rendering_is_deterministic() -> None:
    assert init_files("shop") == init_files("shop")
    assert signal_files("cart") == signal_files("cart")
    assert segment_files("buyers", "cart") == segment_files("buyers", "cart")
    assert session_files("visit", "cart") == session_files("visit", "cart")
    assert init_files("shop") != init_files("other")


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("shop", "shop"),
        ("My Shop", "my_shop"),
        ("team-signals.v2", "team_signals_v2"),
        ("__private__", "private"),
        ("2026_plans", "2026_plans"),
    ],
)
def test_the_project_name_comes_from_the_folder_name(folder: str, expected: str) -> None:
    from feast.repo_operations import is_valid_name

    assert project_name(folder) == expected
    assert is_valid_name(expected)


@pytest.mark.parametrize("folder", ["---", "", "ü-é"])
def test_a_folder_name_with_nothing_usable_is_refused(folder: str) -> None:
    with pytest.raises(ScaffoldError, match="pass --project NAME"):
        project_name(folder)


@pytest.mark.parametrize("name", ["_x", "-x", "a b", "a.b", "a:b", "", "café"])
def test_a_project_name_feast_or_the_store_keys_cannot_take_is_refused(name: str) -> None:
    with pytest.raises(ScaffoldError, match="not a valid Feast project name"):
        check_project_name(name)
    with pytest.raises(ScaffoldError):
        init_files(name)


@pytest.mark.parametrize("name", ["shop", "Shop-2", "a_b-c", "42"])
def test_a_project_name_feast_accepts_is_kept(name: str) -> None:
    from feast.repo_operations import is_valid_name

    assert check_project_name(name) == name
    assert is_valid_name(name)


def test_class_names_are_camel_case() -> None:
    assert class_name("item_view") == "ItemViewTransform"
    assert class_name("a1_b") == "A1BTransform"
    assert class_name("cart") == "CartTransform"


# --- usp new -------------------------------------------------------------------------------------


def test_every_skeleton_validates_next_to_the_example(project: Path) -> None:
    repo = project / "feature_repo"

    _add("signal", "add_to_cart", repo)
    _add("segment", "shoppers", repo)
    _add("session", "visit", repo, signal="add_to_cart")

    definitions = _ok(repo)
    assert [s.name for s in definitions.signals] == ["add_to_cart", "item_view"]
    segment, session = definitions.segment("shoppers"), definitions.session("visit")
    # Without --signal, the first signal by file name.
    assert segment.trigger.signal == "add_to_cart"
    assert session.signals == ["add_to_cart"]
    assert (project / "validation" / "add_to_cart.json").is_file()
    assert (repo / "transforms" / "add_to_cart.py").is_file()


def test_every_rendered_yaml_loads_into_its_model() -> None:
    for path, text in {
        **signal_files("cart"),
        **segment_files("buyers", "cart"),
        **session_files("visit", "cart"),
    }.items():
        if not path.endswith(".yaml"):
            continue
        model = {"signals": SignalSpec, "segments": SegmentSpec, "sessions": SessionEngagementSpec}[
            path.split("/")[1]
        ]
        spec = model.model_validate(YAML(typ="safe").load(text))
        assert spec.name in path


def test_every_top_level_key_of_a_skeleton_is_explained() -> None:
    rendered = {
        **signal_files("cart"),
        **segment_files("buyers", "cart"),
        **session_files("visit", "cart"),
    }
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line[:1].isalpha():  # a top-level key
                explained = "#" in line or lines[i - 1].startswith("#")
                assert explained, f"{path}: {line!r} has no comment"


def test_generated_python_is_lint_and_format_clean(tmp_path: Path) -> None:
    files = {**init_files("shop"), **signal_files("add_to_cart")}
    for relative, text in files.items():
        if relative.endswith(".py"):
            target = tmp_path / relative.replace("/", "__")
            target.write_text(text)
    for command in (
        ["ruff", "check", "--isolated", "--select", "E,F,W,I,B,UP", "--line-length", "100", "."],
        ["ruff", "format", "--isolated", "--line-length", "100", "--check", "."],
    ):
        result = subprocess.run(
            [str(BIN / command[0]), *command[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("signal", "Cart", "not a valid signal name"),
        ("signal", "add-to-cart", "not a valid signal name"),
        ("segment", "1st", "not a valid segment name"),
        ("session", "x" * 64, "not a valid session name"),
        ("signal", "class", "Python keyword"),
        ("signal", "segment_buyers", "reserved for segment views"),
        ("signal", "join_x", "reserved for join signal job configs"),
        ("signal", "item_view", "signal 'item_view' already exists"),
        ("segment", "item_view", "signal 'item_view' already exists"),
        ("session", "item_view", "signal 'item_view' already exists"),
        ("signal", "item_view_push", "like the push source of signal 'item_view'"),
        ("session", "item_view_history", "like the query-features view of signal 'item_view'"),
        ("signal", "user", "like the user entity"),
        ("session", "user", "like the user entity"),
    ],
)
def test_bad_or_taken_names_are_refused(
    project: Path, kind: scaffold.DefinitionKind, name: str, message: str
) -> None:
    definitions = _ok(project / "feature_repo")

    with pytest.raises(ScaffoldError, match=message):
        check_new_name(kind, name, definitions)


def test_a_name_taken_by_another_kind_is_refused(project: Path) -> None:
    repo = project / "feature_repo"
    _add("segment", "buyers", repo)

    for kind in ("signal", "session", "segment"):
        with pytest.raises(ScaffoldError, match="segment 'buyers' already exists"):
            plan_definition(kind, "buyers", repo)  # type: ignore[arg-type]


def test_a_name_free_of_clashes_passes(project: Path) -> None:
    definitions = _ok(project / "feature_repo")

    for kind in ("signal", "segment", "session"):
        check_new_name(kind, "cart", definitions)  # type: ignore[arg-type]
    # A segment's view is segment_<name>, so "user" is free for a segment.
    check_new_name("segment", "user", definitions)


def test_an_existing_file_is_refused_and_nothing_is_written(project: Path) -> None:
    repo = project / "feature_repo"
    (project / "validation" / "cart.json").write_text("{}")

    with pytest.raises(ScaffoldError, match=r"validation/cart\.json already exists"):
        _add("signal", "cart", repo)
    assert not (repo / "signals" / "cart.yaml").exists()
    assert not (repo / "transforms" / "cart.py").exists()


def test_write_files_writes_nothing_when_one_file_exists(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("mine")

    with pytest.raises(ScaffoldError, match=r"b\.txt already exists; nothing was written"):
        write_files(tmp_path, {"a/a.txt": "new", "b.txt": "new"})
    assert not (tmp_path / "a").exists()
    assert (tmp_path / "b.txt").read_text() == "mine"


def test_segment_and_session_use_the_signal_asked_for(project: Path) -> None:
    repo = project / "feature_repo"
    _add("signal", "add_to_cart", repo)

    _, files = plan_definition("segment", "viewers", repo, signal="item_view")

    assert "signal: item_view" in files["feature_repo/segments/viewers.yaml"]
    with pytest.raises(ScaffoldError, match="unknown signal 'nope'; signals of feature_repo"):
        plan_definition("session", "visit", repo, signal="nope")


def test_a_segment_needs_a_signal_to_exist(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text("project: empty\n")

    with pytest.raises(ScaffoldError, match="usp new signal NAME"):
        plan_definition("segment", "buyers", repo)


def test_new_needs_a_feature_repository(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="not a feature repository"):
        plan_definition("signal", "cart", tmp_path / "nowhere")


def test_a_new_signal_follows_the_repository_layout(tmp_path: Path) -> None:
    # Suites inside the repository, and no transforms package yet.
    repo = tmp_path / "repo"
    (repo / "validation").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text("project: inside\n")

    _add("signal", "cart", repo)

    assert (repo / "validation" / "cart.json").is_file()
    assert (repo / "transforms" / "__init__.py").is_file()
    assert not (tmp_path / "validation").exists()
    _ok(repo)


def test_a_transforms_module_blocks_a_new_signal(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text("project: p\n")
    (repo / "transforms.py").write_text("")

    with pytest.raises(ScaffoldError, match=r"move it to transforms/__init__\.py"):
        plan_definition("signal", "cart", repo)


def test_init_refuses_a_folder_with_something_in_it(tmp_path: Path) -> None:
    check_empty_folder(tmp_path / "new")  # missing: fine
    check_empty_folder(tmp_path)  # empty: fine
    (tmp_path / "notes.txt").write_text("")

    message = re.escape(f"{tmp_path} is not empty (it holds notes.txt)")
    with pytest.raises(ScaffoldError, match=message):
        check_empty_folder(tmp_path)
    with pytest.raises(ScaffoldError, match="is not a folder"):
        check_empty_folder(tmp_path / "notes.txt")


# --- packaging and docs --------------------------------------------------------------------------


def test_every_template_is_package_data() -> None:
    """A non-editable install ships only what pyproject's package-data globs match."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["usp_feast"]
    package = ROOT / "usp_feast"
    templates = [p for p in (package / "templates").rglob("*") if p.is_file()]

    assert templates
    for path in templates:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_docstring_examples_pass() -> None:
    result = doctest.testmod(scaffold, optionflags=doctest.ELLIPSIS)

    assert result.failed == 0
    assert result.attempted > 0
