"""One query schema for every front end: the ROS topic ``~/query``, ``vilasr serve`` and the CLI.

A :class:`Query` is what a user asks; it is validated once, in ``__post_init__``, whoever builds it.
:func:`parse_query` reads the JSON text a robot publishes (size and nesting depth are checked before
``json.loads``, so no text can exhaust memory or the stack); ``vilasr serve`` reads the same fields
from its multipart ``query`` part (:func:`query_from_dict` with its transport fields beside them);
``vilasr ask`` builds the dataclass from its flags.

Query JSON::

    {"id": "q1", "question": "Go to the chair", "problem_type": "free-form",
     "options": ["A. ...", ...], "target": "chair", "frames": 16, "selection": "uniform", "kind": "video",
     "since": "-20min", "until": 1733400000.0, "region": "kitchen", "near": {"x": 1.0, "y": 2.0, "radius_m": 3.0},
     "text": "a red backpack", "memory": true}

``since``/``until``/``region``/``near``/``text``/``memory`` choose frames from the keyframe memory
(:mod:`vilasr_ros.retrieval`) when the agent has one.

``type`` is accepted as an alias of ``problem_type`` (the ROS topic's name for it before the two
schemas became one); a query may give one of them, not both.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from vilasr_ros import protocol
from vilasr_ros.errors import QueryError
from vilasr_ros.sanitize import check_json_depth, clean_text, is_encodable


class Selection(str, Enum):
    """How a query's frames are chosen from the keyframes: evenly over the window, the newest k, or
    pose-diverse coverage (:func:`vilasr_ros.buffer.select_frames`)."""

    UNIFORM = "uniform"
    LATEST = "latest"
    COVERAGE = "coverage"

    def __str__(self) -> str:
        return self.value


SELECTIONS = tuple(s.value for s in Selection)
MAX_QUERY_DEPTH = 4
"""A query is an object of strings, numbers and one list of strings: depth 2; 4 leaves room."""
MAX_OPTIONS = 26
MAX_QUERY_FRAMES = 64
"""Frames one query may ask for (the node's ``frames`` parameter and ``vilasr serve``'s ``max_frames``
default share this bound)."""
MAX_ID_CHARS = 128
QUERY_FIELDS = ("id", "question", "problem_type", "options", "target", "frames", "selection", "kind",
                "since", "until", "region", "near", "text", "memory")
MEMORY_FIELDS = ("since", "until", "region", "near", "text", "memory")
"""Fields that choose frames from the keyframe memory (a robot's; ``vilasr serve`` does not take them)."""
ALIASES = {"type": "problem_type"}


class BadQueryError(QueryError):
    """A query that cannot be served; ``query_id`` is the request id when one could be read."""

    def __init__(self, message: str, query_id: str | None = None):
        super().__init__(message)
        self.query_id = query_id


def _id(value: Any) -> str | None:
    if value is None:
        return None
    return clean_text(value if isinstance(value, str) else json.dumps(value))[:MAX_ID_CHARS]


@dataclass(frozen=True)
class Query:
    """A validated query (see the module docstring for its JSON).

    Attributes:
        id: The caller's id, echoed in the answer (at most 128 characters; numbers become text).
        question: The question, non-empty.
        problem_type: One of :data:`vilasr_ros.protocol.PROBLEM_TYPES` (user spellings such as
            ``"Multiple Choice"`` are normalised).
        options: Multiple-choice options (at most 26 strings); required for ``multiple choice``.
        target: Label of the object to ground into a world-frame target (and maybe a goal).
        frames: Frames to show the model, 1..64; None: the agent's setting.
        selection: How frames are chosen; None: the agent's setting.
        kind: Prompt layout; None: :func:`vilasr_ros.protocol.default_kind` of the frame count.
        since, until: Remembered keyframes from/to this time (inclusive): a stamp in seconds, ISO-8601
            (no zone = UTC) or relative to now (``"-20min"``, ``"-2h"``, ``"-90s"``).
        region: A region name of the agent's ``regions_file`` (map-frame polygon).
        near: ``{"x", "y", "radius_m"}``: remembered keyframes taken within ``radius_m`` of that
            map point (metres).
        text: What to look for in memory when it differs from ``target`` (semantic search).
        memory: Use the keyframe memory (True), the recent buffer only (False); None: memory when a
            time or place filter is given or the buffer has no usable frame.

    Raises:
        BadQueryError: Any field outside the rules above (the message names it; ``query_id`` is set).
    """

    question: str
    id: str | None = None
    problem_type: str = "free-form"
    options: list[str] | None = None
    target: str | None = None
    frames: int | None = None
    selection: Selection | None = None
    kind: protocol.PromptKind | None = None
    since: float | str | None = None
    until: float | str | None = None
    region: str | None = None
    near: dict | None = None
    text: str | None = None
    memory: bool | None = None

    def __post_init__(self):
        try:
            self._check_text()
            self._check_choices()
            self._check_memory()
        except QueryError as exc:
            raise BadQueryError(str(exc), self.id) from None

    def _check_text(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise QueryError("query needs a non-empty string 'question'")
        object.__setattr__(self, "problem_type", protocol.normalize_problem_type(self.problem_type))
        options = self.options
        if options is not None:
            if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) for o in options) \
                    or len(options) > MAX_OPTIONS:
                raise QueryError(f"'options' must be a list of at most {MAX_OPTIONS} strings")
            object.__setattr__(self, "options", list(options))
        if self.problem_type == "multiple choice" and not self.options:
            raise QueryError("a multiple-choice query needs 'options'")
        if self.target is not None and (not isinstance(self.target, str) or not self.target.strip()):
            raise QueryError("'target' must be a non-empty string")

    def _check_choices(self) -> None:
        frames = self.frames
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int)
                                   or not 1 <= frames <= MAX_QUERY_FRAMES):
            raise QueryError(f"'frames' must be an integer in 1..{MAX_QUERY_FRAMES}")
        for name, enum in (("selection", Selection), ("kind", protocol.PromptKind)):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                object.__setattr__(self, name, enum(value))
            except ValueError:
                raise QueryError(f"'{name}' must be one of {', '.join(e.value for e in enum)}") from None

    def _check_memory(self) -> None:
        from vilasr_ros.errors import MemoryStoreError
        from vilasr_ros.retrieval import parse_time

        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_time(value, 0.0)
                except MemoryStoreError as exc:
                    raise QueryError(f"'{name}': {exc}") from None
        for name in ("region", "text"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise QueryError(f"'{name}' must be a non-empty string")
        near = self.near
        if near is not None:
            ok = isinstance(near, dict) and set(near) == {"x", "y", "radius_m"} and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in near.values())
            if not ok or near["radius_m"] <= 0:
                raise QueryError("'near' must be {\"x\": m, \"y\": m, \"radius_m\": m > 0} (finite numbers, map frame)")
            object.__setattr__(self, "near", {k: float(v) for k, v in near.items()})
        if self.memory is not None and not isinstance(self.memory, bool):
            raise QueryError("'memory' must be true or false")

    @property
    def wants_memory(self) -> bool | None:
        """True: choose frames from memory; False: from the buffer; None: memory only when the buffer
        has no usable frame (no filter given, ``memory`` not set)."""
        if self.memory is not None:
            return self.memory
        return True if any(getattr(self, f) is not None for f in ("since", "until", "region", "near")) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (None omitted), as :func:`query_from_dict` reads them back."""
        out = {"id": self.id, "question": self.question, "problem_type": self.problem_type,
               "options": self.options, "target": self.target,
               "frames": self.frames, "selection": None if self.selection is None else self.selection.value,
               "kind": None if self.kind is None else self.kind.value,
               **{f: getattr(self, f) for f in MEMORY_FIELDS}}
        return {k: v for k, v in out.items() if v is not None}


def query_from_dict(data: Any, *, extra: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> tuple[Query, dict]:
    """A :class:`Query` from a parsed JSON object, and the caller's own fields beside it.

    Args:
        data: The parsed JSON (must be an object).
        extra: Field names the caller takes besides the query's (``vilasr serve``: ``loop``, ``deadline_s``,
            ``images``); returned in the second element, unvalidated.
        exclude: Query fields this front end does not take (``vilasr serve``: ``target``, ``frames``,
            ``selection`` — the robot chose its frames and grounds targets itself).

    Returns:
        ``(query, {name: value for the extra fields given})``.

    Raises:
        BadQueryError: Not an object, text that is not valid Unicode, unknown fields, a field given under
            both its name and its alias, or what :class:`Query` refuses.
    """
    if not isinstance(data, dict):
        raise BadQueryError(f"query must be a JSON object, got {type(data).__name__}")
    qid = _id(data.get("id"))
    if not is_encodable(json.dumps(data, ensure_ascii=False)):
        raise BadQueryError("query holds text that is not valid Unicode (a lone surrogate \\ud800-\\udfff)", qid)
    allowed = [f for f in QUERY_FIELDS if f not in exclude] + [a for a, f in ALIASES.items() if f not in exclude]
    unknown = set(data) - set(allowed) - set(extra)
    if unknown:
        raise BadQueryError(f"unknown query fields {sorted(unknown)}; allowed: {sorted(set(allowed) | set(extra))}", qid)
    fields = {k: v for k, v in data.items() if k in QUERY_FIELDS}
    for alias, name in ALIASES.items():
        if alias in data:
            if name in data:
                raise BadQueryError(f"give '{name}' or its alias '{alias}', not both", qid)
            fields[name] = data[alias]
    fields["id"] = qid
    if fields.get("problem_type") is None:
        fields.pop("problem_type", None)
    if "question" not in fields:
        raise BadQueryError("query needs a non-empty string 'question'", qid)
    return Query(**fields), {k: data[k] for k in extra if k in data}


def parse_query(text: str, *, max_bytes: int = 4096, extra: tuple[str, ...] = (),
                exclude: tuple[str, ...] = ()) -> tuple[Query, dict] | Query:
    """Validate a query's JSON text (the ROS topic's ``std_msgs/String``, ``vilasr agent --query``).

    The size is checked before parsing, and the nesting depth (without recursion) before
    ``json.loads``, so no text can exhaust memory or the stack; every string must be encodable
    (no lone surrogates: they could not be published or saved).

    Args:
        text: The JSON text.
        max_bytes: Largest accepted text (UTF-8 bytes; the node's ``max_query_bytes``).
        extra, exclude: As :func:`query_from_dict`; with ``extra`` the caller's fields are returned too.

    Returns:
        The :class:`Query`; ``(query, extra_fields)`` when ``extra`` is given.

    Raises:
        BadQueryError: Not text, over ``max_bytes``, nested deeper than :data:`MAX_QUERY_DEPTH`, not JSON,
            or what :func:`query_from_dict` refuses. ``query_id`` carries the id when readable.
    """
    if not isinstance(text, str):
        raise BadQueryError(f"query must be JSON text, got {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise BadQueryError(f"query is {size} bytes; the limit is {max_bytes} (max_query_bytes)", _peek_id(text))
    try:
        check_json_depth(text, MAX_QUERY_DEPTH + (2 if extra else 0))  # room for a caller's nested fields (serve's ``loop``)
        data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError or too deep
        what = "too deeply nested" if "nested" in str(exc) else "not JSON"
        raise BadQueryError(f"query is {what}: {clean_text(exc)}", _peek_id(text)) from None
    except RecursionError:  # unreachable after the depth check; kept as the invariant's guard
        raise BadQueryError("query is too deeply nested", _peek_id(text)) from None
    query, rest = query_from_dict(data, extra=extra, exclude=exclude)
    return (query, rest) if extra else query


_ID_RE = re.compile(r'"id"\s*:\s*(?:"((?:[^"\\]|\\.){0,128})"|(-?\d{1,20}))')


def _peek_id(text: str) -> str | None:
    """The ``id`` of a query too large to parse, read from its first KiB (so even a refused query
    is answered under its id)."""
    match = _ID_RE.search(text[:1024])
    if not match:
        return None
    if match.group(2) is not None:
        return match.group(2)
    try:
        return clean_text(json.loads('"' + match.group(1) + '"'))
    except ValueError:
        return None
