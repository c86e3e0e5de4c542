"""A bounded, thread-safe keyframe buffer and frame selection for queries.

Camera callbacks ``add`` frames at sensor rate; a frame becomes a keyframe when the camera moved or
turned enough since the last keyframe, or enough time passed. The buffer is bounded by count and
by bytes (oldest keyframes go first). A query takes k frames: uniformly over a time window (the
VSI-Bench protocol samples 16 frames uniformly), the latest k, or a pose-diverse set.

Time: staleness ("is the camera still publishing?") is measured by *arrival* on a monotonic clock,
never by header stamps, so no stamp — however wrong — can switch it off. A frame stamped more than
``max_future_s`` ahead of the wall clock is dropped (counted); a stamp more than
``max_backward_jump_s`` before the last keyframe's means the clock was reset (a bag restarted, sim
time) and the buffer starts over, as tf2 buffers do on a backward time jump.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from vilasr_ros.errors import VilasrError
from vilasr_ros.frames import Frame
from vilasr_ros.health import SensorHealth
from vilasr_ros.query import SELECTIONS

logger = logging.getLogger(__name__)

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
        max_future_s: Frames stamped further ahead of the wall clock are dropped (seconds).
        max_backward_jump_s: A stamp this much older than the last keyframe's resets the buffer.
    """

    max_frames: int = 256
    max_bytes: int = 512 * 1024 * 1024
    min_translation_m: float = 0.10
    min_rotation_deg: float = 10.0
    max_interval_s: float = 1.0
    max_future_s: float = 2.0
    max_backward_jump_s: float = 1.0

    def __post_init__(self):
        if self.max_frames < 1 or self.max_bytes < 1:
            raise ValueError("max_frames and max_bytes must be >= 1")
        if self.min_translation_m < 0 or self.min_rotation_deg < 0 or self.max_interval_s < 0:
            raise ValueError("keyframe thresholds must be >= 0")
        if not self.max_future_s > 0 or not self.max_backward_jump_s > 0:
            raise ValueError("max_future_s and max_backward_jump_s must be > 0")


