"""Load YAML definitions from a feature repository and report every problem at once.

Problems name the file, the line and the field, for example::

    signals/search.yaml:7: retention: invalid duration '10mins': use a whole number ...
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from usp_feast.aggregates import AggregateError
from usp_feast.filters import FilterError, parse_filter
from usp_feast.spec import (
    FIELD_TYPES,
    JoinSignalSpec,
    SegmentSpec,
    SessionEngagementSpec,
    SignalDefinition,
    SignalSpec,
)

__all__ = [
    "RESERVED_PREFIXES",
    "TRANSFORM_MODULES_ENV",
    "DefinitionError",
    "Definitions",
    "JobDefinition",
    "Problem",
    "SignalDefinition",
    "check_definitions",
    "feast_names",
    "load_definitions",
    "load_transform",
    "transform_module_allowed",
    "validation_dir",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition, located precisely enough to fix it."""

    file: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class DefinitionError(ValueError):
    """Definitions that cannot be used; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        count = len(problems)
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in definitions:\n{lines}")


JobDefinition = SignalSpec | JoinSignalSpec | SegmentSpec | SessionEngagementSpec
"""A definition that runs as a streaming job (what ``usp run NAME`` starts)."""


@dataclass(frozen=True)
class Definitions:
    """Every valid definition of one feature repository.

    ``signals`` holds join signals (``joins/``) as well: they are read like any signal.
    """

    repo: Path
    signals: tuple[SignalDefinition, ...]
    segments: tuple[SegmentSpec, ...] = ()
    sessions: tuple[SessionEngagementSpec, ...] = ()

    @property
    def joins(self) -> tuple[JoinSignalSpec, ...]:
        """The join signals."""
        return tuple(s for s in self.signals if isinstance(s, JoinSignalSpec))

    def signal(self, name: str) -> SignalDefinition:
        """The signal called ``name``.

        Raises:
            KeyError: With a message listing the known signals.

        """
        found = _named(self.signals, name)
        if found is not None:
            return found
        raise KeyError(f"unknown signal {name!r}; known signals: {_names(self.signals)}")

    def job_definition(self, name: str) -> JobDefinition:
        """The signal, segment or session engagement called ``name`` (what ``usp run`` starts).

        Raises:
            KeyError: With a message listing every kind.

        """
        found: JobDefinition | None = (
            _named(self.signals, name) or _named(self.segments, name) or _named(self.sessions, name)
        )
        if found is not None:
            return found
        raise KeyError(
            f"unknown signal, segment or session {name!r}; signals: {_names(self.signals)}; "
            f"segments: {_names(self.segments)}; sessions: {_names(self.sessions)}"
        )

    def topics(self, specs: Sequence[JobDefinition]) -> list[str]:
        """Every Kafka topic the jobs of ``specs`` read or write, without repeats."""
        topics: list[str] = []
        for spec in specs:
            if isinstance(spec, SignalSpec):
                topics += [spec.source.topic, spec.signal_topic, spec.dead_letter_topic]
            elif isinstance(spec, JoinSignalSpec):
                topics += [
                    *spec.topics_read,
                    spec.signal_topic,
                    spec.dead_letter_topic,
                    spec.late_topic,
                ]
            elif isinstance(spec, SegmentSpec):
                topics += [self.signal(n).signal_topic for n in spec.rules().signals]
                topics += [spec.topic, spec.late_topic]
            else:
                topics += [self.signal(n).signal_topic for n in spec.signals]
                topics += [spec.topic, spec.late_topic]
        return list(dict.fromkeys(topics))

    def segment(self, name: str) -> SegmentSpec:
        """The segment called ``name``.

        Raises:
            KeyError: With a message listing the known segments.

        """
        found = _named(self.segments, name)
        if found is not None:
            return found
        raise KeyError(f"unknown segment {name!r}; known segments: {_names(self.segments)}")

    def session(self, name: str) -> SessionEngagementSpec:
        """The session engagement called ``name``.

        Raises:
            KeyError: With a message listing the known session engagements.

        """
        found = _named(self.sessions, name)
        if found is not None:
            return found
        raise KeyError(f"unknown session {name!r}; known sessions: {_names(self.sessions)}")


_Spec = TypeVar("_Spec", SignalDefinition, SegmentSpec, SessionEngagementSpec)


def _named(specs: Sequence[_Spec], name: str) -> _Spec | None:
    return next((spec for spec in specs if spec.name == name), None)


def _names(specs: Sequence[JobDefinition]) -> str:
    return ", ".join(spec.name for spec in specs) or "none"


def validation_dir(repo: Path) -> Path:
    """Where a repository's expectation suites live: ``<repo>/validation`` or beside it."""
    inside = repo / "validation"
    return inside if inside.is_dir() else repo.parent / "validation"


