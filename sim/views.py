"""Rendering a scene's trajectory to disk and measuring what each frame shows.

A scene folder uses the ``rgbd_folder`` layout (``shared/data/rgbd/README.md``), so every frame
source reads it back (``rgbd_folder:DIR`` or ``sim:DIR``), plus ground truth:

- ``color/NNNNN.png`` RGB; ``depth/NNNNN.png`` uint16 millimetres (``rgbd.json`` depth_scale 1000);
  ``camera_intrinsic.json`` (Open3D, column-major); ``trajectory.log`` (camera-to-world, optical frame);
- ``seg/NNNNN.png`` uint16 instance id per pixel (0 = walls, floor, ceiling);
- ``scene.json``: the object table (category, instance id, centre, size, yaw, support), the room,
  intrinsics, and per frame ``T_world_camera`` and ``visible``: for each instance seen, its pixel
  count, mask box ``[x1, y1, x2, y2]`` (inclusive sensor pixels), whether its 3D box is cut by the
  image border (``truncated``), the share of its projected box hidden by nearer objects
  (``occluded_fraction``) and the camera–centre distance (m);
- ``scene.xml``: the MJCF that was rendered.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vilasr_ros_sim.render import RenderConfig, RenderedView, SceneRenderer
from vilasr_ros_sim.scene import Scene, SceneObject, to_mjcf
from vilasr_ros_sim.trajectory import TrajectoryConfig, trajectory

MIN_VISIBLE_PX = 50
DEPTH_SCALE = 1000.0


def box_corners(obj: SceneObject) -> np.ndarray:
    """(8, 3) world corners of the object's bounding box, metres."""
    half = obj.size / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    return obj.centre + (signs * half) @ obj.rotation.T


def point_box_distance(point, centre, size, yaw: float) -> float:
    """Distance (m) from a world point to an object's oriented bounding box (0 inside it): the box of
    ``size`` (x, y, z extents) centred at ``centre``, turned by ``yaw`` about world z (REP-103 up)."""
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    local = R.T @ (np.asarray(point, float) - np.asarray(centre, float))
    outside = np.maximum(np.abs(local) - np.asarray(size, float) / 2.0, 0.0)
    return float(np.linalg.norm(outside))


def visibility(view: RenderedView, scene: Scene, config: RenderConfig) -> dict[str, dict]:
    """What one view shows, per instance id (as a string key, JSON-ready); see module docstring."""
    K = config.intrinsics()
    T_cw = np.linalg.inv(view.T_world_camera)
    h, w = view.instance.shape
    out: dict[str, dict] = {}
    ids, counts = np.unique(view.instance, return_counts=True)
    for iid, count in zip(ids.tolist(), counts.tolist()):
        if iid == 0 or count < MIN_VISIBLE_PX:
            continue
        obj = scene.by_id(iid)
        mask = view.instance == iid
        ys, xs = np.nonzero(mask)
        pc = (T_cw[:3, :3] @ box_corners(obj).T).T + T_cw[:3, 3]
        behind = bool((pc[:, 2] <= 0.05).any())
        u = K.fx * pc[:, 0] / np.maximum(pc[:, 2], 1e-6) + K.cx
        v = K.fy * pc[:, 1] / np.maximum(pc[:, 2], 1e-6) + K.cy
        truncated = behind or bool((u < 0).any() or (u > w - 1).any() or (v < 0).any() or (v > h - 1).any())
        x1, x2 = int(np.clip(np.floor(u.min()), 0, w - 1)), int(np.clip(np.ceil(u.max()), 0, w - 1))
        y1, y2 = int(np.clip(np.floor(v.min()), 0, h - 1)), int(np.clip(np.ceil(v.max()), 0, h - 1))
        region_ids = view.instance[y1 : y2 + 1, x1 : x2 + 1]
        region_depth = view.depth_m[y1 : y2 + 1, x1 : x2 + 1]
        nearest = float(view.depth_m[mask].min())
        occluders = int(((region_ids != 0) & (region_ids != iid) & (region_depth < nearest)).sum())
        out[str(iid)] = {
            "pixels": int(count),
            "box_px": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
            "truncated": truncated,
            "occluded_fraction": round(occluders / (occluders + count), 4),
            "distance_m": round(float(np.linalg.norm(obj.centre - view.T_world_camera[:3, 3])), 4),
        }
    return out


def fully_visible(info: dict, max_distance_m: float = 4.0, min_pixels: int = 300, max_occluded: float = 0.05) -> bool:
    """True for an object wholly inside the image, at most 5 % hidden, within ``max_distance_m``."""
    return (not info["truncated"] and info["occluded_fraction"] <= max_occluded and info["pixels"] >= min_pixels
            and info["distance_m"] <= max_distance_m)


def _open3d_intrinsics(config: RenderConfig) -> dict:
    K = config.intrinsics()
    return {"width": K.width, "height": K.height, "intrinsic_matrix": [K.fx, 0, 0, 0, K.fy, 0, K.cx, K.cy, 1]}