def _rotation_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    cos = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def keyframe_due(stamp_s: float, T: np.ndarray | None, last: Frame | None, min_translation_m: float,
                 min_rotation_deg: float, max_interval_s: float, max_backward_jump_s: float = 1.0) -> bool:
    """The keyframe rule (the RAM buffer's and the keyframe memory's): a frame is a new keyframe when
    there is no previous one, ``max_interval_s`` passed (or the clock jumped back more than
    ``max_backward_jump_s``), a pose appeared or vanished, or the camera moved more than
    ``min_translation_m`` (m) or turned more than ``min_rotation_deg`` since ``last``."""
    if last is None:
        return True
    if stamp_s - last.stamp_s >= max_interval_s or stamp_s < last.stamp_s - max_backward_jump_s:
        return True  # time passed, or the clock jumped back
    if (T is None) != (last.T_world_camera is None):
        return True  # a pose appeared (odometry started after the camera) or vanished: new information
    if T is None:
        return False
    if np.linalg.norm(T[:3, 3] - last.T_world_camera[:3, 3]) > min_translation_m:
        return True
    return _rotation_deg(last.T_world_camera[:3, :3], T[:3, :3]) > min_rotation_deg


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
        clock: Monotonic time source in seconds (arrival times, staleness).
        wall_clock: Time source of header stamps (``time.time``, as ROS wall-clock stamps; a node on
            sim time passes its clock) — used only to refuse stamps from the future.
        health: Where drops are counted (a new :class:`~vilasr_ros.health.SensorHealth` by default).
    """

    def __init__(self, config: BufferConfig | None = None, clock=time.monotonic, wall_clock=time.time,
                 health: SensorHealth | None = None):
        self.config = config or BufferConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        self.health = health or SensorHealth(clock)
        self._lock = threading.Lock()
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._latest: Frame | None = None
        self._arrival: float | None = None
        self.received = 0
        self.accepted = 0
        self.resets = 0

    def now(self) -> float:
        """The wall clock the buffer was given (ROS time in the node, sim time under ``use_sim_time``), s."""
        return float(self._wall_clock())

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def _future(self, stamp_s: float) -> bool:
        return stamp_s > self._wall_clock() + self.config.max_future_s

    def _is_keyframe(self, stamp_s: float, T: np.ndarray | None, last: Frame | None) -> bool:
        cfg = self.config  # a clock jump back: add() restarts the buffer
        return keyframe_due(stamp_s, T, last, cfg.min_translation_m, cfg.min_rotation_deg, cfg.max_interval_s,
                            cfg.max_backward_jump_s)

    def _drop_future(self, stamp_s: float) -> None:
        ahead = stamp_s - self._wall_clock()
        self.health.drop("future_stamp", f"frame stamped {ahead:.1f} s ahead of the clock "
                         f"(max {self.config.max_future_s:g} s): check the camera's time source")

    def wants(self, stamp_s: float, T_world_camera: np.ndarray | None) -> bool:
        """Would a frame with this stamp and pose be kept as a keyframe? Lets a caller skip decoding
        frames that :meth:`add` would drop (then report them with :meth:`note`). A stamp from the
        future is counted as dropped here."""
        if self._future(stamp_s):
            self._drop_future(stamp_s)
            return False
        with self._lock:
            last = self._frames[-1] if self._frames else None
        return self._is_keyframe(stamp_s, T_world_camera, last)

    def note(self, stamp_s: float) -> None:
        """Count a valid frame that was received but not decoded (not a keyframe): the camera is alive."""
        if self._future(stamp_s):
            return  # already counted as dropped by wants()
        with self._lock:
            self.received += 1
            self._arrival = self._clock()

    def add(self, frame: Frame) -> bool:
        """Offer a frame; returns True when it was kept as a keyframe.

        Every valid frame updates :meth:`latest` and the arrival time; only keyframes are stored;
        eviction keeps both bounds. A frame from the future or larger than the whole byte bound is
        dropped and counted in :attr:`health` (returns False) — never raised: a sensor fault must
        not stop the caller.

        Raises:
            TypeError: ``frame`` is not a :class:`~vilasr_ros.frames.Frame` (a programming error).
        """
        if not isinstance(frame, Frame):
            raise TypeError(f"expected a Frame, got {type(frame).__name__}")
        if frame.nbytes > self.config.max_bytes:
            self.health.drop("too_large", f"a frame of {frame.nbytes} bytes exceeds the buffer's max_bytes "
                             f"{self.config.max_bytes}: raise buffer.max_bytes_mb")
            return False
        if self._future(frame.stamp_s):
            self._drop_future(frame.stamp_s)
            return False
        with self._lock:
            self.received += 1
            self._latest = frame
            self._arrival = self._clock()
            last = self._frames[-1] if self._frames else None
            if not self._is_keyframe(frame.stamp_s, frame.T_world_camera, last):
                return False
            if last is not None and frame.stamp_s < last.stamp_s - self.config.max_backward_jump_s:
                logger.warning("time jumped back %.2f s (stamp %.3f after %.3f): keyframe buffer restarted",
                               last.stamp_s - frame.stamp_s, frame.stamp_s, last.stamp_s)
                self._frames.clear()
                self._bytes = 0
                self.resets += 1
            self._frames.append(frame)
            self._bytes += frame.nbytes
            while len(self._frames) > self.config.max_frames or self._bytes > self.config.max_bytes:
                self._bytes -= self._frames.popleft().nbytes
            self.accepted += 1
            return True

    def latest(self, max_age_s: float | None = None) -> Frame:
        """The newest frame added (keyframe or not).

        Raises:
            EmptyBufferError: Nothing received (the message says what arrived and what was dropped).
            StaleBufferError: No valid frame arrived for more than ``max_age_s`` (monotonic arrival
                time — stamps play no part).
        """
        with self._lock:
            frame, arrival = self._latest, self._arrival
        if frame is None:
            raise EmptyBufferError("the frame buffer is empty: no usable frame yet; " + self.health.sentence())
        if max_age_s is not None and arrival is not None:
            age = self._clock() - arrival
            if age > max_age_s:
                raise StaleBufferError(f"no usable frame for {age:.2f} s (max {max_age_s:.2f} s); "
                                       + self.health.sentence())
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
            raise EmptyBufferError("the keyframe buffer is empty; " + self.health.sentence())
        return select_frames(frames, k, strategy)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0
            self._latest = None
            self._arrival = None
