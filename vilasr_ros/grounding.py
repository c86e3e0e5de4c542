"""Grounding a trace: every box the model drew of a target → one 3D estimate → approach pose.

Boxes (documented, never silent): every box written in a turn whose tool call was accepted (boxes of
a rejected turn never count) whose label matches the target by the best rule any label reaches —
exact (case-insensitive), else substring either way, else a shared word; ``match`` says which. A box
of the same label on the same input frame in a *later* turn replaces the earlier one (the model's
correction after seeing its drawing); two boxes of one label in one turn are two views.

Provenance: a box's ``index`` names an image; a drawn image leads back through ``source_frame`` to
the input frame, whose depth, intrinsics and ``T_world_camera`` turn the box into world points
(:func:`vilasr_ros.geometry.surface_in_box`: open3d voxels, floor/wall planes, DBSCAN).

Fusion (:func:`fuse_views`): two views agree when their point clouds touch (the 5th percentile of
nearest-point distances under ``agree_touch_m``) or their positions are within ``agree_centre_m``;
the largest group of agreeing views (connected components; a tie goes to the group holding the
latest box) is the object, the others are rejected and named with the reason. The fused position is
the per-axis median of the group's per-view positions (each the visible surface in its box; one view
gives its own); its covariance is the spread of the per-view positions over the number of views (one
view: the spread of its points). The group's points together (voxel-downsampled) are the object's
``points``: its near edge for the approach pose, and what the node publishes. ``views="last"`` in :class:`GroundingConfig` keeps the older rule (the last
matching box alone) for comparison.

The approach pose stands ``standoff_m`` in front of the object's near edge, facing it, on floor the
frames saw free (:func:`approach`); ``confidence`` is the probability that the estimate lies within
15 cm of the object, from a logistic model fitted on sim scenes (``resources/grounding_calibration.json``,
written by ``benchmarks/grounding_noise.py --calibrate``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from vilasr_ros.frames import Frame
from vilasr_ros.geometry import (
    MIN_BOX_SPAN,
    GroundingError,
    SurfaceEstimate,
    check_box_meaningful,
    deproject,
    model_to_sensor_box,
    model_to_sensor_point,
    open3d,
    surface_in_box,
    transform_points,
    yaw_quaternion,
)
from vilasr_ros.trace import Trace

VIEW_MODES = ("all", "last")


@dataclass(frozen=True)
class GroundingConfig:
    """Attributes:
    standoff_m: Distance of the approach pose from the object's near edge, metres.
    floor_z_m: Height of the floor plane in the world frame (REP-103 z up).
    min_depth_m, max_depth_m: Valid depth range.
    line_samples: Waypoints per Path Tracer line.
    remove_floor: Drop points within 3 cm of the floor plane and on a wall behind the object
        before placing it (``geometry.surface_in_box``). Needs a z-up world frame with the floor at
        ``floor_z_m``, as REP-103 ``map``/``odom`` are — every robot's, and the sim's — so it is on
        by default; turn it off for y-up data such as the Open3D/ICL-NUIM sample folder.
    views: ``all`` (fuse every box of the target) or ``last`` (the last box alone).
    voxel_m: Voxel size of each view's cloud (m); the fused cloud uses twice this.
    cluster_eps_m: Smallest DBSCAN neighbourhood (m).
    min_box_span: Share of a box's width and height the object's cluster must reach across to be
        preferred over a nearer one (``geometry.surface_in_box``); 0 turns the preference off.
    agree_touch_m, agree_centre_m: When two views see the same object (module docstring), metres.
    robot_radius_m: Floor around the approach position that must be seen free (m).
    """

    standoff_m: float = 0.8
    floor_z_m: float = 0.0
    min_depth_m: float = 0.1
    max_depth_m: float = 10.0
    line_samples: int = 10
    remove_floor: bool = True
    views: str = "all"
    voxel_m: float = 0.01
    cluster_eps_m: float = 0.10
    min_box_span: float = MIN_BOX_SPAN
    agree_touch_m: float = 0.03
    agree_centre_m: float = 0.4
    robot_radius_m: float = 0.25

    def __post_init__(self):
        if self.standoff_m < 0 or self.min_depth_m < 0 or self.max_depth_m <= self.min_depth_m:
            raise ValueError("standoff_m >= 0 and 0 <= min_depth_m < max_depth_m are required")
        if self.line_samples < 2:
            raise ValueError("line_samples must be >= 2")
        if self.views not in VIEW_MODES:
            raise ValueError(f"views must be one of {VIEW_MODES}, got {self.views!r}")
        if min(self.voxel_m, self.cluster_eps_m, self.agree_touch_m, self.agree_centre_m) <= 0 or self.robot_radius_m < 0:
            raise ValueError("voxel_m, cluster_eps_m, agree_touch_m, agree_centre_m must be > 0 and robot_radius_m >= 0")
        if not 0.0 <= self.min_box_span <= 1.0:
            raise ValueError(f"min_box_span must be in [0, 1], got {self.min_box_span}")


@dataclass
class BoxView:
    """One box of the target on one input frame.

    Attributes:
        frame: The input frame (depth, intrinsics, ``T_world_camera``).
        box_px: ``[x1, y1, x2, y2]`` in sensor pixels (ordered, clipped).
        label: The label drawn. ``match``: how it matched the target.
        turn: 0-based turn that wrote it; ``image_index``: 1-based model image it was drawn on;
        position: position of ``frame`` in the frames given to the loop (0-based).
    """

    frame: Frame
    box_px: np.ndarray
    label: str
    match: str = "exact"
    turn: int | None = None
    image_index: int | None = None
    position: int | None = None

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "match": self.match, "turn": self.turn, "image_index": self.image_index,
                "frame": self.position, "frame_index": self.frame.index, "stamp_s": self.frame.stamp_s,
                "box_px": np.round(self.box_px, 2).tolist()}


@dataclass
class GroundingResult:
    """A grounded target, or why there is none.

    Attributes:
        ok: A target was found.
        reason: Why not (None when ok).
        target: The label asked for.
        label, match, turn, image_index, frame_index, stamp_s, box_px: The latest box that was used
            (label drawn, how it matched, 0-based turn, 1-based model image, the frame's index in
            its source's order and stamp, sensor pixels).
        position_camera: The object position in that box's camera optical frame (m).
        position_world: The fused object position in ``frame_id`` (m).
        covariance: 3×3 covariance of ``position_world`` (m², ``frame_id`` axes; module docstring).
        uncertainty_m: √ of the covariance's largest eigenvalue (m).
        confidence: Probability the object is within 15 cm of ``position_world`` (calibrated, [0, 1]).
        confidence_features: What the confidence was computed from.
        views_used: Each box fused (``label, match, turn, image_index, frame`` (0-based position in
            the frames given), ``frame_index, stamp_s, box_px, position_world, points``).
        views_rejected: Each box left out, with ``reason`` (and ``position_world`` when it had one).
        approach_position: Approach pose position (m) and ``approach_orientation`` (x, y, z, w).
        approach_free: The floor around the approach position was seen free (True), seen occupied
            in every candidate (False: the direct pose is given), or not seen (None).
        frame_id: World frame of the world-frame values.
        waypoints: World-frame points along Path Tracer lines drawn on the images used.
        floor_removal: What floor removal did, or why it was skipped (a world without a known up axis).
        points: (N, 3) the fused object points in ``frame_id`` (m); not in :meth:`to_dict`.
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
    covariance: list[list[float]] | None = None
    uncertainty_m: float | None = None
    confidence: float | None = None
    confidence_features: dict[str, float] | None = None
    views_used: list[dict[str, Any]] = field(default_factory=list)
    views_rejected: list[dict[str, Any]] = field(default_factory=list)
    approach_position: list[float] | None = None
    approach_orientation: list[float] | None = None
    approach_free: bool | None = None
    frame_id: str | None = None
    waypoints: list[list[float]] = field(default_factory=list)
    floor_removal: str | None = None
    points: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        points, self.points = self.points, None
        try:
            data = asdict(self)
        finally:
            self.points = points
        data.pop("points")
        return data


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


def target_boxes(trace: Trace, target: str) -> tuple[list[tuple[dict, int]], str | None]:
    """Every box of accepted turns whose label matches ``target`` by the best rule reached, in
    order: ``([(box, turn index)], rule)``; ``([], None)`` when none matches."""
    boxes = [(b, t) for t, turn in enumerate(trace.turns) if not turn.error
             for b in turn.boxes if isinstance(b, dict) and isinstance(b.get("label"), str)]
    for rule in ("exact", "substring", "word"):
        hits = [(b, t) for b, t in boxes if label_match(b["label"], target) == rule]
        if hits:
            return hits, rule
    return [], None


def choose_box(trace: Trace, target: str) -> tuple[dict, str, int] | None:
    """The last box for ``target`` (the ``views="last"`` rule): ``(box, rule, turn)`` or None."""
    hits, rule = target_boxes(trace, target)
    return (hits[-1][0], rule, hits[-1][1]) if hits else None


def trace_views(trace: Trace, frames: list[Frame], target: str) -> tuple[list[BoxView], list[dict], str | None]:
    """The trace's boxes of ``target`` as :class:`BoxView` (corrections applied, module docstring).

    Returns:
        ``(views, unusable, rule)``: views in box order; boxes that name no usable image or frame,
        each ``{"label", "turn", "image_index", "reason"}``; the matching rule (None: no match).
    """
    hits, rule = target_boxes(trace, target)
    views: list[BoxView] = []
    unusable: list[dict] = []
    for box, turn in hits:
        index = box.get("index")
        info = {"label": box["label"], "turn": turn, "image_index": index}
        if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= len(trace.images):
            unusable.append({**info, "reason": f"box index {index!r} is not an image of the trace"})
            continue
        image = trace.images[index - 1]
        if not 0 <= image.source_frame < len(frames):
            unusable.append({**info, "reason": f"image {index} comes from frame {image.source_frame}, which was not given"})
            continue
        frame = frames[image.source_frame]
        try:
            box_px = model_to_sensor_box(box.get("bbox_2d"), image.size, frame.size)
            check_box_meaningful(box.get("bbox_2d"), image.size)
        except GroundingError as exc:
            unusable.append({**info, "reason": str(exc)})
            continue
        key = (image.source_frame, box["label"].strip().lower())
        for k, old in enumerate(views):
            if (old.position, old.label.strip().lower()) == key and old.turn < turn:
                unusable.append({**old.describe(), "reason": f"corrected by turn {turn}"})
                views[k] = None  # type: ignore[call-overload]
        views = [v for v in views if v is not None]
        views.append(BoxView(frame, box_px, box["label"], rule, turn, index, image.source_frame))
    return views, unusable, rule


def ground_trace(trace: Trace, frames: list[Frame], target: str, config: GroundingConfig | None = None) -> GroundingResult:
    """Ground the model's boxes of ``target`` into a world-frame position and approach pose.

    Args:
        trace: The loop's trace (its input images were ``frames``, in that order).
        frames: The frames given to the reasoner.
        target: Label to look for (``"chair"``).
        config: Grounding settings.

    Returns:
        A :class:`GroundingResult`; ``ok=False`` with ``reason`` when no box matches or no box could
        be placed (index not an image, frame without depth or pose, no valid depth). Never raises
        on model output.

    Raises:
        MissingDependencyError: open3d is not installed (``vilasr_ros[geometry]``).
    """
    config = config or GroundingConfig()
    views, unusable, rule = trace_views(trace, frames, target)
    if rule is None:
        labels = sorted({b.get("label") for t in trace.turns if not t.error for b in t.boxes
                         if isinstance(b, dict) and isinstance(b.get("label"), str)})
        return GroundingResult(ok=False, target=target,
                               reason=f"no box labelled like {target!r} (labels drawn: {labels or 'none'})")
    result = fuse_views(views, target, config, frames=frames)
    result.views_rejected = unusable + result.views_rejected
    if not views:
        result.reason = unusable[-1]["reason"]
        result.label, result.match, result.turn = unusable[-1]["label"], rule, unusable[-1]["turn"]
    if result.ok:
        seen: set[int] = set()
        for view in result.views_used:
            if view["image_index"] not in seen:
                seen.add(view["image_index"])
                result.waypoints += line_waypoints(trace, view["image_index"], frames[view["frame"]],
                                                   trace.images[view["image_index"] - 1].size, config)
    return result


def fuse_views(views: list[BoxView], target: str, config: GroundingConfig | None = None,
               frames: list[Frame] | None = None) -> GroundingResult:
    """One estimate from boxes of one target (the rule in the module docstring).

    Args:
        views: The boxes, oldest first (with ``config.views == "last"`` only the last is used).
        target: The label asked for.
        config: Grounding settings.
        frames: Frames whose depth shows free floor for the approach pose (default: the views').

    Returns:
        A :class:`GroundingResult` (``ok=False`` with ``reason`` when no view could be placed).
    """
    config = config or GroundingConfig()
    result = GroundingResult(ok=False, target=target)
    if not views:
        result.reason = f"no usable box of {target!r}"
        return result
    if config.views == "last":
        result.views_rejected = [{**v.describe(), "reason": "not the last box (views='last')"} for v in views[:-1]]
        views = views[-1:]
    placed: list[tuple[BoxView, SurfaceEstimate]] = []
    last_error = None
    floor_z_m = config.floor_z_m if config.remove_floor else None
    unknown_up = sorted({v.frame.source_id or "the source" for v in views if v.frame.world_up != "z"})
    if floor_z_m is not None and unknown_up:
        floor_z_m = None  # which way is up is not known: removing "the floor" would remove something else
        result.floor_removal = (f"skipped: the world of {', '.join(unknown_up)} has no known up axis "
                                "(an RGB-D folder states it in rgbd.json as \"world_up\": \"z\")")
    elif floor_z_m is not None:
        result.floor_removal = f"floor at z = {floor_z_m:g} m and walls behind the object removed"
    for view in views:
        try:
            est = surface_in_box(view.frame, view.box_px, min_depth_m=config.min_depth_m, max_depth_m=config.max_depth_m,
                                 voxel_m=config.voxel_m, cluster_eps_m=config.cluster_eps_m, floor_z_m=floor_z_m,
                                 min_box_span=config.min_box_span)
        except GroundingError as exc:
            last_error = str(exc)
            result.views_rejected.append({**view.describe(), "reason": last_error})
            continue
        placed.append((view, est))
    if not placed:
        result.reason = last_error
        _describe_latest(result, views[-1], None)
        return result
    posed = [(v, e) for v, e in placed if v.frame.T_world_camera is not None]
    if not posed:
        view, est = placed[-1]
        _describe_latest(result, view, est.position_camera)
        result.uncertainty_m = round(est.uncertainty_m, 4)
        result.frame_id = view.frame.frame_id
        result.reason = "the source frame has no pose: position known in the camera frame only"
        return result
    for view, _ in placed:
        if view.frame.T_world_camera is None:
            result.views_rejected.append({**view.describe(), "reason": "the frame has no pose"})
    used, rejected = consensus([e.points for _, e in posed], [_world_position(v, e) for v, e in posed], config)
    for k in rejected:
        v, e = posed[k]
        result.views_rejected.append({**v.describe(), "position_world": np.round(_world_position(v, e), 4).tolist(),
                                      "reason": "disagrees with the other views of the target"})
    group = [posed[k] for k in used]
    o3d = open3d()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.concatenate([e.points for _, e in group])))
    points = np.asarray(cloud.voxel_down_sample(2 * config.voxel_m).points)
    per_view = np.array([_world_position(v, e) for v, e in group])
    position = np.median(per_view, axis=0)
    if len(group) >= 2:
        covariance = np.cov(per_view.T) / len(group)
    else:
        covariance = np.cov(group[0][1].points.T) if len(group[0][1].points) >= 2 else np.zeros((3, 3))
    covariance = covariance + np.eye(3) * 1e-4  # 1 cm floor: depth quantisation and calibration
    view, est = group[-1]
    T = view.frame.T_world_camera
    _describe_latest(result, view, T[:3, :3].T @ (position - T[:3, 3]))
    result.position_world = np.round(position, 4).tolist()
    result.covariance = np.round(covariance, 6).tolist()
    result.uncertainty_m = round(float(np.sqrt(np.linalg.eigvalsh(covariance).max())), 4)
    result.views_used = [{**v.describe(), "position_world": np.round(_world_position(v, e), 4).tolist(),
                          "points": int(len(e.points))} for v, e in group]
    spread = float(np.sqrt(np.mean(np.sum((per_view - position) ** 2, axis=1))))
    result.confidence_features = {
        "views_used": float(len(group)),
        "views_rejected": float(len(rejected)),
        "agreement": len(group) / len(posed),
        "spread_m": round(spread, 4),
        "cluster_fraction": round(float(np.mean([e.cluster_fraction for _, e in group])), 4),
        "valid_fraction": round(float(np.mean([e.valid_fraction for _, e in group])), 4),
        "depth_sigma_m": round(float(np.mean([min(e.uncertainty_m, 1.0) for _, e in group])), 4),
    }
    result.confidence = round(calibrated_confidence(result.confidence_features), 3)
    if len(posed) >= 2 and 2 * len(group) <= len(posed):
        # No majority: as many views place the target elsewhere as here. Which is right cannot be told
        # from the boxes, so the estimate (the latest group's) comes with confidence 0: never a goal.
        result.confidence = 0.0
        result.reason = (f"the views of {target!r} disagree: {len(group)} of {len(posed)} place it here, the rest "
                         "elsewhere, and no place has a majority")
    result.points = points
    evidence = [f for f in (frames if frames is not None else [v.frame for v, _ in posed])
                if f.depth_m is not None and f.T_world_camera is not None]
    position_xy, quat, result.approach_free = approach(position, points, T[:3, 3], evidence, config)
    result.approach_position = np.round(position_xy, 4).tolist()
    result.approach_orientation = [round(q, 6) for q in quat]
    result.frame_id = view.frame.world_frame_id
    result.ok = True
    return result