def write_scene_folder(scene: Scene, out_dir: str | Path, render: RenderConfig | None = None,
                       traj: TrajectoryConfig | None = None) -> dict:
    """Render ``scene`` along a trajectory into ``out_dir`` (layout in the module docstring).

    Returns:
        The ``scene.json`` content.
    """
    render = render or RenderConfig()
    traj = traj or TrajectoryConfig()
    out = Path(out_dir)
    for sub in ("color", "depth", "seg"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    frames, log = [], []
    with SceneRenderer(scene, render) as renderer:
        for i, T in enumerate(trajectory(scene, traj)):
            view = renderer.render(T)
            name = f"{i:05d}.png"
            Image.fromarray(view.rgb).save(out / "color" / name)
            depth_mm = np.round(view.depth_m.astype(np.float64) * DEPTH_SCALE).clip(0, 65535).astype(np.uint16)
            Image.fromarray(depth_mm).save(out / "depth" / name)
            Image.fromarray(view.instance.astype(np.uint16)).save(out / "seg" / name)
            frames.append({"index": i, "color": f"color/{name}", "T_world_camera": np.round(T, 9).tolist(),
                           "visible": visibility(view, scene, render)})
            log.append(f"{i} {i} {i + 1}\n" + "\n".join(" ".join(repr(float(v)) for v in row) for row in T) + "\n")
    (out / "trajectory.log").write_text("".join(log))
    (out / "camera_intrinsic.json").write_text(json.dumps(_open3d_intrinsics(render), indent=1) + "\n")
    (out / "rgbd.json").write_text(json.dumps({"depth_scale": DEPTH_SCALE, "pose_file": "trajectory.log",
                                               "pose_convention": "camera-to-world 4x4 (optical frame), Open3D log format",
                                               "world_up": "z"}) + "\n")
    (out / "scene.xml").write_text(to_mjcf(scene, render.width, render.height))
    meta = {
        **scene.object_table(),
        "render": {"width": render.width, "height": render.height, "fovy_deg": render.fovy_deg, "shadows": render.shadows},
        "trajectory": {"kind": traj.kind, "frames": traj.frames, "camera_height_m": traj.camera_height_m,
                       "pitch_deg": traj.pitch_deg},
        "frames": frames,
    }
    (out / "scene.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def visible_surface_point(folder: str | Path, frame_index: int, instance_id: int) -> np.ndarray:
    """World position (m) of an object's visible surface in one saved frame: the per-axis median of
    its segmented pixels deprojected with the saved depth, intrinsics and pose.

    Raises:
        ValueError: The object has no valid depth pixel in that frame.
    """
    from vilasr_ros.geometry import deproject, transform_points
    from vilasr_ros.sources.rgbd_folder import read_open3d_intrinsics

    root = Path(folder)
    meta = json.loads((root / "scene.json").read_text())
    seg = np.asarray(Image.open(root / "seg" / f"{frame_index:05d}.png"))
    depth = np.asarray(Image.open(root / "depth" / f"{frame_index:05d}.png")).astype(np.float64) / DEPTH_SCALE
    mask = (seg == instance_id) & (depth > 0)
    if not mask.any():
        raise ValueError(f"instance {instance_id} has no valid depth pixel in frame {frame_index}")
    ys, xs = np.nonzero(mask)
    K = read_open3d_intrinsics(root / "camera_intrinsic.json")
    pts = deproject(np.column_stack([xs, ys]).astype(float), depth[ys, xs], K)
    T = np.array(meta["frames"][frame_index]["T_world_camera"])
    return np.median(transform_points(T, pts), axis=0)


def target_errors(root: str | Path, max_distance_m: float = 4.0) -> np.ndarray:
    """Target-position error of grounding with ground-truth boxes over a generated dataset (metres).

    For every fully visible object (:func:`fully_visible`) in every frame of ``root/scenes/*``: the
    world position from ``vilasr_ros.geometry.surface_in_box`` on its mask box (floor and wall
    removal on) against :func:`visible_surface_point`.
    """
    from vilasr_ros.geometry import surface_in_box, transform_points
    from vilasr_ros.sources import open_source

    errors = []
    for folder in sorted(Path(root, "scenes").glob("scene_*")):
        meta = json.loads((folder / "scene.json").read_text())
        with open_source(f"sim:{folder}") as source:
            for frame, fm in zip(source, meta["frames"]):
                for iid, info in fm["visible"].items():
                    if fully_visible(info, max_distance_m=max_distance_m):
                        est = surface_in_box(frame, np.array(info["box_px"], float), floor_z_m=0.0)
                        world = transform_points(frame.T_world_camera, est.position_camera)[0]
                        errors.append(np.linalg.norm(world - visible_surface_point(folder, fm["index"], int(iid))))
    return np.array(errors)
