"""Sensor messages → the core's types, one implementation for live topics and bags.

Works on the message objects of rclpy (``sensor_msgs.msg.Image``, ...) and of rosbags (the same
field names), so a bag and the live topics it was recorded from decode identically:

- ``sensor_msgs/Image``: colour rgb8, bgr8, rgba8, bgra8, mono8; depth 16UC1 (millimetres), mono16,
  32FC1 (metres) with ``is_bigendian`` honoured (and refused when the bytes clearly say otherwise);
  rows padded to ``step`` allowed.
- ``sensor_msgs/CompressedImage``: colour ``jpeg``/``png`` (image_transport's ``compressed``); depth
  ``16UC1; compressedDepth png`` / ``32FC1; compressedDepth png`` (``compressed_depth_image_transport``:
  a 12-byte ``ConfigHeader`` — format, depthQuantA, depthQuantB — then PNG; 32FC1 inverse-depth
  quantised as ``depth = A / (v - B)``).
- ``sensor_msgs/CameraInfo`` → :class:`~vilasr_ros.frames.CameraIntrinsics`.
- ``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped``, ``geometry_msgs/PoseWithCovarianceStamped``
  → ``(stamp_s, T, frame_id)``; every quaternion goes through SciPy's ``Rotation`` (x, y, z, w).

Every decoder raises :class:`~vilasr_ros.errors.MessageError` (a ``ValueError``) for data it cannot use.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from vilasr_ros.frames import CameraIntrinsics
from vilasr_ros.images import open_image
from vilasr_ros.errors import ImageError, MessageError

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_WITH_COVARIANCE = "geometry_msgs/msg/PoseWithCovarianceStamped"
COLOR_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def message_kind(msg) -> str:
    """The ROS type name of a message object (rclpy or rosbags), from its fields."""
    if hasattr(msg, "format") and hasattr(msg, "data") and not hasattr(msg, "encoding"):
        return COMPRESSED
    if hasattr(msg, "encoding"):
        return IMAGE
    if hasattr(msg, "k") and hasattr(msg, "distortion_model"):
        return CAMERA_INFO
    if hasattr(msg, "child_frame_id") and hasattr(msg, "twist"):
        return ODOMETRY
    pose = getattr(msg, "pose", None)
    if pose is not None and hasattr(pose, "covariance"):
        return POSE_WITH_COVARIANCE
    if pose is not None:
        return POSE_STAMPED
    raise MessageError(f"not a sensor message this package reads: {type(msg).__name__}")


def stamp_s(header) -> float:
    """``std_msgs/Header`` stamp → seconds (float)."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def pose_to_matrix(pose) -> np.ndarray:
    """``geometry_msgs/Pose`` (position m, quaternion x y z w) → 4×4 ``T_parent_child``.

    Raises:
        MessageError: A coordinate that is not finite, or a zero quaternion.
    """
    from scipy.spatial.transform import Rotation

    q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w], float)
    p = np.array([pose.position.x, pose.position.y, pose.position.z], float)
    if not (np.isfinite(q).all() and np.isfinite(p).all()) or np.linalg.norm(q) < 1e-9:
        raise MessageError("pose is not finite or has a zero quaternion")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q).as_matrix()  # normalises
    T[:3, 3] = p
    return T


