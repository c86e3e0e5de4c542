"""A trace in 3D with rerun (``vilasr view --rerun TRACE_DIR``): keyframe poses, images with the model's
boxes and lines, depth point clouds, per-view target estimates, the fused target with its covariance
and the approach pose, written to an ``.rrd`` file (open it with ``rerun FILE.rrd``) or streamed to a
running viewer.

Entity paths (world frame ``world``, REP-103 z up, the trace's ``world_frame_id``):

- ``world/keyframes/<k>``: ``Transform3D`` = ``T_world_camera`` of input frame k (0-based position in the
  frames given to the loop); ``.../image``: ``Pinhole`` (the model image's size) + ``Image``;
  ``.../image/boxes`` ``Boxes2D`` and ``.../image/lines`` ``LineStrips2D`` (the model's drawings on
  that frame, model pixels); ``.../depth`` ``Points3D`` in the camera frame (with ``--source``).
- ``world/target/views_used`` / ``views_rejected``: ``Points3D`` per box, labelled;
  ``world/target/position`` ``Points3D``; ``world/target/covariance`` ``Ellipsoids3D`` (2σ);
  ``world/target/points`` the fused object points (with ``--source``); ``world/target/approach``
  ``Arrows3D`` (0.5 m along the heading).

Poses and intrinsics come from the trace's ``frames`` (recorded by ``vilasr ask --source`` and the
agent); depth and the object points need the frames themselves: ``source`` re-reads them and grounds
the trace again with the default :class:`~vilasr_ros.grounding.GroundingConfig`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vilasr_ros.errors import require


def _quaternion(R: np.ndarray) -> list[float]:
    from scipy.spatial.transform import Rotation

    if np.linalg.det(R) < 0:
        R = R.copy()
        R[:, 2] *= -1
    return Rotation.from_matrix(R).as_quat().tolist()


def write_rerun(trace_dir: str | Path, out: str | Path | None = None, source: str | None = None,
                connect: str | None = None, memory: str | Path | None = None) -> Path | str:
    """Log a saved trace to rerun.

    Args:
        trace_dir: A folder written by ``vilasr ask``, the agent or eval.
        out: ``.rrd`` path (default ``TRACE_DIR/trace.rrd``); ignored with ``connect``.
        source: The frame source the trace was asked on (``sim:demo``, ``bag:...``): adds depth
            clouds and the fused object points.
        connect: A viewer's gRPC URL (``rerun+http://127.0.0.1:9876/proxy``) to stream to instead.
        memory: A keyframe memory folder: adds its camera trajectory (``world/memory/trajectory``,
            one strip per stretch without a gap over 10 s) and the object memory's last sightings
            (``world/memory/objects``, labelled).

    Returns:
        The file written, or the URL streamed to.

    Raises:
        MissingDependencyError: rerun-sdk is not installed (``vilasr_ros[rerun]``).
        ValueError: ``source`` given but the trace does not record which frames it was asked on, or
            the source lacks them.
    """
    rr = require("rerun", "rerun")
    from vilasr_ros.trace import Trace

    trace_dir = Path(trace_dir)
    trace = Trace.load(trace_dir)
    records = trace.frames
    frames = None
    target = trace.target
    points = None
    if source is not None:
        if not records:
            raise ValueError(f"{trace_dir}/trace.json does not record its input frames (traces written before "
                             "this version, or asked on --images): --source cannot be matched to it")
        from vilasr_ros.sources import open_source

        wanted = {r["index"]: k for k, r in enumerate(records)}
        frames = [None] * len(records)
        with open_source(source) as src:
            for frame in src:
                if frame.index in wanted:
                    frames[wanted[frame.index]] = frame
        missing = [records[k]["index"] for k, f in enumerate(frames) if f is None]
        if missing:
            raise ValueError(f"source {source!r} has no frames with index {missing[:5]}: not the source of this trace")
        if target and target.get("target"):
            from vilasr_ros.grounding import ground_trace

            result = ground_trace(trace, frames, target["target"])
            target, points = result.to_dict(), result.points

    rec = rr.RecordingStream(application_id="vilasr_view")
    if connect:
        rec.connect_grpc(connect)
        dest: Path | str = connect
    else:
        dest = Path(out) if out else trace_dir / "trace.rrd"
        dest.parent.mkdir(parents=True, exist_ok=True)
        rec.save(str(dest))
    rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    rec.log("question", rr.TextDocument(f"{trace.question}\n\nanswer: {trace.answer}"), static=True)

    inputs = {img.source_frame: img for img in trace.images if img.drawn_from is None}
    drawings: dict[int, dict] = {}
    for turn in trace.turns:
        if turn.error:
            continue
        for key, items in (("boxes", turn.boxes), ("lines", turn.lines)):
            for item in items:
                index = item.get("index") if isinstance(item, dict) else None
                if isinstance(index, int) and 1 <= index <= len(trace.images):
                    drawings.setdefault(trace.images[index - 1].source_frame, {"boxes": [], "lines": []})[key].append(item)

    for k, img in sorted(inputs.items()):
        base = f"world/keyframes/{k}" if records else f"images/{k}"
        w, h = img.size
        if records and k < len(records):
            r = records[k]
            if r.get("T_world_camera") is not None:
                T = np.asarray(r["T_world_camera"], float)
                rec.log(base, rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]), static=True)
            K = r["intrinsics"]
            sx, sy = w / K["width"], h / K["height"]
            rec.log(f"{base}/image", rr.Pinhole(focal_length=[K["fx"] * sx, K["fy"] * sy],
                                                principal_point=[K["cx"] * sx, K["cy"] * sy], resolution=[w, h]), static=True)
        rec.log(f"{base}/image", rr.Image(np.asarray(trace.pil_images[img.index - 1].convert("RGB"))), static=True)
        drawn = drawings.get(k, {"boxes": [], "lines": []})
        boxes = [b for b in drawn["boxes"] if _finite(b.get("bbox_2d"), 4)]
        if boxes:
            rec.log(f"{base}/image/boxes", rr.Boxes2D(array=[b["bbox_2d"] for b in boxes], array_format=rr.Box2DFormat.XYXY,
                                                      labels=[str(b.get("label", "")) for b in boxes]), static=True)
        lines = [ln for ln in drawn["lines"] if _finite(ln.get("start_point_2d"), 2) and _finite(ln.get("end_point_2d"), 2)]
        if lines:
            rec.log(f"{base}/image/lines", rr.LineStrips2D([[ln["start_point_2d"], ln["end_point_2d"]] for ln in lines]), static=True)
        if frames is not None and frames[k].depth_m is not None:
            rec.log(f"{base}/depth", rr.Points3D(_depth_points(frames[k]), colors=[150, 150, 150], radii=0.01), static=True)

    if target and target.get("position_world") is not None:
        for key, colour in (("views_used", [40, 200, 80]), ("views_rejected", [230, 60, 40])):
            views = [v for v in target.get(key) or [] if v.get("position_world") is not None]
            if views:
                rec.log(f"world/target/{key}", rr.Points3D([v["position_world"] for v in views], colors=colour, radii=0.04,
                                                           labels=[f"image {v.get('image_index')}" for v in views]), static=True)
        p = np.asarray(target["position_world"], float)
        rec.log("world/target/position", rr.Points3D([p], colors=[255, 140, 0], radii=0.06,
                                                     labels=[str(target.get("label") or target.get("target"))]), static=True)
        if target.get("covariance") is not None:
            values, vectors = np.linalg.eigh(np.asarray(target["covariance"], float))
            rec.log("world/target/covariance", rr.Ellipsoids3D(
                centers=[p], half_sizes=[2.0 * np.sqrt(np.maximum(values, 0.0))],
                quaternions=[rr.Quaternion(xyzw=_quaternion(vectors))], colors=[255, 140, 0]), static=True)
        if points is not None and len(points):
            rec.log("world/target/points", rr.Points3D(points, colors=[255, 200, 0], radii=0.01), static=True)
        if target.get("approach_position") is not None:
            x, y, z, w = target["approach_orientation"]
            yaw = 2.0 * np.arctan2(z, w)
            rec.log("world/target/approach", rr.Arrows3D(origins=[target["approach_position"]],
                                                         vectors=[[0.5 * np.cos(yaw), 0.5 * np.sin(yaw), 0.0]],
                                                         colors=[40, 120, 255]), static=True)
    if memory is not None:
        _log_memory(rec, rr, memory)
    rec.flush()
    rec.disconnect()
    return dest


def _log_memory(rec, rr, memory_dir) -> None:
    from vilasr_ros.memory import KeyframeMemory

    store = KeyframeMemory(memory_dir, readonly=True)
    try:
        records = [r for r in store.records() if r.position is not None]
        objects = store.objects(evidence=False)
    finally:
        store.close()
    strips, strip = [], []
    for a, b in zip([None] + records, records):
        if a is not None and b.stamp_s - a.stamp_s > 10.0 and strip:
            strips.append(strip)
            strip = []
        strip.append(b.position)
    if strip:
        strips.append(strip)
    if strips:
        rec.log("world/memory/trajectory", rr.LineStrips3D(strips, colors=[120, 120, 255]), static=True)
    latest: dict[str, dict] = {}
    for seen in objects:  # newest first
        latest.setdefault(seen["label"], seen)
    if latest:
        rec.log("world/memory/objects", rr.Points3D([s["position"] for s in latest.values()], colors=[60, 160, 255],
                                                    radii=0.08, labels=list(latest)), static=True)


def _finite(values, n: int) -> bool:
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.shape == (n,) and bool(np.isfinite(a).all())


def _depth_points(frame, step: int = 4, max_depth_m: float = 8.0) -> np.ndarray:
    """(N, 3) optical-frame points of every ``step``-th depth pixel (m)."""
    from vilasr_ros.geometry import deproject

    depth = frame.depth_m[::step, ::step]
    vs, us = np.nonzero(np.isfinite(depth) & (depth > 0) & (depth < max_depth_m))
    return deproject(np.column_stack([us * step, vs * step]).astype(float), depth[vs, us], frame.intrinsics)


def summary(rrd: str | Path) -> dict[str, list[str]]:
    """Entity path → logged component columns of an ``.rrd`` file (rerun's reader), for checks."""
    from rerun.chunk import RrdReader

    out: dict[str, list[str]] = {}
    for chunk in RrdReader(str(rrd)).store().stream():
        names = [n for n in chunk.to_record_batch().schema.names if ":" in n]
        out.setdefault(chunk.entity_path, []).extend(names)
    return out
