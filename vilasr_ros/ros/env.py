"""The DDS environment for one machine: loopback discovery, a test-unique domain, a log folder and
the Fast DDS profile shipped in ``config/fastdds_loopback.xml`` (large shared-memory segment, UDP
on 127.0.0.1 only). No rclpy import here: this must run before rclpy is imported.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

PROFILE_NAME = "fastdds_loopback.xml"
logger = logging.getLogger(__name__)


def share_dir() -> Path:
    """``config/``'s folder: the source tree, else the installed ``share/vilasr_ros`` — found through the
    ament index (colcon, apt), the interpreter's prefix (``pip install .``) or the install prefix the
    package sits in (``<prefix>/lib/pythonX.Y/site-packages/vilasr_ros``).

    Raises:
        FileNotFoundError: None of them holds ``config/``.
    """
    here = Path(__file__).resolve()
    candidates = [here.parents[2]]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("vilasr_ros")))
    except (ImportError, LookupError, ValueError, OSError) as exc:  # no ament index / not registered / unset
        logger.debug("ament index has no vilasr_ros share folder: %s", exc)
    import sys

    candidates.append(Path(sys.prefix) / "share" / "vilasr_ros")
    if len(here.parents) > 5:  # <prefix>/lib/pythonX.Y/site-packages/vilasr_ros/ros/env.py
        candidates.append(here.parents[5] / "share" / "vilasr_ros")
    for candidate in candidates:
        if (candidate / "config" / PROFILE_NAME).is_file():
            return candidate
    raise FileNotFoundError(f"config/{PROFILE_NAME} not found in the source tree or any share/vilasr_ros "
                            f"(looked in {', '.join(str(c) for c in candidates)})")


def fastdds_profile() -> Path:
    """Path of the shipped Fast DDS profile (source tree or installed ``share/vilasr_ros/config``).

    Raises:
        FileNotFoundError: Not found (see :func:`share_dir`).
    """
    return share_dir() / "config" / PROFILE_NAME


def loopback_environment(domain_id: int | None = None, log_dir: str | None = None) -> dict[str, str]:
    """Environment variables that keep ROS 2 on this machine.

    Args:
        domain_id: ``ROS_DOMAIN_ID`` (0..101); None keeps the current one (or 0).
        log_dir: ``ROS_LOG_DIR``; None makes a temporary folder.

    Returns:
        The variables (not applied): ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, ``ROS_DOMAIN_ID``,
        ``ROS_LOG_DIR``, ``RMW_IMPLEMENTATION=rmw_fastrtps_cpp`` and the profile in both
        ``FASTRTPS_DEFAULT_PROFILES_FILE`` (what Fast DDS 2.x in Jazzy reads) and
        ``FASTDDS_DEFAULT_PROFILES_FILE`` (Fast DDS 3).
    """
    profile = str(fastdds_profile())
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(domain_id if domain_id is not None else os.environ.get("ROS_DOMAIN_ID", "0")),
        "ROS_LOG_DIR": log_dir or tempfile.mkdtemp(prefix="vilasr_roslog_"),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTRTPS_DEFAULT_PROFILES_FILE": profile,
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
    }


def apply_loopback_environment(domain_id: int | None = None, log_dir: str | None = None) -> dict[str, str]:
    """Set :func:`loopback_environment` in ``os.environ`` (call before importing rclpy)."""
    env = loopback_environment(domain_id, log_dir)
    os.environ.update(env)
    return env


def limit_heap_fragmentation(threshold_bytes: int = 256 * 1024, arenas: int = 2) -> bool:
    """Keep a long-running node's RSS flat: glibc ``mallopt`` with a fixed mmap threshold (freed frame
    buffers go back to the OS instead of fragmenting the heap — the default threshold grows as large
    blocks are freed) and at most ``arenas`` malloc arenas (one per thread otherwise).

    Measured with ``benchmarks/soak.py``: without it the agent's RSS kept growing ~10 MiB a minute
    after its keyframe buffer was full; with it RSS is flat. Other C libraries: nothing is done.

    Returns:
        True when glibc accepted both settings.
    """
    import ctypes
    import ctypes.util

    M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold_bytes))) and bool(mallopt(M_ARENA_MAX, int(arenas)))
