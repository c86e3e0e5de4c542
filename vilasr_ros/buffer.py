"""A bounded, thread-safe keyframe buffer and frame selection for queries.

Camera callbacks ``add`` frames at sensor rate; a frame becomes a keyframe when the camera moved or
turned enough since the last keyframe, or enough time passed. The buffer is bounded by count and
by bytes (oldest keyframes go first). A query takes k frames: uniformly over a time window (the
VSI-Bench protocol samples 16 frames uniformly), the latest k, or a pose-diverse set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from vilasr_ros.errors import VilasrError
from vilasr_ros.frames import Frame, FrameError

logger = logging.getLogger(__name__)

SELECTIONS = ("uniform", "latest", "coverage")


class EmptyBufferError(VilasrError, LookupError):
    """No frame has been received (or the buffer was cleared)."""


class StaleBufferError(VilasrError, TimeoutError):
    """The newest frame is older than allowed."""


@dataclass(frozen=True)
class BufferConfig:
    """Keyframe buffer settings.

    Attributes:
        max_frames: Keyframes kept at most.
        max_bytes: Bytes of RGB + depth kept at most (default 512 MiB ≈ 290 VGA RGB-D frames).
        min_translation_m: Accept a keyframe when the camera moved more than this...
        min_rotation_deg: ...or turned more than this...
        max_interval_s: ...or this much time passed since the last keyframe.
    """

    max_frames: int = 256
    max_bytes: int = 512 * 1024 * 1024
    min_translation_m: float = 0.10
    min_rotation_deg: float = 10.0
    max_interval_s: float = 1.0

    def __post_init__(self):
        if self.max_frames < 1 or self.max_bytes < 1:
            raise ValueError("max_frames and max_bytes must be >= 1")
        if self.min_translation_m < 0 or self.min_rotation_deg < 0 or self.max_interval_s < 0:
            raise ValueError("keyframe thresholds must be >= 0")


def _rotation_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    cos = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def select_frames(frames: list[Frame], k: int, strategy: str = "uniform") -> list[Frame]:
    """Choose up to k frames, returned in time order.

    Args:
        frames: Candidates in time order.
        k: How many (all of them when fewer).
        strategy: ``uniform`` (evenly spaced indices, first and last included), ``latest`` (last k),
            ``coverage`` (greedy farthest-point sampling on camera position and viewing direction;
            frames without pose fall back to uniform).

    Raises:
        ValueError: k < 1 or unknown strategy.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if strategy not in SELECTIONS:
        raise ValueError(f"unknown selection {strategy!r}; use one of {', '.join(SELECTIONS)}")
    n = len(frames)
    if n <= k:
        return list(frames)
    if strategy == "latest":
        return list(frames[-k:])
    if strategy == "coverage" and all(f.T_world_camera is not None for f in frames):
        poses = np.stack([f.T_world_camera for f in frames])
        # position (m) + 1 m per radian-ish of viewing direction change (optical z axis)
        feats = np.concatenate([poses[:, :3, 3], poses[:, :3, 2]], axis=1)
        chosen = [n - 1]
        dist = np.linalg.norm(feats - feats[n - 1], axis=1)
        while len(chosen) < k:
            nxt = int(np.argmax(dist))
            chosen.append(nxt)
            dist = np.minimum(dist, np.linalg.norm(feats - feats[nxt], axis=1))
        return [frames[i] for i in sorted(chosen)]
    idx = np.round(np.linspace(0, n - 1, k)).astype(int)
    return [frames[i] for i in idx]