def load_definitions(repo: Path | str, *, check_imports: bool = True) -> Definitions:
    """Load and validate every definition of a feature repository.

    Args:
        repo: The feature repository (the folder holding ``feature_store.yaml``).
        check_imports: Also import each transform class and look up each suite file.

    Raises:
        DefinitionError: Listing every problem with file, line and field.

    """
    definitions, problems = check_definitions(repo, check_imports=check_imports)
    if problems:
        raise DefinitionError(problems)
    return definitions


def check_definitions(
    repo: Path | str, *, check_imports: bool = True
) -> tuple[Definitions, list[Problem]]:
    """Like :func:`load_definitions`, but return the problems instead of raising."""
    repo = Path(repo).resolve()
    problems: list[Problem] = []
    signals = _load_folder(repo, "signals", SignalSpec, problems)
    signals += _load_folder(repo, "joins", JoinSignalSpec, problems)
    segments = _load_folder(repo, "segments", SegmentSpec, problems)
    sessions = _load_folder(repo, "sessions", SessionEngagementSpec, problems)
    problems.extend(_duplicate_names(signals, "signal"))
    problems.extend(_duplicate_names(segments, "segment"))
    problems.extend(_duplicate_names(sessions, "session"))
    problems.extend(_reserved_signal_names(signals))
    known = {spec.name: spec for spec, _, _ in signals}
    for spec, shown, document in segments:
        problems.extend(_check_segment_signals(spec, known, shown, document))
    signal_specs, segment_specs = [s for s, _, _ in signals], [s for s, _, _ in segments]
    taken = feast_names(signal_specs, segment_specs, [s for s, _, _ in sessions])
    for spec, shown, document in signals:
        problems.extend(
            _check_object_names(f"signal {spec.name!r}", "signal", taken, shown, document)
        )
    for spec, shown, document in segments:
        problems.extend(
            _check_object_names(f"segment {spec.name!r}", "segment", taken, shown, document)
        )
    for spec, shown, document in sessions:
        problems.extend(_check_session_signals(spec, known, shown, document))
        problems.extend(
            _check_session_name(spec, signal_specs, segment_specs, taken, shown, document)
        )
    if check_imports:
        for spec, shown, document in signals:
            problems.extend(_check_imports(spec, repo, shown, document))
    definitions = Definitions(
        repo=repo,
        signals=tuple(s for s, _, _ in signals),
        segments=tuple(s for s, _, _ in segments),
        sessions=tuple(s for s, _, _ in sessions),
    )
    return definitions, problems


def _load_folder(
    repo: Path, folder_name: str, model: type[Any], problems: list[Problem]
) -> list[tuple[Any, Path, CommentedMap]]:
    """Validate every YAML file of one definitions folder; problems are appended."""
    loaded: list[tuple[Any, Path, CommentedMap]] = []
    folder = repo / folder_name
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    for path in files:
        shown = _shown(path, repo)
        document, error = _read_yaml(path, shown)
        if error:
            problems.append(error)
            continue
        spec, found = _validate(model, document, shown)
        problems.extend(found)
        if spec is not None:
            loaded.append((spec, shown, document))
    return loaded


TRANSFORM_MODULES_ENV = "USP_TRANSFORM_MODULES"
"""Comma-separated module prefixes transform classes may come from, besides the repository's."""


def transform_module_allowed(module_name: str, repo: Path, prefixes: Sequence[str]) -> bool:
    """Whether a definition may name a transform class from ``module_name``.

    Modules the repository ships (a top-level ``.py`` file or package folder in it) and those
    under an operator-configured prefix only: importing runs a module's code, so a YAML file
    must not be able to make a job import whatever is installed.

    Example:
        >>> transform_module_allowed("os", Path("."), [])
        False
        >>> transform_module_allowed("shared.transforms.search", Path("."), ["shared.transforms"])
        True
        >>> transform_module_allowed("shared.transformsx", Path("."), ["shared.transforms"])
        False
    """
    top = module_name.split(".")[0]
    if (repo / f"{top}.py").is_file() or (repo / top).is_dir():
        return True
    return any(module_name == p or module_name.startswith(f"{p}.") for p in prefixes)


def _allowed_prefixes() -> list[str]:
    text = os.environ.get(TRANSFORM_MODULES_ENV, "")
    return [p.strip() for p in text.split(",") if p.strip()]


