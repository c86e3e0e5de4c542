"""Frame sources, one syntax everywhere (``vilasr ask --source``, ``vilasr agent``, the camera node):

- ``rgbd_folder:PATH`` — the layout of ``shared/data/rgbd/README.md`` (Open3D test data, TUM);
- ``bag:PATH`` — a ROS 2 bag (sqlite3 or mcap) read with ``rosbags``;
- ``realsense`` / ``realsense:SERIAL`` / ``realsense:FILE.db3`` — Intel RealSense via ``pyrealsense2``
  (aligned depth, device intrinsics and depth scale);
- kinds registered by installed packages in the ``vilasr_ros.sources`` entry-point group:
  ``sim:...`` — a simulated MuJoCo scene (``vilasr_ros_sim``).

Every source is an iterable context manager of :class:`~vilasr_ros.frames.Frame`.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from vilasr_ros.buffer import select_frames
from vilasr_ros.errors import ConfigError
from vilasr_ros.sources.base import FrameSource, SourceError

__all__ = ["FrameSource", "SourceError", "open_source", "select_frames", "source_kinds"]

ENTRY_POINT_GROUP = "vilasr_ros.sources"
BUILTIN = ("rgbd_folder", "bag", "realsense")


def _plugins() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def source_kinds() -> tuple[str, ...]:
    """Every source kind: the built-in ones, then those registered by installed packages."""
    return BUILTIN + tuple(sorted(set(_plugins()) - set(BUILTIN)))


def open_source(spec: str, **options) -> FrameSource:
    """Open a frame source from its spec string (``KIND:ARG``).

    Raises:
        ConfigError: Unknown source kind or malformed spec.
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
    plugin = _plugins().get(kind)
    if plugin is not None:
        try:
            cls = plugin.load()
        except ImportError as exc:
            raise ConfigError(f"the {kind!r} source cannot be loaded ({exc}); is its extra installed?") from exc
        return cls(arg, **options)
    raise ConfigError(f"unknown source {spec!r}; use one of "
                     + ", ".join(f"{k}:..." for k in source_kinds()))
