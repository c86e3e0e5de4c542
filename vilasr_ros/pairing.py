"""Pairing colour, depth, CameraInfo and odometry messages into :class:`~vilasr_ros.frames.Frame` s,
and expressing them in ``map`` — one implementation for the live node and for bags.

No rclpy import: the agent node feeds it messages as they arrive, :class:`~vilasr_ros.sources.bag.BagSource`
feeds it a bag's messages in recorded order, tests feed it plain objects; all get the same frames.
Pairing is by header stamp (the approximate-time policy of ``message_filters``, which is not in
the pip-installed ROS): a colour image is matched with the depth image nearest in stamp within
``tolerance_s``; colour waits up to ``wait_s`` for its depth, then is dropped (counted in
``unpaired``). The pose is the odometry nearest in stamp within ``pose_tolerance_s`` composed with
the camera extrinsic: ``T_world_camera = T_world_base @ T_base_camera``. Once odometry has been
seen, a colour image also waits (up to ``wait_s``) for an odometry message at or after its stamp,
and the pose is interpolated between the two odometry messages around it (linear position,
slerp rotation); otherwise the nearest within ``pose_tolerance_s``; without one the frame has no
pose (``without_pose`` counts them).

Faults never raise out of here: each dropped frame or message is counted in the shared
:class:`~vilasr_ros.health.SensorHealth` with its reason — an image that does not decode, a
CameraInfo of another size than the image, odometry that is not finite, beyond ``max_position_m``,
or that jumps faster than ``max_speed_mps`` from the pose before it (AMCL-style relocalisations are
not odometry; a new track that stays consistent for ``odometry_reset_after`` messages is accepted
as an odometry reset and logged).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from scipy.spatial.transform import Rotation, Slerp

from vilasr_ros.errors import MessageError
from vilasr_ros.frames import CameraIntrinsics, Frame
from vilasr_ros.health import SensorHealth

logger = logging.getLogger(__name__)


@dataclass
class SyncStats:
    colour: int = 0
    depth: int = 0
    frames: int = 0
    unpaired: int = 0
    without_pose: int = 0
    no_camera_info: int = 0
    decode_errors: int = 0
    skipped: int = 0
    odometry_rejected: int = 0
    odometry_resets: int = 0


class FrameAssembler:
    """Args:
        decode_color: ``msg -> (H, W, 3) uint8``; ``decode_depth``: ``msg -> (H, W) float32 m``.
        T_base_camera: 4×4 pose of the colour optical frame in the odometry child frame.
        tolerance_s: Max colour/depth stamp difference.
        pose_tolerance_s: Max colour/odometry stamp difference.
        wait_s: How long (in stamps) colour waits for depth before it is dropped.
        expect_depth: When False, colour frames are emitted at once without depth.
        world_frame_id: Overrides the odometry's ``header.frame_id``.
        source_id: ``Frame.source_id`` of the frames made.
        keep: ``(stamp_s, T_world_camera) -> bool``; frames it refuses are not decoded (the keyframe
            policy, :meth:`FrameBuffer.wants`) and are passed to ``on_skip(stamp_s)`` instead.
        health: Where drops are counted (shared with the buffer).
        max_speed_mps: Odometry implying a faster motion from the previous pose is rejected.
        max_position_m: Odometry farther than this from the origin is rejected.
        odometry_reset_after: Consecutive mutually consistent rejected poses accepted as a reset.
        expect_pose: Odometry is expected: images before the first one wait for it (up to ``wait_s``)
            instead of coming out without a pose.

    Not thread-safe: call from one callback group.
    """

    def __init__(self, decode_color: Callable[[Any], np.ndarray], decode_depth: Callable[[Any], np.ndarray], *,
                 T_base_camera: np.ndarray | None = None, tolerance_s: float = 0.02, pose_tolerance_s: float = 0.1,
                 wait_s: float = 0.2, expect_depth: bool = True, world_frame_id: str | None = None,
                 source_id: str = "ros", keep: Callable[[float, np.ndarray | None], bool] | None = None,
                 on_skip: Callable[[float], None] | None = None, health: SensorHealth | None = None,
                 max_speed_mps: float = 5.0, max_position_m: float = 1.0e5, odometry_reset_after: int = 10,
                 clock: Callable[[], float] = time.monotonic, expect_pose: bool = False):
        self._clock = clock
        self.expect_pose = expect_pose
        self.keep, self.on_skip = keep, on_skip
        self.health = health or SensorHealth()
        self.max_speed_mps, self.max_position_m = max_speed_mps, max_position_m
        self.odometry_reset_after = odometry_reset_after
        self._rejected_track: list[tuple[float, np.ndarray, str]] = []
        self.last_error: str | None = None
        self.decode_color, self.decode_depth = decode_color, decode_depth
        self.T_base_camera = np.eye(4) if T_base_camera is None else np.asarray(T_base_camera, dtype=float)
        self.tolerance_s, self.pose_tolerance_s, self.wait_s = tolerance_s, pose_tolerance_s, wait_s
        self.expect_depth = expect_depth
        self.world_frame_id = world_frame_id
        self.source_id = source_id
        self.intrinsics: CameraIntrinsics | None = None
        self._colour: deque[tuple[float, Any]] = deque(maxlen=8)
        self._depth: deque[tuple[float, Any]] = deque(maxlen=8)
        # Odometry sorted by stamp (arrives in order; a late one is inserted), the newest MAX_POSES kept.
        self._pose_stamps: list[float] = []
        self._poses: list[tuple[np.ndarray, str]] = []
        self.stats = SyncStats()
        self._index = 0

    MAX_POSES = 400

    def reset(self) -> None:
        self._colour.clear()
        self._depth.clear()
        self._pose_stamps.clear()
        self._poses.clear()

    def add_camera_info(self, intrinsics: CameraIntrinsics) -> list[Frame]:
        """Returns the frames that were waiting for the first CameraInfo."""
        self.health.receive("camera_info")
        self.intrinsics = intrinsics
        return self._emit()

    def _pose_fault(self, stamp_s: float, T: np.ndarray) -> str | None:
        """Why an odometry pose cannot be right, or None."""
        p = T[:3, 3]
        if not np.isfinite(T).all() or not np.isfinite(stamp_s):
            return "odometry pose or stamp is not finite"
        if np.abs(p).max() > self.max_position_m:
            return f"odometry position {np.round(p, 1).tolist()} m is beyond max_position_m={self.max_position_m:g}"
        if not self._pose_stamps:
            return None
        j = min(bisect.bisect_left(self._pose_stamps, stamp_s), len(self._pose_stamps) - 1)
        k = min((x for x in (j - 1, j) if x >= 0), key=lambda x: abs(self._pose_stamps[x] - stamp_s))
        dt = abs(stamp_s - self._pose_stamps[k])
        jump = float(np.linalg.norm(p - self._poses[k][0][:3, 3]))
        allowed = self.max_speed_mps * dt + 0.05
        if jump > allowed:
            return (f"odometry jumped {jump:.2f} m in {dt:.3f} s (faster than max_speed_mps="
                    f"{self.max_speed_mps:g}); pose rejected")
        return None

    def add_pose(self, stamp_s: float, T_world_base: np.ndarray, world_frame_id: str) -> list[Frame]:
        """Returns the frames that were waiting for this pose. A faulty pose is counted, not used."""
        self.health.receive("odometry")
        T_world_base = np.asarray(T_world_base, dtype=float)
        fault = self._pose_fault(stamp_s, T_world_base)
        if fault is not None:
            if not self._accept_as_reset(stamp_s, T_world_base, world_frame_id, fault):
                self.stats.odometry_rejected += 1
                self.health.drop("odometry", fault)
                return []
        else:
            self._rejected_track.clear()
        i = bisect.bisect_right(self._pose_stamps, stamp_s)
        self._pose_stamps.insert(i, stamp_s)
        self._poses.insert(i, (np.asarray(T_world_base, dtype=float), world_frame_id))
        if len(self._poses) > self.MAX_POSES:
            del self._pose_stamps[0], self._poses[0]
        return self._emit()

    def _accept_as_reset(self, stamp_s: float, T: np.ndarray, world: str, fault: str) -> bool:
        """A jump followed by a consistent track (odometry restarted): accept it after N poses."""
        if not np.isfinite(T).all() or np.abs(T[:3, 3]).max() > self.max_position_m:
            return False
        track = self._rejected_track
        if track:
            t0, T0, _ = track[-1]
            if np.linalg.norm(T[:3, 3] - T0[:3, 3]) > self.max_speed_mps * abs(stamp_s - t0) + 0.05:
                track.clear()
        track.append((stamp_s, T, world))
        if len(track) < self.odometry_reset_after:
            return False
        logger.warning("odometry reset: %d consistent poses after a jump (%s); earlier poses discarded",
                       len(track), fault)
        self._pose_stamps.clear()
        self._poses.clear()
        self.stats.odometry_resets += 1
        for t, T_track, w in track[:-1]:
            self._pose_stamps.append(t)
            self._poses.append((T_track, w))
        track.clear()
        return True

    def add_depth(self, stamp_s: float, msg: Any) -> list[Frame]:
        self.health.receive("depth")
        self.stats.depth += 1
        self._depth.append((stamp_s, msg))
        return self._emit()

    def add_colour(self, stamp_s: float, msg: Any, frame_id: str) -> list[Frame]:
        """Returns the frames completed by this message (usually 0 or 1)."""
        self.health.receive("colour")
        self.stats.colour += 1
        if len(self._colour) == self._colour.maxlen:  # the oldest waiting image falls out: count it
            t_old = self._colour[0][0]
            self.stats.unpaired += 1
            self.health.drop("unpaired", f"colour at {t_old:.3f} s still waiting for depth/odometry when "
                             f"{self._colour.maxlen} newer images arrived")
        self._colour.append((stamp_s, (msg, frame_id, self._clock())))
        return self._emit()

    def odometry_at(self, t: float) -> tuple[np.ndarray | None, str | None]:
        """``(T_odom_base, odom frame id)`` at stamp ``t`` by this module's rule (interpolated between
        the odometry around ``t``, else the nearest within ``pose_tolerance_s``), or ``(None, None)``."""
        T, world = self._pose(t)
        return (None, None) if T is None else (T @ np.linalg.inv(self.T_base_camera), world)

    def _pose(self, t: float) -> tuple[np.ndarray | None, str | None]:
        stamps = self._pose_stamps
        if not stamps:
            return None, None
        i = bisect.bisect_left(stamps, t)
        if 0 < i < len(stamps) and stamps[i - 1] < stamps[i] and stamps[i] - stamps[i - 1] <= 2 * self.pose_tolerance_s:
            (A, world), (B, _) = self._poses[i - 1], self._poses[i]
            a = (t - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
            T = np.eye(4)
            T[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix([A[:3, :3], B[:3, :3]]))(a).as_matrix()
            T[:3, 3] = (1 - a) * A[:3, 3] + a * B[:3, 3]
            return T @ self.T_base_camera, world
        j = min((k for k in (i - 1, i) if 0 <= k < len(stamps)), key=lambda k: abs(stamps[k] - t))
        if abs(stamps[j] - t) > self.pose_tolerance_s:
            return None, None
        T, world = self._poses[j]
        return T @ self.T_base_camera, world

    def _waiting_for_pose(self, t: float, newest: float) -> bool:
        if not self._pose_stamps:  # no odometry yet: wait for it when some is expected, else no pose
            return self.expect_pose and newest - t <= self.wait_s
        return self._pose_stamps[-1] < t - 1e-9 and newest - t <= self.wait_s

    def pending(self) -> int:
        """Colour images still waiting for their depth image, pose or CameraInfo."""
        return len(self._colour)

    def flush(self, force: bool = False) -> list[Frame]:
        """Settle colour images that have waited more than ``wait_s`` since they *arrived*
        (monotonic clock) — or all of them with ``force`` (the end of a bag): when a stream stops,
        the last image would otherwise wait for a newer message forever. Returns the frames this
        completes (others are counted as dropped)."""
        return self._emit(flush=True, force=force)

    def _emit(self, flush: bool = False, force: bool = False) -> list[Frame]:
        out = []
        stamp_newest = max([t for t, _ in self._colour] + [t for t, _ in self._depth] + self._pose_stamps[-1:],
                           default=0.0)
        now = self._clock()
        while self._colour:
            t, (msg, frame_id, arrival) = self._colour[0]
            # Waited long enough: by stamps (newer messages arrived) or, when flushing, by arrival time.
            newest = float("inf") if flush and (force or now - arrival > self.wait_s) else stamp_newest
            depth_msg = None
            if self.expect_depth:
                match = min(self._depth, key=lambda d: abs(d[0] - t), default=None)
                if match is None or abs(match[0] - t) > self.tolerance_s:
                    if newest - t > self.wait_s:
                        self._colour.popleft()
                        self.stats.unpaired += 1
                        self.health.drop("unpaired", f"colour at {t:.3f} s got no depth image within "
                                         f"{self.tolerance_s:g} s (sync_tolerance_s)")
                        continue
                    break
                depth_msg = match[1]
            if self._waiting_for_pose(t, newest):
                break
            if self.intrinsics is None and newest - t <= self.wait_s:
                break  # the first CameraInfo may arrive after the first images
            self._colour.popleft()
            frame = self._make(t, msg, frame_id, depth_msg)
            if frame is not None:
                out.append(frame)
        return out

    def _make(self, t: float, msg: Any, frame_id: str, depth_msg: Any) -> Frame | None:
        if self.intrinsics is None:
            self.stats.no_camera_info += 1
            self.health.drop("camera_info", "no CameraInfo received yet: is camera_info_topic right?")
            return None
        T, world = self._pose(t)
        if T is None:
            self.stats.without_pose += 1
        if self.keep is not None and not self.keep(t, T):
            self.stats.skipped += 1
            if self.on_skip is not None:
                self.on_skip(t)
            return None
        try:
            rgb = self.decode_color(msg)
            depth = self.decode_depth(depth_msg) if depth_msg is not None else None
            frame = Frame(rgb=rgb, depth_m=depth, intrinsics=self.intrinsics, T_world_camera=T, stamp_s=t,
                          frame_id=frame_id or "camera_color_optical_frame",
                          world_frame_id=self.world_frame_id or world or "map",
                          source_id=self.source_id, index=self._index)
        except Exception as exc:  # noqa: BLE001 - any malformed message is a counted drop, never a crash
            self.stats.decode_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            key = "camera_info" if "intrinsics are for" in str(exc) else \
                "depth_byte_order" if "byte order" in str(exc) else "decode"
            prefix = "CameraInfo does not match the colour image: " if key == "camera_info" else ""
            self.health.drop(key, prefix + self.last_error)
            return None
        self._index += 1
        self.stats.frames += 1
        return frame


class MapAlignment:
    """``map`` ← ``odom`` as AMCL and tf compose it: ``T_map_camera(t) = T_map_odom(t) · T_odom_camera(t)``.

    Each map pose (AMCL's ``geometry_msgs/PoseWithCovarianceStamped`` on ``/amcl_pose``, or a SLAM
    node's ``PoseStamped``) of the base at stamp ``t_m`` gives one correction
    ``T_map_odom = T_map_base(t_m) · T_odom_base(t_m)⁻¹``, with the odometry at ``t_m`` from the
    :class:`FrameAssembler` (interpolated). Corrections are kept by stamp; a frame buffered with its
    odometry pose is re-expressed when a query selects it, with the correction at its own stamp
    (interpolated between the corrections around it — tf's lookup at the frame's time — clamped to
    the first/last one), so a correction that arrives after the frame was buffered still applies.
    REP-105: ``map`` → ``odom`` → ``base_link`` → camera optical frame.

    A map pose is trusted only when it is finite, within ``max_position_m`` of the origin (as odometry
    is) and — when it carries a covariance (AMCL) — its x and y variances are finite and at most
    ``max_covariance_m2``. Any other pose is refused (:class:`~vilasr_ros.errors.MessageError`) and,
    until a trusted one arrives, :attr:`untrusted` says why: the goal rule sends no goal meanwhile.

    Args:
        odometry_at: ``t -> (T_odom_base, odom_frame_id)`` (:meth:`FrameAssembler.odometry_at`).
        max_corrections: Corrections kept (the oldest dropped first; 1 Hz → an hour).
        max_position_m: A map position farther from the origin is refused (m).
        max_covariance_m2: A map pose whose x or y variance is larger (m², row-major 6×6 covariance of
            ``geometry_msgs/PoseWithCovariance``: indices 0 and 7) is not trusted.
    """

    def __init__(self, odometry_at: Callable[[float], tuple[np.ndarray | None, str | None]],
                 max_corrections: int = 3600, max_position_m: float = 100_000.0, max_covariance_m2: float = 1.0):
        self.odometry_at = odometry_at
        self.max_corrections = max_corrections
        self.max_position_m = max_position_m
        self.max_covariance_m2 = max_covariance_m2
        #: Why the latest map pose was not trusted (None once a trusted one arrived).
        self.untrusted: str | None = None
        self._stamps: list[float] = []
        self._corrections: list[np.ndarray] = []
        self._pending: deque[tuple[float, np.ndarray, str]] = deque(maxlen=50)
        self.map_frame_id: str | None = None
        self.odom_frame_id: str | None = None
        self.received = 0

    def __len__(self) -> int:
        return len(self._corrections)

    def add_map_pose(self, stamp_s: float, T_map_base: np.ndarray, map_frame_id: str,
                     covariance: np.ndarray | None = None) -> bool:
        """Add a map pose of the base; True when it became a correction (else it waits for the
        odometry at its stamp, see :meth:`retry`).

        Args:
            stamp_s: The pose's stamp (s).
            T_map_base: 4×4 pose of the base in ``map_frame_id``.
            map_frame_id: The map frame (``map``).
            covariance: The 36 values of its ``PoseWithCovariance.covariance`` (row-major 6×6), or None.

        Raises:
            MessageError: A pose that is not trusted (the reason; kept in :attr:`untrusted`).
        """
        self.received += 1
        T_map_base = np.asarray(T_map_base, float)
        fault = self._fault(stamp_s, T_map_base, covariance)
        if fault is not None:
            self.untrusted = fault
            raise MessageError(fault)
        self.untrusted = None
        if self._add(stamp_s, T_map_base, map_frame_id or "map"):
            return True
        self._pending.append((stamp_s, T_map_base, map_frame_id or "map"))
        return False

    def _fault(self, stamp_s: float, T: np.ndarray, covariance) -> str | None:
        if not np.isfinite(T).all() or not np.isfinite(stamp_s):
            return "map pose or stamp is not finite"
        p = T[:3, 3]
        if np.abs(p).max() > self.max_position_m:
            return f"map position {np.round(p, 1).tolist()} m is beyond max_position_m={self.max_position_m:g}"
        if covariance is not None:
            c = np.asarray(covariance, float).reshape(-1)
            if c.size == 36:
                var = c[[0, 7]]
                if not np.isfinite(c).all():
                    return "map pose covariance is not finite: localisation not trusted"
                if var.max() > self.max_covariance_m2:
                    return (f"map pose covariance x/y {var.max():.3g} m² is above max_map_covariance="
                            f"{self.max_covariance_m2:g} m²: localisation not trusted")
        return None

    def retry(self) -> None:
        """Turn waiting map poses into corrections once the odometry at their stamps has arrived."""
        for _ in range(len(self._pending)):
            item = self._pending.popleft()
            if not self._add(*item):
                self._pending.append(item)

    def _add(self, stamp_s: float, T_map_base: np.ndarray, map_frame_id: str) -> bool:
        T_odom_base, odom_frame = self.odometry_at(stamp_s)
        if T_odom_base is None:
            return False
        i = bisect.bisect_right(self._stamps, stamp_s)
        self._stamps.insert(i, stamp_s)
        self._corrections.insert(i, T_map_base @ np.linalg.inv(T_odom_base))
        if len(self._stamps) > self.max_corrections:
            del self._stamps[0], self._corrections[0]
        self.map_frame_id, self.odom_frame_id = map_frame_id, odom_frame
        return True

    def correction_at(self, t: float) -> np.ndarray | None:
        """``T_map_odom`` at stamp ``t`` (interpolated: linear position, slerp rotation), or None."""
        stamps = self._stamps
        if not stamps:
            return None
        i = bisect.bisect_left(stamps, t)
        if i == 0:
            return self._corrections[0]
        if i >= len(stamps):
            return self._corrections[-1]
        A, B = self._corrections[i - 1], self._corrections[i]
        a = (t - stamps[i - 1]) / max(stamps[i] - stamps[i - 1], 1e-9)
        T = np.eye(4)
        T[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix([A[:3, :3], B[:3, :3]]))(a).as_matrix()
        T[:3, 3] = (1 - a) * A[:3, 3] + a * B[:3, 3]
        return T

    def express(self, frames: list[Frame]) -> tuple[list[Frame], str]:
        """Frames with odometry poses → the same frames posed in ``map``.

        Returns:
            ``(frames, how)``: ``how`` says which frame the poses are in and why (``"map (AMCL/SLAM
            corrections)"``, or ``"odom: no map pose received yet"``) — answers carry it.
        """
        import dataclasses

        if not self._corrections:
            what = "no map pose received yet" if not self.received else "map poses received, none matched to odometry yet"
            return frames, f"{frames[0].world_frame_id if frames else 'odom'}: {what}"
        out = []
        for f in frames:
            if f.T_world_camera is None or (self.odom_frame_id and f.world_frame_id != self.odom_frame_id):
                out.append(f)
                continue
            T = self.correction_at(f.stamp_s)
            out.append(dataclasses.replace(f, T_world_camera=T @ f.T_world_camera, world_frame_id=self.map_frame_id))
        return out, f"{self.map_frame_id} (map poses corrected odometry: {len(self)} corrections)"
