"""The ROS 2 agent end to end: real nodes in separate processes on loopback, a test client on topics.

The DDS environment (loopback discovery, a run-unique domain id, temp log dir, the shipped Fast DDS
profile) is set by conftest.py before rclpy is imported; the node processes inherit it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from conftest import REPO, RGBD, stop_processes as stop, wait_until  # noqa: E402
from vilasr_ros.grounding import ground_trace  # noqa: E402
from vilasr_ros.engines.replay import demo_responses  # noqa: E402
from vilasr_ros.sources import open_source  # noqa: E402
from vilasr_ros.ros.runner import spin  # noqa: E402
from vilasr_ros.trace import Trace  # noqa: E402

pytestmark = pytest.mark.ros

O3D = RGBD / "open3d_testdata_rgbd"
CONFIG = REPO / "config" / "agent.yaml"
# The colour optical frame 0.2 m ahead and 0.5 m above base_link, turned 30° about z: the camera node
# publishes T_world_base, the agent must recover T_world_camera exactly.
EXTRINSIC = "[0.2,0.0,0.5,0.0,0.0,0.2588190451,0.9659258263]"
RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)


def start(module: str, params: list[str], log: Path, extra: list[str] = ()) -> subprocess.Popen:
    args = [sys.executable, "-m", module, "--ros-args", *extra]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)


class Client:
    """A test node spinning in a background thread that records what the agent publishes."""

    def __init__(self, name: str, agent: str = "vilasr_agent"):
        self.node = rclpy.create_node(name)
        self.agent = agent
        self.answers: list[dict] = []
        self.poses: list[PoseStamped] = []
        self.images: list[Image] = []
        self.markers: list[MarkerArray] = []
        self.clouds: list[PointCloud2] = []
        self.progress: list[dict] = []
        self.diagnostics: dict[str, str] = {}
        self.colour = 0
        n = self.node
        n.create_subscription(String, f"/{agent}/answer", lambda m: self.answers.append(json.loads(m.data)), RELIABLE)
        n.create_subscription(String, f"/{agent}/progress", lambda m: self.progress.append(json.loads(m.data)), RELIABLE)
        n.create_subscription(PoseStamped, f"/{agent}/target_pose", self.poses.append, RELIABLE)
        n.create_subscription(Image, f"/{agent}/annotated_image", self.images.append, RELIABLE)
        n.create_subscription(MarkerArray, f"/{agent}/markers", self.markers.append, RELIABLE)
        n.create_subscription(PointCloud2, f"/{agent}/target_points", self.clouds.append, RELIABLE)
        n.create_subscription(Image, "/camera/camera/color/image_raw", self._count, qos_profile_sensor_data)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, RELIABLE)
        self.query_pub = n.create_publisher(String, f"/{agent}/query", RELIABLE)
        self.clear = n.create_client(Trigger, f"/{agent}/clear_buffer")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self.thread = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self.thread.start()

    def _count(self, msg):
        self.colour += 1

    def _diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith(self.agent):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    wait = staticmethod(wait_until)

    def ask(self, payload, timeout: float = 120.0) -> dict:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        qid = payload.get("id") if isinstance(payload, dict) else None
        before = len(self.answers)
        self.query_pub.publish(String(data=text))
        if qid is None:
            self.wait(lambda: len(self.answers) > before, timeout, "an answer")
            return self.answers[-1]
        self.wait(lambda: any(a["id"] == qid for a in self.answers), timeout, f"answer {qid}")
        return next(a for a in self.answers if a["id"] == qid)

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()


@pytest.fixture(scope="module")
def ros_context():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def replay_system(ros_context, tmp_path_factory):
    """camera_node streaming the bundled demo scene once (16 frames) + vilasr_agent with the replay engine."""
    tmp = tmp_path_factory.mktemp("ros_replay")
    client = Client("test_client_replay")
    camera = start("vilasr_ros.ros.camera_node", [
        "source:=sim:demo", "loop:=false", "rate_hz:=10.0", "wait_for_subscribers:=2",
        f"T_base_camera:={EXTRINSIC}", "base_frame_id:=base_link"], tmp / "camera.log")
    agent = start("vilasr_ros.ros.agent_node", [
        "engine:=replay", f"responses:={demo_responses()}", f"trace_root:={tmp / 'traces'}",
        "buffer.min_translation_m:=0.0", "max_age_s:=0.0", f"T_base_camera:={EXTRINSIC}", "max_queued_queries:=4"],
        tmp / "agent.log", ["--params-file", str(CONFIG)])
    try:
        client.wait(lambda: client.colour >= 16, 180, "the camera's 16 frames")
        client.wait(lambda: client.query_pub.get_subscription_count() >= 1, 120, "the agent's ~/query")
        client.wait(lambda: client.diagnostics.get("keyframes") == "16", 60, "16 keyframes in the agent's /diagnostics")
        yield client, tmp
    finally:
        stop(camera, agent)
        client.close()
        for log in ("camera.log", "agent.log"):
            print(f"--- {log}\n" + (tmp / log).read_text()[-3000:])


def test_query_on_a_topic_comes_back_as_answer_pose_and_images(replay_system):
    client, tmp = replay_system
    answer = client.ask({"id": "kb", "question": "Where is the sofa? Go to it.", "target": "sofa"})
    assert answer["error"] is None and answer["finish_reason"] == "stop" and answer["engine"] == "replay"
    assert answer["answer"].startswith("The sofa stands against the wall")
    assert [f["index"] for f in answer["frames"]] == list(range(16))  # every frame arrived, none dropped
    assert answer["goal_sent"] and answer["sensors"]["dropped"] == 0

    # The same box grounded by the core on the frames read straight from the folder.
    with open_source("sim:demo") as source:
        frames = list(source)
    client.wait(lambda: Path(answer["trace_dir"], "trace.json").is_file(), 30, "the saved trace")
    expected = ground_trace(Trace.load(answer["trace_dir"]), frames, "sofa")
    assert expected.ok
    np.testing.assert_allclose(answer["target"]["position_world"], expected.position_world, atol=1e-3)
    np.testing.assert_allclose(answer["target_pose"]["position"], expected.approach_position, atol=1e-3)
    assert answer["target_pose"]["frame_id"] == "map"

    client.wait(lambda: client.poses and client.markers, 10, "PoseStamped and markers")
    pose = client.poses[-1]
    assert pose.header.frame_id == "map"
    np.testing.assert_allclose([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z],
                               expected.approach_position, atol=1e-3)
    np.testing.assert_allclose([pose.pose.orientation.x, pose.pose.orientation.y, pose.pose.orientation.z,
                                pose.pose.orientation.w], expected.approach_orientation, atol=1e-5)
    client.wait(lambda: client.clouds, 10, "the target's points")
    cloud = client.clouds[-1]  # the object's points beside the markers: around the target, in map
    xyz = np.frombuffer(bytes(cloud.data), dtype=np.float32).reshape(-1, 3)
    assert cloud.header.frame_id == "map" and cloud.point_step == 12 and len(xyz) == cloud.width > 50
    np.testing.assert_allclose(xyz, expected.points, atol=1e-4)
    assert client.images, "the drawn image was not published"
    assert (client.images[0].width, client.images[0].height) == tuple(Trace.load(answer["trace_dir"]).images[0].size)
    assert client.images[0].encoding == "rgb8"
    assert [p["turn"] for p in client.progress if p["id"] == "kb"] == [1, 2]
    assert len(client.images) == 2  # both boxes drawn (images 17 and 18)


def test_bad_queries_each_get_an_error_with_their_id_and_the_node_keeps_serving(replay_system):
    client, _ = replay_system
    assert "not JSON" in client.ask("this is not json")["error"]
    assert "question" in client.ask({"id": "nq"})["error"]
    assert "unknown problem type" in client.ask({"id": "ty", "question": "?", "type": "essay"})["error"]
    assert "bytes" in client.ask({"id": "big", "question": "x" * 10_000})["error"]

    n = len(client.answers)
    for i in range(100):
        client.query_pub.publish(String(data=json.dumps({"id": f"burst{i}", "question": "Where is the sofa?"})))
    client.wait(lambda: len({a["id"] for a in client.answers[n:]}) >= 100, 120, "100 burst answers")
    burst = {a["id"]: a for a in client.answers[n:]}
    assert set(burst) == {f"burst{i}" for i in range(100)}
    served = [a for a in burst.values() if a["error"] is None]
    rejected = [a for a in burst.values() if a["finish_reason"] == "rejected"]
    assert served and rejected and len(served) + len(rejected) == 100
    assert all("queue full" in a["error"] for a in rejected)

    assert client.ask({"id": "after", "question": "Still there?"})["error"] is None  # keeps serving

    assert client.clear.wait_for_service(timeout_sec=10)
    future = client.clear.call_async(Trigger.Request())
    client.wait(future.done, 10, "clear_buffer")
    assert future.result().success
    empty = client.ask({"id": "empty", "question": "Where is the sofa?"})
    assert empty["id"] == "empty" and "buffer is empty" in empty["error"]


def test_agent_with_the_tiny_transformers_model(ros_context, tiny_model_dir, tmp_path):
    """The real model-loading path under ROS: the answer is garbage, the path is real."""
    client = Client("test_client_tiny", agent="tiny_agent")  # its own node name: the replay agent may still run
    camera = start("vilasr_ros.ros.camera_node", [f"source:=rgbd_folder:{O3D}", "rate_hz:=10.0",
                                                  "wait_for_subscribers:=2"], tmp_path / "camera.log")
    agent = start("vilasr_ros.ros.agent_node", [
        "engine:=transformers", f"model:={tiny_model_dir}", "device:=cpu", f"trace_root:={tmp_path / 'traces'}",
        "max_tokens:=12", "max_turns:=2", "max_pixels:=50176", "frames:=2", "max_age_s:=0.0",
        "buffer.min_translation_m:=0.0"],
        tmp_path / "agent.log", ["--params-file", str(CONFIG), "-r", "__node:=tiny_agent"])
    try:
        client.wait(lambda: client.query_pub.get_subscription_count() >= 1, 120, "the agent")
        # the agent's own count (a loaded machine drops the first frames' pairing: colour alone is not enough)
        client.wait(lambda: int(client.diagnostics.get("keyframes", 0)) >= 2, 60,
                    lambda: f"2 keyframes in the agent's buffer {client.diagnostics}")
        answer = client.ask({"id": "tiny", "question": "Where is the keyboard?", "target": "keyboard"}, timeout=300)
        assert answer["id"] == "tiny" and answer["engine"] == "transformers"
        assert answer["finish_reason"] in ("stop", "length", "ToolError")
        assert len(answer["frames"]) == 2
        client.wait(lambda: Path(answer["trace_dir"], "trace.json").is_file(), 60, "the trace")
        trace = Trace.load(answer["trace_dir"])
        assert trace.engine["engine"] == "transformers" and trace.turns and len(trace.images) >= 2
    finally:
        stop(camera, agent)
        client.close()
        print((tmp_path / "agent.log").read_text()[-3000:])


def test_parameters_are_validated_on_change(ros_context, tmp_path):
    from rclpy.parameter import Parameter

    from vilasr_ros.engines import create_engine
    from vilasr_ros.reasoner import Reasoner
    from vilasr_ros.ros.agent_node import VilasrAgentNode

    node = VilasrAgentNode(reasoner=Reasoner(create_engine("replay", responses=str(demo_responses()))),
                           parameter_overrides=[Parameter("trace_root", value=str(tmp_path))])
    try:
        ok = lambda *ps: [r.successful for r in node.set_parameters(list(ps))]  # noqa: E731
        assert ok(Parameter("frames", value=8), Parameter("standoff_m", value=1.2)) == [True, True]
        assert node.agent.config.frames == 8 and node.agent.config.grounding.standoff_m == 1.2
        assert ok(Parameter("frames", value=0)) == [False]  # outside 1..64
        assert ok(Parameter("selection", value="random")) == [False]
        assert ok(Parameter("engine", value="openai")) == [False]  # read-only: restart to change
        assert node.agent.config.frames == 8 and node.agent.config.selection == "uniform"
    finally:
        node.destroy_node()


def test_conversions_round_trip_images_and_intrinsics():
    from vilasr_ros.frames import CameraIntrinsics
    from vilasr_ros.ros.conversions import (
        camera_info_msg, color_msg, depth_msg,
        s_to_stamp)
    from vilasr_ros.messages import decode_color, decode_depth, intrinsics_from_camera_info

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    depth = (rng.integers(0, 5000, (48, 64)) / 1000.0).astype(np.float32)
    stamp = s_to_stamp(12.5)
    assert np.array_equal(decode_color(color_msg(rgb, stamp, "cam")), rgb)
    assert np.array_equal(decode_depth(depth_msg(depth, stamp, "cam", "16UC1")), depth)
    assert np.array_equal(decode_depth(depth_msg(depth, stamp, "cam", "32FC1")), depth)
    intr = CameraIntrinsics(64, 48, 50.0, 51.0, 31.5, 23.5, "plumb_bob", (0.1, -0.2, 0.0, 0.0, 0.01))
    assert intrinsics_from_camera_info(camera_info_msg(intr, stamp, "cam")) == intr


def _other_domain() -> str:
    """A DDS domain other than this run's, so a command's own agent never meets the fixtures' agents."""
    return str((int(os.environ["ROS_DOMAIN_ID"]) + 50) % 100 + 1)


