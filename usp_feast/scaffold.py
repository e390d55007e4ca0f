"""Config-first scaffolding: a new project (``usp init``) and definition skeletons (``usp new``).

The renderers are pure: they fill the templates under ``usp_feast/templates/`` and return
``{path relative to the project folder: text}``. The project folder holds the feature repository
and, beside it, ``validation/`` (and later the generated ``streaming/`` and ``backfill/``), like
this project. Everything rendered validates as written, so ``usp validate`` passes right after
``usp init`` or ``usp new``. Only :func:`plan_definition` (which reads the repository) and
:func:`write_files` touch the disk.

Example:
    >>> files = init_files("trips")
    >>> for path in sorted(files):
    ...     print(path)
    .gitignore
    README.md
    feature_repo/definitions.py
    feature_repo/feature_store.yaml
    feature_repo/signals/item_view.yaml
    feature_repo/transforms/__init__.py
    feature_repo/transforms/item_view.py
    validation/item_view.json
    >>> print(files["feature_repo/feature_store.yaml"].splitlines()[2])
    project: trips
    >>> project_name("My Signals-2026")
    'my_signals_2026'
    >>> sorted(session_files("visit", "item_view"))
    ['feature_repo/sessions/visit.yaml']
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Literal

from pydantic import ValidationError
from ruamel.yaml import YAML

from usp_feast.definitions import (
    RESERVED_PREFIXES,
    Definitions,
    check_definitions,
    feast_names,
    validation_dir,
)
from usp_feast.spec import SegmentSpec, SessionEngagementSpec, SignalSpec

__all__ = [
    "EXAMPLE_SIGNAL",
    "REPO_FOLDER",
    "SUITES_FOLDER",
    "DefinitionKind",
    "ScaffoldError",
    "check_empty_folder",
    "check_new_name",
    "check_project_name",
    "class_name",
    "init_files",
    "plan_definition",
    "project_name",
    "segment_files",
    "session_files",
    "signal_files",
    "write_files",
]

REPO_FOLDER = "feature_repo"
"""The feature repository's folder inside a project (the CLI's default ``--repo``)."""

SUITES_FOLDER = "validation"
"""The expectation suites' folder inside a project, beside the repository."""

EXAMPLE_SIGNAL = "item_view"
"""The signal ``usp init`` writes as a working example."""

DefinitionKind = Literal["signal", "segment", "session"]

# What the spec accepts as a definition name (spec.Identifier); checked here first so a bad
# name gets one sentence instead of a pydantic error.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Feast's rule (feast.repo_operations.is_valid_name), kept to ASCII and non-empty: the project
# name is also the first part of every Redis key the store writes.
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class ScaffoldError(ValueError):
    """Scaffolding cannot go ahead; the message names the thing and the fix."""


# --- pure: names --------------------------------------------------------------------------------


def project_name(folder_name: str) -> str:
    """The Feast project name for a project folder: lowercase, runs of other characters as ``_``.

    Raises:
        ScaffoldError: When nothing usable is left (e.g. a folder called ``---``).

    """
    derived = re.sub(r"[^a-z0-9]+", "_", folder_name.lower()).strip("_")
    if not derived:
        raise ScaffoldError(
            f"cannot derive a Feast project name from the folder name {folder_name!r}; "
            "pass --project NAME (letters, digits, '_' and '-')"
        )
    return check_project_name(derived)


