"""Grounding a trace: the model's box for a target → source frame → 3D position → approach pose.

Box choice (documented, never silent): among every box the model wrote in a turn whose tool call was
accepted (turn order, then order in the turn; boxes of a rejected turn never count), take the
**last** whose label matches the target — exact match (case-insensitive) first,
else the last label that contains the target or is contained in it, else the last label sharing a
word with it. ``match`` in the result says which rule applied; no match gives a "no target" reason.
Provenance: the box's ``index`` names an image; a drawn image leads back through ``source_frame`` to
the input frame, whose depth, intrinsics and ``T_world_camera`` place the object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vilasr_ros.frames import Frame
from vilasr_ros.geometry import (
    GroundingError,
    approach_pose,
    deproject,
    model_to_sensor_box,
    model_to_sensor_point,
    surface_in_box,
    transform_points,
)
from vilasr_ros.trace import Trace


@dataclass(frozen=True)
class GroundingConfig:
    """Attributes:
    standoff_m: Distance of the approach pose from the object, metres.
    floor_z_m: Height of the floor plane in the world frame (REP-103 z up).
    min_depth_m, max_depth_m: Valid depth range.
    line_samples: Waypoints per Path Tracer line.
    remove_floor: Drop box pixels within 3 cm of the floor plane and on a wall behind the object
        before placing it (``geometry.surface_in_box``). Needs a z-up world frame with the floor at
        ``floor_z_m``, as REP-103 ``map``/``odom`` are — every robot's, and the sim's — so it is on
        by default; turn it off for y-up data such as the Open3D/ICL-NUIM sample folder.
    """

    standoff_m: float = 0.8
    floor_z_m: float = 0.0
    min_depth_m: float = 0.1
    max_depth_m: float = 10.0
    line_samples: int = 10
    remove_floor: bool = True

    def __post_init__(self):
        if self.standoff_m < 0 or self.min_depth_m < 0 or self.max_depth_m <= self.min_depth_m:
            raise ValueError("standoff_m >= 0 and 0 <= min_depth_m < max_depth_m are required")
        if self.line_samples < 2:
            raise ValueError("line_samples must be >= 2")


@dataclass
class GroundingResult:
    """A grounded target, or why there is none.

    Attributes:
        ok: A target was found.
        reason: Why not (None when ok).
        target: The label asked for.
        label: The label of the chosen box; ``match`` says how it was matched.
        turn: 0-based turn that wrote the box.
        image_index: 1-based model image the box was drawn on.
        frame_index: Index of the source frame in the source's order; ``stamp_s`` its stamp.
        box_px: ``[x1, y1, x2, y2]`` in sensor pixels.
        position_camera: Object position in the optical frame (m); ``position_world`` in ``frame_id``.
        uncertainty_m: Robust σ of the depth cluster (m). ``confidence`` in [0, 1].
        approach_position: Approach pose position (m) and ``approach_orientation`` (x, y, z, w).
        frame_id: World frame of the world-frame values.
        waypoints: World-frame points along Path Tracer lines drawn on the same image.
    """

    ok: bool
    reason: str | None = None
    target: str = ""
    label: str | None = None
    match: str | None = None
    turn: int | None = None
    image_index: int | None = None
    frame_index: int | None = None
    stamp_s: float | None = None
    box_px: list[float] | None = None
    position_camera: list[float] | None = None
    position_world: list[float] | None = None
    uncertainty_m: float | None = None
    confidence: float | None = None
    approach_position: list[float] | None = None
    approach_orientation: list[float] | None = None
    frame_id: str | None = None
    waypoints: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_match(label: str, target: str) -> str | None:
    """How a drawn label matches a target: ``exact`` (case-insensitive), ``substring`` (either way),
    ``word`` (a shared word), or None."""
    a, b = label.strip().lower(), target.strip().lower()
    if a == b:
        return "exact"
    if b in a or a in b:
        return "substring"
    if set(a.split()) & set(b.split()):
        return "word"
    return None


def choose_box(trace: Trace, target: str) -> tuple[dict, str, int] | None:
    """The box for ``target`` by the module's rule: ``(box, rule, turn index)``; None when no label
    of an accepted turn matches."""
    boxes = [(b, t) for t, turn in enumerate(trace.turns) if not turn.error
             for b in turn.boxes if isinstance(b, dict) and isinstance(b.get("label"), str)]
    for rule in ("exact", "substring", "word"):
        hits = [(b, t) for b, t in boxes if label_match(b["label"], target) == rule]
        if hits:
            return hits[-1][0], rule, hits[-1][1]
    return None


def ground_trace(trace: Trace, frames: list[Frame], target: str, config: GroundingConfig | None = None) -> GroundingResult:
    """Ground the model's box for ``target`` into world-frame position and approach pose.

    Args:
        trace: The loop's trace (its input images were ``frames``, in that order).
        frames: The frames given to the reasoner.
        target: Label to look for (``"chair"``).
        config: Grounding settings.

    Returns:
        A :class:`GroundingResult`; ``ok=False`` with ``reason`` when no box matches, the index is
        not an image, the frame has no depth/pose, or the box has no valid depth. Never raises on
        model output.
    """
    config = config or GroundingConfig()
    result = GroundingResult(ok=False, target=target)
    chosen = choose_box(trace, target)
    if chosen is None:
        labels = sorted({b.get("label") for t in trace.turns if not t.error for b in t.boxes
                         if isinstance(b, dict) and isinstance(b.get("label"), str)})
        result.reason = f"no box labelled like {target!r} (labels drawn: {labels or 'none'})"
        return result
    box, result.match, result.turn = chosen
    result.label = box["label"]
    index = box.get("index")
    if not isinstance(index, int) or not 1 <= index <= len(trace.images):
        result.reason = f"box index {index!r} is not an image of the trace"
        return result
    image = trace.images[index - 1]
    result.image_index = index
    if not 0 <= image.source_frame < len(frames):
        result.reason = f"image {index} comes from frame {image.source_frame}, which was not given"
        return result
    frame = frames[image.source_frame]
    result.frame_index, result.stamp_s = frame.index, frame.stamp_s
    try:
        box_px = model_to_sensor_box(box["bbox_2d"], image.size, frame.size)
        result.box_px = box_px.round(2).tolist()
        surface = surface_in_box(frame, box_px, min_depth_m=config.min_depth_m, max_depth_m=config.max_depth_m,
                                 floor_z_m=config.floor_z_m if config.remove_floor else None)
    except GroundingError as exc:
        result.reason = str(exc)
        return result
    result.position_camera = surface.position_camera.round(4).tolist()
    result.uncertainty_m = round(surface.uncertainty_m, 4)
    result.confidence = round(surface.valid_fraction * surface.cluster_fraction, 3)
    if frame.T_world_camera is None:
        result.reason = "the source frame has no pose: position known in the camera frame only"
        result.frame_id = frame.frame_id
        return result
    world = transform_points(frame.T_world_camera, surface.position_camera)[0]
    position, quat = approach_pose(world, frame.T_world_camera[:3, 3], config.standoff_m, config.floor_z_m)
    result.position_world = world.round(4).tolist()
    result.approach_position = position.round(4).tolist()
    result.approach_orientation = [round(q, 6) for q in quat]
    result.frame_id = frame.world_frame_id
    result.waypoints = line_waypoints(trace, image.index, frame, image.size, config)
    result.ok = True
    return result


def line_waypoints(trace: Trace, image_index: int, frame: Frame, model_size, config: GroundingConfig) -> list[list[float]]:
    """World points (on the floor plane) along the Path Tracer lines of one image; pixels with no
    valid depth are skipped."""
    image = trace.images[image_index - 1]
    points: list[list[float]] = []
    if frame.depth_m is None or frame.T_world_camera is None:
        return points
    h, w = frame.depth_m.shape
    for line in image.lines:
        try:
            a = model_to_sensor_point(line["start_point_2d"], model_size, frame.size)
            b = model_to_sensor_point(line["end_point_2d"], model_size, frame.size)
        except (TypeError, ValueError, KeyError):
            continue
        for s in np.linspace(0.0, 1.0, config.line_samples):
            u, v = a + s * (b - a)
            ui, vi = int(round(u)), int(round(v))
            if not (0 <= ui < w and 0 <= vi < h):
                continue
            z = float(frame.depth_m[vi, ui])
            if not np.isfinite(z) or not config.min_depth_m < z < config.max_depth_m:
                continue
            p = transform_points(frame.T_world_camera, deproject(np.array([[u, v]]), np.array([z]), frame.intrinsics))[0]
            points.append([round(float(p[0]), 4), round(float(p[1]), 4), config.floor_z_m])
    return points
