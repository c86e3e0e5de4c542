"""The spatial agent (no rclpy): a query in, an answer and a target pose out.

The ROS node (:mod:`vilasr_ros.ros.agent_node`) is a thin adapter around :class:`SpatialAgent`: it
fills the :class:`~vilasr_ros.buffer.FrameBuffer` from topics, hands each query's JSON to
:func:`parse_query`, calls :meth:`SpatialAgent.answer`, and publishes :meth:`Answer.to_json`.

Query JSON (``~/query``)::

    {"id": "q1", "question": "Go to the chair", "type": "free-form",
     "options": ["A. ...", ...], "target": "chair", "frames": 16}

Answer JSON (``~/answer``)::

    {"id": "q1", "answer": "...", "finish_reason": "stop", "error": null,
     "target_pose": {"position": [x, y, z], "orientation": [x, y, z, w], "frame_id": "map"} | null,
     "trace_dir": "...", "engine": "...", "target": {...grounding result...} | null}
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from vilasr_ros import protocol
from vilasr_ros.buffer import FrameBuffer
from vilasr_ros.errors import QueryError, VilasrError
from vilasr_ros.grounding import GroundingConfig, GroundingResult, ground_trace
from vilasr_ros.reasoner import Reasoner
from vilasr_ros.trace import Trace, Turn

logger = logging.getLogger(__name__)

QUERY_FIELDS = {"id", "question", "type", "options", "target", "frames", "selection", "kind"}
SELECTIONS = ("uniform", "latest", "coverage")


@dataclass(frozen=True)
class Query:
    """A validated query (see the module docstring for the JSON)."""

    id: str | None
    question: str
    type: str = "free-form"
    options: list[str] | None = None
    target: str | None = None
    frames: int | None = None
    selection: str | None = None
    kind: str | None = None


class BadQueryError(QueryError):
    """A query that cannot be served; ``query_id`` is the request id when one could be read."""

    def __init__(self, message: str, query_id: str | None = None):
        super().__init__(message)
        self.query_id = query_id


def parse_query(text: str, *, max_bytes: int = 4096, max_frames: int = 64) -> Query:
    """Validate a query's JSON text.

    Raises:
        BadQueryError: Not JSON / not an object, over ``max_bytes``, missing or empty ``question``,
            unknown ``type``, ``options`` missing for multiple choice or not strings, ``frames``
            outside 1..max_frames, unknown fields. ``query_id`` carries the id when it was readable.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise BadQueryError(f"query is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadQueryError(f"query must be a JSON object, got {type(data).__name__}")
    qid = data.get("id")
    qid = None if qid is None else str(qid)[:128]

    def bad(message: str):
        return BadQueryError(message, qid)

    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise bad(f"query is {size} bytes; the limit is {max_bytes}")
    unknown = set(data) - QUERY_FIELDS
    if unknown:
        raise bad(f"unknown query fields {sorted(unknown)}; allowed: {sorted(QUERY_FIELDS)}")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise bad("query needs a non-empty string 'question'")
    try:
        ptype = protocol.normalize_problem_type(data.get("type", "free-form"))
    except QueryError as exc:
        raise bad(str(exc)) from None
    options = data.get("options")
    if options is not None and (not isinstance(options, list) or not all(isinstance(o, str) for o in options)):
        raise bad("'options' must be a list of strings")
    if ptype == "multiple choice" and not options:
        raise bad("a multiple-choice query needs 'options'")
    target = data.get("target")
    if target is not None and (not isinstance(target, str) or not target.strip()):
        raise bad("'target' must be a non-empty string")
    frames = data.get("frames")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= max_frames):
        raise bad(f"'frames' must be an integer in 1..{max_frames}")
    selection = data.get("selection")
    if selection is not None and selection not in SELECTIONS:
        raise bad(f"'selection' must be one of {SELECTIONS}")
    kind = data.get("kind")
    if kind is not None and kind not in ("single", "video", "multi_view"):
        raise bad("'kind' must be single, video or multi_view")
    return Query(qid, question, ptype, options, target, frames, selection, kind)


@dataclass
class Answer:
    """What ``~/answer`` carries (JSON via :meth:`to_json`)."""

    id: str | None
    answer: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    target_pose: dict[str, Any] | None = None
    trace_dir: str | None = None
    engine: str | None = None
    target: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def failure(cls, query_id: str | None, error: str, finish_reason: str = "error") -> "Answer":
        return cls(id=query_id, finish_reason=finish_reason, error=error)


