"""Frames, the keyframe buffer and the sources: bounds, staleness, selection, bag round trips."""

import threading

import numpy as np
import pytest

from conftest import RGBD
from vilasr_ros.buffer import BufferConfig, EmptyBufferError, FrameBuffer, StaleBufferError, select_frames
from vilasr_ros.errors import ConfigError, MessageError
from vilasr_ros.frames import CameraIntrinsics, Frame, FrameError
from vilasr_ros.sources import SourceError, open_source
from vilasr_ros.sources.bag import BagSource, write_bag

INTR = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)


def frame(t=0.0, x=0.0, yaw_deg=0.0, depth=True):
    T = np.eye(4)
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[0, 3] = x
    rgb = np.full((48, 64, 3), int(t * 10) % 255, np.uint8)
    return Frame(rgb, np.ones((48, 64), np.float32) if depth else None, INTR, T, stamp_s=t)


@pytest.fixture(scope="module")
def o3d_frames():
    with open_source(f"rgbd_folder:{RGBD / 'open3d_testdata_rgbd'}") as source:
        return list(source)


def test_rgbd_folder_reads_intrinsics_depth_and_poses(o3d_frames):
    assert len(o3d_frames) == 5
    f = o3d_frames[0]
    assert f.size == (640, 480) and (f.intrinsics.fx, f.intrinsics.cx, f.intrinsics.cy) == (525.0, 319.5, 239.5)
    assert f.depth_m.dtype == np.float32 and 0.2 < np.median(f.depth_m[f.depth_m > 0]) < 5
    np.testing.assert_allclose(f.T_world_camera[:3, 3], [-0.31057997, 0.57301224, 2.12648002], atol=1e-6)


def test_tum_sample_has_no_pose_and_scale_5000():
    (f,) = list(open_source(f"rgbd_folder:{RGBD / 'tum_rgbd_sample'}"))
    assert f.T_world_camera is None and 0.3 < np.median(f.depth_m[f.depth_m > 0]) < 5


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize(
    "color,depth_encoding,depth_compressed", [(None, "16UC1", False), ("png", "32FC1", False), ("png", "16UC1", True)]
)
def test_bag_round_trip_gives_identical_frames(o3d_frames, tmp_path, storage, color, depth_encoding, depth_compressed):
    path = write_bag(o3d_frames, tmp_path / "bag", storage=storage, color_compressed=color,
                     depth_encoding=depth_encoding, depth_compressed=depth_compressed)
    with open_source(f"bag:{path}") as source:
        back = list(source)
    assert len(back) == len(o3d_frames)
    for a, b in zip(o3d_frames, back):
        assert np.array_equal(a.rgb, b.rgb)
        assert np.array_equal(a.depth_m, b.depth_m)
        assert a.intrinsics == b.intrinsics
        np.testing.assert_allclose(a.T_world_camera, b.T_world_camera, atol=1e-9)
        assert abs(a.stamp_s - b.stamp_s) < 1e-9 and b.index == a.index


def test_bag_with_jpeg_colour_decodes_close(o3d_frames, tmp_path):
    path = write_bag(o3d_frames[:2], tmp_path / "bag", color_compressed="jpeg")
    back = list(BagSource(path))
    assert np.abs(back[0].rgb.astype(int) - o3d_frames[0].rgb).mean() < 3


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown source"):
        open_source("webcam:0")
    with pytest.raises(SourceError, match="no color/ folder"):
        open_source(f"rgbd_folder:{tmp_path}")
    with pytest.raises(SourceError, match="cannot open bag"):
        open_source(f"bag:{tmp_path}")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth_m=np.ones((10, 10), np.float32)), "register depth"),
        (dict(rgb=np.zeros((48, 64), np.uint8)), "uint8"),
        (dict(T_world_camera=np.zeros((4, 4))), "last row"),
        (dict(T_world_camera=np.diag([1.0, 1.0, 0.0, 1.0])), "rotation"),
        (dict(depth_m=np.ones((48, 64), np.uint16)), "float32"),
    ],
)
def test_bad_frames_are_refused(kwargs, match):
    base = dict(rgb=np.zeros((48, 64, 3), np.uint8), depth_m=None, intrinsics=INTR)
    with pytest.raises(FrameError, match=match):
        Frame(**{**base, **kwargs})


def test_unknown_bag_encoding_is_a_clear_error(tmp_path):
    from vilasr_ros.sources.bag import decode_color, IMAGE

    class Msg:
        encoding, height, width, step, data = "yuv422", 2, 2, 4, b"\0" * 8

    with pytest.raises(MessageError, match="unsupported colour encoding 'yuv422'"):
        decode_color(Msg, IMAGE)


def test_keyframe_policy_distance_rotation_time():
    buf = FrameBuffer(BufferConfig(min_translation_m=0.1, min_rotation_deg=10, max_interval_s=1.0))
    assert buf.add(frame(0.0))
    assert not buf.add(frame(0.1, x=0.05))  # small move, little time
    assert buf.add(frame(0.2, x=0.2))  # moved 20 cm
    assert buf.add(frame(0.3, x=0.2, yaw_deg=15))  # turned 15°
    assert buf.add(frame(1.4, x=0.2, yaw_deg=15))  # a second passed
    assert len(buf) == 4 and buf.received == 5
    assert buf.latest().stamp_s == 1.4


