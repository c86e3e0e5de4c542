"""``rgbd_folder:PATH`` — colour/depth image folders with Open3D intrinsics and an optional pose log.

Layout (``test/data/rgbd/README.md``): ``color/NNNNN.(jpg|png)``, ``depth/NNNNN.png`` (uint16,
metres = value / depth_scale), ``camera_intrinsic.json`` (Open3D ``PinholeCameraIntrinsic``,
column-major ``intrinsic_matrix``), ``rgbd.json`` (``depth_scale``, optional ``pose_file``, optional ``world_up``: ``"z"`` when the
poses' world is z-up, else ``"unknown"``, the default — floor removal then does not run) and
optionally ``trajectory.log`` (Open3D log: ``i j k`` then a 4×4 camera-to-world matrix per frame).

Bad files: metadata that cannot be read (JSON, a short intrinsic matrix, a ``pose_file`` outside
the folder, a malformed pose) is one :class:`SourceError` naming the file and what is wrong; a colour
or depth image that cannot be decoded is skipped, logged with its name and kept in ``skipped`` —
one corrupt file must not stop a camera replaying the rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.errors import ConfigError, ImageError
from vilasr_ros.frames import WORLD_UP, CameraIntrinsics, Frame, FrameError, check_pose, depth_to_metres
from vilasr_ros.images import open_image
from vilasr_ros.sanitize import is_inside
from vilasr_ros.sources.base import FrameSource, SourceError

logger = logging.getLogger(__name__)

PLAYBACK_SPEED_MPS = 1.0
PLAYBACK_TURN_DEG_S = 90.0
"""A recorded sequence is replayed no faster than walking pace between its frames."""

def read_open3d_log(path: Path) -> list[np.ndarray]:
    """Poses from an Open3D ``.log`` trajectory (camera-to-world 4×4, one per frame).

    Raises:
        SourceError: Malformed file.
    """
    try:
        rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read the pose log: {exc}") from exc
    if len(rows) % 5:
        raise SourceError(f"{path}: expected blocks of 5 lines (header + 4x4), got {len(rows)} lines")
    poses = []
    for b in range(0, len(rows), 5):
        try:
            poses.append(check_pose(np.array([[float(v) for v in row] for row in rows[b + 1 : b + 5]]),
                                    f"pose {b // 5}"))
        except (ValueError, FrameError) as exc:
            raise SourceError(f"{path}: bad matrix in block {b // 5}: {exc}") from exc
    return poses


def read_open3d_intrinsics(path: Path) -> CameraIntrinsics:
    """Open3D ``PinholeCameraIntrinsic`` JSON (column-major ``intrinsic_matrix``).

    Raises:
        SourceError: Unreadable, not JSON, or not a width, height and 9-number matrix.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        m = data["intrinsic_matrix"]  # column-major
        if not isinstance(m, list) or len(m) != 9:
            raise ValueError(f"intrinsic_matrix must hold 9 numbers (column-major 3x3), got {m!r}"[:200])
        return CameraIntrinsics(int(data["width"]), int(data["height"]), float(m[0]), float(m[4]), float(m[6]),
                                float(m[7]))
    except (OSError, KeyError, TypeError, ValueError, FrameError) as exc:
        raise SourceError(f"{path}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class RGBDFolderConfig:
    """Settings of an ``rgbd_folder:PATH`` source.

    Attributes:
        path: The folder (layout in the module docstring).
        frame_rate_hz: Stamps are ``index / frame_rate_hz`` (s).
        world_frame_id: The frame the poses are in.
    """

    path: str | Path = ""
    frame_rate_hz: float = 30.0
    world_frame_id: str = "map"

    def __post_init__(self):
        if not str(self.path):
            raise ConfigError("rgbd_folder needs a folder: rgbd_folder:PATH")
        if not self.frame_rate_hz > 0:
            raise ConfigError(f"frame_rate_hz must be > 0, got {self.frame_rate_hz}")


class RGBDFolderSource(FrameSource):
    """Frames from an RGB-D folder, in file-name order.

    Args:
        path: The folder.
        frame_rate_hz: Stamps are ``index / frame_rate_hz`` (folders carry no times).
        world_frame_id: Frame the poses are in.

    Raises:
        SourceError: Missing folder, intrinsics or depth scale; colour/depth/pose counts differ.
    """

    config_class = RGBDFolderConfig
    primary_option = "path"

    def __init__(self, config: RGBDFolderConfig | str | Path | None = None, /, **options: Any):
        self.config = cfg = self.resolve_config(config, options)
        frame_rate_hz, world_frame_id = cfg.frame_rate_hz, cfg.world_frame_id
        self.root = Path(cfg.path)
        self.source_id = f"rgbd_folder:{self.root}"
        if not (self.root / "color").is_dir():
            raise SourceError(f"{self.root} has no color/ folder (layout: shared/data/rgbd/README.md)")
        try:
            meta = json.loads((self.root / "rgbd.json").read_text(encoding="utf-8"))
            self.depth_scale = float(meta["depth_scale"])
            if not self.depth_scale > 0:
                raise ValueError(f"depth_scale must be > 0, got {self.depth_scale}")
            self.world_up = str(meta.get("world_up", "unknown"))
            if self.world_up not in WORLD_UP:
                raise ValueError(f"world_up must be one of {', '.join(WORLD_UP)}, got {self.world_up!r}")
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"{self.root / 'rgbd.json'}: {type(exc).__name__}: {exc}") from exc
        self.intrinsics = read_open3d_intrinsics(self.root / "camera_intrinsic.json")
        self.colors = sorted(p for p in (self.root / "color").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.colors:
            raise SourceError(f"{self.root}/color has no images")
        depth_dir = self.root / "depth"
        self.depths = [depth_dir / (p.stem + ".png") for p in self.colors] if depth_dir.is_dir() else None
        if self.depths is not None and not all(p.exists() for p in self.depths):
            missing = [p.name for p in self.depths if not p.exists()]
            raise SourceError(f"{self.root}: depth images missing for {missing[:5]}")
        pose_file = meta.get("pose_file")
        if pose_file is not None and (not isinstance(pose_file, str) or not is_inside(self.root, self.root / pose_file)):
            raise SourceError(f"{self.root / 'rgbd.json'}: pose_file {pose_file!r} must be a file inside the folder")
        self.poses = read_open3d_log(self.root / pose_file) if pose_file else None
        if self.poses is not None and len(self.poses) < len(self.colors):
            raise SourceError(f"{self.root}: {len(self.poses)} poses for {len(self.colors)} frames")
        self.frame_rate_hz = frame_rate_hz
        self.world_frame_id = world_frame_id
        self.skipped = []
        self.playback_rate_hz = self._playback_rate()

    def _playback_rate(self) -> float | None:
        """Hz at which consecutive poses imply at most walking pace (None without poses)."""
        if not self.poses or len(self.poses) < 2:
            return None
        P = np.stack(self.poses[: len(self.colors)])
        step_m = np.linalg.norm(np.diff(P[:, :3, 3], axis=0), axis=1)
        cos = np.clip((np.einsum("nij,nij->n", P[:-1, :3, :3], P[1:, :3, :3]) - 1.0) / 2.0, -1.0, 1.0)
        step_deg = np.degrees(np.arccos(cos))
        worst = max(float(np.max(step_m)) / PLAYBACK_SPEED_MPS, float(np.max(step_deg)) / PLAYBACK_TURN_DEG_S)
        return None if worst <= 0 else 1.0 / worst

    def __len__(self) -> int:
        return len(self.colors)

    def __iter__(self) -> Iterator[Frame]:
        for i, color_path in enumerate(self.colors):
            try:
                frame = self._frame(i, color_path)
            except (OSError, SyntaxError, ValueError, FrameError) as exc:  # PIL raises all of these
                reason = f"{color_path.name}: {type(exc).__name__}: {exc}"
                logger.warning("%s: skipping frame %d (%s)", self.root, i, reason)
                self.skipped.append(reason)
                continue
            yield frame

    def _frame(self, i: int, color_path: Path) -> Frame:
        # Headers are checked against the pixel budget before decoding (vilasr_ros.images).
        rgb = np.asarray(open_image(color_path, name=color_path.name).convert("RGB"))
        depth = None
        if self.depths is not None:
            try:
                raw = np.asarray(open_image(self.depths[i], name=self.depths[i].name))
            except ImageError as exc:
                raise OSError(f"depth {exc}") from exc
            if raw.ndim != 2:
                raise ValueError(f"depth {self.depths[i].name} must be one channel, got shape {raw.shape}")
            depth = depth_to_metres(raw, self.depth_scale)
        return Frame(
            rgb=rgb,
            depth_m=depth,
            intrinsics=self.intrinsics,
            T_world_camera=self.poses[i] if self.poses is not None else None,
            stamp_s=i / self.frame_rate_hz,
            world_up=self.world_up,
            world_frame_id=self.world_frame_id,
            source_id=self.source_id,
            index=i,
        )
