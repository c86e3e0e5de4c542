"""Frame sources, one syntax everywhere (``vilasr ask --source``, ``vilasr agent``, the camera node):

- ``rgbd_folder:PATH`` — the layout of ``test/data/rgbd/README.md`` (Open3D test data, TUM);
- ``bag:PATH`` — a ROS 2 bag (sqlite3 or mcap) read with ``rosbags``;
- ``realsense`` / ``realsense:SERIAL`` / ``realsense:FILE.db3`` — Intel RealSense via ``pyrealsense2``
  (aligned depth, device intrinsics and depth scale);
- kinds registered by installed packages in the ``vilasr_ros.sources`` entry-point group:
  ``sim:...`` — a simulated MuJoCo scene (``vilasr_ros_sim``).

Every source is an iterable context manager of :class:`~vilasr_ros.frames.Frame`, built from a typed
config (``RGBDFolderConfig``, ``BagConfig``, ``RealSenseConfig``, ``SimSourceConfig``); the spec
string is a front end that parses into it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from vilasr_ros.buffer import select_frames
from vilasr_ros.errors import ConfigError
from vilasr_ros.sources.base import FrameSource, SourceError

__all__ = ["FrameSource", "SourceError", "open_source", "select_frames", "source_class", "source_kinds"]

ENTRY_POINT_GROUP = "vilasr_ros.sources"
BUILTIN = ("rgbd_folder", "bag", "realsense")


def _plugins() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def source_kinds() -> tuple[str, ...]:
    """Every source kind: the built-in ones, then those registered by installed packages."""
    return BUILTIN + tuple(sorted(set(_plugins()) - set(BUILTIN)))


def source_class(kind: str) -> type:
    """The source class of a kind (its module is imported; nothing is opened).

    Raises:
        ConfigError: Unknown kind, or a plug-in whose extra is not installed.
    """
    if kind == "rgbd_folder":
        from vilasr_ros.sources.rgbd_folder import RGBDFolderSource

        return RGBDFolderSource
    if kind == "bag":
        from vilasr_ros.sources.bag import BagSource

        return BagSource
    if kind == "realsense":
        from vilasr_ros.sources.realsense import RealSenseSource

        return RealSenseSource
    plugin = _plugins().get(kind)
    if plugin is None:
        raise ConfigError(f"unknown source kind {kind!r}; use one of " + ", ".join(f"{k}:..." for k in source_kinds()))
    try:
        return plugin.load()
    except ImportError as exc:
        raise ConfigError(f"the {kind!r} source cannot be loaded ({exc}); is its extra installed?") from exc


def open_source(spec, **options) -> FrameSource:
    """Open a frame source from its spec string (``KIND:ARG``) or its typed config.

    Args:
        spec: ``"bag:/bags/run1"`` (ARG is the source's primary option: a path, a serial, a sim spec),
            or a config instance (``BagConfig(path=..., color_topic=...)``).
        **options: Fields of the source's config, over the spec's.

    Raises:
        ConfigError: Unknown source kind, a malformed spec, or a config value outside its rules.
        SourceError: The source exists but cannot be read.
    """
    if not isinstance(spec, str):
        for kind in source_kinds():
            cls = source_class(kind)
            if isinstance(spec, cls.config_class):
                return cls(spec, **options)
        raise ConfigError(f"not a source spec or config: {spec!r}")
    kind, _, arg = str(spec).partition(":")
    try:
        cls = source_class(kind)
    except ConfigError as exc:
        if "cannot be loaded" in str(exc):
            raise
        raise ConfigError(f"unknown source {spec!r}; use one of " + ", ".join(f"{k}:..." for k in source_kinds())) from None
    return cls(arg, **options)