def _world_position(view: BoxView, est: SurfaceEstimate) -> np.ndarray:
    return transform_points(view.frame.T_world_camera, est.position_camera)[0]


def _describe_latest(result: GroundingResult, view: BoxView, position_camera) -> None:
    result.label, result.match, result.turn, result.image_index = view.label, view.match, view.turn, view.image_index
    result.frame_index, result.stamp_s = view.frame.index, view.frame.stamp_s
    result.box_px = np.round(view.box_px, 2).tolist()
    if position_camera is not None:
        result.position_camera = np.round(np.asarray(position_camera), 4).tolist()


def consensus(clouds: list[np.ndarray], positions: list[np.ndarray], config: GroundingConfig) -> tuple[list[int], list[int]]:
    """Which views see the same object (module docstring): ``(used, rejected)`` view indices.

    Args:
        clouds: Per view, (N_i, 3) world points of the object (m).
        positions: Per view, (3,) world position (m).
    """
    n = len(clouds)
    if n == 1:
        return [0], []
    o3d = open3d()
    pcs = [o3d.geometry.PointCloud(o3d.utility.Vector3dVector(c)) for c in clouds]
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            close = np.linalg.norm(positions[i] - positions[j]) < config.agree_centre_m
            if not close:
                d_ij = np.asarray(pcs[i].compute_point_cloud_distance(pcs[j]))
                d_ji = np.asarray(pcs[j].compute_point_cloud_distance(pcs[i]))
                close = min(np.percentile(d_ij, 5), np.percentile(d_ji, 5)) < config.agree_touch_m
            if close:
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    best = max(groups.values(), key=lambda g: (len(g), max(g)))
    return best, [i for i in range(n) if i not in best]