def load_transform(spec: SignalSpec, repo: Path) -> Any:
    """Import and instantiate a signal's transform class.

    The repository folder is put on ``sys.path`` so classes can live beside the definitions.
    Only modules of the repository, or under a prefix in ``$USP_TRANSFORM_MODULES``, are
    imported (:func:`transform_module_allowed`); anything else is refused before import.

    Raises:
        ImportError: With a message naming the class path and what is missing.

    """
    module_name, _, class_name = spec.transform.rpartition(".")
    prefixes = _allowed_prefixes()
    if not transform_module_allowed(module_name, repo, prefixes):
        allowed = f"the prefixes {', '.join(prefixes)}" if prefixes else "no other prefix"
        raise ImportError(
            f"transform module {module_name!r} is neither in the repository nor under an "
            f"allowed prefix (${TRANSFORM_MODULES_ENV} allows {allowed}); not imported"
        )
    with _importable(repo):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a broken user module (syntax error, failing import) too
            raise ImportError(
                f"cannot import transform module {module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    cls = getattr(module, class_name, None)
    if cls is None or not isinstance(cls, type):
        raise ImportError(f"module {module_name!r} has no class {class_name!r}")
    if not callable(getattr(cls, "transform", None)):
        raise ImportError(
            f"{spec.transform} has no transform(event) method; "
            "subclass usp_feast.transforms.SignalTransform"
        )
    return cls()


@contextmanager
def _importable(repo: Path) -> Iterator[None]:
    added = str(repo) not in sys.path
    if added:
        sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(repo))


def _shown(path: Path, repo: Path) -> Path:
    try:
        return path.relative_to(repo)
    except ValueError:
        return path


