"""Pixels to metres: model coordinates → sensor pixels → camera-frame points → world frame.

Model coordinates are pixels of the resized image the model saw (spec §1); they map back to the
sensor image by the per-axis scale. Deprojection is the pinhole model (x = (u−cx)·z/fx,
y = (v−cy)·z/fy in the optical frame, REP-103: x right, y down, z forward); distorted pixels are
first undistorted with OpenCV's ``undistortPoints``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vilasr_ros.errors import VilasrError, require
from vilasr_ros.frames import CameraIntrinsics, Frame


class GroundingError(VilasrError, ValueError):
    """A box or line that cannot be turned into a 3D position (outside the image, no valid depth...)."""


def model_to_sensor_box(bbox, model_size: tuple[int, int], sensor_size: tuple[int, int]) -> np.ndarray:
    """``[x1, y1, x2, y2]`` in resized-image pixels → sensor pixels, ordered and clipped.

    Args:
        bbox: Box as the model wrote it (corners in any order).
        model_size: (width, height) of the image the model saw.
        sensor_size: (width, height) of the sensor image.

    Returns:
        float array ``[x1, y1, x2, y2]`` with x1 ≤ x2, y1 ≤ y2, inside the sensor image.

    Raises:
        GroundingError: Not 4 finite numbers, or the box lies entirely outside the image.
    """
    try:
        b = np.asarray(bbox, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GroundingError(f"box is not 4 numbers: {bbox!r}") from exc
    if b.shape != (4,) or not np.isfinite(b).all():
        raise GroundingError(f"box is not 4 finite numbers: {bbox!r}")
    sx, sy = sensor_size[0] / model_size[0], sensor_size[1] / model_size[1]
    x1, x2 = sorted((b[0] * sx, b[2] * sx))
    y1, y2 = sorted((b[1] * sy, b[3] * sy))
    w, h = sensor_size
    if x2 < 0 or y2 < 0 or x1 > w - 1 or y1 > h - 1:
        raise GroundingError(f"box {list(bbox)} lies outside the {model_size[0]}x{model_size[1]} image")
    return np.array([max(x1, 0.0), max(y1, 0.0), min(x2, w - 1.0), min(y2, h - 1.0)])


def model_to_sensor_point(point, model_size: tuple[int, int], sensor_size: tuple[int, int]) -> np.ndarray:
    """``[x, y]`` in resized-image pixels → sensor pixels (not clipped)."""
    p = np.asarray(point, dtype=np.float64)[:2]
    return p * np.array([sensor_size[0] / model_size[0], sensor_size[1] / model_size[1]])


def normalized_rays(uv: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(N, 2) pixels → (N, 2) normalised image coordinates (x/z, y/z), undistorting when needed."""
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    if intrinsics.has_distortion:
        cv2 = require("cv2", "geometry")
        pts = cv2.undistortPoints(uv.reshape(-1, 1, 2), intrinsics.K, np.asarray(intrinsics.D, dtype=np.float64))
        return pts.reshape(-1, 2)
    return np.stack([(uv[:, 0] - intrinsics.cx) / intrinsics.fx, (uv[:, 1] - intrinsics.cy) / intrinsics.fy], axis=1)