def decode_color(msg, msgtype: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an Image or CompressedImage message.

    Raises:
        MessageError: Unknown encoding or undecodable data.
    """
    if (msgtype or message_kind(msg)) == COMPRESSED:
        try:
            return np.asarray(open_image(bytes(msg.data), name=f"compressed colour image ({msg.format})").convert("RGB"))
        except ImageError as exc:  # not an image, truncated, or over the pixel budget (checked before decoding)
            raise MessageError(str(exc)) from exc
    enc = msg.encoding
    if enc not in COLOR_ENCODINGS:
        raise MessageError(f"unsupported colour encoding {enc!r}; use one of {', '.join(COLOR_ENCODINGS)}")
    ch = COLOR_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = bytes(msg.data)
    if step < w * ch or len(data) < h * step or h < 1 or w < 1:
        raise MessageError(f"{enc} image {w}x{h} with step {step} needs {h * step} bytes, got {len(data)}")
    rows = np.frombuffer(data[: h * step], dtype=np.uint8).reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc == "mono8":
        return np.repeat(rows, 3, axis=2)
    if enc.startswith("bgr"):
        rows = rows[:, :, [2, 1, 0]]
    return np.ascontiguousarray(rows[:, :, :3])


def decode_depth(msg, msgtype: str | None = None) -> np.ndarray:
    """(H, W) float32 metres from a 16UC1/32FC1 Image or a compressedDepth CompressedImage.

    Raises:
        MessageError: Unknown encoding or format.
    """
    if (msgtype or message_kind(msg)) == COMPRESSED:
        fmt = msg.format
        raw = bytes(msg.data)
        if "compressedDepth" not in fmt or len(raw) < 12:
            raise MessageError(f"unsupported compressed depth format {fmt!r} (expected '16UC1; compressedDepth png')")
        _, quant_a, quant_b = struct.unpack("<iff", raw[:12])
        try:
            image = open_image(raw[12:], name="compressedDepth PNG")
        except ImageError as exc:  # not an image, truncated, or over the pixel budget (checked before decoding)
            raise MessageError(str(exc)) from exc
        # The content must be what the header declares: one 16-bit channel (an 8-bit PNG read as
        # millimetres would put every object within 0.255 m).
        if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise MessageError(f"compressedDepth declares {fmt.split(';')[0]} but its PNG is {image.mode} "
                               f"({'8-bit' if image.mode in ('L', 'P', 'RGB', 'RGBA', 'LA') else image.mode}); frame dropped")
        values = np.asarray(image)
        if fmt.startswith("16UC1") or fmt.startswith("mono16"):
            return (values.astype(np.float32) / np.float32(1000.0)).astype(np.float32)
        if fmt.startswith("32FC1"):
            v = values.astype(np.float32)
            with np.errstate(divide="ignore"):
                depth = np.where(v > 0, quant_a / (v - quant_b), 0.0)
            return depth.astype(np.float32)
        raise MessageError(f"unsupported compressedDepth encoding {fmt!r}")
    enc = msg.encoding
    data = bytes(msg.data)
    big = bool(msg.is_bigendian)
    if enc in ("16UC1", "mono16"):
        arr = _rows(data, ">u2" if big else "<u2", msg, 2)
        _check_byte_order(arr.astype(np.float32) / 1000.0, arr.byteswap().astype(np.float32) / 1000.0, big)
        return (arr.astype(np.float32) / np.float32(1000.0)).astype(np.float32)
    if enc == "32FC1":
        arr = _rows(data, ">f4" if big else "<f4", msg, 4)
        with np.errstate(all="ignore"):
            _check_byte_order(arr.astype(np.float32), arr.byteswap().astype(np.float32), big)
        return np.ascontiguousarray(arr.astype(np.float32))
    raise MessageError(f"unsupported depth encoding {enc!r}; use 16UC1 (mm) or 32FC1 (m)")


def _rows(data: bytes, dtype: str, msg, itemsize: int) -> np.ndarray:
    """(height, width) values of an Image's data honouring ``step`` (row padding).

    Raises:
        MessageError: ``data`` is shorter than ``height * step`` or ``step`` is shorter than a row.
    """
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if step < w * itemsize or len(data) < h * step or h < 1 or w < 1:
        raise MessageError(f"{msg.encoding} image {w}x{h} with step {step} needs {h * step} bytes, got {len(data)}")
    return np.frombuffer(data[: h * step], dtype=dtype).reshape(h, step // itemsize)[:, :w]


def _plausible(depth_m: np.ndarray) -> float:
    """Share of non-zero readings between 5 cm and 30 m (what any RGB-D camera reports)."""
    d = depth_m[::4, ::4]
    nonzero = np.isfinite(d) & (d != 0)
    n = int(nonzero.sum())
    return float(((d > 0.05) & (d < 30.0) & nonzero).sum() / n) if n else 1.0


def _check_byte_order(as_flagged: np.ndarray, swapped: np.ndarray, big: bool) -> None:
    """Refuse depth whose bytes are in the other order than ``is_bigendian`` says: decoded as
    flagged it is mostly implausible, swapped it is mostly plausible (a driver bug that otherwise
    moves targets silently)."""
    flagged, other = _plausible(as_flagged), _plausible(swapped)
    if flagged < 0.5 and other >= 0.5 and other > 2 * flagged:
        raise MessageError(
            f"depth byte order: is_bigendian={int(big)} but the data reads as {'little' if big else 'big'}-endian "
            f"({100 * flagged:.0f}% of readings plausible as flagged, {100 * other:.0f}% swapped); frame dropped")


def intrinsics_from_camera_info(msg) -> CameraIntrinsics:
    """``sensor_msgs/CameraInfo`` → :class:`~vilasr_ros.frames.CameraIntrinsics` (``k`` row-major 3×3, ``d``).

    Raises:
        FrameError: A zero or invalid ``k`` (an uncalibrated camera) or a bad size.
    """
    return CameraIntrinsics.from_K(list(msg.k), msg.width, msg.height, D=tuple(msg.d),
                                   distortion_model=msg.distortion_model or "plumb_bob")


def pose_from_message(msg) -> tuple[float, np.ndarray, str]:
    """``(stamp_s, T, frame_id)`` of an Odometry, PoseStamped or PoseWithCovarianceStamped: ``T`` is
    the pose of the child (Odometry ``child_frame_id``, e.g. ``base_link``) in ``header.frame_id``.

    Raises:
        MessageError: Not a pose message, or a pose that is not finite / a zero quaternion.
    """
    kind = message_kind(msg)
    if kind == ODOMETRY or kind == POSE_WITH_COVARIANCE:
        pose = msg.pose.pose
    elif kind == POSE_STAMPED:
        pose = msg.pose
    else:
        raise MessageError(f"{kind} carries no pose")
    try:
        T = pose_to_matrix(pose)
    except MessageError as exc:
        raise MessageError(f"{kind.rsplit('/', 1)[-1]} {exc}") from None
    return stamp_s(msg.header), T, msg.header.frame_id


def pose_covariance(msg) -> np.ndarray | None:
    """The 36 covariance values (row-major 6×6: x y z, rotation about x y z; m², rad²) of a
    ``PoseWithCovarianceStamped`` or an ``Odometry`` pose; None for messages without one."""
    pose = getattr(msg, "pose", None)
    cov = getattr(pose, "covariance", None)
    return None if cov is None else np.asarray(cov, dtype=float)


# ----------------------------------------------------------------------------- encoding (the other way)


def compress_colour(rgb: np.ndarray, codec: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """(H, W, 3) uint8 RGB → ``(format, data)`` of a ``sensor_msgs/CompressedImage`` as image_transport's
    ``compressed`` plugin writes it (``"rgb8; jpeg compressed rgb8"``).

    Raises:
        ValueError: ``codec`` is not ``jpeg`` or ``png``.
    """
    from PIL import Image

    if codec not in ("jpeg", "png"):
        raise ValueError(f"compressed colour is jpeg or png, got {codec!r}")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=codec.upper(), **({"quality": quality} if codec == "jpeg" else {}))
    return f"rgb8; {codec} compressed rgb8", buf.getvalue()


def raw_depth(depth_m: np.ndarray, encoding: str = "16UC1") -> tuple[bytes, int]:
    """(H, W) float32 metres → ``(data, step)`` of a little-endian ``sensor_msgs/Image``: ``16UC1``
    millimetres (NaN and no reading → 0, clipped to 65535) or ``32FC1`` metres (NaN kept) — REP-118.

    Raises:
        ValueError: Another encoding.
    """
    w = depth_m.shape[1]
    if encoding == "16UC1":
        return np.clip(np.round(np.nan_to_num(depth_m, nan=0.0) * 1000.0), 0, 65535).astype("<u2").tobytes(), w * 2
    if encoding == "32FC1":
        return depth_m.astype("<f4").tobytes(), w * 4
    raise ValueError(f"depth encoding must be 16UC1 or 32FC1, got {encoding!r}")


def camera_info_fields(intr: CameraIntrinsics) -> dict[str, Any]:
    """The ``sensor_msgs/CameraInfo`` fields of ``intr`` (a rectified pinhole: ``R`` identity, ``P`` =
    ``[K | 0]``; no distortion → five zeros), as flat lists for either message library."""
    P = np.zeros((3, 4))
    P[:3, :3] = intr.K
    return {"height": intr.height, "width": intr.width, "distortion_model": intr.distortion_model,
            "d": [float(x) for x in intr.D] or [0.0] * 5, "k": intr.K.reshape(-1).tolist(),
            "r": np.eye(3).reshape(-1).tolist(), "p": P.reshape(-1).tolist()}


def compress_depth(depth_m: np.ndarray) -> tuple[str, bytes]:
    """(H, W) float32 metres → ``(format, data)`` of a ``compressedDepth`` CompressedImage (16UC1
    millimetres as PNG behind compressed_depth_image_transport's 12-byte ``ConfigHeader``): lossless to
    the millimetre, NaN → 0 (no reading)."""
    from PIL import Image

    mm = np.clip(np.round(np.nan_to_num(depth_m, nan=0.0) * 1000.0), 0, 65535).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(mm).save(buf, format="PNG")
    return "16UC1; compressedDepth png", struct.pack("<iff", 0, 0.0, 0.0) + buf.getvalue()