def check_project_name(name: str) -> str:
    """Return ``name`` if Feast (and the store's keys) accept it as a project name.

    Raises:
        ScaffoldError: Saying which characters are allowed.

    """
    if not _PROJECT.match(name):
        raise ScaffoldError(
            f"{name!r} is not a valid Feast project name: use ASCII letters, digits, '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def class_name(signal: str) -> str:
    """The transform class of a signal: ``item_view`` -> ``ItemViewTransform``."""
    return "".join(part[:1].upper() + part[1:] for part in signal.split("_")) + "Transform"


def check_new_name(kind: DefinitionKind, name: str, definitions: Definitions) -> None:
    """Check that a new definition may take ``name`` in a repository with ``definitions``.

    The name must be one the spec accepts, not used by any definition of any kind (``usp run``
    and the query API find definitions by name alone), and none of the Feast objects it
    compiles to may be named like an existing one (they share the repository's namespace).

    Raises:
        ScaffoldError: Naming what the name clashes with.

    """
    if not _NAME.match(name):
        raise ScaffoldError(
            f"{name!r} is not a valid {kind} name: use lowercase letters, digits and '_', "
            "starting with a letter (at most 63 characters)"
        )
    if kind == "signal":
        if keyword.iskeyword(name):
            # The transform lives in transforms/<name>.py, imported as transforms.<name>.
            raise ScaffoldError(f"{name!r} is a Python keyword; choose another signal name")
        for prefix, what in RESERVED_PREFIXES.items():
            if name.startswith(prefix):
                raise ScaffoldError(
                    f"signal names starting with {prefix!r} are reserved for {what}; "
                    "choose another name"
                )
    for other_kind, specs in (
        ("signal", definitions.signals),
        ("segment", definitions.segments),
        ("session", definitions.sessions),
    ):
        if any(spec.name == name for spec in specs):
            raise ScaffoldError(
                f"{other_kind} {name!r} already exists; definitions of every kind need names of "
                "their own, so choose another name"
            )
    taken = feast_names(definitions.signals, definitions.segments, definitions.sessions)
    for object_name, [(_, role)] in _candidate_objects(kind, name).items():
        if object_name in taken:
            _, other = taken[object_name][0]
            raise ScaffoldError(
                f"{kind} {name!r} cannot be added: {role} would be named {object_name!r} like "
                f"{other} (Feast object names are shared by every definition); "
                "choose another name"
            )


def _candidate_objects(kind: DefinitionKind, name: str) -> dict[str, list[tuple[str, str]]]:
    """The Feast objects a new definition called ``name`` compiles to (the entity left out)."""
    # The skeleton itself is the candidate: what it compiles to is what the validator sees.
    spec = _parse(kind, _render_definition(kind, name, signal="placeholder"))
    signals = [spec] if isinstance(spec, SignalSpec) else []
    segments = [spec] if isinstance(spec, SegmentSpec) else []
    sessions = [spec] if isinstance(spec, SessionEngagementSpec) else []
    # An owner of "" marks the shared user entity: it is not the candidate's own object.
    return {
        object_name: owned
        for object_name, roles in feast_names(signals, segments, sessions).items()
        if (owned := [(owner, role) for owner, role in roles if owner])
    }


# --- pure: rendering ----------------------------------------------------------------------------


def init_files(
    project: str, *, repo_folder: str = REPO_FOLDER, example: str = EXAMPLE_SIGNAL
) -> dict[str, str]:
    """Every file of a new project folder: repository, example signal, its suite, a README.

    Raises:
        ScaffoldError: When ``project`` is not a valid Feast project name.

    """
    check_project_name(project)
    values = {
        "project": project,
        "repo_folder": repo_folder,
        "example": example,
        "example_class": class_name(example),
    }
    return {
        "README.md": _render("project/README.md.tmpl", values),
        ".gitignore": _render("project/gitignore.tmpl", values),
        f"{repo_folder}/feature_store.yaml": _render("project/feature_store.yaml.tmpl", values),
        f"{repo_folder}/definitions.py": _render("project/definitions.py.tmpl", values),
        **signal_files(example, repo_folder=repo_folder, with_package=True),
    }


def signal_files(
    name: str,
    *,
    repo_folder: str = REPO_FOLDER,
    suites_folder: str = SUITES_FOLDER,
    with_package: bool = False,
) -> dict[str, str]:
    """A signal skeleton: its YAML, its transform module and its expectation suite.

    Args:
        name: The signal's name.
        repo_folder: The repository's folder, relative to the project folder.
        suites_folder: The suites' folder, relative to the project folder.
        with_package: Also write ``transforms/__init__.py`` (for a repository without one).

    """
    transform_path = f"transforms/{name}.py"
    suite_path = f"{suites_folder}/{name}.json"
    values = {
        "name": name,
        "class_name": class_name(name),
        "transform_path": transform_path,
        "suite_path": suite_path,
    }
    files = {
        f"{repo_folder}/signals/{name}.yaml": _render("signal/signal.yaml.tmpl", values),
        f"{repo_folder}/{transform_path}": _render("signal/transform.py.tmpl", values),
        suite_path: _render("signal/suite.json.tmpl", values),
    }
    if with_package:
        files[f"{repo_folder}/transforms/__init__.py"] = _render(
            "project/transforms_init.py.tmpl", values
        )
    return dict(sorted(files.items()))


def segment_files(name: str, signal: str, *, repo_folder: str = REPO_FOLDER) -> dict[str, str]:
    """A segment skeleton that a ``signal`` event triggers."""
    return {f"{repo_folder}/segments/{name}.yaml": _render_definition("segment", name, signal)}


def session_files(name: str, signal: str, *, repo_folder: str = REPO_FOLDER) -> dict[str, str]:
    """A session engagement skeleton over ``signal``'s events."""
    return {f"{repo_folder}/sessions/{name}.yaml": _render_definition("session", name, signal)}


def _render_definition(kind: DefinitionKind, name: str, signal: str) -> str:
    if kind == "signal":
        return signal_files(name)[f"{REPO_FOLDER}/signals/{name}.yaml"]
    return _render(f"{kind}/{kind}.yaml.tmpl", {"name": name, "signal": signal})


def _render(template: str, values: Mapping[str, str]) -> str:
    text = resources.files("usp_feast").joinpath("templates", template).read_text("utf-8")
    return Template(text).substitute(values)


_MODELS: dict[DefinitionKind, Any] = {
    "signal": SignalSpec,
    "segment": SegmentSpec,
    "session": SessionEngagementSpec,
}


def _parse(kind: DefinitionKind, text: str) -> Any:
    """The spec of a rendered YAML definition (a template bug if it does not validate)."""
    try:
        return _MODELS[kind].model_validate(YAML(typ="safe").load(text))
    except ValidationError as exc:  # a bug of usp-feast, not of the user's input
        raise RuntimeError(f"the {kind} template of usp-feast does not validate: {exc}") from exc


# --- adapters: reading the repository, writing files --------------------------------------------


def plan_definition(
    kind: DefinitionKind, name: str, repo: Path, *, signal: str | None = None
) -> tuple[Path, dict[str, str]]:
    """What ``usp new KIND NAME`` writes into ``repo``: the project folder and its new files.

    Segments and sessions are made over ``signal``, by default the repository's first signal
    (first by file name), so the skeleton validates as written.

    Raises:
        ScaffoldError: When ``repo`` is no feature repository, the name is taken, the signal
            does not exist, or a file to write is already there.

    """
    repo = repo.resolve()
    if not (repo / "feature_store.yaml").is_file():
        raise ScaffoldError(
            f"{repo} is not a feature repository (no feature_store.yaml); pass --repo, or "
            "create a project with `usp init DIR`"
        )
    # Only the names matter here, so transforms are not imported; definitions with problems
    # are skipped (`usp validate` reports them), but their files still block the paths below.
    definitions, _ = check_definitions(repo, check_imports=False)
    check_new_name(kind, name, definitions)
    root, repo_folder = repo.parent, repo.name
    if kind == "signal":
        if (repo / "transforms.py").is_file():
            raise ScaffoldError(
                f"{repo / 'transforms.py'} is a module, so transforms/{name}.py could not be "
                f"imported as transforms.{name}; move it to transforms/__init__.py first"
            )
        files = signal_files(
            name,
            repo_folder=repo_folder,
            suites_folder=validation_dir(repo).relative_to(root).as_posix(),
            with_package=not (repo / "transforms" / "__init__.py").is_file(),
        )
    else:
        known = [spec.name for spec in definitions.signals]
        if not known:
            raise ScaffoldError(
                f"a {kind} is made over a signal, and {repo} has none yet; "
                "add one first with `usp new signal NAME`"
            )
        if signal is None:
            signal = known[0]
        elif signal not in known:
            raise ScaffoldError(
                f"--signal: unknown signal {signal!r}; signals of {repo.name}: {', '.join(known)}"
            )
        render = segment_files if kind == "segment" else session_files
        files = render(name, signal, repo_folder=repo_folder)
    _refuse_existing(root, files)
    return root, files


def write_files(root: Path, files: Mapping[str, str]) -> list[Path]:
    """Write new files under ``root``, creating folders; returns the paths written.

    Nothing is written when any of them already exists.

    Raises:
        ScaffoldError: Naming a file that already exists.

    """
    _refuse_existing(root, files)
    written = []
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_empty_folder(folder: Path) -> None:
    """Refuse a project folder that exists with something in it.

    Raises:
        ScaffoldError: Naming the folder and some of what it holds.

    """
    if folder.exists() and not folder.is_dir():
        raise ScaffoldError(f"{folder} exists and is not a folder; choose a new folder name")
    if folder.is_dir():
        entries = sorted(entry.name for entry in folder.iterdir())
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ScaffoldError(
                f"{folder} is not empty (it holds {shown}); `usp init` only writes into a new "
                "or empty folder, so choose another one"
            )


def _refuse_existing(root: Path, files: Mapping[str, str]) -> None:
    existing = [relative for relative in files if (root / relative).exists()]
    if existing:
        raise ScaffoldError(
            f"{', '.join(str(root / p) for p in existing)} already "
            f"{'exists' if len(existing) == 1 else 'exist'}; nothing was written: choose "
            "another name or remove the file"
        )
