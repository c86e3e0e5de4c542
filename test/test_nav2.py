"""On a Nav2 robot: targets in map from drifting odometry + AMCL-style map poses, compressed camera
streams, a bag and the live topics giving the same frames, and the lifecycle of the agent node."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402
from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from rclpy.waitable import NumberOfEntities, Waitable  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from conftest import wait_until  # noqa: E402
from vilasr_ros.engines import create_engine  # noqa: E402
from vilasr_ros.reasoner import Reasoner  # noqa: E402
from vilasr_ros.ros.agent_node import VilasrAgentNode  # noqa: E402
from vilasr_ros.ros.runner import spin  # noqa: E402
from vilasr_ros.ros.conversions import (  # noqa: E402
    camera_info_msg, color_msg, compressed_color_msg, compressed_depth_msg, depth_msg, matrix_to_pose, odometry_msg,
    s_to_stamp)
from vilasr_ros.sources import open_source  # noqa: E402

pytestmark = pytest.mark.ros
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
CAMERA = "camera_color_optical_frame"


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def demo():
    source = open_source("sim:demo")
    frames = list(source)
    sofa = next(o for o in json.loads((source.scene_dir / "scene.json").read_text())["objects"] if o["category"] == "sofa")
    return frames, sofa


def sofa_script(index: int, box) -> list[str]:
    return [f"<think> the sofa </think> Action: Object Mapper\n```json\n[{{'index': {index}, 'bbox_2d': {list(box)}, "
            "'label': 'sofa'}]\n```", "<think> done </think> Action: Answer\n<answer> by the wall </answer>"]


class Robot:
    """An in-process agent node and a test node that publishes its sensors and asks it."""

    def __init__(self, name: str, script: list[str], params: list[Parameter], autostart: bool = True,
                 delay_s: float = 0.0):
        self.agent = VilasrAgentNode(name, reasoner=Reasoner(create_engine("replay", responses=script, delay_s=delay_s)),
                                     parameter_overrides=[Parameter("buffer.min_translation_m", value=0.0),
                                                          Parameter("max_age_s", value=0.0),
                                                          Parameter("trace_root", value=""),
                                                          Parameter("autostart", value=autostart), *params])
        self.node = rclpy.create_node(f"{name}_test")
        self.answers: list[dict] = []
        self.node.create_subscription(String, f"/{name}/answer", lambda m: self.answers.append(json.loads(m.data)), RELIABLE)
        self.query = self.node.create_publisher(String, f"/{name}/query", RELIABLE)
        sensor = qos_profile_sensor_data
        self.pub = {"colour": self.node.create_publisher(Image, "/camera/camera/color/image_raw", sensor),
                    "colour_c": self.node.create_publisher(CompressedImage, "/camera/camera/color/image_raw/compressed", sensor),
                    "depth": self.node.create_publisher(Image, "/camera/camera/aligned_depth_to_color/image_raw", sensor),
                    "depth_c": self.node.create_publisher(
                        CompressedImage, "/camera/camera/aligned_depth_to_color/image_raw/compressedDepth", sensor),
                    "info": self.node.create_publisher(CameraInfo, "/camera/camera/color/camera_info", sensor),
                    "odom": self.node.create_publisher(Odometry, "/odom", sensor),
                    "amcl": self.node.create_publisher(PoseWithCovarianceStamped, "/amcl_pose", RELIABLE)}
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.agent)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self.thread.start()

    def wait(self, predicate, timeout: float, what: str):
        wait_until(predicate, timeout, what, poll_s=0.02)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def publish(self, frame, T_odom_base, stamp_s: float, colour: str = "raw", depth: str = "raw"):
        stamp = s_to_stamp(stamp_s)
        self.pub["odom"].publish(odometry_msg(T_odom_base, stamp, "odom", "base_link"))
        self.pub["info"].publish(camera_info_msg(frame.intrinsics, stamp, CAMERA))
        if depth == "raw":
            self.pub["depth"].publish(depth_msg(frame.depth_m, stamp, CAMERA))
        else:
            self.pub["depth_c"].publish(compressed_depth_msg(frame.depth_m, stamp, CAMERA))
        if colour == "raw":
            self.pub["colour"].publish(color_msg(frame.rgb, stamp, CAMERA))
        else:
            self.pub["colour_c"].publish(compressed_color_msg(frame.rgb, stamp, CAMERA, colour))

    def publish_map_pose(self, T_map_base, stamp_s: float):
        msg = PoseWithCovarianceStamped()
        msg.header.stamp, msg.header.frame_id = s_to_stamp(stamp_s), "map"
        msg.pose.pose = matrix_to_pose(T_map_base)
        self.pub["amcl"].publish(msg)

    def ask(self, payload: dict, timeout: float = 60) -> dict:
        self.query.publish(String(data=json.dumps(payload)))
        self.wait(lambda: any(a["id"] == payload["id"] for a in self.answers), timeout, f"answer {payload['id']}")
        return next(a for a in self.answers if a["id"] == payload["id"])

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.agent.destroy_node()
        self.node.destroy_node()


def drift(distance_m: float) -> np.ndarray:
    """T_odom_map after ``distance_m`` of travel: 1 % of the distance along x and y, and a yaw bias of
    0.5° per metre (what wheel odometry on a real floor does)."""
    yaw = np.radians(0.5) * distance_m
    D = np.eye(4)
    D[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
    D[:2, 3] = 0.01 * distance_m / np.sqrt(2)
    return D


def run_drive(demo, *, drifting: bool, map_poses: bool, laps: int = 8, rate_hz: float = 12.0):
    """Drive the demo walkthrough ``laps`` times (~2.6 m a lap); ask about the sofa seen in lap 1."""
    from vilasr_ros_sim.views import point_box_distance

    frames, sofa = demo
    # 16 x laps keyframes; 24 selected uniformly include buffer index 11 (lap 1, the sofa seen whole) as image 3
    script = sofa_script(3, [121, 94, 295, 193])
    name = f"nav{'d' if drifting else 'n'}{'m' if map_poses else 'o'}{laps}"
    params = [Parameter("frames", value=24), Parameter("remove_floor", value=True)]
    if map_poses:
        params.append(Parameter("map_pose_topic", value="/amcl_pose"))
    robot = Robot(name, script, params)
    try:
        robot.wait(lambda: robot.pub["colour"].get_subscription_count() >= 1, 30, "the agent's subscriptions")
        travelled, D = 0.0, np.eye(4)
        t0 = robot.now()
        n = len(frames) * laps
        for k in range(n):
            f = frames[k % len(frames)]
            if k:
                travelled += float(np.linalg.norm(f.T_world_camera[:3, 3] - frames[(k - 1) % len(frames)].T_world_camera[:3, 3]))
            D = drift(travelled) if drifting else np.eye(4)
            stamp = t0 + k / rate_hz
            T_map_base = f.T_world_camera  # the camera is the base here (T_base_camera = identity)
            robot.publish(f, D @ T_map_base, stamp)
            if map_poses and k % int(rate_hz) == 0:
                robot.publish_map_pose(T_map_base, stamp)
            time.sleep(1.0 / rate_hz)
        robot.wait(lambda: len(robot.agent.buffer) >= n, 30, f"{n} keyframes")
        answer = robot.ask({"id": name, "question": "Where is the sofa? Go to it.", "target": "sofa", "frames": 24})
        assert answer["target"]["ok"], answer
        p = np.array(answer["target"]["position_world"])
        frame = answer["target"]["frame_id"]
        # where the robot would drive: a target in odom is read through today's odometry (D now)
        p_map = p if frame == "map" else (np.linalg.inv(D) @ np.append(p, 1.0))[:3]
        error = point_box_distance(p_map, sofa["centre"], sofa["size"], sofa["yaw"])
        return error, frame, answer, travelled, p_map
    finally:
        robot.close()


def test_targets_in_map_from_drifting_odometry_and_map_poses(ros, demo):
    clean, _, _, _, p_clean = run_drive(demo, drifting=False, map_poses=False)
    with_map, frame1, answer, travelled, p_map = run_drive(demo, drifting=True, map_poses=True)
    odom_only, frame2, _, _, p_odom = run_drive(demo, drifting=True, map_poses=False)
    D = drift(travelled)
    drift_m = float(np.linalg.norm(D[:2, 3]))
    off_map, off_odom = float(np.linalg.norm(p_map - p_clean)), float(np.linalg.norm(p_odom - p_clean))
    print(f"after {travelled:.1f} m (odometry drift {drift_m:.2f} m + {np.degrees(np.radians(0.5) * travelled):.0f} deg yaw): "
          f"sofa target, distance to its box: no drift {clean:.3f} m, drifting odometry + map poses {with_map:.3f} m "
          f"({frame1}), odometry only {odom_only:.3f} m ({frame2}); moved from the no-drift target: map {off_map:.3f} m, "
          f"odometry only {off_odom:.3f} m")
    assert travelled >= 20.0
    assert frame1 == "map" and "map" in answer["localization"] and frame2 == "odom"
    assert abs(with_map - clean) <= 0.05 and off_map <= 0.05
    assert off_odom > 0.3  # off by about the drift since the sofa was seen (0.22 m + 11 deg at ~3 m)


def test_without_a_map_pose_the_answer_says_so(ros, demo):
    frames, _ = demo
    robot = Robot("nomap", sofa_script(11, [47, 93, 209, 202]), [Parameter("map_pose_topic", value="/amcl_pose")])
    try:
        robot.wait(lambda: robot.pub["colour"].get_subscription_count() >= 1, 30, "subscriptions")
        t0 = robot.now()
        for k, f in enumerate(frames):
            robot.publish(f, f.T_world_camera, t0 + k / 12.0)
            time.sleep(1 / 12.0)
        robot.wait(lambda: len(robot.agent.buffer) >= 16, 30, "keyframes")
        answer = robot.ask({"id": "nomap", "question": "Where is the sofa?", "target": "sofa"})
        assert answer["target"]["frame_id"] == "odom" and answer["localization"] == "odom: no map pose received yet"
    finally:
        robot.close()


@pytest.mark.parametrize("colour, depth", [("raw", "raw"), ("jpeg", "compressedDepth"), ("png", "compressedDepth")])
def test_compressed_streams_ground_like_raw(ros, demo, colour, depth):
    """image_transport's compressed colour (jpeg q90 / png) and compressedDepth (16UC1 PNG: exact to the
    millimetre) give the raw stream's target within the codec's loss."""
    frames, _ = demo
    params = [Parameter("color_transport", value="raw" if colour == "raw" else "compressed"),
              Parameter("depth_transport", value=depth)]
    robot = Robot(f"tr_{colour}_{depth}", sofa_script(11, [47, 93, 209, 202]), params)
    try:
        robot.wait(lambda: robot.pub["odom"].get_subscription_count() >= 1, 30, "subscriptions")
        t0 = robot.now()
        for k, f in enumerate(frames):
            robot.publish(f, f.T_world_camera, t0 + k / 12.0, colour=colour, depth=depth)
            time.sleep(1 / 12.0)
        robot.wait(lambda: len(robot.agent.buffer) >= 16, 30, "keyframes")
        answer = robot.ask({"id": "c", "question": "Where is the sofa?", "target": "sofa"})
        buffered = robot.agent.buffer.snapshot()
    finally:
        robot.close()
    from vilasr_ros.grounding import ground_trace

    raw = ground_trace(Reasoner(create_engine("replay", responses=sofa_script(11, [47, 93, 209, 202]))).run(
        [f.rgb for f in frames], "Where is the sofa?"), frames, "sofa")
    moved = float(np.linalg.norm(np.array(answer["target"]["position_world"]) - np.array(raw.position_world)))
    pixel = float(np.mean([np.abs(b.rgb.astype(int) - f.rgb).mean() for b, f in zip(buffered, frames)]))
    depth_err = float(np.max([np.nanmax(np.abs(b.depth_m - np.round(f.depth_m * 1000) / 1000)) for b, f in zip(buffered, frames)]))
    print(f"{colour}/{depth}: colour mean |diff| {pixel:.2f} levels, depth max |diff| {depth_err * 1000:.1f} mm, "
          f"target moved {moved * 100:.2f} cm from the raw stream's")
    assert depth_err <= 1e-6 and moved <= 0.02
    assert pixel == 0.0 if colour in ("raw", "png") else pixel < 3.0


def test_a_bag_of_the_topics_gives_the_frames_the_agent_buffered(ros, demo, tmp_path):
    """The same colour/depth/odometry pairing for a bag (BagSource) and live topics (the agent)."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    frames, _ = demo
    store = get_typestore(Stores.ROS2_JAZZY)
    received: list[tuple[str, object, str, int]] = []
    robot = Robot("bagcmp", sofa_script(11, [47, 93, 209, 202]),
                  [Parameter("T_base_camera", value=[0.2, 0.0, 0.5, 0.0, 0.0, 0.2588190451, 0.9659258263])])
    for topic, kind in (("/camera/camera/color/image_raw", Image), ("/camera/camera/aligned_depth_to_color/image_raw", Image),
                        ("/camera/camera/color/camera_info", CameraInfo), ("/odom", Odometry)):
        robot.node.create_subscription(kind, topic, lambda m, t=topic, k=kind: received.append(
            (t, serialize_message(m), k.__name__, robot.node.get_clock().now().nanoseconds)),
            qos_profile_sensor_data)
    T_base_camera = np.eye(4)
    from scipy.spatial.transform import Rotation

    T_base_camera[:3, :3] = Rotation.from_quat([0.0, 0.0, 0.2588190451, 0.9659258263]).as_matrix()
    T_base_camera[:3, 3] = [0.2, 0.0, 0.5]
    try:
        robot.wait(lambda: robot.pub["colour"].get_subscription_count() >= 2, 30, "subscriptions")
        time.sleep(0.5)
        t0 = robot.now()
        for k, f in enumerate(frames):
            robot.publish(f, f.T_world_camera @ np.linalg.inv(T_base_camera), t0 + k / 12.0 + 0.003 * (k % 3))
            time.sleep(1 / 12.0)
        robot.wait(lambda: len(robot.agent.buffer) >= 16, 30, f"keyframes ({robot.agent.health.sentence()})")
        live = robot.agent.buffer.snapshot()
    finally:
        robot.close()
    types = {"Image": "sensor_msgs/msg/Image", "CameraInfo": "sensor_msgs/msg/CameraInfo", "Odometry": "nav_msgs/msg/Odometry"}
    with Writer(tmp_path / "bag", version=9) as writer:
        conns = {}
        for topic, raw, kind, t in received:  # recorded as `ros2 bag record` would: receive time, CDR as sent
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, types[kind], typestore=store)
            writer.write(conns[topic], t, raw)
    from vilasr_ros.sources.bag import BagSource

    bag = list(BagSource(tmp_path / "bag", T_child_camera=T_base_camera))
    by_stamp = {round(f.stamp_s, 6): f for f in bag}
    assert len(live) == 16 and len(bag) == 16
    for f in live:
        b = by_stamp[round(f.stamp_s, 6)]
        np.testing.assert_allclose(b.T_world_camera, f.T_world_camera, atol=1e-6)
        assert np.array_equal(b.rgb, f.rgb) and np.array_equal(b.depth_m, f.depth_m)
        assert b.world_frame_id == f.world_frame_id == "odom"


