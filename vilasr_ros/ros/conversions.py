"""numpy / core types ↔ ROS 2 messages (rclpy message classes).

Images follow ``sensor_msgs/Image`` conventions (REP-118: depth ``16UC1`` millimetres or ``32FC1``
metres, 0 or NaN = no reading); ``CameraInfo`` carries the colour intrinsics with ``k``, ``p`` and
``d`` as the realsense-ros wrapper fills them. Poses: ``T_world_base`` in ``nav_msgs/Odometry``
(``header.frame_id`` = world, ``child_frame_id`` = base), and the camera from it as
``T_world_camera = T_world_base @ T_base_camera`` (REP-105 frames; optical frame per REP-103).

Decoding (messages → numpy and core types) lives in :mod:`vilasr_ros.messages`, one decoder per
message kind for live topics and bags alike; this module only builds messages.

Byte arrays are handed to rclpy as ``array.array('B')``: the generated setters copy those with one
``memcpy`` instead of checking every element.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Vector3
from nav_msgs.msg import Odometry, Path
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from vilasr_ros.frames import CameraIntrinsics
from vilasr_ros.messages import camera_info_fields, compress_colour, compress_depth, raw_depth

__all__ = [
    "camera_info_msg", "color_msg", "compressed_color_msg", "compressed_depth_msg",
    "depth_msg", "markers_msg", "matrix_to_pose", "odometry_msg", "path_msg", "pose_stamped",
    "s_to_stamp", "transform_from_xyz_quat",
]


def s_to_stamp(t: float) -> Time:
    """Seconds → ``builtin_interfaces/Time``."""
    sec = int(np.floor(t))
    return Time(sec=sec, nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def _bytes(arr: np.ndarray) -> array.array:
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(arr).tobytes())
    return out


def color_msg(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """(H, W, 3) uint8 RGB → ``Image`` ``rgb8``."""
    h, w = rgb.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = _bytes(rgb)
    return msg


def depth_msg(depth_m: np.ndarray, stamp: Time, frame_id: str, encoding: str = "16UC1") -> Image:
    """(H, W) float32 metres → ``Image`` ``16UC1`` (mm, 0 = none) or ``32FC1`` (m, NaN kept)
    (:func:`vilasr_ros.messages.raw_depth`).

    Raises:
        ValueError: Another encoding.
    """
    data, step = raw_depth(depth_m, encoding)
    h, w = depth_m.shape
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=step)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = array.array("B", data)
    return msg


def compressed_color_msg(rgb: np.ndarray, stamp: Time, frame_id: str, codec: str = "jpeg") -> CompressedImage:
    """(H, W, 3) uint8 RGB → ``CompressedImage`` as image_transport's ``compressed`` plugin publishes it."""
    fmt, data = compress_colour(rgb, codec)
    msg = CompressedImage(format=fmt)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = data
    return msg


def compressed_depth_msg(depth_m: np.ndarray, stamp: Time, frame_id: str) -> CompressedImage:
    """(H, W) float32 metres → ``compressedDepth`` ``CompressedImage`` (16UC1 PNG, millimetres)."""
    fmt, data = compress_depth(depth_m)
    msg = CompressedImage(format=fmt)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = data
    return msg


def camera_info_msg(intr: CameraIntrinsics, stamp: Time, frame_id: str) -> CameraInfo:
    """``CameraInfo`` of ``intr`` (:func:`vilasr_ros.messages.camera_info_fields`)."""
    msg = CameraInfo(**camera_info_fields(intr))
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


def transform_from_xyz_quat(values: Sequence[float]) -> np.ndarray:
    """``[x, y, z, qx, qy, qz, qw]`` (metres, unit quaternion) → 4×4.

    Raises:
        ValueError: Not 7 finite numbers, or a zero quaternion.
    """
    v = np.asarray(values, dtype=float)
    if v.shape != (7,) or not np.isfinite(v).all() or np.linalg.norm(v[3:]) < 1e-9:
        raise ValueError(f"expected [x, y, z, qx, qy, qz, qw] with a non-zero quaternion, got {list(values)}")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(v[3:] / np.linalg.norm(v[3:])).as_matrix()
    T[:3, 3] = v[:3]
    return T