def test_buffer_bounds_by_count_and_bytes():
    one = frame(0).nbytes
    buf = FrameBuffer(BufferConfig(max_frames=100, max_bytes=int(3.5 * one), max_interval_s=0))
    for i in range(20):
        buf.add(frame(float(i)))
    assert len(buf) == 3 and buf.nbytes <= 3.5 * one
    assert [f.stamp_s for f in buf.snapshot()] == [17.0, 18.0, 19.0]
    buf = FrameBuffer(BufferConfig(max_frames=5, max_interval_s=0))
    for i in range(20):
        buf.add(frame(float(i)))
    assert len(buf) == 5


def test_empty_and_stale_buffer_raise_clear_errors():
    now = [100.0]
    buf = FrameBuffer(clock=lambda: now[0])
    with pytest.raises(EmptyBufferError):
        buf.latest()
    with pytest.raises(EmptyBufferError):
        buf.select(4)
    buf.add(frame(99.9))
    assert buf.latest(max_age_s=0.5).stamp_s == 99.9
    now[0] = 105.1
    with pytest.raises(StaleBufferError, match="no usable frame for 5.10 s"):
        buf.select(4, max_age_s=1.0)
    buf.clear()
    with pytest.raises(EmptyBufferError):
        buf.latest()
    buf.add(frame(105.0))  # still usable after errors
    assert len(buf.select(4)) == 1


def test_selection_strategies():
    frames = [frame(float(i), x=0.0 if i < 10 else 5.0) for i in range(20)]
    assert [f.stamp_s for f in select_frames(frames, 4, "uniform")] == [0.0, 6.0, 13.0, 19.0]
    assert [f.stamp_s for f in select_frames(frames, 3, "latest")] == [17.0, 18.0, 19.0]
    cov = select_frames(frames, 2, "coverage")
    assert {f.T_world_camera[0, 3] for f in cov} == {0.0, 5.0}  # one from each place
    with pytest.raises(ValueError):
        select_frames(frames, 0)


def test_buffer_is_thread_safe_under_concurrent_add_and_select():
    buf = FrameBuffer(BufferConfig(max_frames=50, max_interval_s=0))
    errors = []

    def producer(offset):  # three threads on one timeline (a jump back of > 1 s would restart the buffer)
        for i in range(300):
            buf.add(frame(offset * 0.0003 + i * 0.001))

    def consumer():
        for _ in range(200):
            try:
                buf.select(8)
            except EmptyBufferError:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(3)] + [threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and len(buf) == 50


def test_byte_bound_holds_under_a_30hz_vga_stream():
    """Shortened version of benchmarks/frame_buffer.py: 20 s of moving 640x480 RGB-D."""
    intr = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
    rgb, depth = np.zeros((480, 640, 3), np.uint8), np.ones((480, 640), np.float32)
    buf = FrameBuffer(BufferConfig(max_bytes=32 * 2**20, max_interval_s=1.0))
    peak = 0
    for i in range(600):
        T = np.eye(4)
        T[0, 3] = 0.5 * i / 30
        buf.add(Frame(rgb.copy(), depth.copy(), intr, T, stamp_s=i / 30))
        peak = max(peak, buf.nbytes)
    assert peak <= 32 * 2**20 and len(buf) == 32 * 2**20 // (640 * 480 * 7)
    assert buf.accepted > len(buf)  # old keyframes were evicted, the newest kept
    assert buf.snapshot()[-1].stamp_s == pytest.approx(599 / 30, abs=0.2)


def test_realsense_db3_recorded_by_the_software_device_round_trips(o3d_frames, tmp_path):
    pytest.importorskip("pyrealsense2")
    from vilasr_ros.sources.realsense import write_realsense_file

    path = tmp_path / "rec.db3"
    assert write_realsense_file(o3d_frames, path) == 5
    with open_source(f"realsense:{path}") as source:
        back = list(source)
    assert len(back) == len(o3d_frames)  # no frame lost, the first one included
    for a, b in zip(o3d_frames, back):
        assert np.array_equal(a.rgb, b.rgb)
        assert np.array_equal(a.depth_m, b.depth_m)  # bit-identical metres (mm units recovered exactly)
        assert a.intrinsics == b.intrinsics
        assert b.stamp_s == pytest.approx(a.stamp_s, abs=1e-9)
        assert b.T_world_camera is None  # a D4xx recording carries no pose
    assert [f.index for f in back] == list(range(5)) and back[0].source_id == f"realsense:{path}"


def test_realsense_without_camera_or_file_is_a_clear_error(tmp_path):
    pytest.importorskip("pyrealsense2")
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"realsense:{tmp_path / 'missing.db3'}")
    with pytest.raises(SourceError, match="no RealSense camera"):
        open_source("realsense:123456789")
