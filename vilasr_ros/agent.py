"""The spatial agent (no rclpy): a query in, an answer and a target pose out.

The ROS node (:mod:`vilasr_ros.ros.agent_node`) is a thin adapter around :class:`SpatialAgent`: it
fills the :class:`~vilasr_ros.buffer.FrameBuffer` from topics, hands each query's JSON to
:func:`parse_query`, calls :meth:`SpatialAgent.answer`, and publishes :meth:`Answer.to_json`.

Query JSON (``~/query``): one schema for every front end, :class:`vilasr_ros.query.Query`::

    {"id": "q1", "question": "Go to the chair", "problem_type": "free-form",
     "options": ["A. ...", ...], "target": "chair", "frames": 16}

Answer JSON (``~/answer``)::

    {"id": "q1", "answer": "...", "finish_reason": "stop", "error": null,
     "target_pose": {"position": [x, y, z], "orientation": [x, y, z, w], "frame_id": "map"} | null,
     "goal_sent": true, "goal_reason": null,
     "trace_dir": "...", "engine": "...", "target": {...grounding result...} | null,
     "sensors": {"dropped": 0, "last_drop_reason": null, ...},
     "localization": "map (map poses corrected odometry: 12 corrections)" | "odom: no map pose received yet" | null}

Safety rule for goals (:func:`goal_decision`): ``target_pose`` is filled — and the node publishes
``~/target_pose`` and ``/goal_pose`` — only when the run finished ``stop`` with a non-empty answer,
the map pose is trusted (finite, in range, covariance within ``max_map_covariance``), the target's
box comes from a turn whose tool call was accepted and marks an object (not degenerate, not clipped
by more than 10 %, not nearly the whole image: :func:`vilasr_ros.geometry.check_box_meaningful`),
and grounding is ``ok`` with confidence at least ``min_goal_confidence``. Otherwise ``goal_sent`` is
false and ``goal_reason`` says why.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from vilasr_ros import protocol
from vilasr_ros.buffer import FrameBuffer
from vilasr_ros.errors import VilasrError
from vilasr_ros.grounding import GroundingConfig, GroundingResult, ground_trace
from vilasr_ros.reasoner import Reasoner
from vilasr_ros.query import SELECTIONS, BadQueryError, Query, Selection, parse_query
from vilasr_ros.sanitize import clean_json, clean_text, safe_name
from vilasr_ros.trace import Trace, Turn
from vilasr_ros.trace_store import TraceStore

logger = logging.getLogger(__name__)
__all__ = ["AgentConfig", "Answer", "BadQueryError", "Query", "Result", "SpatialAgent", "goal_decision", "parse_query"]

def goal_decision(trace: Trace | None, grounding: GroundingResult | None, min_confidence: float,
                  localization_fault: str | None = None) -> tuple[bool, str | None]:
    """May this answer move the robot? (the safety rule in the module docstring)

    Args:
        trace: The run (None: it failed before the model ran).
        grounding: The target's grounding (None: no target was asked for).
        min_confidence: ``min_goal_confidence``.
        localization_fault: Why the map pose is not trusted now (:attr:`MapAlignment.untrusted`), or None.

    Returns:
        ``(True, None)``, or ``(False, why)``.
    """
    if grounding is None:
        return False, "no target was asked for"
    if trace is None:
        return False, "the query failed before the model ran"
    if trace.finish_reason != protocol.FINISH_STOP or trace.answer is None:
        return False, f"the run did not finish with an answer (finish_reason {str(trace.finish_reason)!r})"
    if not trace.answer.strip():
        return False, "the answer is empty: it says nothing to act on"
    if localization_fault:
        return False, f"localisation is not trusted: {localization_fault}"
    if not grounding.ok:
        return False, f"the target could not be grounded: {grounding.reason}"
    if grounding.turn is not None and 0 <= grounding.turn < len(trace.turns) and trace.turns[grounding.turn].error:
        return False, "the target's box comes from a rejected tool call"
    if grounding.confidence is None or grounding.confidence < min_confidence:
        why = f": {grounding.reason}" if grounding.reason else ""
        return False, f"grounding confidence {grounding.confidence} is below min_goal_confidence {min_confidence:g}{why}"
    return True, None


@dataclass
class Answer:
    """What ``~/answer`` carries (JSON via :meth:`to_json`)."""

    id: str | None
    answer: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    target_pose: dict[str, Any] | None = None
    goal_sent: bool = False
    goal_reason: str | None = None
    trace_dir: str | None = None
    engine: str | None = None
    target: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    sensors: dict[str, Any] | None = None
    localization: str | None = None

    def to_json(self) -> str:
        """JSON text that always encodes (lone surrogates replaced) — safe to publish and save."""
        return json.dumps(clean_json(asdict(self)), ensure_ascii=False, default=str)

    @classmethod
    def failure(cls, query_id: str | None, error: str,
                finish_reason: protocol.FinishReason = protocol.FinishReason.ERROR) -> "Answer":
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
    trace_max_total_mb: Traces kept at most (MiB, all together); the oldest go first.
    trace_max_age_h: Traces older than this (hours) are removed; 0 keeps them until the size cap.
    min_goal_confidence: Grounding confidence needed before a target becomes a goal.
    grounding: Target grounding settings.
    """

    frames: int = 16
    selection: Selection = Selection.UNIFORM
    window_s: float | None = None
    max_age_s: float | None = 5.0
    trace_root: str | None = "runs/agent"
    save_async: bool = True
    trace_max_total_mb: float = 2048.0
    trace_max_age_h: float = 168.0
    min_goal_confidence: float = 0.3
    grounding: GroundingConfig = field(default_factory=GroundingConfig)

    def __post_init__(self):
        if self.frames < 1 or self.selection not in SELECTIONS:
            raise ValueError(f"frames must be >= 1 and selection one of {SELECTIONS}")
        object.__setattr__(self, "selection", Selection(self.selection))
        if self.trace_max_total_mb <= 0 or self.trace_max_age_h < 0:
            raise ValueError("trace_max_total_mb must be > 0 and trace_max_age_h >= 0")
        if not 0.0 <= self.min_goal_confidence <= 1.0:
            raise ValueError(f"min_goal_confidence must be in [0, 1], got {self.min_goal_confidence}")


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

    def __init__(self, reasoner: Reasoner, buffer: FrameBuffer, config: AgentConfig | None = None,
                 localization=None, memory=None):
        self.reasoner = reasoner
        self.buffer = buffer
        self.config = config or AgentConfig()
        #: The keyframe memory on disk (:class:`~vilasr_ros.retrieval.AgentMemory`); None: the buffer only.
        self.memory = memory
        #: Re-expresses selected frames in ``map`` (:class:`~vilasr_ros.pairing.MapAlignment`); None
        #: keeps the odometry frame.
        self.localization = localization
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="trace-writer")
        self._stores: dict[tuple, TraceStore] = {}
        # Warm up: the first smart_resize imports transformers (~5 s, far longer under a busy GIL).
        protocol.resized_size(640, 480, reasoner.config.max_pixels)

    def close(self) -> None:
        """Wait for pending trace writes and keyframe memory writes."""
        self._writer.shutdown(wait=True)
        if self.memory is not None:
            self.memory.close()

    def remember(self, frame) -> None:
        """Persist a keyframe the buffer accepted (posed in ``map`` when the localization knows it);
        never blocks (a full writer queue drops it, counted)."""
        if self.memory is None or not self.memory.wants(frame):  # the rule first: motion is the same in odom
            return
        if self.localization is not None and frame.T_world_camera is not None:
            frame = self.localization.express([frame])[0][0]
        self.memory.writer.offer(frame)

    def store(self) -> TraceStore | None:
        """The trace store for the current settings (None when traces are not saved)."""
        cfg = self.config
        if not cfg.trace_root:
            return None
        key = (cfg.trace_root, cfg.trace_max_total_mb, cfg.trace_max_age_h)
        if key not in self._stores:
            self._stores = {key: TraceStore(cfg.trace_root, max_total_bytes=int(cfg.trace_max_total_mb * 2**20),
                                            max_age_s=cfg.trace_max_age_h * 3600.0 or None)}
        return self._stores[key]

    def answer(self, query: Query, *, cancel: threading.Event | None = None,
               on_turn: Callable[[Trace, Turn], None] | None = None) -> Result:
        """Select frames, run the loop, ground the target, decide on a goal, save the trace.

        Never raises: bad input, an empty or stale buffer, engine failures and unexpected errors
        all come back as an :class:`Answer` with ``error`` set (the node keeps serving).
        """
        t0 = time.perf_counter()
        try:
            result = self._answer(query, cancel, on_turn)
        except Exception as exc:  # noqa: BLE001 - the agent's boundary: an answer, never an exception
            logger.exception("query %r failed", query.id)
            result = Result(Answer.failure(query.id, f"internal error: {type(exc).__name__}: {clean_text(exc)}"))
        result.answer.elapsed_s = round(time.perf_counter() - t0, 4)
        result.answer.sensors = self.buffer.health.summary()
        if result.answer.goal_reason is None and not result.answer.goal_sent and query.target:
            result.answer.goal_reason = result.answer.error or "no goal"
        return result

    def _select(self, query: Query):
        """The query's frames and, when they come from the keyframe memory, what the answer says of it
        (:attr:`Query.wants_memory`: memory for a time or place filter, or when the buffer has none)."""
        cfg = self.config
        k = query.frames or cfg.frames
        use = query.wants_memory
        if use and self.memory is None:
            raise ValueError("the query asks the keyframe memory (since/until/region/near/memory) but this agent "
                             "has none (set memory_dir)")
        buffered = self.buffer.snapshot() if use is None and self.memory is not None else []
        if buffered:
            seen = self.memory.last_seen(query.target) or self.memory.last_seen(query.text)
            if seen is not None and seen["stamp"] < buffered[0].stamp_s:
                use = True  # the target was last seen before the buffer's window: the buffer cannot show it
        if not use:
            try:
                return self.buffer.select(k, query.selection or cfg.selection, window_s=cfg.window_s,
                                          max_age_s=cfg.max_age_s), None
            except (VilasrError, ValueError):
                if use is False or self.memory is None:
                    raise
        frames, info = self.memory.select(query, k, self.buffer.now())
        return frames, info

    def _answer(self, query: Query, cancel, on_turn) -> Result:
        cfg = self.config
        try:
            frames, remembered = self._select(query)
        except (VilasrError, ValueError) as exc:
            return Result(Answer.failure(query.id, f"cannot select frames: {exc}"))
        localization = None
        if self.localization is not None and remembered is None:  # remembered frames were posed at ingest
            frames, localization = self.localization.express(frames)
        kind = query.kind or protocol.default_kind(len(frames))
        try:
            trace = self.reasoner.run([f.rgb for f in frames], query.question, query.problem_type, query.options,
                                      kind=kind, cancel=cancel, on_turn=on_turn)
        except (VilasrError, ValueError) as exc:
            return Result(Answer.failure(query.id, str(exc)))
        trace.frames = [f.record() for f in frames]
        answer = Answer(
            id=query.id,
            answer=trace.answer,
            finish_reason=trace.finish_reason,
            error=trace.error,
            engine=str(trace.engine.get("engine")),
            frames=[{"index": f.index, "stamp_s": f.stamp_s} for f in frames],
            localization=localization,
            memory=remembered,
        )
        grounding = None
        if query.target:
            try:
                grounding = ground_trace(trace, frames, query.target, cfg.grounding)
            except VilasrError as exc:  # open3d missing (geometry extra): the answer stands, no goal
                grounding = GroundingResult(ok=False, target=query.target, reason=str(exc))
            trace.target = grounding.to_dict()
            answer.target = trace.target
            if not grounding.ok and answer.error is None:
                answer.error = f"no target: {grounding.reason}"
            fault = getattr(self.localization, "untrusted", None)
            answer.goal_sent, answer.goal_reason = goal_decision(trace, grounding, cfg.min_goal_confidence, fault)
            if self.memory is not None and grounding.ok and not answer.error:  # the object memory
                self.memory.remember_object(grounding, frames[-1].stamp_s)
            if answer.goal_sent:
                answer.target_pose = {
                    "position": grounding.approach_position,
                    "orientation": grounding.approach_orientation,
                    "frame_id": grounding.frame_id,
                }
        store = self.store()
        if store is not None:
            name = time.strftime("%Y%m%d_%H%M%S") + f"_{int(time.time() * 1000) % 1000:03d}_{safe_name(query.id or 'noid', 48)}"
            answer.trace_dir = str(store.path(name))
            if cfg.save_async:
                self._writer.submit(store.save, trace, name)
            else:
                store.save(trace, name)
        return Result(answer, trace, grounding)