@lru_cache(maxsize=1)
def _calibration() -> dict:
    return json.loads(resources.files("vilasr_ros.resources").joinpath("grounding_calibration.json").read_text())


def calibrated_confidence(features: dict[str, float]) -> float:
    """P(the estimate is within 15 cm of the object) from a logistic model over ``features``
    (names, weights and the fit's provenance in ``resources/grounding_calibration.json``)."""
    cal = _calibration()
    z = cal["intercept"] + sum(w * float(features[name]) for name, w in zip(cal["features"], cal["coef"]))
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -40, 40))))


def floor_seen(points: np.ndarray, frames: list[Frame], margin_m: float = 0.05) -> np.ndarray:
    """What the frames' depth says about world points on the floor: per point 1 (some frame sees
    the floor there: nothing stands on it), -1 (frames see only something in front of it), 0 (no
    frame looks at it).

    Args:
        points: (M, 3) world points (m). frames: frames with depth and ``T_world_camera``.
        margin_m: Depth tolerance (m).
    """
    state = np.zeros(len(points), int)
    for frame in frames:
        T_cw = np.linalg.inv(frame.T_world_camera)
        pc = transform_points(T_cw, points)
        K = frame.intrinsics
        z = pc[:, 2]
        ok = z > 0.1
        u = np.full(len(points), -1.0)
        v = np.full(len(points), -1.0)
        u[ok] = K.fx * pc[ok, 0] / z[ok] + K.cx
        v[ok] = K.fy * pc[ok, 1] / z[ok] + K.cy
        h, w = frame.depth_m.shape
        inside = ok & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        for k in np.nonzero(inside)[0]:
            d = float(frame.depth_m[int(round(v[k])), int(round(u[k]))])
            if not np.isfinite(d) or d <= 0:
                continue
            if d >= z[k] - margin_m:
                state[k] = 1
            elif state[k] == 0:
                state[k] = -1
    return state


