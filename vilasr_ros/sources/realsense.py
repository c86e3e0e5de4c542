"""``realsense`` / ``realsense:SERIAL`` / ``realsense:FILE.db3`` — Intel RealSense through ``pyrealsense2``.

Live cameras stream colour (rgb8) and depth (z16) through ``rs.pipeline``; recordings (``.db3``, the
ROS 2 bag format librealsense ≥ 2.58 writes) are played back frame by frame without real-time
pacing, so no frame is dropped. Either way depth is registered to colour with ``rs.align`` (unless
the recording's depth is already in the colour camera) and
converted to metres with the device's depth scale; intrinsics and distortion are the colour
stream's, as ``realsense-ros`` publishes them in ``CameraInfo``.

A D4xx camera has no pose: frames carry ``T_world_camera`` only when a fixed one is given (a
mounted camera) — otherwise ``None``; the ROS agent takes poses from odometry instead.

:func:`write_realsense_file` records frames into a ``.db3`` through librealsense's own
``software_device`` and ``recorder`` (tests, and converting other sources for tools that read
RealSense recordings).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.errors import ConfigError, require
from vilasr_ros.frames import CameraIntrinsics, Frame, FrameError, depth_to_metres
from vilasr_ros.sources.base import FrameSource, SourceError

logger = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".db3", ".bag")


def _rs():
    return require("pyrealsense2", "realsense")


def intrinsics_from_rs(intr) -> CameraIntrinsics:
    """``rs.intrinsics`` → :class:`CameraIntrinsics` (distortion model named as realsense-ros does:
    ``equidistant`` for Kannala-Brandt, else ``plumb_bob`` with ``k1 k2 p1 p2 k3``)."""
    rs = _rs()
    model = "equidistant" if intr.model == rs.distortion.kannala_brandt4 else "plumb_bob"
    return CameraIntrinsics(int(intr.width), int(intr.height), float(intr.fx), float(intr.fy),
                            float(intr.ppx), float(intr.ppy), model, tuple(float(c) for c in intr.coeffs))


def units_per_metre(depth_scale: float) -> float:
    """Depth units per metre from librealsense's depth scale (metres per unit).

    The scale is stored as float32, so 0.001 comes back as 0.0010000000475; the reciprocal is
    rounded to 6 significant digits to recover the decimal unit (1000 for millimetres) so that
    depth in metres is bit-identical to the other sources' ``value / 1000``.
    """
    if not depth_scale > 0:
        raise SourceError(f"device reports a non-positive depth scale {depth_scale}")
    return float(f"{1.0 / depth_scale:.6g}")


def already_registered(depth_profile, color_profile) -> bool:
    """True when depth is already in the colour camera (same intrinsics, identity extrinsics), as in
    recordings of aligned streams; ``rs.align`` is then skipped because its splatting is not the
    identity (it widens each depth pixel's footprint)."""
    d = depth_profile.as_video_stream_profile().get_intrinsics()
    c = color_profile.as_video_stream_profile().get_intrinsics()
    same = (d.width, d.height, d.fx, d.fy, d.ppx, d.ppy, list(d.coeffs)) == (
        c.width, c.height, c.fx, c.fy, c.ppx, c.ppy, list(c.coeffs))
    ext = depth_profile.get_extrinsics_to(color_profile)
    return same and np.allclose(ext.rotation, np.eye(3).ravel()) and np.allclose(ext.translation, 0)


def frameset_to_frame(frameset, *, units: float, index: int, source_id: str, T_world_camera=None,
                      world_frame_id: str = "map") -> Frame:
    """An aligned ``rs.composite_frame`` (depth registered to colour) → :class:`Frame`.

    Stamps: librealsense timestamps are milliseconds (device clock, or host time with global time
    enabled) → seconds.

    Raises:
        SourceError: No colour frame, or a colour format other than rgb8/bgr8.
    """
    rs = _rs()
    color = frameset.get_color_frame()
    if not color:
        raise SourceError(f"{source_id}: frameset {frameset.get_frame_number()} has no colour frame")
    fmt = color.get_profile().format()
    rgb = np.asanyarray(color.get_data())
    if fmt == rs.format.bgr8:
        rgb = rgb[..., ::-1]
    elif fmt != rs.format.rgb8:
        raise SourceError(f"{source_id}: colour format {fmt} not supported (use rgb8 or bgr8)")
    depth_frame = frameset.get_depth_frame()
    depth = depth_to_metres(np.asanyarray(depth_frame.get_data()), units) if depth_frame else None
    intr = color.get_profile().as_video_stream_profile().get_intrinsics()
    try:
        return Frame(
            rgb=np.ascontiguousarray(rgb),
            depth_m=depth,
            intrinsics=intrinsics_from_rs(intr),
            T_world_camera=T_world_camera,
            stamp_s=color.get_timestamp() / 1000.0,
            frame_id="camera_color_optical_frame",
            world_frame_id=world_frame_id,
            source_id=source_id,
            index=index,
        )
    except FrameError as exc:
        raise SourceError(f"{source_id}: frame {index}: {exc}") from exc


@dataclass(frozen=True)
class RealSenseConfig:
    """Settings of a ``realsense[:DEVICE]`` source.

    Attributes:
        device: ``""`` (the first connected camera), a serial number, or a ``.db3`` recording path.
        width, height, fps: Live stream settings (colour and depth alike; ignored for recordings).
        T_world_camera: Fixed 4×4 pose of the colour optical frame for every frame (a mounted camera), or None.
        world_frame_id: Frame ``T_world_camera`` is in.
        timeout_s: Live: how long to wait for a frameset before :class:`SourceError`. Recordings: how
            long to wait for the next frame before the recording counts as finished.
    """

    device: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    T_world_camera: Any = None
    world_frame_id: str = "map"
    timeout_s: float = 5.0

    def __post_init__(self):
        if self.width < 1 or self.height < 1 or self.fps < 1 or not self.timeout_s > 0:
            raise ConfigError("realsense: width, height and fps must be >= 1 and timeout_s > 0")


class RealSenseSource(FrameSource):
    """Frames from a RealSense camera or a ``.db3`` recording.

    Args:
        config: A :class:`RealSenseConfig`, or its ``device`` (``""``: the first connected camera, a
            serial number, or a recording path).
        **options: :class:`RealSenseConfig` fields, over those of ``config``.

    Raises:
        SourceError: No camera connected / serial not found / recording unreadable.
        MissingDependencyError: ``pyrealsense2`` is not installed (extra ``realsense``).
    """

    config_class = RealSenseConfig
    primary_option = "device"

    def __init__(self, config: RealSenseConfig | str | None = None, /, **options: Any):
        self.config = cfg = self.resolve_config(config, options)
        arg, width, height, fps = str(cfg.device), cfg.width, cfg.height, cfg.fps
        T_world_camera, world_frame_id, timeout_s = cfg.T_world_camera, cfg.world_frame_id, cfg.timeout_s
        rs = _rs()
        self.arg = arg
        self.is_file = arg.lower().endswith(RECORDING_SUFFIXES) or (bool(arg) and Path(arg).is_file())
        self.source_id = f"realsense:{arg}" if arg else "realsense"
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.T_world_camera = T_world_camera
        self.world_frame_id = world_frame_id
        self.timeout_s = float(timeout_s)
        self._ctx = rs.context()
        if self.is_file:
            if not Path(arg).is_file():
                raise SourceError(f"RealSense recording {arg} does not exist")
            if arg.lower().endswith(".bag"):
                raise SourceError(f"{arg}: ROS 1 .bag recordings are not readable by pyrealsense2 >= 2.58; use a .db3")
        else:
            serials = [d.get_info(rs.camera_info.serial_number) for d in self._ctx.query_devices()]
            if not serials:
                raise SourceError("no RealSense camera connected (check the USB cable and udev rules)")
            if arg and arg not in serials:
                raise SourceError(f"no RealSense camera with serial {arg}; connected: {serials}")

    def __iter__(self) -> Iterator[Frame]:
        return self._iter_file() if self.is_file else self._iter_live()

    def _iter_live(self) -> Iterator[Frame]:
        rs = _rs()
        pipeline, config = rs.pipeline(self._ctx), rs.config()
        if self.arg:
            config.enable_device(self.arg)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        try:
            profile = pipeline.start(config)
        except RuntimeError as exc:
            raise SourceError(f"{self.source_id}: cannot start {self.width}x{self.height}@{self.fps}: {exc}") from exc
        try:
            units = units_per_metre(profile.get_device().first_depth_sensor().get_depth_scale())
            align = rs.align(rs.stream.color)
            index = 0
            while True:
                ok, frameset = pipeline.try_wait_for_frames(int(self.timeout_s * 1000))
                if not ok:
                    raise SourceError(f"{self.source_id}: no frames for {self.timeout_s:.1f} s")
                yield frameset_to_frame(align.process(frameset), units=units, index=index, source_id=self.source_id,
                                        T_world_camera=self.T_world_camera, world_frame_id=self.world_frame_id)
                index += 1
        finally:
            pipeline.stop()

    def _iter_file(self) -> Iterator[Frame]:
        rs = _rs()
        try:
            device = self._ctx.load_device(str(self.arg))
        except RuntimeError as exc:
            raise SourceError(f"cannot read RealSense recording {self.arg}: {exc}") from exc
        playback = device.as_playback()
        playback.set_real_time(False)  # wait for the consumer: no drops
        sensors = device.query_sensors()
        try:
            units = units_per_metre(device.first_depth_sensor().get_depth_scale())
        except RuntimeError:
            units = 1000.0  # colour-only recording: no depth frames will come
        syncer = rs.syncer(64)
        for sensor in sensors:
            sensor.open(sensor.get_stream_profiles())
        # Playback starts reading when the first sensor starts; a frame read before its own sensor
        # (or, racing with librealsense's start, the first sensor itself) is started is dropped. So
        # start them paused: librealsense's resume() rewinds to the last frame it published.
        playback.pause()
        for sensor in sensors:
            sensor.start(syncer)
        playback.resume()
        align = rs.align(rs.stream.color)
        # The syncer emits a stream's first frame alone before it has seen the other stream; pair
        # such halves (one colour, one depth) by timestamp and rebuild a frameset with a processing block.
        halves: dict[float, dict] = {}
        partner: list = []
        merged = rs.frame_queue(4)
        combine = rs.processing_block(lambda f, src: src.frame_ready(src.allocate_composite_frame([f, partner[0]])))
        combine.start(merged)
        profiles = {p.stream_type(): p for s in sensors for p in s.get_stream_profiles()}
        has_depth = rs.stream.depth in profiles and rs.stream.color in profiles
        align = None if not has_depth or already_registered(profiles[rs.stream.depth], profiles[rs.stream.color]) else align
        index, last_stamp = 0, None
        try:
            while True:
                ok, frame = syncer.try_wait_for_frames(int(self.timeout_s * 1000))
                if not ok:
                    break
                frameset = rs.composite_frame(frame)
                color, depth = frameset.get_color_frame(), frameset.get_depth_frame()
                if has_depth and not (color and depth):
                    half = color or depth
                    half.keep()
                    kind = half.get_profile().stream_type()
                    waiting = halves.setdefault(half.get_timestamp(), {})
                    waiting[kind] = half  # a repeat of the same stream replaces, never pairs with itself
                    if len(waiting) < 2:
                        continue
                    del halves[half.get_timestamp()]
                    partner[:] = [next(f for k, f in waiting.items() if k != kind)]
                    combine.invoke(half)
                    frameset = rs.composite_frame(merged.wait_for_frame())
                color = frameset.get_color_frame()
                if color:
                    if last_stamp is not None and color.get_timestamp() <= last_stamp:
                        logger.debug("%s: playback repeated the frame at %.3f ms; skipped",
                                     self.source_id, color.get_timestamp())
                        continue
                    last_stamp = color.get_timestamp()
                if align is not None:
                    frameset = align.process(frameset)
                yield frameset_to_frame(frameset, units=units, index=index, source_id=self.source_id,
                                        T_world_camera=self.T_world_camera, world_frame_id=self.world_frame_id)
                index += 1
            if halves:
                logger.warning("%s: %d frames without a partner stream were skipped", self.source_id, len(halves))
        finally:
            for sensor in sensors:
                sensor.stop()
                sensor.close()


def write_realsense_file(frames: Iterable[Frame], path: str | Path, *, depth_scale: float = 0.001,
                         serial: str = "000000000000") -> int:
    """Record frames into a RealSense ``.db3`` with librealsense's software device and recorder.

    Colour is written as rgb8, depth (registered to colour, same intrinsics, identity extrinsics)
    as z16 with ``depth_units = depth_scale`` metres; stamps as milliseconds. Poses are not stored
    (the format has none for a D4xx).

    Returns:
        The number of frames written.

    Raises:
        SourceError: Frames of different sizes, or a frame without depth.
    """
    rs = _rs()
    frames = list(frames)
    if not frames:
        raise SourceError("no frames to record")
    first = frames[0].intrinsics
    W, H = first.width, first.height
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = W, H, first.fx, first.fy, first.cx, first.cy
    intr.model = rs.distortion.brown_conrady
    intr.coeffs = list((first.D + (0.0,) * 5)[:5])

    device = rs.software_device()
    device.register_info(rs.camera_info.name, "vilasr_ros software camera")
    device.register_info(rs.camera_info.serial_number, serial)
    depth_sensor, color_sensor = device.add_sensor("Stereo Module"), device.add_sensor("RGB Camera")

    def stream(sensor, kind, uid, bpp, fmt):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = kind, 0, uid, W, H, 30, bpp, fmt
        vs.intrinsics = intr
        return sensor.add_video_stream(vs)

    depth_profile = stream(depth_sensor, rs.stream.depth, 0, 2, rs.format.z16)
    color_profile = stream(color_sensor, rs.stream.color, 1, 3, rs.format.rgb8)
    depth_sensor.add_read_only_option(rs.option.depth_units, float(depth_scale))
    identity = rs.extrinsics()
    identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
    depth_profile.register_extrinsics_to(color_profile, identity)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recorder = rs.recorder(str(path), device)
    depth_sensor.open(depth_profile)
    color_sensor.open(color_profile)
    depth_sensor.start(lambda f: None)
    color_sensor.start(lambda f: None)
    try:
        for n, frame in enumerate(frames):
            if frame.size != (W, H) or frame.intrinsics != first:
                raise SourceError(f"frame {n}: every frame must share the first frame's intrinsics ({W}x{H})")
            if frame.depth_m is None:
                raise SourceError(f"frame {n} has no depth")
            units = np.nan_to_num(frame.depth_m / np.float32(depth_scale), nan=0.0)
            raw = np.ascontiguousarray(np.clip(np.round(units), 0, 65535).astype(np.uint16))
            rgb = np.ascontiguousarray(frame.rgb)
            for sensor, profile, pixels, bpp in ((depth_sensor, depth_profile, raw, 2),
                                                 (color_sensor, color_profile, rgb, 3)):
                sf = rs.software_video_frame()
                sf.pixels, sf.bpp, sf.stride = pixels, bpp, bpp * W
                sf.timestamp, sf.domain, sf.frame_number = frame.stamp_s * 1000.0, rs.timestamp_domain.system_time, n
                sf.profile = profile.as_video_stream_profile()
                sensor.on_video_frame(sf)
            time.sleep(0.002)  # let the recorder's writer keep up
    finally:
        for sensor in (depth_sensor, color_sensor):
            sensor.stop()
            sensor.close()
        del recorder  # flushes and closes the file
    return len(frames)
