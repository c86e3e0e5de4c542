"""Sensor health: every message received and every one dropped, counted by reason.

One :class:`SensorHealth` per agent, shared by the frame assembler (pairing, decoding, odometry
checks) and the keyframe buffer. Its :meth:`~SensorHealth.summary` goes into answers whose query
failed for want of frames (so "is the camera publishing?" becomes "yes, and every frame is dropped
because ...") and into the node's ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from vilasr_ros.sanitize import clean_text

# Why a frame or message was dropped (keys of ``dropped``).
REASONS = {
    "decode": "image could not be decoded (encoding, size or data)",
    "camera_info": "CameraInfo missing or not matching the colour image",
    "unpaired": "colour image with no depth image within the sync tolerance",
    "future_stamp": "stamp ahead of the clock",
    "too_large": "frame larger than the buffer's byte bound",
    "odometry": "odometry rejected (not finite, out of range or a jump beyond max_speed_mps)",
    "map_pose": "map pose rejected (not finite, a zero quaternion, out of range or covariance not trusted)",
    "callback": "a callback failed on the message",
    "depth_byte_order": "depth byte order does not match is_bigendian",
}


class SensorHealth:
    """Thread-safe counters of received and dropped sensor messages.

    Args:
        clock: Monotonic time source (seconds) for the age of the last drop.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.last_reason: str | None = None
        self._last_drop_t: float | None = None

    def receive(self, kind: str) -> None:
        """Count one message of ``kind`` (``colour``, ``depth``, ``camera_info``, ``odometry``)."""
        with self._lock:
            self.received[kind] += 1

    def drop(self, key: str, reason: str) -> None:
        """Count one dropped frame/message under ``key`` (see :data:`REASONS`) with its full reason."""
        with self._lock:
            self.dropped[key] += 1
            self.last_reason = clean_text(reason)[:500]
            self._last_drop_t = self._clock()

    @property
    def total_dropped(self) -> int:
        with self._lock:
            return sum(self.dropped.values())

    def summary(self) -> dict[str, Any]:
        """``{"received": {...}, "dropped": n, "dropped_by_reason": {...}, "last_drop_reason", "last_drop_age_s"}``."""
        with self._lock:
            age = None if self._last_drop_t is None else round(self._clock() - self._last_drop_t, 2)
            return {"received": dict(self.received), "dropped": sum(self.dropped.values()),
                    "dropped_by_reason": dict(self.dropped), "last_drop_reason": self.last_reason,
                    "last_drop_age_s": age}

    def sentence(self) -> str:
        """One line for an error message: what arrived, what was dropped and the last reason."""
        s = self.summary()
        got = ", ".join(f"{n} {k}" for k, n in sorted(s["received"].items())) or "no sensor message"
        if not s["dropped"]:
            return f"received {got}; none dropped"
        return f"received {got}; dropped {s['dropped']} (last: {s['last_drop_reason']})"
