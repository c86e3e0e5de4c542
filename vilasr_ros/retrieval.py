"""Choosing a query's frames from the keyframe memory: by time, place, text and space coverage (issue 26).

:func:`retrieve` filters the stored keyframes (:class:`vilasr_ros.memory.KeyframeMemory`) by time
(``since``/``until``), a named map polygon (``region``, :func:`load_regions`) or a circle (``near``),
puts first the keyframes an object was seen in (the object memory) or that look like the query's
``text`` (an embedder's similarity), and fills the rest with the keyframes that together see the
most of the space (:func:`space_coverage` over each keyframe's depth voxels). :class:`AgentMemory` is
what the agent holds: the store, its writer and embedder, the regions, and :meth:`AgentMemory.select`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from vilasr_ros.buffer import keyframe_due, select_frames
from vilasr_ros.errors import MemoryStoreError
from vilasr_ros.frames import Frame
from vilasr_ros.memory import EmbeddingWorker, KeyframeMemory, KeyframeRecord, MemoryConfig, MemoryWriter

logger = logging.getLogger(__name__)


def space_coverage(records: list, k: int, voxels: dict[int, np.ndarray]) -> list:
    """Up to ``k`` of ``records`` that together see the most map voxels (greedy maximum coverage over
    :func:`view_voxels`; scipy sparse products), then viewpoint coverage for the rest; time order."""
    with_space = [r for r in records if voxels.get(r.id) is not None and len(voxels[r.id])]
    chosen: list = []
    if with_space:
        keys = [voxels[r.id] for r in with_space]
        uniq, cols = np.unique(np.concatenate(keys), return_inverse=True)
        indptr = np.concatenate([[0], np.cumsum([len(x) for x in keys])])
        M = csr_matrix((np.ones(len(cols), np.float32), cols, indptr), shape=(len(keys), len(uniq)))
        uncovered = np.ones(len(uniq), np.float32)
        for _ in range(min(k, len(keys))):
            gains = M @ uncovered
            i = int(np.argmax(gains))
            if gains[i] <= 0:
                break
            chosen.append(with_space[i])
            uncovered[M.indices[M.indptr[i]:M.indptr[i + 1]]] = 0.0
    if len(chosen) < k:
        taken = {r.id for r in chosen}
        rest = [r for r in records if r.id not in taken]
        if rest:
            chosen += select_frames(rest, k - len(chosen), "coverage")
    return sorted(chosen, key=lambda r: (r.stamp_s, r.id))


# ----------------------------------------------------------------------------- retrieval


def load_regions(path: str | Path) -> dict[str, np.ndarray]:
    """Named map-frame polygons from a YAML file: ``regions: {kitchen: [[x, y], ...], ...}`` (metres,
    REP-105 ``map``; at least 3 vertices each).

    Raises:
        MemoryStoreError: Unreadable file, bad YAML, or a region that is not a polygon (named).
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MemoryStoreError(f"regions file {path}: {exc}".splitlines()[0]) from None
    regions = (data or {}).get("regions") if isinstance(data, dict) else None
    if not isinstance(regions, dict) or not regions:
        raise MemoryStoreError(f"regions file {path}: expected a mapping 'regions: {{name: [[x, y], ...]}}'")
    out = {}
    for name, pts in regions.items():
        try:
            poly = np.asarray(pts, dtype=float)
        except (TypeError, ValueError):
            poly = np.zeros((0,))
        if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3 or not np.isfinite(poly).all():
            raise MemoryStoreError(f"regions file {path}: region {name!r} must be a list of at least 3 [x, y] points")
        out[str(name)] = poly
    return out


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Which of ``points`` (N, 2) lie inside or on ``polygon`` (M, 2) — OpenCV ``pointPolygonTest``."""
    import cv2

    contour = polygon.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points], bool)


MAX_CANDIDATES = 2000
"""Matching keyframes a retrieval reads at most (more are thinned evenly in SQL; an object's evidence stays)."""
MAX_SPACE_CANDIDATES = 1000
"""Candidates whose voxel sets a retrieval reads at most (evenly thinned in time beyond)."""


@dataclass(frozen=True)
class Retrieval:
    """A memory selection: the frames' records in time order and why each was chosen."""

    records: list[KeyframeRecord]
    reasons: list[str]
    candidates: int


def matching(memory: KeyframeMemory, since: float | None = None, until: float | None = None,
             region: np.ndarray | None = None, region_name: str | None = None,
             near: tuple[float, float, float] | None = None, at_most: int | None = None,
             keep: list[int] | tuple = ()) -> tuple[list[KeyframeRecord], list[str], int]:
    """The stored keyframes inside the filters (stamps inclusive, seconds; ``region`` a map polygon;
    ``near`` ``(x, y, radius_m)``), in time order, the filters in words, and how many keyframes match
    (estimated from the thinned ones when thinned). An axis-aligned box of the
    place filters goes to SQL (indexed); the polygon and the circle are exact afterwards. ``at_most``
    and ``keep``: as :meth:`KeyframeMemory.records` (thinning before the exact tests)."""
    bbox = None
    if region is not None:
        bbox = (*region.min(axis=0), *region.max(axis=0))
    if near is not None:
        x, y, r = near
        nb = (x - r, y - r, x + r, y + r)
        bbox = nb if bbox is None else (max(bbox[0], nb[0]), max(bbox[1], nb[1]), min(bbox[2], nb[2]), min(bbox[3], nb[3]))
    recs, total = memory.match(since, until, bbox, at_most, keep)
    read = len(recs)
    why = []
    if since is not None or until is not None:
        why.append(f"time {since if since is not None else '-inf'}..{until if until is not None else 'now'}")
    if region is not None:
        why.append(f"in region {region_name or '(polygon)'}")
        if recs:
            keep = inside_polygon(np.array([r.position[:2] for r in recs]), region)
            recs = [r for r, ok in zip(recs, keep) if ok]
    if near is not None:
        x, y, r = near
        why.append(f"within {r:g} m of ({x:g}, {y:g})")
        recs = [rec for rec in recs if np.hypot(rec.position[0] - x, rec.position[1] - y) <= r]
    return recs, why, round(total * len(recs) / read) if read else 0


def _first_half(recs: list[KeyframeRecord], k: int, first: list[int] | None, score) -> tuple[list, set[int]]:
    """The keyframes put first: an object's evidence (``first``), then the best by ``score``; at most k // 2."""
    half = k // 2 or 1
    wanted = set(first or [])
    chosen = [r for r in recs if r.id in wanted][-half:] if wanted else []
    scores = score([r.id for r in recs]) if score is not None else None
    if scores:
        ranked = sorted((r for r in recs if r.id in scores and r.id not in wanted), key=lambda r: -scores[r.id])
        chosen += ranked[:max(0, half - len(chosen))]
    return chosen, {r.id for r in chosen}


def retrieve(memory: KeyframeMemory, k: int = 16, since: float | None = None, until: float | None = None,
             region: np.ndarray | None = None, region_name: str | None = None,
             near: tuple[float, float, float] | None = None, first: list[int] | None = None,
             score=None, text: str | None = None) -> Retrieval:
    """Choose up to ``k`` keyframes inside the filters (:func:`matching`): the ids in ``first`` (an
    object's evidence) and, with ``score`` (keyframe ids → ``{id: similarity to text}``), the
    best-scoring ones first — at most ``k // 2`` — the rest by :func:`space_coverage`; in time order.

    Raises:
        MemoryStoreError: No stored keyframe matches the filters (the message names them).
    """
    recs, why, total = matching(memory, since, until, region, region_name, near, MAX_CANDIDATES, first or ())
    if not recs:
        raise MemoryStoreError("no remembered keyframe " + (" and ".join(why) if why else "at all"))
    head, taken = _first_half(recs, k, first, score)
    rest = [r for r in recs if r.id not in taken]
    if len(rest) > MAX_SPACE_CANDIDATES:  # thinned evenly in time before the voxel sets are read
        rest = [rest[i] for i in np.linspace(0, len(rest) - 1, MAX_SPACE_CANDIDATES).round().astype(int)]
    fill = k - len(head)
    picked = space_coverage(rest, fill, memory.voxels([r.id for r in rest])) if rest and fill > 0 else []
    chosen = sorted(head + picked, key=lambda r: (r.stamp_s, r.id))
    base = ", ".join(why + ["space coverage (what their depth sees)" if total > k else "all that match"])
    seen = set(first or [])
    reasons = ["where the target was seen" if r.id in seen else f"looks like {text!r}" if r.id in taken else base
               for r in chosen]
    return Retrieval(records=chosen, reasons=reasons, candidates=total)


def parse_time(value: Any, now_s: float) -> float:
    """A ``since``/``until`` value as seconds: a number (a stamp), ISO-8601 (``2026-12-05T14:03:00Z``;
    no zone = UTC) or relative to ``now_s`` (``"-20min"``, ``"-2h"``, ``"-90s"``).

    Raises:
        MemoryStoreError: Anything else (the message quotes it).
    """
    import re
    from datetime import datetime, timezone

    if isinstance(value, bool):
        raise MemoryStoreError(f"a time must be a stamp, ISO-8601 or relative like '-20min', got {value!r}")
    if isinstance(value, (int, float)):
        if not np.isfinite(value):
            raise MemoryStoreError(f"a time must be finite, got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*-\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)\s*", value)
        if m:
            return now_s - float(m.group(1)) * {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}[m.group(2)]
        try:
            t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    raise MemoryStoreError(f"a time must be a stamp, ISO-8601 or relative like '-20min', got {value!r}")


class AgentMemory:
    """What an agent remembers: a :class:`KeyframeMemory` fed by a :class:`MemoryWriter`, the named
    regions, and the selection of a query's frames from them (the ROS node and ``vilasr ask`` share it).

    Args:
        memory_dir: The memory folder (a restarted agent continues the same memory).
        regions_file: YAML of named map polygons (:func:`load_regions`); None: no ``region`` queries.
        config: Retention and encoding.

    Raises:
        MemoryStoreError: The folder or the regions file cannot be used.
    """

    def __init__(self, memory_dir: str | Path, regions_file: str | Path | None = None,
                 config: MemoryConfig | None = None, readonly: bool = False, embedder_model: str | None = None):
        self.store = KeyframeMemory(memory_dir, config, readonly=readonly)
        self.regions = load_regions(regions_file) if regions_file else {}
        self.writer = None if readonly else MemoryWriter(self.store)
        self._last: Frame | None = None
        self.embedder = self.embedding = None
        #: Why there is no semantic search (None when there is): said in answers that ask for it.
        self.no_embedder = "no embedder_model set"
        if embedder_model:
            from vilasr_ros.embedder import ImageTextEmbedder
            from vilasr_ros.errors import EngineError, MissingDependencyError

            try:
                self.embedder = ImageTextEmbedder(embedder_model)
                self.no_embedder = None
            except (EngineError, MissingDependencyError, OSError, ValueError) as exc:
                self.no_embedder = f"embedder {embedder_model} not loaded ({exc})".splitlines()[0]
                logger.warning("keyframe memory: %s; retrieval by place, time and coverage only", self.no_embedder)
            if self.embedder is not None and not readonly:
                self.embedding = EmbeddingWorker(self.store, self.embedder)

    def wants(self, frame: Frame) -> bool:
        """Whether the memory's keyframe rule (:class:`MemoryConfig`) takes ``frame`` (it is then the
        last one the rule compares with); False for a read-only memory."""
        cfg = self.store.config
        if self.writer is None or not keyframe_due(frame.stamp_s, frame.T_world_camera, self._last,
                                                   cfg.min_translation_m, cfg.min_rotation_deg, cfg.max_interval_s):
            return False
        self._last = frame
        return True

    def remember(self, frame: Frame) -> bool:
        """Queue a keyframe the rule takes (:meth:`wants`); False when not taken or dropped."""
        return self.wants(frame) and self.writer.offer(frame)

    def counters(self) -> dict[str, int]:
        """``memory_written``, ``memory_dropped``, ``memory_failed`` (``/diagnostics``)."""
        w, e = self.writer, self.embedding
        return {"memory_written": w.written if w else 0, "memory_dropped": w.dropped if w else 0,
                "memory_failed": w.failed if w else 0, "memory_embedded": e.embedded if e else 0}

    def last_seen(self, label: str | None) -> dict[str, Any] | None:
        """The newest sighting of ``label`` in the object memory (:meth:`KeyframeMemory.objects`), or None."""
        if not label:
            return None
        seen = self.store.objects(label, limit=1)
        return seen[0] if seen else None

    def remember_object(self, grounding, stamp_s: float) -> None:
        """Store a grounded target (:class:`~vilasr_ros.grounding.GroundingResult` that is ``ok``):
        label, fused position and covariance in its frame, confidence, the stamps of its views."""
        if self.writer is None or not grounding.ok or grounding.position_world is None:
            return
        views = [v["stamp_s"] for v in grounding.views_used if v.get("stamp_s") is not None]
        self.store.add_object(grounding.target, max(views) if views else stamp_s, grounding.position_world,
                              grounding.covariance, grounding.confidence, grounding.frame_id, views)

    def _filters(self, query, now_s: float):
        """``(region polygon, since, until, near)`` of a query, resolved (times in seconds).

        Raises:
            MemoryStoreError: An unknown region, a malformed time, ``since`` after ``until``.
        """
        region = None
        if query.region is not None:
            if query.region not in self.regions:
                known = ", ".join(sorted(self.regions)) or "none: set regions_file"
                raise MemoryStoreError(f"unknown region {query.region!r} (regions: {known})")
            region = self.regions[query.region]
        since = None if query.since is None else parse_time(query.since, now_s)
        until = None if query.until is None else parse_time(query.until, now_s)
        if since is not None and until is not None and since > until:
            raise MemoryStoreError(f"'since' ({since:.3f}) is after 'until' ({until:.3f})")
        near = None if query.near is None else (query.near["x"], query.near["y"], query.near["radius_m"])
        return region, since, until, near

    def select(self, query, k: int, now_s: float) -> tuple[list[Frame], dict[str, Any]]:
        """The query's frames from memory (:func:`retrieve` with its ``since``/``until``/``region``/
        ``near``; the keyframes where its ``target`` — or ``text`` — was last seen first, from the object
        memory) and what the answer says about them: ``{"candidates", "reason", "first_stamp",
        "last_stamp", "last_seen"}`` (``last_seen``: the object memory's newest sighting, or None).

        Raises:
            MemoryStoreError: An unknown region, a malformed time, or no keyframe in the window.
        """
        region, since, until, near = self._filters(query, now_s)
        seen = self.last_seen(query.target) or self.last_seen(query.text)
        look_for = query.text or query.target
        score = None
        if look_for and self.embedder is not None:
            vector = self.embedder.text(look_for)
            score = lambda ids: self.store.similarity(self.embedder.name, vector, ids)  # noqa: E731
        found = retrieve(self.store, k, since, until, region, query.region, near,
                         first=seen["evidence"] if seen else None, score=score, text=look_for)
        frames = self.store.frames([r.id for r in found.records])
        reason = "; ".join(dict.fromkeys(found.reasons))
        if query.text is not None and self.embedder is None:
            reason += f"; 'text' not used: {self.no_embedder}"
        info = {"candidates": found.candidates, "reason": reason, "reasons": list(found.reasons),
                "first_stamp": frames[0].stamp_s if frames else None, "last_stamp": frames[-1].stamp_s if frames else None,
                "last_seen": None if seen is None else {k: seen[k] for k in ("label", "stamp", "position", "frame_id",
                                                                             "confidence")}}
        return frames, info

    def close(self) -> None:
        """Write what is queued, stop the embedder, then close the store."""
        if self.writer is not None:
            self.writer.close()
        if self.embedding is not None:
            self.embedding.close()
        self.store.close()
