"""``rgbd_folder:PATH`` — colour/depth image folders with Open3D intrinsics and an optional pose log.

Layout (``shared/data/rgbd/README.md``): ``color/NNNNN.(jpg|png)``, ``depth/NNNNN.png`` (uint16,
metres = value / depth_scale), ``camera_intrinsic.json`` (Open3D ``PinholeCameraIntrinsic``,
column-major ``intrinsic_matrix``), ``rgbd.json`` (``depth_scale``, optional ``pose_file``) and
optionally ``trajectory.log`` (Open3D log: ``i j k`` then a 4×4 camera-to-world matrix per frame).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from vilasr_ros.frames import CameraIntrinsics, Frame, depth_to_metres
from vilasr_ros.sources.base import FrameSource, SourceError


def read_open3d_log(path: Path) -> list[np.ndarray]:
    """Poses from an Open3D ``.log`` trajectory (camera-to-world 4×4, one per frame).

    Raises:
        SourceError: Malformed file.
    """
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) % 5:
        raise SourceError(f"{path}: expected blocks of 5 lines (header + 4x4), got {len(rows)} lines")
    poses = []
    for b in range(0, len(rows), 5):
        try:
            poses.append(np.array([[float(v) for v in row] for row in rows[b + 1 : b + 5]]))
        except ValueError as exc:
            raise SourceError(f"{path}: bad matrix in block {b // 5}: {exc}") from exc
    return poses


def read_open3d_intrinsics(path: Path) -> CameraIntrinsics:
    data = json.loads(path.read_text())
    m = data["intrinsic_matrix"]  # column-major
    return CameraIntrinsics(int(data["width"]), int(data["height"]), float(m[0]), float(m[4]), float(m[6]), float(m[7]))


class RGBDFolderSource(FrameSource):
    """Frames from an RGB-D folder, in file-name order.

    Args:
        path: The folder.
        frame_rate_hz: Stamps are ``index / frame_rate_hz`` (folders carry no times).
        world_frame_id: Frame the poses are in.

    Raises:
        SourceError: Missing folder, intrinsics or depth scale; colour/depth/pose counts differ.
    """

    def __init__(self, path: str | Path, frame_rate_hz: float = 30.0, world_frame_id: str = "map"):
        self.root = Path(path)
        self.source_id = f"rgbd_folder:{self.root}"
        if not (self.root / "color").is_dir():
            raise SourceError(f"{self.root} has no color/ folder (layout: shared/data/rgbd/README.md)")
        try:
            meta = json.loads((self.root / "rgbd.json").read_text())
            self.depth_scale = float(meta["depth_scale"])
            self.intrinsics = read_open3d_intrinsics(self.root / "camera_intrinsic.json")
        except (OSError, KeyError, ValueError) as exc:
            raise SourceError(f"{self.root}: cannot read rgbd.json / camera_intrinsic.json: {exc}") from exc
        self.colors = sorted(p for p in (self.root / "color").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.colors:
            raise SourceError(f"{self.root}/color has no images")
        depth_dir = self.root / "depth"
        self.depths = [depth_dir / (p.stem + ".png") for p in self.colors] if depth_dir.is_dir() else None
        if self.depths is not None and not all(p.exists() for p in self.depths):
            missing = [p.name for p in self.depths if not p.exists()]
            raise SourceError(f"{self.root}: depth images missing for {missing[:5]}")
        pose_file = meta.get("pose_file")
        self.poses = read_open3d_log(self.root / pose_file) if pose_file else None
        if self.poses is not None and len(self.poses) < len(self.colors):
            raise SourceError(f"{self.root}: {len(self.poses)} poses for {len(self.colors)} frames")
        self.frame_rate_hz = frame_rate_hz
        self.world_frame_id = world_frame_id

    def __len__(self) -> int:
        return len(self.colors)

    def __iter__(self) -> Iterator[Frame]:
        for i, color_path in enumerate(self.colors):
            rgb = np.asarray(Image.open(color_path).convert("RGB"))
            depth = None
            if self.depths is not None:
                raw = np.asarray(Image.open(self.depths[i]))
                depth = depth_to_metres(raw, self.depth_scale)
            yield Frame(
                rgb=rgb,
                depth_m=depth,
                intrinsics=self.intrinsics,
                T_world_camera=self.poses[i] if self.poses is not None else None,
                stamp_s=i / self.frame_rate_hz,
                world_frame_id=self.world_frame_id,
                source_id=self.source_id,
                index=i,
            )
