"""Pixels to metres: model coordinates → sensor pixels → camera-frame points → world frame.

Model coordinates are pixels of the resized image the model saw (spec §1); they map back to the
sensor image by the per-axis scale. Deprojection is the pinhole model (x = (u−cx)·z/fx,
y = (v−cy)·z/fy in the optical frame, REP-103: x right, y down, z forward); distorted pixels are
first undistorted with OpenCV's ``undistortPoints``. Point-cloud work (planes, clusters, voxels) is
open3d's (``vilasr_ros[geometry]``).
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


MIN_BOX_SIDE_PX = 2.0
"""A box narrower or lower than this (pixels of the image the model saw) marks no object."""
MAX_BOX_CLIPPED = 0.10
"""A box with more than this share of its area outside the image is not about what the image shows."""
MAX_BOX_AREA = 0.90
"""A box covering more than this share of the image marks the whole view, not an object in it."""


def check_box_meaningful(bbox_px: np.ndarray | list, model_size: tuple[int, int]) -> None:
    """Refuse a box that says nothing about an object, before it can become a goal (goal rule).

    Args:
        bbox_px: ``[x1, y1, x2, y2]`` as the model wrote it, pixels of the resized image (any corner order).
        model_size: (width, height) of that image.

    Raises:
        GroundingError: A side under :data:`MIN_BOX_SIDE_PX`, more than :data:`MAX_BOX_CLIPPED` of its
            area outside the image, or more than :data:`MAX_BOX_AREA` of the image covered.
    """
    b = np.asarray(bbox_px, dtype=np.float64)
    x1, x2 = sorted((b[0], b[2]))
    y1, y2 = sorted((b[1], b[3]))
    w, h = model_size
    bw, bh = x2 - x1, y2 - y1
    if bw < MIN_BOX_SIDE_PX or bh < MIN_BOX_SIDE_PX:
        raise GroundingError(f"box {np.round(b, 1).tolist()} is degenerate ({bw:.1f} x {bh:.1f} px): it marks no object")
    inside = max(0.0, min(x2, w) - max(x1, 0.0)) * max(0.0, min(y2, h) - max(y1, 0.0))
    clipped = 1.0 - inside / (bw * bh)
    if clipped > MAX_BOX_CLIPPED:
        raise GroundingError(f"box {np.round(b, 1).tolist()} lies {100 * clipped:.0f}% outside the {w}x{h} image "
                             f"(at most {100 * MAX_BOX_CLIPPED:.0f}% allowed)")
    if inside > MAX_BOX_AREA * w * h:
        raise GroundingError(f"box {np.round(b, 1).tolist()} covers {100 * inside / (w * h):.0f}% of the {w}x{h} image: "
                             "it marks the whole view, not an object")


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


def open3d():
    """The ``open3d`` module (``pip install vilasr_ros[geometry]``).

    Raises:
        MissingDependencyError: open3d is not installed.
    """
    return require("open3d", "geometry")


def box_cloud(frame: Frame, box_px: np.ndarray, *, min_depth_m: float = 0.1, max_depth_m: float = 10.0,
              max_points: int = 40000):
    """The depth pixels inside a sensor-pixel box as an open3d point cloud in the camera optical frame.

    Undistorted cameras go through ``open3d.geometry.PointCloud.create_from_depth_image`` on the
    box's crop (principal point shifted by the crop's corner; ``stride`` keeps at most
    ``max_points``); distorted ones through :func:`deproject` (OpenCV undistortion), which open3d
    does not do.

    Returns:
        ``(cloud, valid_fraction)``: the cloud (metres, optical frame) and the share of box pixels
        with a finite depth inside ``(min_depth_m, max_depth_m)``.

    Raises:
        GroundingError: No depth image, or no valid depth in the box.
    """
    o3d = open3d()
    if frame.depth_m is None:
        raise GroundingError("the frame has no depth image")
    x1, y1, x2, y2 = np.round(box_px).astype(int)
    patch = np.asarray(frame.depth_m[y1 : y2 + 1, x1 : x2 + 1], dtype=np.float32)
    valid = np.isfinite(patch) & (patch > min_depth_m) & (patch < max_depth_m)
    if not valid.any():
        raise GroundingError(f"no valid depth inside box {np.round(box_px, 1).tolist()} (all zero, NaN or out of range)")
    stride = max(1, int(np.ceil(np.sqrt(valid.sum() / max_points))))
    K = frame.intrinsics
    if K.has_distortion:
        vs, us = np.nonzero(valid[::stride, ::stride])
        vs, us = vs * stride, us * stride
        points = deproject(np.column_stack([us + x1, vs + y1]), patch[vs, us], K)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    else:
        depth = np.ascontiguousarray(np.where(valid, patch, 0.0).astype(np.float32))
        h, w = depth.shape
        intrinsic = o3d.camera.PinholeCameraIntrinsic(w, h, K.fx, K.fy, K.cx - x1, K.cy - y1)
        cloud = o3d.geometry.PointCloud.create_from_depth_image(
            o3d.geometry.Image(depth), intrinsic, np.eye(4), depth_scale=1.0, depth_trunc=float(max_depth_m), stride=stride)
    return cloud, float(valid.mean())


@dataclass
class SurfaceEstimate:
    """Where the visible surface inside a box is.

    Attributes:
        position_camera: (3,) metres, optical frame: per-axis median of the chosen cluster's points
            (medians taken in the world frame when the frame has a pose).
        depth_m: Median depth of the chosen cluster.
        uncertainty_m: 1.4826·MAD of that cluster's depths (robust σ along the ray), metres.
        valid_fraction: Share of box pixels with valid depth.
        cluster_fraction: Share of the remaining (non-floor, non-wall) points in the chosen cluster.
        floor_fraction: Share of points dropped as floor (0 without a pose or floor height).
        points: (N, 3) the chosen cluster's points, voxel-downsampled to ``voxel_m`` (open3d
            ``voxel_down_sample``: each surface counts by area), in the world frame when the
            frame has a pose (else the optical frame), metres.
        world: Whether ``points`` are in the world frame.
    """

    position_camera: np.ndarray
    depth_m: float
    uncertainty_m: float
    valid_fraction: float
    cluster_fraction: float
    floor_fraction: float = 0.0
    points: np.ndarray | None = None
    world: bool = False


MIN_BOX_SPAN = 0.6
"""Share of a box's width and of its height the object's cluster must reach across to be taken
before a nearer cluster (:func:`surface_in_box`; ``GroundingConfig.min_box_span``). Chosen on sim
scenes 200–207, checked on 300–307 (``benchmarks/grounding_occlusion.py``)."""


def surface_in_box(
    frame: Frame,
    box_px: np.ndarray,
    *,
    min_depth_m: float = 0.1,
    max_depth_m: float = 10.0,
    voxel_m: float = 0.01,
    cluster_eps_m: float = 0.10,
    min_cluster_fraction: float = 0.15,
    min_box_span: float = MIN_BOX_SPAN,
    floor_z_m: float | None = None,
    floor_margin_m: float = 0.03,
    max_points: int = 20000,
) -> SurfaceEstimate:
    """Robust position of the object in a sensor-pixel box, with open3d.

    1. The box's depth pixels become a point cloud (:func:`box_cloud`; a pixel stride keeps at most
       ``max_points``), so the position below weighs the surface as the image shows it (by pixel).
    2. With a pose and ``floor_z_m``: points within ``floor_margin_m`` of the floor plane (REP-103:
       z up) are dropped — the floor under a chair or a table is continuous with the object and no
       depth gap separates it — and a wall behind the object is dropped (:func:`background_planes`,
       open3d ``segment_plane``).
    3. DBSCAN (Ester et al. 1996; open3d ``cluster_dbscan`` on voxel centroids, ``eps`` =
       max(``cluster_eps_m``, 3 pixel footprints at the median depth)) splits what is left; the nearest cluster (median
       depth) holding at least ``min_cluster_fraction`` of the points is the object (things seen
       through or behind it are farther clusters), else the largest. With ``min_box_span`` > 0 (the default) the
       nearest such cluster whose pixels span at least that share of the box's width and of its
       height comes first: a box is drawn tight around its object, so the object reaches across it,
       while something in front that hides a part of it (a box before a bin, a chair before a table)
       covers only that part. When no cluster spans the box, the rule above decides.

    The position is the per-axis median of that cluster, taken in the world frame when the frame
    has a pose (a per-axis median depends on the axes; the world's are the natural ones).

    Raises:
        GroundingError: No depth image, or no valid depth in the box (or only floor).
        MissingDependencyError: open3d is not installed (``vilasr_ros[geometry]``).
    """
    o3d = open3d()
    cloud, valid_fraction = box_cloud(frame, box_px, min_depth_m=min_depth_m, max_depth_m=max_depth_m, max_points=max_points)
    points = np.asarray(cloud.points)
    points = points[points[:, 2] > min_depth_m]
    if len(points) == 0:
        raise GroundingError(f"no valid depth inside box {np.round(box_px, 1).tolist()} (all zero, NaN or out of range)")
    floor_fraction = 0.0
    T = frame.T_world_camera
    world = transform_points(T, points) if T is not None else None
    if floor_z_m is not None and T is not None:
        keep = world[:, 2] > floor_z_m + floor_margin_m
        if not keep.any():
            raise GroundingError(f"only floor inside box {np.round(box_px, 1).tolist()}")
        floor_fraction = 1.0 - keep.mean()
        points, world = points[keep], world[keep]
        keep = ~background_planes(points, up=T[2, :3])  # T[2, :3]: world +z in the optical frame
        if keep.sum() >= 0.05 * len(points):
            points, world = points[keep], world[keep]
    depth = points[:, 2]
    pixel_m = float(np.median(depth)) / frame.intrinsics.fx
    eps = max(cluster_eps_m, 3.0 * pixel_m)
    labels = _voxel_dbscan(points, eps)
    groups = [np.nonzero(labels == k)[0] for k in range(int(labels.max()) + 1)] if labels.size else []
    clustered = sum(g.size for g in groups)
    if not groups:  # too few points for any cluster: take them all
        groups, clustered = [np.arange(len(points))], len(points)
    groups.sort(key=lambda g: float(np.median(depth[g])))
    big = [g for g in groups if g.size >= min_cluster_fraction * clustered]
    if min_box_span > 0 and len(big) > 1:
        K = frame.intrinsics  # pinhole pixel positions of the points (enough to measure a cluster's extent)
        u = K.fx * points[:, 0] / depth + K.cx
        v = K.fy * points[:, 1] / depth + K.cy
        x1, y1, x2, y2 = np.asarray(box_px, float)

        def spans(g: np.ndarray) -> bool:
            (u0, u1), (v0, v1) = np.percentile(u[g], [2, 98]), np.percentile(v[g], [2, 98])
            return u1 - u0 >= min_box_span * (x2 - x1) and v1 - v0 >= min_box_span * (y2 - y1)

        big = [g for g in big if spans(g)] or big
    chosen = big[0] if big else max(groups, key=len)
    z = float(np.median(depth[chosen]))
    if T is None:
        position = np.median(points[chosen], axis=0)
    else:
        position = T[:3, :3].T @ (np.median(world[chosen], axis=0) - T[:3, 3])
    mad = float(np.median(np.abs(depth[chosen] - z)))
    kept = o3d.geometry.PointCloud(o3d.utility.Vector3dVector((world if T is not None else points)[chosen]))
    return SurfaceEstimate(position, z, 1.4826 * mad, valid_fraction, chosen.size / len(points), float(floor_fraction),
                           points=np.asarray(kept.voxel_down_sample(voxel_m).points), world=T is not None)


def _voxel_dbscan(points: np.ndarray, eps: float, min_points: int = 4) -> np.ndarray:
    """DBSCAN labels (-1 = noise) of (N, 3) points, computed on the centroids of a voxel grid of
    ``eps / 3`` (each voxel's points take its label): open3d's ``cluster_dbscan`` costs grow with the
    points per neighbourhood, and a 10 cm neighbourhood holds hundreds of pixels up close."""
    o3d = open3d()
    keys = np.floor(points / (eps / 3.0)).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    centroids = np.stack([np.bincount(inverse, weights=points[:, i]) for i in range(3)], axis=1) / counts[:, None]
    labels = np.asarray(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(centroids)).cluster_dbscan(eps, min_points))
    return labels[inverse] if labels.size else np.full(len(points), -1)


def background_planes(points: np.ndarray, up: np.ndarray, *, inlier_m: float = 0.015, min_share: float = 0.15,
                      max_planes: int = 3, max_behind: float = 0.05, seed: int = 0) -> np.ndarray:
    """Mask of the points on a wall behind the object.

    Planes are found by RANSAC (Fischler & Bolles 1981; open3d ``segment_plane``), largest first,
    up to ``max_planes``, each holding at least ``min_share`` of the points. A plane is a wall when
    it is vertical (normal ⟂ ``up`` within 0.1), farther than the other points (median depth) and
    almost nothing lies behind it (at most ``max_behind`` of the others beyond it, seen from the
    camera). A face of the object itself has the rest of the object behind it (a convex object lies
    behind each visible face), so it is skipped and the search goes on in what is left.

    Args:
        points: (N, 3) optical-frame points (m); ``up``: (3,) world up in the optical frame.
        seed: open3d's RANSAC seed (results are reproducible).

    Returns:
        (N,) bool, True for wall points (all False when there is no wall).
    """
    o3d = open3d()
    n = len(points)
    wall = np.zeros(n, bool)
    if n < 50:
        return wall
    o3d.utility.random.seed(seed)
    rest = np.arange(n)
    for _ in range(max_planes):
        if rest.size < min_share * n or rest.size < 3:
            break
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[rest]))
        plane, inliers = cloud.segment_plane(inlier_m, 3, 200)
        inliers = np.asarray(inliers, dtype=int)
        if inliers.size < min_share * n:
            break
        idx = rest[inliers]
        others = np.setdiff1d(np.arange(n), np.concatenate([idx, np.nonzero(wall)[0]]))
        norm = max(float(np.linalg.norm(plane[:3])), 1e-12)
        normal, offset = np.asarray(plane[:3]) / norm, float(plane[3]) / norm
        if offset < 0:  # orient the plane so the camera (the origin) is on its positive side
            normal, offset = -normal, -offset
        behind = float(np.mean(points[others] @ normal + offset < -2 * inlier_m)) if others.size else 1.0
        if (abs(normal @ up) <= 0.1 and others.size and behind <= max_behind
                and np.median(points[idx, 2]) > np.median(points[others, 2])):
            wall[idx] = True
        rest = np.setdiff1d(rest, idx)
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
