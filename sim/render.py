"""Headless MuJoCo rendering of a scene: RGB, metric depth and per-object segmentation.

Set ``MUJOCO_GL`` (``egl`` or ``osmesa``) before MuJoCo is imported; :func:`ensure_headless_gl`
does that (``egl`` unless the variable is already set) and is called here before ``import mujoco``.

Camera model (MuJoCo's ``mjr_render`` with a ``fovy`` camera): pinhole, square pixels,
``fy = fx = (H / 2) / tan(fovy / 2)``, principal point at ((W − 1) / 2, (H − 1) / 2) in pixel-index
coordinates (pixel centres at integers: OpenGL's image centre W/2 lies between pixels). MuJoCo's
camera looks along its −z with +y up; the optical frame (REP-103 ``*_optical_frame``: z forward,
x right, y down) is that frame rotated by π about x. Depth is the renderer's linearised z-buffer:
distance along the optical axis, metres.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from vilasr_ros.frames import CameraIntrinsics, Frame
from vilasr_ros_sim.scene import Scene, to_mjcf

R_MJCAM_OPTICAL = np.diag([1.0, -1.0, -1.0])  # optical axes expressed in MuJoCo camera axes


def ensure_headless_gl() -> str:
    """Pick a headless OpenGL backend for MuJoCo (``MUJOCO_GL``, default ``egl``); returns it."""
    return os.environ.setdefault("MUJOCO_GL", "egl")


@dataclass(frozen=True)
class RenderConfig:
    """Attributes:
    width, height: Image size, pixels.
    fovy_deg: Vertical field of view, degrees (60° at 640×480 ≈ a RealSense D435 colour stream crop).
    shadows: Shadow mapping on or off.
    """

    width: int = 640
    height: int = 480
    fovy_deg: float = 60.0
    shadows: bool = True

    def __post_init__(self):
        if self.width < 16 or self.height < 16:
            raise ValueError("width and height must be at least 16 pixels")
        if not 10.0 <= self.fovy_deg <= 150.0:
            raise ValueError("fovy_deg must be within [10, 150] degrees")

    def intrinsics(self) -> CameraIntrinsics:
        """Exact pinhole intrinsics of the rendered images (no distortion)."""
        f = (self.height / 2.0) / math.tan(math.radians(self.fovy_deg) / 2.0)
        return CameraIntrinsics(self.width, self.height, f, f, (self.width - 1) / 2.0, (self.height - 1) / 2.0,
                                "plumb_bob", (0.0, 0.0, 0.0, 0.0, 0.0))


@dataclass
class RenderedView:
    """One rendered view.

    Attributes:
        rgb: (H, W, 3) uint8.
        depth_m: (H, W) float32, metres along the optical axis (0 where nothing was hit).
        instance: (H, W) int32 object instance id per pixel (0 = room shell or nothing).
        T_world_camera: 4×4 optical-frame camera pose in the world.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    instance: np.ndarray
    T_world_camera: np.ndarray


class SceneRenderer:
    """Renders one :class:`~vilasr_ros_sim.scene.Scene`; use as a context manager (frees the GL context).

    Raises:
        ImportError: MuJoCo is not installed (``pip install vilasr_ros[sim]``).
    """

    def __init__(self, scene: Scene, config: RenderConfig | None = None):
        ensure_headless_gl()
        from vilasr_ros.errors import require

        mujoco = require("mujoco", "sim")

        self._mj = mujoco
        self.scene = scene
        self.config = config or RenderConfig()
        self.model = mujoco.MjModel.from_xml_string(to_mjcf(scene, self.config.width, self.config.height))
        self.model.cam_fovy[0] = self.config.fovy_deg
        self.data = mujoco.MjData(self.model)
        self._renderer = mujoco.Renderer(self.model, self.config.height, self.config.width)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(self.config.shadows)
        lut = np.zeros(self.model.ngeom + 1, np.int32)  # index geom id + 1 (−1 = background)
        for g in range(self.model.ngeom):
            name = mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_GEOM, g) or ""
            if name.startswith("obj"):
                lut[g + 1] = int(name[3:].split("_")[0])
        self._instance_lut = lut

    def render(self, T_world_camera: np.ndarray, rgb: bool = True, depth: bool = True, segmentation: bool = True) -> RenderedView:
        """Render from an optical-frame pose (4×4, world ← optical camera).

        Returns:
            A :class:`RenderedView`; passes not asked for hold zeros.
        """
        mj, r = self._mj, self._renderer
        T = np.asarray(T_world_camera, float)
        quat = np.zeros(4)
        mj.mju_mat2Quat(quat, (T[:3, :3] @ R_MJCAM_OPTICAL).flatten())
        self.model.cam_pos[0] = T[:3, 3]
        self.model.cam_quat[0] = quat
        mj.mj_kinematics(self.model, self.data)
        mj.mj_camlight(self.model, self.data)
        h, w = self.config.height, self.config.width
        image = np.zeros((h, w, 3), np.uint8)
        depth_m = np.zeros((h, w), np.float32)
        instance = np.zeros((h, w), np.int32)
        if rgb:
            r.disable_depth_rendering()
            r.disable_segmentation_rendering()
            r.update_scene(self.data, camera=0)
            r.scene.flags[mj.mjtRndFlag.mjRND_SHADOW] = bool(self.config.shadows)
            image = r.render().copy()
        if depth:
            r.disable_segmentation_rendering()
            r.enable_depth_rendering()
            r.update_scene(self.data, camera=0)
            depth_m = r.render().astype(np.float32)
            r.disable_depth_rendering()
            depth_m[depth_m >= self.model.vis.map.zfar * self.model.stat.extent * 0.999] = 0.0
        if segmentation:
            r.disable_depth_rendering()
            r.enable_segmentation_rendering()
            r.update_scene(self.data, camera=0)
            seg = r.render()
            r.disable_segmentation_rendering()
            ids = np.where(seg[..., 1] == int(mj.mjtObj.mjOBJ_GEOM), seg[..., 0], -1)
            instance = self._instance_lut[ids + 1]
        return RenderedView(image, depth_m, instance, T)

    def frame(self, T_world_camera: np.ndarray, index: int = 0, stamp_s: float = 0.0, source_id: str = "") -> Frame:
        """Render RGB + depth into a :class:`vilasr_ros.frames.Frame` (world frame ``map``)."""
        view = self.render(T_world_camera, segmentation=False)
        return Frame(view.rgb, view.depth_m, self.config.intrinsics(), view.T_world_camera, stamp_s,
                     "sim_camera_optical_frame", "map", source_id, index)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "SceneRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