def approach(target: np.ndarray, points: np.ndarray, camera: np.ndarray, frames: list[Frame],
             config: GroundingConfig) -> tuple[np.ndarray, tuple[float, float, float, float], bool | None]:
    """An approach pose on the floor facing the object from free floor.

    Candidate headings start at the camera→target direction (the way the robot looked at it) and
    turn away from it in 20° steps both ways; for each, the position is ``standoff_m`` before the
    object's near edge along it (the object's ``points`` projected on the heading). The first
    candidate whose disc of ``robot_radius_m`` the ``frames`` saw as free floor (:func:`floor_seen`)
    wins; else the first not seen occupied; else the direct one.

    Args:
        target: (3,) fused object position, world (m). points: (N, 3) object points, world.
        camera: (3,) position of the camera of the latest view. frames: frames with depth and pose.

    Returns:
        ``(position (3,), quaternion x y z w, free)`` — ``free`` as in :class:`GroundingResult`.
    """
    direction = np.asarray(target, float)[:2] - np.asarray(camera, float)[:2]
    base = float(np.arctan2(direction[1], direction[0])) if np.linalg.norm(direction) > 1e-9 else 0.0
    offsets = [0.0] + [s * k * np.deg2rad(20) for k in range(1, 10) for s in (1, -1)][:-1]
    ring = [np.zeros(2)] + [config.robot_radius_m * np.array([np.cos(a), np.sin(a)])
                            for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)] if config.robot_radius_m > 0 else [np.zeros(2)]
    candidates = []
    for off in offsets:
        yaw = base + off
        d = np.array([np.cos(yaw), np.sin(yaw)])
        edge = max(0.0, float(np.max((np.asarray(target)[:2] - points[:, :2]) @ d))) if len(points) else 0.0
        xy = np.asarray(target, float)[:2] - (edge + config.standoff_m) * d
        candidates.append((np.array([xy[0], xy[1], config.floor_z_m]), yaw))
    if not frames:
        pos, yaw = candidates[0]
        return pos, yaw_quaternion(yaw), None
    samples = np.array([[c[0][0] + r[0], c[0][1] + r[1], config.floor_z_m] for c in candidates for r in ring])
    state = floor_seen(samples, frames).reshape(len(candidates), len(ring))
    for k, row in enumerate(state):
        if (row == 1).all():
            return candidates[k][0], yaw_quaternion(candidates[k][1]), True
    for k, row in enumerate(state):
        if not (row == -1).any():
            return candidates[k][0], yaw_quaternion(candidates[k][1]), None
    return candidates[0][0], yaw_quaternion(candidates[0][1]), False


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
