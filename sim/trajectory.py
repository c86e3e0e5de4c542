"""Camera trajectories at robot height, as optical-frame poses ``T_world_camera`` (REP-103/105).

- ``walkthrough``: a room-scan video — the camera walks a circle around the free centre of the
  room while panning a full turn, seeing every wall once (ScanNet/ARKitScenes-style coverage).
- ``look_around``: standing at the centre, turning in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vilasr_ros_sim.scene import Scene

TRAJECTORIES = ("walkthrough", "look_around")


@dataclass(frozen=True)
class TrajectoryConfig:
    """Attributes:
    kind: ``walkthrough`` or ``look_around``.
    frames: Number of poses.
    camera_height_m: Camera height above the floor (a mobile robot's head camera), metres.
    pitch_deg: Downward tilt, degrees (positive looks down).
    walk_radius_m: Radius of the walkthrough circle, metres (kept inside the scene's free circle).
    start_yaw: First viewing direction (rad, from +x, counter-clockwise).
    """

    kind: str = "walkthrough"
    frames: int = 16
    camera_height_m: float = 1.1
    pitch_deg: float = 12.0
    walk_radius_m: float = 0.45
    start_yaw: float = 0.0

    def __post_init__(self):
        if self.kind not in TRAJECTORIES:
            raise ValueError(f"kind must be one of {TRAJECTORIES}, got {self.kind!r}")
        if self.frames < 1:
            raise ValueError("frames must be >= 1")
        if not 0.2 <= self.camera_height_m <= 2.0:
            raise ValueError("camera_height_m must be within [0.2, 2.0] m")


def look_at_pose(position, yaw: float, pitch: float) -> np.ndarray:
    """Optical-frame pose (4×4) at ``position`` (m) looking along ``yaw`` (rad, about +z) tilted down by ``pitch`` (rad).

    Columns of the rotation: x right, y down, z forward (REP-103 optical convention).
    """
    forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([right, down, forward])
    T[:3, 3] = position
    return T


def trajectory(scene: Scene, config: TrajectoryConfig | None = None) -> list[np.ndarray]:
    """Camera poses for ``scene`` (list of 4×4 ``T_world_camera``, optical frame, world ``map``).

    Raises:
        ValueError: The walk circle does not fit in the scene's free circle.
    """
    config = config or TrajectoryConfig()
    c = np.asarray(scene.clear_centre, float)
    pitch = math.radians(config.pitch_deg)
    poses = []
    if config.kind == "walkthrough" and config.walk_radius_m > scene.clear_radius_m - 0.3:
        raise ValueError(f"walk_radius_m {config.walk_radius_m} leaves under 0.3 m of the {scene.clear_radius_m} m free circle")
    for i in range(config.frames):
        yaw = config.start_yaw + 2.0 * math.pi * i / config.frames
        if config.kind == "walkthrough":
            # Walk behind the centre while looking outwards across it: longer sight lines, more of the room per frame.
            xy = c - config.walk_radius_m * np.array([math.cos(yaw), math.sin(yaw)])
        else:
            xy = c
        poses.append(look_at_pose([xy[0], xy[1], config.camera_height_m], yaw, pitch))
    return poses