def test_vilasr_agent_command_runs_the_main_job(ros_context, tmp_path):
    """README's main job: both nodes in one process on the bundled demo scene, one query, the answer,
    the target pose and its ground-truth error printed, the trace saved."""
    out = subprocess.run(
        [sys.executable, "-m", "vilasr_ros.cli", "agent", "--source", "sim:demo", "--domain-id", _other_domain(),
         "--trace-root", str(tmp_path), "--timeout", "120", "--query",
         '{"id": "readme", "question": "Where is the sofa? Go to it.", "target": "sofa"}'],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "HF_HOME": str(tmp_path / "no_weights")})
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("engine: replay") and "SCRIPTED" in lines[0]  # says plainly who answered
    assert any(line.startswith("buffer: 16 keyframes of 16 frames received") for line in lines)
    assert "answer: The sofa stands against the wall beside the door, left of the chair and the floor lamp." in lines
    pose = next(line for line in lines if line.startswith("target_pose (map): position ["))
    error = next(line for line in lines if line.startswith("ground truth: target error "))
    assert float(error.split()[4]) <= 0.10, error
    trace_dir = Path(next(line for line in lines if line.startswith("trace: ")).split(" ", 1)[1])
    assert (trace_dir / "trace.json").is_file() and (trace_dir / "images" / "image_18.png").is_file()
    assert json.loads((trace_dir / "trace.json").read_text())["target"]["ok"] is True, pose