class Lifecycle:
    """A test client of a lifecycle node's ~/change_state and ~/get_state services."""

    def __init__(self, node_name: str):
        self.node = rclpy.create_node(f"{node_name}_lifecycle_client")
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self.node)
        self.change = self.node.create_client(ChangeState, f"/{node_name}/change_state")
        self.get = self.node.create_client(GetState, f"/{node_name}/get_state")

    def call(self, cli, request):
        assert cli.wait_for_service(timeout_sec=10)
        future = cli.call_async(request)
        self.ex.spin_until_future_complete(future, timeout_sec=60)
        return future.result()

    def transition(self, tid: int) -> bool:
        return self.call(self.change, ChangeState.Request(transition=Transition(id=tid))).success

    def state(self) -> str:
        return self.call(self.get, GetState.Request()).current_state.label

    def close(self) -> None:
        self.node.destroy_node()


class _DestroyedMidWait(Waitable):
    """An entity whose handle is destroyed while the executor builds its wait set: raises what rclpy's
    QoS event handler raises in that race (ros2/rclpy#1142) the first ``races`` times."""

    def __init__(self, races: int):
        super().__init__(ReentrantCallbackGroup())
        self.races = races

    def add_to_wait_set(self, wait_set):
        if self.races > 0:
            self.races -= 1
            raise InvalidHandle("cannot use Destroyable because destruction was requested")

    def get_num_entities(self):
        return NumberOfEntities()

    def is_ready(self, wait_set):
        return False

    def take_data(self):
        return None

    async def execute(self, taken_data):
        return None