def _read_yaml(path: Path, shown: Path) -> tuple[Any, Problem | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        at = path.read_bytes().count(b"\n", 0, exc.start) + 1
        return None, Problem(shown, at, "", f"not UTF-8 text ({exc.reason}); save it as UTF-8")
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        return None, Problem(shown, line, "", f"not valid YAML: {exc.problem}")
    except ReaderError as exc:  # a control character; it carries a position, not a mark
        at = text.count("\n", 0, exc.position) + 1
        return None, Problem(shown, at, "", f"not valid YAML: {str(exc).splitlines()[0]}")
    if not isinstance(document, CommentedMap):
        return None, Problem(shown, 1, "", "expected a mapping of keys to values")
    return document, None


def _validate(
    model: type[BaseModel], document: CommentedMap, shown: Path
) -> tuple[Any, list[Problem]]:
    try:
        return model.model_validate(_plain(document)), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            problems.append(
                Problem(
                    shown,
                    _line_of(document, loc),
                    # "[key]" marks an error in a mapping's key; the key itself names it.
                    ".".join(str(p) for p in loc if p != "[key]"),
                    _message(model, error),
                )
            )
        return None, problems


def _message(model: type[BaseModel], error: Any) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = (
            f"; did you mean {hint[0]!r}?" if hint else f"; allowed keys: {', '.join(allowed)}"
        )
        return f"unknown key {loc[-1]!r}{suggestion}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error" and "fields" in loc[:-1]:
        return f"unknown type {error['input']!r}; use one of {', '.join(FIELD_TYPES)}"
    if kind == "string_pattern_mismatch":
        return f"{error['input']!r} is not valid here: {_pattern_hint(loc)}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _pattern_hint(loc: tuple[Any, ...]) -> str:
    if loc[-1] == "transform":
        return "use a dotted class path such as transforms.SearchTransform"
    if loc[-1] == "topic":
        return "topic names use letters, digits, '.', '_' and '-'"
    return "names are lowercase letters, digits and '_', starting with a letter"


def _allowed_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in path:
        if isinstance(part, int):  # a list item: the list's element type holds the keys
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The model inside ``list[Model]`` or ``Model | None`` (else the annotation itself)."""
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    return node


def _line_of(document: CommentedMap, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest part of ``loc`` present in the document."""
    node: Any = document
    line = document.lc.line + 1 if document.lc.line is not None else None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _duplicate_names(loaded: list[tuple[Any, Path, CommentedMap]], kind: str) -> list[Problem]:
    first: dict[str, tuple[Path, int | None]] = {}
    problems = []
    for spec, shown, document in loaded:
        line = _line_of(document, ("name",))
        if spec.name in first:
            other, other_line = first[spec.name]
            problems.append(
                Problem(
                    shown,
                    line,
                    "name",
                    f"{kind} {spec.name!r} is already defined in {other}:{other_line}",
                )
            )
        else:
            first[spec.name] = (shown, line)
    return problems


# A signal's job config is <name>.json; these prefixes name other kinds' files (and views).
RESERVED_PREFIXES = {
    "segment_": "segment views",
    "session_": "session engagement job configs",
    "join_": "join signal job configs",
}


def _reserved_signal_names(
    signals: list[tuple[SignalDefinition, Path, CommentedMap]],
) -> list[Problem]:
    return [
        Problem(
            shown,
            _line_of(document, ("name",)),
            "name",
            f"names starting with {prefix!r} are reserved for {what}; rename the signal",
        )
        for spec, shown, document in signals
        for prefix, what in RESERVED_PREFIXES.items()
        if spec.name.startswith(prefix)
    ]


def _check_segment_signals(
    spec: SegmentSpec, known: dict[str, SignalDefinition], shown: Path, document: CommentedMap
) -> list[Problem]:
    """Every signal a segment names exists, and its filters fit that signal's fields."""
    problems = []
    conditions = [(("trigger",), spec.trigger)] + [
        (("exit", i), condition) for i, condition in enumerate(spec.exit)
    ]
    for loc, condition in conditions:
        where = ".".join(str(p) for p in loc)
        signal = known.get(condition.signal)
        if signal is None:
            names = ", ".join(sorted(known)) or "none"
            problems.append(
                Problem(
                    shown,
                    _line_of(document, (*loc, "signal")),
                    f"{where}.signal",
                    f"unknown signal {condition.signal!r}; defined signals: {names}",
                )
            )
            continue
        if condition.where is not None:
            try:
                parse_filter(condition.where).check({"event_id": "string", **signal.fields})
            except FilterError as exc:
                problems.append(
                    Problem(shown, _line_of(document, (*loc, "where")), f"{where}.where", str(exc))
                )
    return problems


def _check_session_signals(
    spec: SessionEngagementSpec,
    known: dict[str, SignalDefinition],
    shown: Path,
    document: CommentedMap,
) -> list[Problem]:
    """Every signal a session engagement lists exists, and every aggregate fits their fields."""
    problems = []
    for i, name in enumerate(spec.signals):
        if name not in known:
            names = ", ".join(sorted(known)) or "none"
            problems.append(
                Problem(
                    shown,
                    _line_of(document, ("signals", i)),
                    f"signals.{i}",
                    f"unknown signal {name!r}; defined signals: {names}",
                )
            )
    if problems:  # the fields of a signal that is not there are unknown: checking would guess
        return problems
    # Field name -> {type: first listed signal giving it that type}.
    typed: dict[str, dict[str, str]] = {"event_id": {"string": spec.signals[0]}}
    for name in spec.signals:
        for field, kind in known[name].fields.items():
            typed.setdefault(field, {}).setdefault(kind, name)
    for feature, aggregate in spec.aggregates().items():
        loc = ("features", feature)
        types = typed.get(aggregate.field or "", {})
        if len(types) > 1:
            sides = " but ".join(f"{kind} in {signal}" for kind, signal in types.items())
            problems.append(
                Problem(
                    shown,
                    _line_of(document, loc),
                    f"features.{feature}",
                    f"field {aggregate.field!r} is {sides}; an aggregate needs one type, so "
                    "list only signals that agree on it",
                )
            )
            continue
        try:
            aggregate.check({field: next(iter(kinds)) for field, kinds in typed.items()})
        except AggregateError as exc:
            listed = ", ".join(spec.signals)
            problems.append(
                Problem(
                    shown,
                    _line_of(document, loc),
                    f"features.{feature}",
                    f"{exc} (signals: {listed})",
                )
            )
    return problems


# Feast object name -> (definition, role) pairs: everything a repository compiles to.
_FeastNames = dict[str, list[tuple[str, str]]]


def feast_names(
    signals: Sequence[SignalDefinition],
    segments: Sequence[SegmentSpec],
    sessions: Sequence[SessionEngagementSpec],
) -> _FeastNames:
    """Every Feast object name the definitions compile to, with whose it is and what it is.

    They share one namespace: ``repo_objects`` puts them all in the repository module's globals.
    """
    taken: _FeastNames = {"user": [("", "the user entity")]}
    for signal in signals:
        owner = f"signal {signal.name!r}"
        for name, role in (
            (signal.name, "view"),
            (signal.push_source, "push source"),
            (f"{signal.name}_source", "file source"),
            (signal.history_view, "query-features view"),
        ):
            taken.setdefault(name, []).append((owner, f"the {role} of {owner}"))
    for segment in segments:
        owner = f"segment {segment.name!r}"
        for name, role in (
            (segment.view, "view"),
            (segment.push_source, "push source"),
            (f"{segment.view}_source", "file source"),
        ):
            taken.setdefault(name, []).append((owner, f"the {role} of {owner}"))
    for session in sessions:
        owner = f"session {session.name!r}"
        for name, role in _session_objects(session):
            taken.setdefault(name, []).append((owner, f"the {role} of {owner}"))
    return taken


def _session_objects(spec: SessionEngagementSpec) -> list[tuple[str, str]]:
    return [
        (spec.view, "view"),
        (spec.push_source, "push source"),
        (f"{spec.name}_source", "file source"),
    ]


def _check_object_names(
    owner: str, kind: str, taken: _FeastNames, shown: Path, document: CommentedMap
) -> list[Problem]:
    """The Feast objects a signal or segment compiles to are named like nothing else's.

    A clash with a session is reported on the session (its own name check); two definitions
    of one kind and name are reported as duplicates instead.
    """
    clashes = [
        f"its {role.split(' of ')[0].removeprefix('the ')} {name!r} would be named like {other}"
        for name, roles in taken.items()
        for role_owner, role in roles
        if role_owner == owner
        for other_owner, other in roles
        if other_owner != owner and not other_owner.startswith("session ")
    ]
    if not clashes:
        return []
    return [
        Problem(
            shown,
            _line_of(document, ("name",)),
            "name",
            f"{'; '.join(clashes)} (Feast object names are shared by every definition); "
            f"rename the {kind}",
        )
    ]


def _check_session_name(
    spec: SessionEngagementSpec,
    signals: Sequence[SignalDefinition],
    segments: Sequence[SegmentSpec],
    taken: _FeastNames,
    shown: Path,
    document: CommentedMap,
) -> list[Problem]:
    """A session engagement's name, and the Feast objects named after it, are its own."""
    this = f"session {spec.name!r}"
    line = _line_of(document, ("name",))
    # `usp run NAME` and the query API find a definition by its name alone.
    for kind, specs in (("signal", signals), ("segment", segments)):
        if any(other.name == spec.name for other in specs):
            return [
                Problem(
                    shown,
                    line,
                    "name",
                    f"{kind} {spec.name!r} already has this name; definitions of every kind "
                    "need names of their own, so rename the session",
                )
            ]
    clashes = [
        f"its {role} {name!r} would be named like {other}"
        for name, role in _session_objects(spec)
        for owner, other in taken.get(name, [])
        if owner != this  # two sessions of one name are reported as duplicates instead
    ]
    if not clashes:
        return []
    return [
        Problem(
            shown,
            line,
            "name",
            f"{'; '.join(clashes)} (Feast object names are shared by every definition); "
            "rename the session",
        )
    ]


def _check_imports(
    spec: SignalDefinition, repo: Path, shown: Path, document: CommentedMap
) -> list[Problem]:
    """The transform class imports and every expectation suite loads."""
    if isinstance(spec, JoinSignalSpec):
        return [
            problem
            for side in ("left", "right")
            for problem in _check_suite(
                getattr(spec, side).validation,
                repo,
                shown,
                _line_of(document, (side, "validation")),
                f"{side}.validation",
            )
        ]
    return [
        *_check_transform(spec, repo, shown, _line_of(document, ("transform",))),
        *_check_suite(spec.validation, repo, shown, _line_of(document, ("validation",))),
    ]


def _check_transform(spec: SignalSpec, repo: Path, shown: Path, line: int | None) -> list[Problem]:
    try:
        load_transform(spec, repo)
    except ImportError as exc:
        return [Problem(shown, line, "transform", str(exc))]
    except Exception as exc:  # a user class whose constructor fails is a definition problem
        return [Problem(shown, line, "transform", f"{spec.transform}() failed: {exc}")]
    return []


def _check_suite(
    name: str, repo: Path, shown: Path, line: int | None, field: str = "validation"
) -> list[Problem]:
    from usp_feast.contracts import Contract, ContractError

    suite = validation_dir(repo) / f"{name}.json"
    if not suite.is_file():
        return [
            Problem(
                shown,
                line,
                field,
                f"expectation suite {name!r} not found; expected the file {suite}",
            )
        ]
    try:
        Contract.load(suite)  # rejects expectation types the job cannot check per event
    except ContractError as exc:
        return [Problem(shown, line, field, str(exc))]
    return []