def test_an_agent_killed_during_ingest_answers_from_its_memory_after_a_restart(tmp_path):
    """Issue 26: ``vilasr agent --memory-dir`` persists keyframes as the camera streams; SIGKILL while
    it does; the store opens, its keyframes are the camera's in order with none missing; a restarted
    agent with no camera answers a query about the sofa from the remembered frames, with a goal."""
    from vilasr_ros.memory import KeyframeMemory

    import yaml

    memory_dir = tmp_path / "memory"
    env = {**os.environ, "HF_HOME": str(tmp_path / "no_weights")}
    params = yaml.safe_load((REPO / "config" / "agent.yaml").read_text())
    params["vilasr_agent"]["ros__parameters"]["memory"].update(  # remember every buffer keyframe
        {"min_translation_m": 0.0, "min_rotation_deg": 0.0, "max_interval_s": 0.0})
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(params))
    first = subprocess.Popen(
        [sys.executable, "-m", "vilasr_ros.cli", "agent", "--config", str(tmp_path / "agent.yaml"), "--source", "sim:demo",
         "--domain-id", _other_domain(), "--trace-root", "", "--memory-dir", str(memory_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, env=env)
    try:
        def stored() -> int:
            try:
                memory = KeyframeMemory(memory_dir, readonly=True)
            except Exception:  # noqa: BLE001 - not created yet
                return 0
            try:
                return memory.info()["keyframes"]
            finally:
                memory.close()

        wait_until(lambda: stored() >= 20, 180, "20 keyframes in memory")
        first.send_signal(signal.SIGKILL)  # the camera loops: keyframes are still arriving
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    memory = KeyframeMemory(memory_dir)
    records = memory.records()
    stamps = [r.stamp_s for r in records]
    with open_source("sim:demo") as source:
        demo = [f.rgb[::8, ::8].astype(float) for f in source]
    shown = [int(np.argmin([np.abs(f.rgb[::8, ::8] - d).mean() for d in demo])) for f in memory.frames([r.id for r in records])]
    assert len(records) >= 20 and shown == [k % 16 for k in range(len(shown))], shown  # the camera's order, no gap
    since, until = stamps[0], stamps[15]  # the first pass over the room
    memory.close()
    out = subprocess.run(
        [sys.executable, "-m", "vilasr_ros.cli", "agent", "--source", "", "--domain-id", _other_domain(),
         "--trace-root", str(tmp_path / "traces"), "--memory-dir", str(memory_dir), "--timeout", "120", "--query",
         json.dumps({"id": "mem", "question": "Where is the sofa? Go to it.", "target": "sofa",
                     "since": since, "until": until})],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "buffer: 0 keyframes" in out.stdout  # nothing from a camera: the answer is the memory's
    assert any(line.startswith("target_pose (") for line in out.stdout.splitlines()), out.stdout


def test_agent_client_asks_waits_times_out_and_cancels(ros_context):
    """AgentClient: a handle per query; a waiting query cancelled is answered 'cancelled' at once, the
    running one after its turn with no goal; the others are still served; a short wait raises TimeoutError."""
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from vilasr_ros.engines import create_engine
    from vilasr_ros.query import Query
    from vilasr_ros.reasoner import Reasoner
    from vilasr_ros.ros.agent_node import VilasrAgentNode
    from vilasr_ros.ros.client import AgentClient

    slow = Reasoner(create_engine("replay", responses=str(demo_responses()), delay_s=2.0))
    node = VilasrAgentNode("vilasr_agent_client_test", reasoner=slow, parameter_overrides=[
        Parameter("trace_root", value=""), Parameter("max_age_s", value=0.0)])
    with open_source("sim:demo") as source:
        for frame in source:
            node.buffer.add(frame)
    caller = rclpy.create_node("agent_client_test")
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(caller)
    spinner = threading.Thread(target=spin, args=(executor,), daemon=True)
    spinner.start()
    try:
        client = AgentClient(caller, "/vilasr_agent_client_test")
        assert client.wait_for_agent(30)
        first = client.ask({"id": "first", "question": "Where is the sofa? Go to it.", "target": "sofa"})
        wait_until(lambda: node._current is not None and node._current.id == "first", 30, "the first query to run")
        second = client.ask('{"id": "second", "question": "And the chair?"}')
        third = client.ask(Query(question="Where is the door?"))
        assert third.id and third.id not in ("first", "second")  # a query without an id gets one
        wait_until(lambda: node.queries.qsize() == 2, 30, "two queries waiting")
        with pytest.raises(TimeoutError, match="no answer to query 'second'"):
            second.result(timeout_s=0.05)
        second.cancel()
        answer2 = second.result(timeout_s=30)
        assert answer2["id"] == "second" and answer2["finish_reason"] == "cancelled" and not first.done()
        first.cancel()
        answer1 = first.result(timeout_s=60)
        assert answer1["finish_reason"] == "cancelled" and not answer1["goal_sent"] and answer1["target_pose"] is None
        answer3 = third.result(timeout_s=60)
        assert answer3["id"] == third.id and answer3["error"] is None and answer3["finish_reason"] == "stop"
        assert node.answered == 3  # each query answered exactly once
    finally:
        executor.shutdown()
        spinner.join(timeout=10)
        client.destroy()
        caller.destroy_node()
        node.destroy_node()