def deproject(uv: np.ndarray, depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Pixels with depth → (N, 3) points in the camera optical frame (metres).

    Args:
        uv: (N, 2) pixel coordinates (u right, v down).
        depth_m: (N,) depths along the optical axis (z), metres.
        intrinsics: Camera intrinsics of the image the pixels are in.
    """
    xy = normalized_rays(uv, intrinsics)
    z = np.asarray(depth_m, dtype=np.float64).reshape(-1)
    return np.stack([xy[:, 0] * z, xy[:, 1] * z, z], axis=1)


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4×4 transform to (N, 3) points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return points @ T[:3, :3].T + T[:3, 3]


@dataclass
class SurfaceEstimate:
    """Where the visible surface inside a box is.

    Attributes:
        position_camera: (3,) metres, optical frame: per-axis median of the chosen cluster's points
            (medians taken in the world frame when the frame has a pose).
        depth_m: Median depth of the chosen depth cluster.
        uncertainty_m: 1.4826·MAD of that cluster's depths (robust σ along the ray), metres.
        valid_fraction: Share of box pixels with valid depth.
        cluster_fraction: Share of valid (non-floor) pixels in the chosen cluster.
        floor_fraction: Share of valid pixels dropped as floor (0 without a pose or floor height).
    """

    position_camera: np.ndarray
    depth_m: float
    uncertainty_m: float
    valid_fraction: float
    cluster_fraction: float
    floor_fraction: float = 0.0


def surface_in_box(
    frame: Frame,
    box_px: np.ndarray,
    *,
    min_depth_m: float = 0.1,
    max_depth_m: float = 10.0,
    gap_m: float = 0.15,
    min_cluster_fraction: float = 0.15,
    floor_z_m: float | None = None,
    floor_margin_m: float = 0.03,
) -> SurfaceEstimate:
    """Robust position of the object in a sensor-pixel box.

    Background leaking into the box is removed in up to three steps. With a pose and ``floor_z_m``:
    (1) pixels whose world point lies within ``floor_margin_m`` of the floor plane (REP-103: z up) are
    dropped — the floor under a chair or a table is continuous in depth with the object and no depth
    gap separates it; (2) a wall behind the object is dropped (:func:`background_wall`). (3) The remaining depths are sorted and split where consecutive values jump by more
    than ``max(gap_m, 5% of depth)``; the nearest cluster holding at least ``min_cluster_fraction``
    of them is the object (a wall behind it is a farther cluster). The object position is the
    per-axis median of that cluster's deprojected points, taken in the world frame when
    the frame has a pose (a per-axis median depends on the axes; the world's are the natural ones).

    Raises:
        GroundingError: No depth image, or no valid depth in the box (or only floor).
    """
    if frame.depth_m is None:
        raise GroundingError("the frame has no depth image")
    x1, y1, x2, y2 = np.round(box_px).astype(int)
    patch = frame.depth_m[y1 : y2 + 1, x1 : x2 + 1]
    valid = np.isfinite(patch) & (patch > min_depth_m) & (patch < max_depth_m)
    if not valid.any():
        raise GroundingError(f"no valid depth inside box {box_px.round(1).tolist()} (all zero, NaN or out of range)")
    vs, us = np.nonzero(valid)
    depth = patch[vs, us].astype(np.float64)
    points = deproject(np.column_stack([us + x1, vs + y1]), depth, frame.intrinsics)
    n_valid = depth.size
    floor_fraction = 0.0
    T = frame.T_world_camera
    world = transform_points(T, points) if T is not None else None
    if floor_z_m is not None and T is not None:
        keep = world[:, 2] > floor_z_m + floor_margin_m
        if not keep.any():
            raise GroundingError(f"only floor inside box {box_px.round(1).tolist()}")
        floor_fraction = 1.0 - keep.mean()
        depth, points, world = depth[keep], points[keep], world[keep]
        keep = ~background_wall(points, depth, up=T[2, :3])  # T[2, :3]: world +z in the optical frame
        if keep.sum() >= 0.05 * depth.size:
            depth, points, world = depth[keep], points[keep], world[keep]
    order = np.argsort(depth, kind="stable")
    d = depth[order]
    cuts = np.nonzero(np.diff(d) > np.maximum(gap_m, 0.05 * d[:-1]))[0] + 1
    groups = np.split(order, cuts)
    chosen = next((g for g in groups if g.size >= min_cluster_fraction * d.size), max(groups, key=len))
    z = float(np.median(depth[chosen]))
    if T is None:
        position = np.median(points[chosen], axis=0)
    else:  # per-axis median in the (z-up) world frame, where object faces are axis-aligned more often
        position = T[:3, :3].T @ (np.median(world[chosen], axis=0) - T[:3, 3])
    mad = float(np.median(np.abs(depth[chosen] - z)))
    return SurfaceEstimate(position, z, 1.4826 * mad, n_valid / patch.size, chosen.size / depth.size, float(floor_fraction))


def background_wall(points: np.ndarray, depth: np.ndarray, up: np.ndarray, *, inlier_m: float = 0.015,
                    iterations: int = 150, min_share: float = 0.15, seed: int = 0) -> np.ndarray:
    """Mask of the points on a wall behind the object: the largest vertical plane (normal ⟂ ``up``)
    found by RANSAC (Fischler & Bolles 1981) that holds at least ``min_share`` of the points and
    lies behind most of the others (its median depth beyond the others' 75th percentile). An object's
    own vertical face (a fridge door) is in front of the rest and is kept.

    Args:
        points: (N, 3) optical-frame points (m); ``depth``: (N,) their depths; ``up``: (3,) world up
            in the optical frame.

    Returns:
        (N,) bool, True for wall points (all False when no such plane exists).
    """
    n = len(points)
    none = np.zeros(n, bool)
    if n < 50:
        return none
    rng = np.random.default_rng(seed)
    sample = points[rng.choice(n, size=min(n, 4000), replace=False)]
    best, best_count = None, 0
    for _ in range(iterations):
        a, b, c = sample[rng.choice(len(sample), 3, replace=False)]
        normal = np.cross(b - a, c - a)
        norm = np.linalg.norm(normal)
        if norm < 1e-9:
            continue
        normal /= norm
        if abs(normal @ up) > 0.1:  # not a vertical plane
            continue
        count = int((np.abs((sample - a) @ normal) < inlier_m).sum())
        if count > best_count:
            best, best_count = (a, normal), count
    if best is None or best_count < min_share * len(sample):
        return none
    wall = np.abs((points - best[0]) @ best[1]) < inlier_m
    rest = depth[~wall]
    if rest.size == 0 or np.median(depth[wall]) <= np.percentile(rest, 75):
        return none
    return wall


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """Quaternion (x, y, z, w) of a rotation by ``yaw`` radians about +z (REP-103 up)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_euler("z", float(yaw)).as_quat()
    return (float(x), float(y), float(z), float(w))


def approach_pose(
    target_world: np.ndarray, camera_world: np.ndarray, standoff_m: float, floor_z_m: float = 0.0
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A pose on the floor plane ``standoff_m`` before the target, facing it.

    The approach direction is the camera→target direction projected on the floor (world z up,
    REP-103); the pose lies on the plane z = ``floor_z_m``.

    Returns:
        (position (3,), quaternion x y z w).
    """
    direction = np.asarray(target_world, float)[:2] - np.asarray(camera_world, float)[:2]
    norm = np.linalg.norm(direction)
    direction = direction / norm if norm > 1e-9 else np.array([1.0, 0.0])
    xy = np.asarray(target_world, float)[:2] - standoff_m * direction
    yaw = float(np.arctan2(direction[1], direction[0]))
    return np.array([xy[0], xy[1], floor_z_m]), yaw_quaternion(yaw)