@pytest.mark.parametrize("spinner", ["rclpy", "vilasr"])
def test_an_entity_destroyed_while_the_executor_waits_does_not_end_the_spin(ros, spinner):
    """The race behind a lifecycle cleanup or shutdown under a multi-threaded executor: the executor's
    own ``spin()`` ends on it (so the node would stop serving ~/get_state); ``runner.spin`` spins on."""
    node = rclpy.create_node(f"race_{spinner}")
    ticks = []
    node.create_timer(0.02, lambda: ticks.append(1))
    node.add_waitable(_DestroyedMidWait(races=3))
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    errors = []

    def run():
        try:
            executor.spin() if spinner == "rclpy" else spin(executor)
        except InvalidHandle as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        if spinner == "rclpy":
            thread.join(timeout=10)
            assert errors and not thread.is_alive()  # what the project's own spin must not do
        else:
            wait_until(lambda: len(ticks) >= 10, 10, "timer ticks after the races", poll_s=0.02)
            assert thread.is_alive() and not errors
    finally:
        executor.shutdown()
        thread.join(timeout=10)
        node.destroy_node()
    assert not thread.is_alive()


def test_lifecycle_transitions_through_services(ros, demo, tmp_path):
    """configure -> activate -> deactivate -> activate -> cleanup, each observable; a configure with
    missing weights is a failed transition with the reason, and the process keeps running."""
    frames, _ = demo
    robot = Robot("managed", sofa_script(11, [47, 93, 209, 202]), [], autostart=False)
    client = Lifecycle("managed")
    transition, state = client.transition, client.state

    def subscribed():
        return robot.pub["colour"].get_subscription_count() >= 1

    def served(qid):
        return robot.ask({"id": qid, "question": "Where is the sofa?"})

    try:
        assert state() == "unconfigured" and not subscribed()
        assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        time.sleep(0.5)
        assert not subscribed() and "inactive" in served("q1")["error"]
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active"
        robot.wait(subscribed, 10, "sensor subscriptions")
        t0 = robot.now()
        for k, f in enumerate(frames):
            robot.publish(f, f.T_world_camera, t0 + k / 12.0)
            time.sleep(1 / 12.0)
        robot.wait(lambda: len(robot.agent.buffer) >= 16, 30, "keyframes")
        assert served("q2")["error"] is None
        assert transition(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
        robot.wait(lambda: not subscribed(), 10, "sensor subscriptions gone")
        assert served("q3")["finish_reason"] == "rejected" and robot.agent.reasoner is not None  # model kept
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active" and served("q4")["error"] is None
        assert transition(Transition.TRANSITION_DEACTIVATE) and transition(Transition.TRANSITION_CLEANUP)
        assert state() == "unconfigured" and robot.agent.reasoner is None
        # missing weights: the transition fails with the reason; the node stays, unconfigured
        robot.agent._given_reasoner = None
        robot.agent.set_parameters([Parameter("frames", value=16)])
        robot.agent.p.update(engine="transformers", model=str(tmp_path / "no_weights"))
        assert not transition(Transition.TRANSITION_CONFIGURE)
        assert state() == "unconfigured" and "no_weights" in robot.agent.failure_reason
    finally:
        client.close()
        robot.close()


def test_lifecycle_transitions_mid_query_and_invalid_ones_never_end_the_node(ros, demo):
    """Issue 28 #1: deactivate, cleanup and shutdown while a query runs, configure while active, and
    transition id 99 on ~/change_state: every query is answered exactly once (the running one
    'cancelled', no goal), invalid transitions are refused with success false, the node keeps its state
    and serves on until it is shut down."""
    frames, _ = demo
    robot = Robot("midquery", sofa_script(11, [47, 93, 209, 202]), [], delay_s=3.0)  # a transition lands mid-query
    client = Lifecycle("midquery")
    transition, state = client.transition, client.state

    def running(qid):
        robot.query.publish(String(data=json.dumps({"id": qid, "question": "Where is the sofa? Go to it.",
                                                     "target": "sofa"})))
        robot.wait(lambda: robot.agent._current is not None and robot.agent._current.id == qid, 30, f"{qid} running")

    def load():
        for f in frames:
            robot.agent.buffer.add(f)

    try:
        load()
        assert not transition(99) and state() == "active"  # not a transition: refused, state kept
        assert not transition(Transition.TRANSITION_CONFIGURE) and state() == "active"  # not from active
        running("d1")
        robot.query.publish(String(data=json.dumps({"id": "d2", "question": "And the chair?"})))
        assert transition(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
        robot.wait(lambda: {"d1", "d2"} <= {a["id"] for a in robot.answers}, 30, "both answers")
        by_id = {a["id"]: a for a in robot.answers}
        assert by_id["d1"]["finish_reason"] == "cancelled" and not by_id["d1"]["goal_sent"]
        assert by_id["d2"]["finish_reason"] == "rejected"
        assert transition(Transition.TRANSITION_ACTIVATE)
        load()
        running("c1")
        assert transition(Transition.TRANSITION_DEACTIVATE) and transition(Transition.TRANSITION_CLEANUP)
        assert state() == "unconfigured" and robot.agent.buffer is None
        robot.wait(lambda: "c1" in {a["id"] for a in robot.answers}, 30, "the answer to c1")
        assert transition(Transition.TRANSITION_CONFIGURE) and transition(Transition.TRANSITION_ACTIVATE)
        load()
        assert robot.ask({"id": "after", "question": "Where is the sofa?"})["error"] is None
        running("s1")
        assert transition(Transition.TRANSITION_ACTIVE_SHUTDOWN) and state() == "finalized"
        robot.wait(lambda: "s1" in {a["id"] for a in robot.answers}, 30, "the answer to s1")
        assert next(a for a in robot.answers if a["id"] == "s1")["finish_reason"] == "cancelled"
        ids = [a["id"] for a in robot.answers]
        assert sorted(ids) == sorted(set(ids))  # each query answered exactly once
        assert robot.agent.callback_errors == 0
    finally:
        client.close()
        robot.close()


def test_a_bad_map_pose_is_a_named_sensor_drop_not_a_callback_error(ros):
    """Issue 24: a map pose that cannot be decoded (zero quaternion), is not finite, or lies (AMCL
    covariance NaN, x = 1e12) is counted as a 'map_pose' drop in /diagnostics with its reason."""
    robot = Robot("badmap", sofa_script(11, [47, 93, 209, 202]), [Parameter("map_pose_topic", value="/amcl_pose")])
    try:
        robot.wait(lambda: robot.pub["amcl"].get_subscription_count() >= 1, 30, "the map pose subscription")
        bad = []
        zero_q = PoseWithCovarianceStamped()
        zero_q.header.frame_id = "map"
        bad.append(zero_q)  # orientation (0, 0, 0, 0)
        nan_cov = PoseWithCovarianceStamped()
        nan_cov.header.frame_id = "map"
        nan_cov.pose.pose.orientation.w = 1.0
        nan_cov.pose.covariance = [float("nan")] * 36
        bad.append(nan_cov)
        far = PoseWithCovarianceStamped()
        far.header.frame_id = "map"
        far.pose.pose.orientation.w = 1.0
        far.pose.pose.position.x = 1e12
        bad.append(far)
        health = robot.agent.health
        for k, msg in enumerate(bad, start=1):  # one at a time, re-sent until counted (the first may race discovery)
            deadline = time.monotonic() + 30
            while health.dropped["map_pose"] < k and time.monotonic() < deadline:
                robot.pub["amcl"].publish(msg)
                time.sleep(0.5)
        assert health.dropped["map_pose"] >= 3, dict(health.dropped)
        assert robot.agent.callback_errors == 0 and health.dropped["callback"] == 0
        assert "beyond max_position_m" in health.last_reason
        assert robot.agent.alignment.untrusted is not None and len(robot.agent.alignment) == 0
    finally:
        robot.close()


def test_a_single_spin_once_rides_out_the_same_race(ros):
    """The neighbour of the spin race: the waits of AgentClient and `vilasr agent --query` spin once at
    a time; runner.spin_once returns instead of raising, and the next call serves the node."""
    from vilasr_ros.ros.runner import spin_once

    node = rclpy.create_node("race_once")
    ticks = []
    node.create_timer(0.01, lambda: ticks.append(1))
    node.add_waitable(_DestroyedMidWait(races=2))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        with pytest.raises(InvalidHandle):
            executor.spin_once(timeout_sec=0.05)  # rclpy's own
        deadline = time.monotonic() + 10
        while not ticks and time.monotonic() < deadline:
            spin_once(executor, 0.05)
        assert ticks
    finally:
        executor.shutdown()
        node.destroy_node()