class FrameBuffer:
    """Thread-safe keyframe store bounded by count and bytes.

    Args:
        config: Bounds and keyframe policy.
        clock: Time source in seconds for staleness checks (default ``time.time``, matching ROS
            wall-clock stamps).
    """

    def __init__(self, config: BufferConfig | None = None, clock=time.time):
        self.config = config or BufferConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._latest: Frame | None = None
        self._latest_stamp: float | None = None
        self.received = 0
        self.accepted = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def _is_keyframe(self, stamp_s: float, T: np.ndarray | None, last: Frame | None) -> bool:
        cfg = self.config
        if last is None:
            return True
        if stamp_s - last.stamp_s >= cfg.max_interval_s:
            return True
        if T is None or last.T_world_camera is None:
            return False
        moved = np.linalg.norm(T[:3, 3] - last.T_world_camera[:3, 3])
        if moved > cfg.min_translation_m:
            return True
        return _rotation_deg(last.T_world_camera[:3, :3], T[:3, :3]) > cfg.min_rotation_deg

    def wants(self, stamp_s: float, T_world_camera: np.ndarray | None) -> bool:
        """Would a frame with this stamp and pose be kept as a keyframe? Lets a caller skip decoding
        frames that :meth:`add` would drop (then report them with :meth:`note`)."""
        with self._lock:
            last = self._frames[-1] if self._frames else None
        return self._is_keyframe(stamp_s, T_world_camera, last)

    def note(self, stamp_s: float) -> None:
        """Count a frame that was received but not decoded: it keeps :meth:`latest` fresh."""
        with self._lock:
            self.received += 1
            self._latest_stamp = max(self._latest_stamp or stamp_s, stamp_s)

    def add(self, frame: Frame) -> bool:
        """Offer a frame; returns True when it was kept as a keyframe.

        Every frame updates :meth:`latest`; only keyframes are stored. Eviction keeps both bounds.

        Raises:
            FrameError: ``frame`` is larger than the whole byte bound.
        """
        if not isinstance(frame, Frame):
            raise TypeError(f"expected a Frame, got {type(frame).__name__}")
        if frame.nbytes > self.config.max_bytes:
            raise FrameError(f"a frame of {frame.nbytes} bytes exceeds the buffer's max_bytes {self.config.max_bytes}")
        with self._lock:
            self.received += 1
            self._latest = frame
            self._latest_stamp = max(self._latest_stamp or frame.stamp_s, frame.stamp_s)
            last = self._frames[-1] if self._frames else None
            if not self._is_keyframe(frame.stamp_s, frame.T_world_camera, last):
                return False
            self._frames.append(frame)
            self._bytes += frame.nbytes
            while len(self._frames) > self.config.max_frames or self._bytes > self.config.max_bytes:
                self._bytes -= self._frames.popleft().nbytes
            self.accepted += 1
            return True

    def latest(self, max_age_s: float | None = None) -> Frame:
        """The newest frame added (keyframe or not).

        Raises:
            EmptyBufferError: Nothing received.
            StaleBufferError: The newest frame received — added, or only :meth:`note` d — is older
                than ``max_age_s`` (by its stamp).
        """
        with self._lock:
            frame, newest = self._latest, self._latest_stamp
        if frame is None:
            raise EmptyBufferError("the frame buffer is empty: no frame received yet (is the camera publishing?)")
        if max_age_s is not None:
            age = self._clock() - newest
            if age > max_age_s:
                raise StaleBufferError(f"newest frame is {age:.2f} s old (max {max_age_s:.2f} s)")
        return frame

    def snapshot(self, window_s: float | None = None) -> list[Frame]:
        """Keyframes in time order, optionally only those within ``window_s`` of the newest."""
        with self._lock:
            frames = list(self._frames)
        if window_s is not None and frames:
            newest = frames[-1].stamp_s
            frames = [f for f in frames if newest - f.stamp_s <= window_s]
        return frames

    def select(self, k: int = 16, strategy: str = "uniform", window_s: float | None = None,
               max_age_s: float | None = None) -> list[Frame]:
        """Frames for one query.

        Raises:
            EmptyBufferError: No keyframe.
            StaleBufferError: Newest frame older than ``max_age_s``.
            ValueError: Bad k or strategy.
        """
        if max_age_s is not None:
            self.latest(max_age_s)
        frames = self.snapshot(window_s)
        if not frames:
            raise EmptyBufferError("the keyframe buffer is empty")
        return select_frames(frames, k, strategy)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0
            self._latest = None
            self._latest_stamp = None
