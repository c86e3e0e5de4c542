"""The keyframe memory on disk (issue 26): persistence, crash safety, retrieval by place and time,
bounded size, queries answered from remembered frames, the ``vilasr memory`` commands."""

from __future__ import annotations

import dataclasses
import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vilasr_ros.agent import AgentConfig, SpatialAgent, parse_query
from vilasr_ros.buffer import BufferConfig, FrameBuffer
from vilasr_ros.engines import create_engine
from vilasr_ros.engines.replay import demo_responses
from vilasr_ros.frames import CameraIntrinsics, Frame
from vilasr_ros.memory import KeyframeMemory, MemoryConfig, MemoryStoreError, MemoryWriter
from vilasr_ros.retrieval import AgentMemory, load_regions
from vilasr_ros.query import BadQueryError
from vilasr_ros.reasoner import Reasoner
from vilasr_ros.sources import open_source

INTR = CameraIntrinsics(64, 48, 50.0, 50.0, 32.0, 24.0)
T0 = 1_700_000_000.0


def _walk(n: int, dt: float = 1.0, seed: int = 0) -> list[Frame]:
    """A camera walking along x (0.1 m per frame) and turning, one frame per ``dt`` seconds."""
    yy, xx = np.mgrid[0:48, 0:64]
    out = []
    for i in range(n):
        T = np.eye(4)
        yaw = 0.3 * i
        T[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
        T[:3, 3] = [0.1 * i, 0.5 * np.sin(0.2 * i), 1.2]
        rgb = np.stack([(xx * 4 + i) % 256, (yy * 5 + 3 * i + seed) % 256, np.full_like(xx, (7 * i) % 256)], -1)
        out.append(Frame(rgb=rgb.astype(np.uint8), depth_m=np.full((48, 64), 1.5 + 0.001 * i, np.float32),
                         intrinsics=INTR, T_world_camera=T, stamp_s=T0 + i * dt, index=i))
    return out


@pytest.fixture(scope="module")
def demo_frames():
    with open_source("sim:demo") as source:
        return list(source)


def test_keyframes_come_back_as_they_were_stored(tmp_path):
    frames = _walk(5)
    memory = KeyframeMemory(tmp_path / "m")
    ids = [memory.add(f) for f in frames]
    memory.close()
    again = KeyframeMemory(tmp_path / "m")  # a restart continues the same memory
    back = again.frames(ids[::-1])
    assert [f.stamp_s for f in back] == [f.stamp_s for f in frames[::-1]]
    for a, b in zip(back, frames[::-1]):
        np.testing.assert_array_equal(a.T_world_camera, b.T_world_camera)
        assert np.abs(a.depth_m - b.depth_m).max() <= 0.0005  # millimetre PNG
        assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 6  # JPEG
        assert a.intrinsics == b.intrinsics and a.world_frame_id == b.world_frame_id
    assert again.add(frames[0]) > max(ids)
    assert again.info()["keyframes"] == 6


def test_filters_return_only_frames_inside_them(tmp_path):
    frames = _walk(120)
    memory = KeyframeMemory(tmp_path / "m")
    for f in frames:
        memory.add(f)
    regions_file = tmp_path / "regions.yaml"
    regions_file.write_text("regions:\n  bay: [[2.0, -1.0], [5.0, -1.0], [5.0, 0.0], [2.0, 0.0]]\n")
    agent_memory = AgentMemory(tmp_path / "m", regions_file, readonly=True)
    xy = np.array([f.T_world_camera[:2, 3] for f in frames])
    stamps = np.array([f.stamp_s for f in frames])

    def select(**fields):
        return agent_memory.select(parse_query(json.dumps({"question": "?", **fields})), 16, now_s=T0 + 200)

    got, info = select(since=T0 + 30, until=T0 + 59.5)
    assert info["candidates"] == int(((stamps >= T0 + 30) & (stamps <= T0 + 59.5)).sum()) == 30
    assert len(got) == 16 and all(T0 + 30 <= f.stamp_s <= T0 + 59.5 for f in got)
    assert [f.stamp_s for f in got] == sorted(f.stamp_s for f in got)  # time order
    got, _ = select(since="-100s")  # relative to now: T0 + 100 onwards
    assert all(f.stamp_s >= T0 + 100 for f in got) and len(got) == 16
    got, info = select(region="bay")
    inside = (xy[:, 0] >= 2) & (xy[:, 0] <= 5) & (xy[:, 1] >= -1) & (xy[:, 1] <= 0)
    assert info["candidates"] == int(inside.sum()) > 0
    assert all(2 <= f.T_world_camera[0, 3] <= 5 and -1 <= f.T_world_camera[1, 3] <= 0 for f in got)
    got, info = select(near={"x": 6.0, "y": 0.0, "radius_m": 0.75})
    assert info["candidates"] == int((np.hypot(xy[:, 0] - 6, xy[:, 1]) <= 0.75).sum()) > 0
    assert all(np.hypot(f.T_world_camera[0, 3] - 6, f.T_world_camera[1, 3]) <= 0.75 for f in got)
    for fields, match in [({"region": "kitchen"}, "unknown region 'kitchen' \\(regions: bay\\)"),
                          ({"since": T0 + 500}, "no remembered keyframe time"),
                          ({"since": T0 + 50, "until": T0 + 10}, "is after"),
                          ({"near": {"x": 50.0, "y": 50.0, "radius_m": 1.0}}, "no remembered keyframe within 1 m")]:
        with pytest.raises(MemoryStoreError, match=match):
            select(**fields)
    agent_memory.close()


@pytest.mark.parametrize("fields, match", [
    ({"since": "yesterday"}, "'since'"), ({"until": True}, "'until'"), ({"near": {"x": 1, "y": 2}}, "'near'"),
    ({"near": {"x": 1, "y": 2, "radius_m": -1}}, "'near'"), ({"region": ""}, "'region'"), ({"memory": "yes"}, "'memory'"),
])
def test_malformed_memory_fields_are_refused_with_the_query_id(fields, match):
    with pytest.raises(BadQueryError, match=match) as info:
        parse_query(json.dumps({"id": "m1", "question": "?", **fields}))
    assert info.value.query_id == "m1"


def test_bad_region_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("regions:\n  hall: [[0, 0], [1, 1]]\n")
    with pytest.raises(MemoryStoreError, match="region 'hall' must be a list of at least 3"):
        load_regions(bad)


def _agent(frames_in_buffer, memory) -> SpatialAgent:
    buf = FrameBuffer(BufferConfig(max_interval_s=0.0, min_translation_m=0.0))
    for f in frames_in_buffer:
        buf.add(f)
    reasoner = Reasoner(create_engine("replay", responses=str(demo_responses())))
    return SpatialAgent(reasoner, buf, AgentConfig(trace_root=None, max_age_s=None), memory=memory)


def test_a_query_about_the_past_is_answered_from_remembered_frames(demo_frames, tmp_path):
    """The sofa was seen 30 minutes ago; the buffer now holds another walk. A ``since``/``until``
    query shows the model the remembered frames and grounds the sofa in them; an error answer
    (unknown region, empty window) sends no goal."""
    now = time.time()
    memory = AgentMemory(tmp_path / "m")
    for i, f in enumerate(demo_frames):
        memory.store.add(dataclasses.replace(f, stamp_s=now - 1800 + i))
    recent = [dataclasses.replace(f, stamp_s=now - 16 + i) for i, f in enumerate(_walk(16))]
    agent = _agent(recent, memory)
    result = agent.answer(parse_query('{"id": "m", "question": "Where is the sofa? Go to it.", "target": "sofa", '
                                      '"since": "-40min", "until": "-20min"}'))
    a = result.answer
    assert a.error is None and a.goal_sent, a
    assert a.memory["candidates"] == 16 and "time" in a.memory["reason"]
    assert all(now - 1800 <= fr["stamp_s"] <= now - 1784 for fr in a.frames)
    for text, match in [('{"id": "x", "question": "?", "target": "sofa", "region": "bay"}', "unknown region"),
                        ('{"id": "y", "question": "?", "target": "sofa", "since": "-10s", "until": "-5s"}',
                         "no remembered keyframe")]:
        bad = agent.answer(parse_query(text)).answer
        assert match in bad.error and not bad.goal_sent and bad.target_pose is None
    plain = agent.answer(parse_query('{"id": "p", "question": "What is here?"}')).answer  # no filter: the buffer
    assert plain.memory is None and all(fr["stamp_s"] >= now - 16 for fr in plain.frames)
    # The grounded sofa is in the object memory: asked again without a filter, the agent knows it was
    # last seen before the buffer's window, shows the keyframes it was seen in, and says when and where.
    [seen] = agent.memory.store.objects("Sofa")
    assert seen["position"] == pytest.approx(a.target["position_world"]) and seen["evidence"]
    again = agent.answer(parse_query('{"id": "s", "question": "Where is the sofa? Go to it.", "target": "sofa"}')).answer
    assert again.memory is not None and again.goal_sent, again
    assert again.memory["last_seen"]["position"] == pytest.approx(a.target["position_world"])
    assert now - 1800 <= again.memory["last_seen"]["stamp"] <= now - 1784
    assert "where the target was seen" in again.memory["reason"]
    agent.close()
    without = _agent(recent, None).answer(parse_query('{"id": "w", "question": "?", "since": "-1h"}')).answer
    assert "has none (set memory_dir)" in without.error


_WRITER = r"""
import sys, numpy as np
sys.path.insert(0, {test_dir!r})
from test_memory import _walk
from vilasr_ros.memory import KeyframeMemory
memory = KeyframeMemory({path!r})
for i, f in enumerate(_walk(400, seed=1)):
    memory.add(f)
    print(i + 1, flush=True)
"""


def test_sigkill_during_ingest_loses_at_most_the_keyframe_being_written(tmp_path):
    path = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER.format(test_dir=str(Path(__file__).parent), path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    committed = 0
    try:
        for line in proc.stdout:
            committed = int(line)
            if committed >= 40:
                break
        proc.send_signal(signal.SIGKILL)  # while it writes the next ones
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    memory = KeyframeMemory(path)  # opens, recovers the write-ahead log
    n = memory.info()["keyframes"]
    assert committed <= n  # every keyframe reported written is there...
    frames = memory.frames([r.id for r in memory.records()])
    assert len(frames) == n and [f.stamp_s for f in frames] == [T0 + i for i in range(n)]  # in order, each readable
    assert memory.add(_walk(1)[0]) == n + 1  # and the memory goes on


def test_bounded_size_and_flat_memory_over_ten_minutes_of_ingest(tmp_path):
    """Ten minutes of keyframes at 2 Hz (1200, about 1.1 kB of images each) under a 1 MiB cap: the
    store (pages and log) stays under the cap, its files do not grow past it, the oldest go first, and
    the writer's resident memory does not grow."""
    cap = 2**20
    memory = KeyframeMemory(tmp_path / "m", MemoryConfig(max_bytes=cap, queue_size=8))
    writer = MemoryWriter(memory)
    rss = []
    for i, f in enumerate(_walk(1200, dt=0.5, seed=2)):
        while not writer.offer(f):
            time.sleep(0.001)
        if i % 300 == 299:
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    writer.dropped = 0
    writer.close()
    info = memory.info()
    assert info["bytes"] <= cap and writer.written == 1200 and writer.failed == 0
    first = memory.records()[0]
    assert info["last_stamp"] == T0 + 599.5 and first.stamp_s > T0 + 300  # oldest first
    assert info["keyframes"] == 1200 - (first.stamp_s - T0) / 0.5  # a contiguous recent window
    assert rss[-1] - rss[1] < 20 * 1024, rss  # ru_maxrss is KiB: < 20 MiB growth after warm-up
    assert info["file_bytes"] < 1.1 * cap  # free pages are reused, the log truncated


def test_a_full_writer_queue_drops_and_counts_without_blocking(tmp_path):
    memory = KeyframeMemory(tmp_path / "m", MemoryConfig(queue_size=1))
    writer = MemoryWriter(memory)
    frames = _walk(200)
    t = time.perf_counter()
    offered = [writer.offer(f) for f in frames]
    assert time.perf_counter() - t < 5.0  # never waits for the disk (generous: a loaded machine)
    writer.close()
    assert writer.dropped == offered.count(False) > 0 and writer.written == offered.count(True)


def test_memory_commands_build_info_and_query(tmp_path, demo_frames, capsys):
    from vilasr_ros.cli import main
    from vilasr_ros.sources.bag import write_bag

    bag = write_bag(demo_frames, tmp_path / "walk", storage="mcap")
    assert main(["memory", "build", str(bag), "--out", str(tmp_path / "mem")]) == 0
    assert "16 keyframes of 16 frames" in capsys.readouterr().out
    assert main(["memory", "info", str(tmp_path / "mem"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    stamps = [f.stamp_s for f in demo_frames]
    assert info["keyframes"] == 16 and info["first_stamp"] == pytest.approx(min(stamps), abs=1e-6)
    assert info["last_stamp"] == pytest.approx(max(stamps), abs=1e-6) and info["bytes"] > 0 and info["objects"] == []
    mid = stamps[8]
    assert main(["memory", "query", str(tmp_path / "mem"), "--since", str(mid), "--frames", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["frames"]
    assert len(got) == 4 and all(f["stamp"] >= mid - 1e-6 for f in got) and all(len(f["position"]) == 3 for f in got)
    assert main(["memory", "query", str(tmp_path / "mem"), "--region", "x"]) == 2
    assert "--region needs --regions" in capsys.readouterr().err
    assert main(["memory", "info", str(tmp_path / "nothing")]) == 2
    assert "no keyframe memory" in capsys.readouterr().err
    out = tmp_path / "ask"
    assert main(["ask", "--memory", str(tmp_path / "mem"), "--since", str(stamps[0]), "--engine", "replay",
                 "--question", "Where is the sofa?", "--out", str(out)]) == 0
    assert "16 of 16 remembered keyframes" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from vilasr_ros.tiny_model import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_text_search_ranks_remembered_frames_with_an_embedder_built_offline(tmp_path, tiny_clip_dir):
    """A tiny random CLIP loaded through ``from_pretrained`` embeds keyframes in the background; a
    ``text`` query puts the best-matching frames of the filtered set first (the rest by coverage)."""
    from vilasr_ros.embedder import ImageTextEmbedder

    frames = _walk(40)
    memory = AgentMemory(tmp_path / "m", embedder_model=str(tiny_clip_dir))
    for f in frames:
        memory.store.add(f)
    wait_for = time.monotonic() + 60
    while memory.embedding.embedded < 40 and time.monotonic() < wait_for:
        time.sleep(0.05)
    assert memory.embedding.embedded == 40 and memory.counters()["memory_embedded"] == 40
    got, info = memory.select(parse_query('{"question": "?", "text": "red backpack", "since": %f}' % (T0 + 10)), 8,
                              now_s=T0 + 100)
    embedder = ImageTextEmbedder(tiny_clip_dir, device="cpu")  # the same model, independently
    stored = memory.store.frames([r.id for r in memory.store.records(since=T0 + 10)])
    sims = embedder.images([f.rgb for f in stored]) @ embedder.text("red backpack")
    best = {stored[i].stamp_s for i in np.argsort(-sims)[:4]}
    looked = {f.stamp_s for f, why in zip(got, info["reasons"]) if why == "looks like 'red backpack'"}
    assert looked == best and len(got) == 8 and all(f.stamp_s >= T0 + 10 for f in got)
    memory.close()
    # A deleted keyframe takes its embedding with it.
    store = KeyframeMemory(tmp_path / "m", MemoryConfig(max_age_s=5.0))
    store.add(dataclasses.replace(_walk(1)[0], stamp_s=T0 + 100))  # the other 40 are now too old
    n = store._db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    assert n == 0 and store.info()["keyframes"] == 1


def test_without_embedder_weights_the_memory_says_so_and_retrieves_by_place_and_time(tmp_path, caplog):
    memory = AgentMemory(tmp_path / "m", embedder_model=str(tmp_path / "no_such_model"))
    for f in _walk(20):
        memory.store.add(f)
    assert memory.embedder is None and "not loaded" in caplog.text
    got, info = memory.select(parse_query('{"question": "?", "text": "a cart", "since": %f}' % (T0 + 5)), 4, now_s=T0)
    assert len(got) == 4 and "'text' not used: embedder" in info["reason"]
    memory.close()


def test_object_memory_markers_show_each_labels_last_sighting():
    pytest.importorskip("rclpy")
    from builtin_interfaces.msg import Time

    from vilasr_ros.ros.conversions import object_markers_msg

    objects = [{"label": "sofa", "stamp": 1_733_400_000.0, "position": [1.0, 2.0, 0.4], "frame_id": "map",
                "covariance": np.diag([0.04, 0.01, 0.01]).tolist()},   # newest first, as objects() returns
               {"label": "sofa", "stamp": 1_733_300_000.0, "position": [9.0, 9.0, 0.4], "frame_id": "map", "covariance": None},
               {"label": "cart", "stamp": 1_733_399_000.0, "position": [5.0, 1.0, 0.5], "frame_id": "map", "covariance": None}]
    msg = object_markers_msg(objects, Time())
    spheres = {m.id: m for m in msg.markers if m.type == m.SPHERE}
    texts = [m.text for m in msg.markers if m.type == m.TEXT_VIEW_FACING]
    assert len(spheres) == 2 and sorted(texts) == ["cart (seen 11:43:20 UTC)", "sofa (seen 12:00:00 UTC)"]
    sofa = next(m for m in spheres.values() if m.pose.position.x == 1.0)
    assert sofa.scale.x == pytest.approx(0.4)  # 2σ of the largest variance (0.04 m²)
