"""Camera frames as the core sees them: RGB, metric depth, pinhole intrinsics, pose, stamp.

Frames follow REP-103/105: ``T_world_camera`` maps points from the camera *optical* frame
(x right, y down, z forward) to the world frame (``map`` or ``odom``, z up); intrinsics have
``sensor_msgs/CameraInfo`` semantics (K, distortion model and coefficients D).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vilasr_ros.errors import VilasrError


class FrameError(VilasrError, ValueError):
    """A frame that cannot be used: shapes, dtypes, sizes or pose are wrong."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics with distortion (``sensor_msgs/CameraInfo`` semantics).

    Attributes:
        width: Image width in pixels.
        height: Image height in pixels.
        fx, fy: Focal lengths in pixels.
        cx, cy: Principal point in pixels (origin at the top-left pixel's centre, OpenCV convention).
        distortion_model: ``plumb_bob`` (OpenCV k1 k2 p1 p2 k3) or ``rational_polynomial``.
        D: Distortion coefficients; all-zero coefficients are stored as ``()`` (rectified).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    D: tuple[float, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "D", tuple(float(d) for d in self.D) if any(self.D) else ())
        if self.width < 1 or self.height < 1:
            raise FrameError(f"intrinsics size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0) or not np.isfinite([self.fx, self.fy, self.cx, self.cy]).all():
            raise FrameError(f"focal lengths must be positive and finite, got fx={self.fx} fy={self.fy}")

    @property
    def K(self) -> np.ndarray:
        """3×3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        return any(abs(d) > 0 for d in self.D)

    @classmethod
    def from_K(cls, K, width: int, height: int, D=(), distortion_model: str = "plumb_bob") -> "CameraIntrinsics":
        """From a 3×3 matrix (or CameraInfo's row-major 9-list ``k``)."""
        K = np.asarray(K, dtype=float).reshape(3, 3)
        return cls(int(width), int(height), float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   distortion_model, tuple(float(d) for d in D))


def check_pose(T: np.ndarray, what: str = "T_world_camera") -> np.ndarray:
    """Validate a 4×4 rigid transform; returns it as float64.

    Raises:
        FrameError: Wrong shape, non-finite, last row not [0 0 0 1], or rotation not orthonormal
            (not invertible as a rigid transform).
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise FrameError(f"{what} must be a finite 4x4 matrix, got shape {T.shape}")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-9):
        raise FrameError(f"{what} last row must be [0 0 0 1], got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or abs(np.linalg.det(R) - 1) > 1e-4:
        raise FrameError(f"{what} rotation is not a proper rotation (det {np.linalg.det(R):.4f})")
    return T


WORLD_UP = ("z", "unknown")
"""Up axes a frame's world may state (:attr:`Frame.world_up`)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One RGB-D frame.

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        depth_m: (H, W) float32 depth in metres registered to ``rgb``; 0 or NaN = no reading; None
            when the source has no depth.
        intrinsics: Intrinsics of ``rgb`` (and of ``depth_m``, which is registered to it).
        T_world_camera: 4×4 pose of the optical frame in the world frame, or None when unknown.
        stamp_s: Capture time in seconds (ROS time when from ROS).
        frame_id: Optical frame id (``camera_color_optical_frame``).
        world_frame_id: Frame ``T_world_camera`` is expressed in (``map``/``odom``).
        source_id: Which source produced it (``rgbd_folder:...``).
        index: Position in the source's order.
        world_up: The world frame's up axis: ``"z"`` (REP-103 ``map``/``odom``, the sim, ROS topics and
            bags) or ``"unknown"`` (an RGB-D folder whose world is its first camera, e.g. 3DMatch /
            Redwood, unless its ``rgbd.json`` says ``"world_up": "z"``). Floor removal needs ``"z"``.

    Raises:
        FrameError: Wrong dtype/shape, depth/colour size mismatch, intrinsics of another size, or a
            pose that is not a rigid transform.
    """

    rgb: np.ndarray
    depth_m: np.ndarray | None
    intrinsics: CameraIntrinsics
    T_world_camera: np.ndarray | None = None
    stamp_s: float = 0.0
    frame_id: str = "camera_color_optical_frame"
    world_frame_id: str = "map"
    source_id: str = ""
    index: int = 0
    world_up: str = "z"

    def __post_init__(self):
        if self.world_up not in WORLD_UP:
            raise FrameError(f"world_up must be one of {', '.join(WORLD_UP)}, got {self.world_up!r}")
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise FrameError(f"rgb must be (H, W, 3) uint8, got {getattr(rgb, 'shape', None)} {getattr(rgb, 'dtype', type(rgb))}")
        h, w = rgb.shape[:2]
        if (self.intrinsics.width, self.intrinsics.height) != (w, h):
            raise FrameError(
                f"intrinsics are for {self.intrinsics.width}x{self.intrinsics.height} but rgb is {w}x{h}"
            )
        if self.depth_m is not None:
            depth = self.depth_m
            if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.dtype != np.float32:
                raise FrameError(f"depth_m must be (H, W) float32 metres, got {getattr(depth, 'shape', None)} {getattr(depth, 'dtype', None)}")
            if depth.shape != (h, w):
                raise FrameError(f"depth is {depth.shape[1]}x{depth.shape[0]} but rgb is {w}x{h}: register depth to colour first")
        if self.T_world_camera is not None:
            object.__setattr__(self, "T_world_camera", check_pose(self.T_world_camera))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.shape[1], self.rgb.shape[0]

    def record(self) -> dict:
        """JSON-ready description (no pixels): ``index, stamp_s, source_id, frame_id, world_frame_id,
        intrinsics`` (width, height, fx, fy, cx, cy, distortion model and D) and ``T_world_camera``
        (4×4 nested list, or None); what a trace keeps of its input frames."""
        K = self.intrinsics
        T = self.T_world_camera
        return {"index": self.index, "stamp_s": self.stamp_s, "source_id": self.source_id, "frame_id": self.frame_id,
                "world_frame_id": self.world_frame_id, "world_up": self.world_up,
                "intrinsics": {"width": K.width, "height": K.height, "fx": K.fx, "fy": K.fy, "cx": K.cx, "cy": K.cy,
                               "distortion_model": K.distortion_model, "D": list(K.D)},
                "T_world_camera": None if T is None else np.round(T, 9).tolist()}

    @property
    def nbytes(self) -> int:
        return self.rgb.nbytes + (self.depth_m.nbytes if self.depth_m is not None else 0)

    def image(self):
        """The colour image as an RGB ``PIL.Image``."""
        from PIL import Image

        return Image.fromarray(self.rgb, "RGB")


def depth_to_metres(depth: np.ndarray, depth_scale: float) -> np.ndarray:
    """uint16 depth units → float32 metres (0 stays 0 = no reading).

    Args:
        depth: (H, W) integer depth.
        depth_scale: Units per metre (1000 for millimetres, 5000 for TUM).
    """
    if depth_scale <= 0:
        raise FrameError(f"depth_scale must be positive, got {depth_scale}")
    return (np.asarray(depth).astype(np.float32) / np.float32(depth_scale)).astype(np.float32)