@dataclass(frozen=True)
class AgentConfig:
    """Attributes:
    frames: Frames per query unless the query says otherwise (VSI-Bench protocol: 16).
    selection: ``uniform`` over the window, ``latest`` k, or pose-diverse ``coverage``.
    window_s: Only keyframes this recent (seconds, newest-relative); None for the whole buffer.
    max_age_s: Refuse queries when the newest frame is older (stale camera); None disables.
    trace_root: Where each query's trace folder goes (None: traces are not saved).
    save_async: Write traces on a background thread after the answer is returned (PNG encoding of
        16+ images takes ~0.3 s); :meth:`SpatialAgent.close` waits for pending writes.
    grounding: Target grounding settings.
    """

    frames: int = 16
    selection: str = "uniform"
    window_s: float | None = None
    max_age_s: float | None = 5.0
    trace_root: str | None = "runs/agent"
    save_async: bool = True
    grounding: GroundingConfig = field(default_factory=GroundingConfig)


@dataclass
class Result:
    """Everything one query produced (the node publishes from it)."""

    answer: Answer
    trace: Trace | None = None
    grounding: GroundingResult | None = None


class SpatialAgent:
    """Answers queries from a frame buffer with a :class:`~vilasr_ros.reasoner.Reasoner`.

    Thread-safety: :meth:`answer` is meant to run on one worker at a time; the buffer may be fed
    concurrently.
    """

    def __init__(self, reasoner: Reasoner, buffer: FrameBuffer, config: AgentConfig | None = None):
        self.reasoner = reasoner
        self.buffer = buffer
        self.config = config or AgentConfig()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="trace-writer")
        # Warm up: the first smart_resize imports transformers (~5 s, far longer under a busy GIL).
        protocol.resized_size(640, 480, reasoner.config.max_pixels)

    def close(self) -> None:
        """Wait for pending trace writes."""
        self._writer.shutdown(wait=True)

    def answer(self, query: Query, *, cancel: threading.Event | None = None,
               on_turn: Callable[[Trace, Turn], None] | None = None) -> Result:
        """Select frames, run the loop, ground the target, save the trace.

        Never raises for bad input, an empty or stale buffer, or engine failures: those come back
        as an :class:`Answer` with ``error`` set (the node keeps serving).
        """
        t0 = time.perf_counter()
        cfg = self.config
        try:
            frames = self.buffer.select(query.frames or cfg.frames, query.selection or cfg.selection,
                                        window_s=cfg.window_s, max_age_s=cfg.max_age_s)
        except (VilasrError, ValueError) as exc:
            return Result(Answer.failure(query.id, f"cannot select frames: {exc}"))
        kind = query.kind or ("single" if len(frames) == 1 else "video")
        try:
            trace = self.reasoner.run([f.rgb for f in frames], query.question, query.type, query.options,
                                      kind=kind, cancel=cancel, on_turn=on_turn)
        except (VilasrError, ValueError) as exc:
            return Result(Answer.failure(query.id, str(exc)))
        answer = Answer(
            id=query.id,
            answer=trace.answer,
            finish_reason=trace.finish_reason,
            error=trace.error,
            engine=str(trace.engine.get("engine")),
            frames=[{"index": f.index, "stamp_s": f.stamp_s} for f in frames],
        )
        grounding = None
        if query.target:
            grounding = ground_trace(trace, frames, query.target, cfg.grounding)
            trace.target = grounding.to_dict()
            answer.target = trace.target
            if grounding.ok:
                answer.target_pose = {
                    "position": grounding.approach_position,
                    "orientation": grounding.approach_orientation,
                    "frame_id": grounding.frame_id,
                }
            elif answer.error is None:
                answer.error = f"no target: {grounding.reason}"
        if cfg.trace_root:
            name = time.strftime("%Y%m%d_%H%M%S") + f"_{int(time.time() * 1000) % 1000:03d}_{_safe(query.id)}"
            directory = (Path(cfg.trace_root) / name).resolve()
            answer.trace_dir = str(directory)
            if cfg.save_async:
                self._writer.submit(_save, trace, directory)
            else:
                _save(trace, directory)
        answer.elapsed_s = round(time.perf_counter() - t0, 4)
        return Result(answer, trace, grounding)


def _save(trace: Trace, directory: Path) -> None:
    try:
        trace.save(directory)
    except OSError as exc:
        logger.error("cannot save trace to %s: %s", directory, exc)


def _safe(query_id: str | None) -> str:
    text = "".join(c if c.isalnum() or c in "-_." else "_" for c in (query_id or "noid"))
    return text[:48] or "noid"