def matrix_to_pose(T: np.ndarray) -> Pose:
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    return Pose(position=Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def odometry_msg(T_world_base: np.ndarray, stamp: Time, world_frame_id: str, child_frame_id: str) -> Odometry:
    msg = Odometry(child_frame_id=child_frame_id)
    msg.header.stamp, msg.header.frame_id = stamp, world_frame_id
    msg.pose.pose = matrix_to_pose(T_world_base)
    return msg


def pose_stamped(position: Sequence[float], orientation: Sequence[float], frame_id: str, stamp: Time) -> PoseStamped:
    """Position (m) and quaternion ``(x, y, z, w)`` → ``PoseStamped``."""
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.pose.position = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
    msg.pose.orientation = Quaternion(x=float(orientation[0]), y=float(orientation[1]),
                                      z=float(orientation[2]), w=float(orientation[3]))
    return msg


def path_msg(waypoints: Sequence[Sequence[float]], frame_id: str, stamp: Time) -> Path:
    """World-frame waypoints → ``nav_msgs/Path``; each pose faces the next waypoint (yaw about z)."""
    msg = Path()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    pts = np.asarray(waypoints, dtype=float).reshape(-1, 3)
    for i, p in enumerate(pts):
        a, b = (i, i + 1) if i + 1 < len(pts) else (max(i - 1, 0), i)  # the last pose keeps the last heading
        d = pts[b] - pts[a]
        yaw = float(np.arctan2(d[1], d[0])) if np.linalg.norm(d[:2]) > 1e-9 else 0.0
        q = Rotation.from_euler("z", yaw).as_quat()
        msg.poses.append(pose_stamped(p, q, frame_id, stamp))
    return msg


def markers_msg(result: dict, stamp: Time, namespace: str = "vilasr") -> MarkerArray:
    """RViz markers for a grounding result (``GroundingResult.to_dict()``): the object (sphere,
    radius = uncertainty, min 5 cm), its label, the approach pose (arrow) and Path Tracer
    waypoints (line strip). Empty when the result has no world position."""
    out = MarkerArray()
    if not result or result.get("position_world") is None:
        return out
    frame_id = result["frame_id"]

    def marker(mid: int, mtype: int, rgba) -> Marker:
        m = Marker(ns=namespace, id=mid, type=mtype, action=Marker.ADD)
        m.header.stamp, m.header.frame_id = stamp, frame_id
        m.color = ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])
        m.pose.orientation.w = 1.0
        return m

    pos = result["position_world"]
    sphere = marker(0, Marker.SPHERE, (1.0, 0.3, 0.1, 0.8))
    sphere.pose.position = Point(x=pos[0], y=pos[1], z=pos[2])
    r = max(2 * float(result.get("uncertainty_m") or 0.0), 0.1)
    sphere.scale = Vector3(x=r, y=r, z=r)
    text = marker(1, Marker.TEXT_VIEW_FACING, (1.0, 1.0, 1.0, 1.0))
    text.pose.position = Point(x=pos[0], y=pos[1], z=pos[2] + 0.3)
    text.scale.z = 0.15
    text.text = str(result.get("label") or result.get("target"))
    out.markers += [sphere, text]
    if result.get("approach_position") is not None:
        arrow = marker(2, Marker.ARROW, (0.1, 0.9, 0.2, 0.9))
        arrow.pose = pose_stamped(result["approach_position"], result["approach_orientation"], frame_id, stamp).pose
        arrow.scale = Vector3(x=0.4, y=0.06, z=0.06)
        out.markers.append(arrow)
    if len(result.get("waypoints") or []) >= 2:
        strip = marker(3, Marker.LINE_STRIP, (0.2, 0.5, 1.0, 0.9))
        strip.scale.x = 0.03
        strip.points = [Point(x=p[0], y=p[1], z=p[2]) for p in result["waypoints"]]
        out.markers.append(strip)
    return out


def object_markers_msg(objects: list[dict], stamp: Time, namespace: str = "vilasr_memory") -> MarkerArray:
    """RViz markers of the object memory (:meth:`vilasr_ros.memory.KeyframeMemory.objects`, the last
    sighting of each label): a sphere at its position (radius 2σ of its covariance, min 5 cm) and
    ``label (seen HH:MM:SS UTC)`` above it, in each sighting's frame; ids stable per label order."""
    import datetime

    out = MarkerArray()
    latest: dict[str, dict] = {}
    for seen in objects:
        latest.setdefault(seen["label"], seen)
    for k, seen in enumerate(sorted(latest.values(), key=lambda s: s["label"])):
        x, y, z = seen["position"]
        cov = np.asarray(seen["covariance"]) if seen.get("covariance") is not None else np.zeros((3, 3))
        r = max(2 * float(np.sqrt(np.max(np.linalg.eigvalsh(cov)))), 0.1)
        sphere = Marker(ns=namespace, id=2 * k, type=Marker.SPHERE, action=Marker.ADD)
        text = Marker(ns=namespace, id=2 * k + 1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        for m in (sphere, text):
            m.header.stamp, m.header.frame_id = stamp, seen["frame_id"]
            m.pose.orientation.w = 1.0
        sphere.pose.position = Point(x=x, y=y, z=z)
        sphere.scale = Vector3(x=r, y=r, z=r)
        sphere.color = ColorRGBA(r=0.2, g=0.6, b=1.0, a=0.6)
        text.pose.position = Point(x=x, y=y, z=z + 0.3)
        text.scale.z = 0.15
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        when = datetime.datetime.fromtimestamp(seen["stamp"], datetime.timezone.utc).strftime("%H:%M:%S")
        text.text = f"{seen['label']} (seen {when} UTC)"
        out.markers += [sphere, text]
    return out


def points_msg(points: np.ndarray, frame_id: str, stamp: Time) -> PointCloud2:
    """(N, 3) points (m) → ``sensor_msgs/PointCloud2`` with float32 ``x y z`` fields, unorganised
    (height 1), dense; what ``sensor_msgs_py.point_cloud2.create_cloud_xyz32`` makes (that package is
    used when installed; it has no PyPI wheel).
    """
    header = Header(stamp=stamp, frame_id=frame_id)
    xyz = np.ascontiguousarray(np.asarray(points, dtype=np.float32).reshape(-1, 3))
    try:
        from sensor_msgs_py.point_cloud2 import create_cloud_xyz32
    except ImportError:
        fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
        return PointCloud2(header=header, height=1, width=len(xyz), fields=fields, is_bigendian=False, point_step=12,
                           row_step=12 * len(xyz), data=xyz.tobytes(), is_dense=True)
    return create_cloud_xyz32(header, xyz)
