"""Frame sources, one syntax everywhere (``vilasr ask --source``, ``vilasr agent``, the camera node):

- ``rgbd_folder:PATH`` — the layout of ``shared/data/rgbd/README.md`` (Open3D test data, TUM);
- ``bag:PATH`` — a ROS 2 bag (sqlite3 or mcap) read with ``rosbags``;
- ``realsense`` / ``realsense:SERIAL`` / ``realsense:FILE.db3`` — Intel RealSense via ``pyrealsense2``
  (aligned depth, device intrinsics and depth scale);
- ``sim:...`` — a simulated MuJoCo scene (``vilasr_ros_sim``).

Every source is an iterable context manager of :class:`~vilasr_ros.frames.Frame`.
"""

from __future__ import annotations

from vilasr_ros.buffer import select_frames
from vilasr_ros.errors import QueryError
from vilasr_ros.sources.base import FrameSource, SourceError

__all__ = ["FrameSource", "SourceError", "open_source", "select_frames"]


def open_source(spec: str, **options) -> FrameSource:
    """Open a frame source from its spec string.

    Raises:
        QueryError: Unknown source kind or malformed spec.
        SourceError: The source exists but cannot be read.
    """
    kind, _, arg = str(spec).partition(":")
    if kind == "rgbd_folder":
        from vilasr_ros.sources.rgbd_folder import RGBDFolderSource

        return RGBDFolderSource(arg, **options)
    if kind == "bag":
        from vilasr_ros.sources.bag import BagSource

        return BagSource(arg, **options)
    if kind == "realsense":
        from vilasr_ros.sources.realsense import RealSenseSource

        return RealSenseSource(arg, **options)
    if kind == "sim":
        try:
            from vilasr_ros_sim.source import SimSource
        except ImportError as exc:
            raise QueryError(f"sim sources need the vilasr_ros_sim package with MuJoCo: {exc}") from exc
        return SimSource(arg, **options)
    raise QueryError(f"unknown source {spec!r}; use rgbd_folder:PATH, bag:PATH, realsense[:SERIAL|:FILE.db3] or sim:...")
