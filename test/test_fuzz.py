"""The running agent node under generated abuse (hypothesis): queries, sensor messages, model replies.

One ``vilasr_agent`` process (openai engine → :class:`misbehaving_server.MisbehavingServer` on
127.0.0.1, ``publish_goal_pose`` on) is fed the bundled demo scene, then each example is a batch of
hostile queries, malformed sensor messages and misbehaving replies. After every batch: the process
is alive, every query got exactly one answer, and ``/goal_pose`` carried a pose for exactly the
answers that satisfy the safety rule (finish ``stop`` with an answer, grounded ``ok`` with confidence
≥ ``min_goal_confidence``, the box from an accepted turn). The issue's own examples are plain tests
at the end.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
hypothesis = pytest.importorskip("hypothesis")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from conftest import REPO, stop_processes, wait_until  # noqa: E402
from misbehaving_server import MisbehavingServer  # noqa: E402
from vilasr_ros.ros.conversions import camera_info_msg, color_msg, depth_msg, odometry_msg, s_to_stamp  # noqa: E402
from vilasr_ros.ros.runner import spin  # noqa: E402
from vilasr_ros.sources import open_source  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
MIN_CONFIDENCE = 0.3
TOPICS = {"colour": "/camera/camera/color/image_raw", "depth": "/camera/camera/aligned_depth_to_color/image_raw",
          "info": "/camera/camera/color/camera_info", "odom": "/odom"}
SOFA = "```json\n[{'index': 11, 'bbox_2d': [47, 93, 209, 202], 'label': 'sofa'}]\n```"
ANSWER = "<think> ok </think> Action: Answer\n<answer> by the wall </answer>"


class Harness:
    """Test-side node: publishes queries and sensor messages, records answers and goals."""

    def __init__(self):
        self.node = rclpy.create_node("fuzz_client")
        self.answers: list[dict] = []
        self.goals: list[PoseStamped] = []
        self.targets: list[PoseStamped] = []
        self.diagnostics: dict[str, str] = {}
        self.lock = threading.Lock()
        n = self.node
        n.create_subscription(String, "/vilasr_agent/answer", self._answer, RELIABLE)
        n.create_subscription(PoseStamped, "/goal_pose", lambda m: self.goals.append(m), RELIABLE)
        n.create_subscription(PoseStamped, "/vilasr_agent/target_pose", lambda m: self.targets.append(m), RELIABLE)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._diag, QoSProfile(depth=10))
        self.query = n.create_publisher(String, "/vilasr_agent/query", RELIABLE)
        self.pub = {"colour": n.create_publisher(Image, TOPICS["colour"], qos_profile_sensor_data),
                    "depth": n.create_publisher(Image, TOPICS["depth"], qos_profile_sensor_data),
                    "info": n.create_publisher(CameraInfo, TOPICS["info"], qos_profile_sensor_data),
                    "odom": n.create_publisher(Odometry, TOPICS["odom"], qos_profile_sensor_data)}
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self.thread = threading.Thread(target=spin, args=(self.executor,), daemon=True)
        self.thread.start()

    def _answer(self, msg):
        with self.lock:
            self.answers.append(json.loads(msg.data))

    def _diag(self, msg):
        for status in msg.status:
            if status.name.startswith("vilasr_agent"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    wait = staticmethod(wait_until)

    def publish_frames(self, frames, rate_hz: float = 8.0):
        for f in frames:
            stamp = s_to_stamp(self.now())
            self.pub["odom"].publish(odometry_msg(f.T_world_camera, stamp, "map", "camera_color_optical_frame"))
            self.pub["info"].publish(camera_info_msg(f.intrinsics, stamp, "camera_color_optical_frame"))
            self.pub["depth"].publish(depth_msg(f.depth_m, stamp, "camera_color_optical_frame"))
            self.pub["colour"].publish(color_msg(f.rgb, stamp, "camera_color_optical_frame"))
            time.sleep(1.0 / rate_hz)

    def keyframes(self) -> int:
        return int(self.diagnostics.get("keyframes", 0))

    def load_keyframes(self, frames, tries: int = 4) -> None:
        """Each frame until the agent's /diagnostics counts it as a keyframe (sensor topics are best
        effort: on a loaded machine a message can be dropped, as on a robot), at most ``tries`` times."""
        for k, f in enumerate(frames):
            for _ in range(tries):
                self.publish_frames([f])
                try:
                    wait_until(lambda: self.keyframes() > k, 3, "", poll_s=0.05)
                    break
                except AssertionError:
                    continue

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    rclpy.init()
    tmp = tmp_path_factory.mktemp("fuzz")
    server = MisbehavingServer()
    log = (tmp / "agent.log").open("w")
    params = ["engine:=openai", f"base_url:={server.url}", "model:=m", "request_timeout_s:=1.5", "max_turns:=3",
              "publish_goal_pose:=true", f"min_goal_confidence:={MIN_CONFIDENCE}", f"trace_root:={tmp / 'traces'}",
              "max_age_s:=0.0", "buffer.min_translation_m:=0.0", "buffer.max_bytes_mb:=16", "max_queued_queries:=4",
              "trace_max_total_mb:=64.0"]
    args = [sys.executable, "-m", "vilasr_ros.ros.agent_node", "--ros-args", "--params-file",
            str(REPO / "config" / "agent.yaml")] + [x for p in params for x in ("-p", p)]
    agent = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    harness = Harness()
    try:
        harness.wait(lambda: harness.query.get_subscription_count() >= 1, 120, "the agent")
        harness.wait(lambda: harness.pub["colour"].get_subscription_count() >= 1, 60, "the agent's camera subscriptions")
        with open_source("sim:demo") as source:
            frames = list(source)
        harness.load_keyframes(frames)
        harness.wait(lambda: harness.diagnostics.get("keyframes") == "16", 60, lambda: f"16 keyframes {harness.diagnostics}")
        yield harness, agent, server, tmp
    finally:
        stop_processes(agent, timeout=20)
        harness.close()
        server.close()
        log.close()
        print("--- agent.log (tail)\n" + (tmp / "agent.log").read_text()[-4000:])
        rclpy.try_shutdown()


# ----------------------------------------------------------------------------- strategies

IDS = itertools.count()
SAFE_CHARS = st.characters(blacklist_characters='"\\', blacklist_categories=("Cs",))


def _surrogates(text: str) -> str:
    return text + "\\ud800" if text else "\\udfff"


@st.composite
def queries(draw):
    """(text, expected id or None): hostile or ordinary query JSON text."""
    kind = draw(st.sampled_from(["ok", "ok", "fields", "deep", "big", "surrogate", "garbage", "not_object"]))
    qid = f"fz{next(IDS)}"
    if kind == "garbage":
        return draw(st.text(SAFE_CHARS, max_size=60).filter(lambda t: "id" not in t)), None
    if kind == "not_object":
        return draw(st.sampled_from(["[1, 2]", "5", "null", "{}", "\"x\"", "[[[[[]]]]]"])), None
    body = {"id": qid, "question": draw(st.sampled_from(["Where is the sofa? Go to it.", "How far is the door?", ""])),
            "target": draw(st.sampled_from(["sofa", None, "fridge"]))}
    if kind == "fields":
        body.update(draw(st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["free-form", "numerical", "multiple-choice", "essay", 5]),
            "options": st.one_of(st.none(), st.integers(), st.lists(st.text(SAFE_CHARS, max_size=8), max_size=4)),
            "frames": st.one_of(st.integers(-5, 100), st.booleans()), "selection": st.sampled_from(["latest", "??"]),
            "kind": st.sampled_from(["video", "bogus"]), "colour": st.just("red")})))
    body = {k: v for k, v in body.items() if v is not None}
    text = json.dumps(body)
    if kind == "deep":
        depth = draw(st.integers(10, 3000))
        text = text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    elif kind == "big":
        text = text[:-1] + ', "pad": "' + "x" * draw(st.integers(4000, 9000)) + '"}'
    elif kind == "surrogate":
        where = draw(st.sampled_from(["id", "question"]))
        text = text.replace(f'"{body[where]}"', f'"{_surrogates(str(body[where]))}"', 1)
        if where == "id":
            qid += "\ufffd"  # answered under the id with the lone surrogate replaced
    return text, qid


def _box(draw):
    index = draw(st.one_of(st.integers(-2, 40), st.sampled_from([11, 12, "3", 1.5, None])))
    coords = draw(st.one_of(st.lists(st.integers(-50, 400), min_size=4, max_size=4),
                            st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=5),
                            st.just(["a", "b", "c", "d"])))
    return {"index": index, "bbox_2d": coords, "label": draw(st.sampled_from(["sofa", "door", 7]))}


@st.composite
def replies(draw):
    """One server behaviour (see misbehaving_server)."""
    kind = draw(st.sampled_from(["box", "box", "answer", "text", "status", "drip", "close", "raw", "huge", "usage"]))
    if kind == "box":
        items = [_box(draw) for _ in range(draw(st.integers(1, 3)))]
        text = "<think> look </think> Action: Object Mapper\n```json\n" + repr(items) + "\n```"
        if draw(st.booleans()):
            text = "<think> look </think> Action: Object Mapper\n" + SOFA  # a clean box
        return {"text": text, "finish_reason": draw(st.sampled_from(["stop", "stop", "length"]))}
    if kind == "answer":
        return {"text": ANSWER + draw(st.sampled_from(["", "\udc00", "</answer>"]))}
    if kind == "text":
        return {"text": draw(st.text(max_size=200)) + draw(st.sampled_from(["", "\ud800", "```json\n[{'index': 1"]))}
    if kind == "status":
        return {"raw": b'{"error": "x"}', "status": draw(st.sampled_from([400, 404, 429, 500, 503]))}
    if kind == "drip":
        return {"drip_s": 0.5}
    if kind == "close":
        return {"close": True}
    if kind == "raw":
        return {"raw": draw(st.sampled_from([b"", b"{", b'{"choices": null}', b'{"choices": [{"message": {}}]}',
                                             b'{"choices": [{"message": {"content": ["a"]}}]}', b"\xff\xfe"]))}
    if kind == "huge":
        return {"huge_bytes": 5 * 2**20}
    return {"text": ANSWER, "usage": draw(st.sampled_from([None, "x", {"prompt_tokens": "NaN"}, [], {"completion_tokens": -1}]))}


@st.composite
def sensor_faults(draw):
    """A malformed or hostile sensor message: (topic key, message)."""
    kind = draw(st.sampled_from(["colour", "depth", "info", "odom"]))
    now = time.time()
    stamp_s = draw(st.sampled_from([now, now + 3.15e7, now - 3.15e7, 0.0, now + 0.5]))
    stamp = s_to_stamp(max(stamp_s, 0.0))
    if kind in ("colour", "depth"):
        w, h = draw(st.integers(0, 40)), draw(st.integers(0, 30))
        enc = draw(st.sampled_from(["rgb8", "bgr8", "mono8", "16UC1", "32FC1", "yuv422", "", "rgba8"]))
        msg = Image(height=h, width=w, encoding=enc, is_bigendian=draw(st.integers(0, 1)),
                    step=draw(st.integers(0, 200)))
        msg.header.stamp, msg.header.frame_id = stamp, "camera_color_optical_frame"
        msg.data = bytes(draw(st.binary(max_size=2000)))
        return kind, msg
    if kind == "info":
        values = st.floats(allow_nan=True, allow_infinity=True, width=64)
        msg = CameraInfo(height=draw(st.integers(0, 4000)), width=draw(st.integers(0, 4000)),
                         k=draw(st.lists(values, min_size=9, max_size=9)), distortion_model="plumb_bob")
        msg.header.stamp = stamp
        return kind, msg
    msg = Odometry(child_frame_id="camera_color_optical_frame")
    msg.header.stamp, msg.header.frame_id = stamp, "map"
    big = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.sampled_from([1e3, 1e300, 0.0]))
    msg.pose.pose.position.x = draw(big)
    msg.pose.pose.orientation.w = draw(st.sampled_from([1.0, 0.0, float("nan")]))
    return kind, msg


# ----------------------------------------------------------------------------- the invariants


def _check_batch(harness, agent, sent: list[tuple[str, str | None]], goals_before: int, answers_before: int):
    ids = [qid for _, qid in sent if qid is not None]
    anonymous = sum(1 for _, qid in sent if qid is None)

    def arrived():
        with harness.lock:
            got = harness.answers[answers_before:]
        return all(any(a.get("id") == q for a in got) for q in ids) and len(got) >= len(sent)

    harness.wait(arrived, 120, f"one answer for each of {len(sent)} queries")
    time.sleep(0.3)  # a duplicate answer would arrive now
    assert agent.poll() is None, "the agent process died"
    with harness.lock:
        got = harness.answers[answers_before:]
    for q in ids:
        assert sum(1 for a in got if a.get("id") == q) == 1, f"query {q} answered {sum(1 for a in got if a.get('id') == q)} times"
    assert sum(1 for a in got if a.get("id") is None) == anonymous
    assert len(got) == len(sent)
    with_goal = [a for a in got if a["goal_sent"]]
    for a in with_goal:  # the safety rule, checked from what the answer says and the saved trace
        t = a["target"]
        assert a["finish_reason"] == "stop" and a["answer"] is not None and a["error"] is None, a
        assert t["ok"] and t["confidence"] >= MIN_CONFIDENCE and a["target_pose"] is not None, a
        trace_path = Path(a["trace_dir"]) / "trace.json"
        harness.wait(trace_path.is_file, 30, "the trace")
        assert json.loads(trace_path.read_text())["turns"][t["turn"]]["error"] is None
    for a in got:
        if not a["goal_sent"]:
            assert a["target_pose"] is None
    harness.wait(lambda: len(harness.goals) - goals_before >= len(with_goal), 10, "the goal poses")
    time.sleep(0.2)
    assert len(harness.goals) - goals_before == len(with_goal), "a goal was published for an answer that failed"


@settings(max_examples=int(__import__("os").environ.get("VILASR_FUZZ_EXAMPLES", "20")), deadline=None,
          suppress_health_check=list(HealthCheck), database=None)
@given(batch_queries=st.lists(queries(), min_size=1, max_size=3), batch_replies=st.lists(replies(), max_size=4),
       faults=st.lists(sensor_faults(), max_size=8))
def test_fuzzed_queries_sensors_and_replies_never_break_the_node(system, batch_queries, batch_replies, faults):
    harness, agent, server, _ = system
    server.clear()
    server.push(*batch_replies)
    goals_before, answers_before = len(harness.goals), len(harness.answers)
    for kind, msg in faults:
        harness.pub[kind].publish(msg)
    for text, _ in batch_queries:
        harness.query.publish(String(data=text))
    _check_batch(harness, agent, batch_queries, goals_before, answers_before)


# ----------------------------------------------------------------------------- the issue's examples


def test_the_issue_examples_do_not_kill_the_node(system):
    harness, agent, server, _ = system
    server.clear()
    goals_before, answers_before = len(harness.goals), len(harness.answers)
    sent = [('{"id": "deep", "question": "?", "x": ' + "[" * 2000 + "]" * 2000 + "}", "deep"),
            ('{"id": "sur\\ud800", "question": "Where is the sofa?"}', "sur\ufffd")]
    for text, _ in sent:
        harness.query.publish(String(data=text))
    # a lone surrogate coming back from the model server, then a valid box with an invalid item
    server.push({"text": "<think> \ud800 </think> Action: Answer\n<answer> odd \udc00 </answer>"},
                {"text": "<think> b </think> Action: Object Mapper\n```json\n[{'index': 11, 'bbox_2d': [47, 93, 209, 202], "
                         "'label': 'sofa'}, {'index': 99, 'bbox_2d': [1, 2, 3, 4], 'label': 'x'}]\n```"})
    harness.query.publish(String(data='{"id": "srv", "question": "Where is the sofa?"}'))
    harness.query.publish(String(data='{"id": "tool", "question": "Go to the sofa", "target": "sofa"}'))
    sent += [("", "srv"), ("", "tool")]
    # a (legal) frame larger than buffer.max_bytes_mb (16; this one is 21 MiB)
    big = np.zeros((1500, 2000, 3), np.uint8)
    stamp = s_to_stamp(harness.now())
    harness.pub["colour"].publish(color_msg(big, stamp, "camera_color_optical_frame"))
    harness.pub["depth"].publish(depth_msg(np.ones((1500, 2000), np.float32), stamp, "camera_color_optical_frame"))
    _check_batch(harness, agent, sent, goals_before, answers_before)
    answers = {a["id"]: a for a in harness.answers[answers_before:]}
    assert "too deeply nested" in answers["deep"]["error"]
    assert "not valid Unicode" in answers["sur\ufffd"]["error"]
    assert answers["srv"]["answer"] == "odd \ufffd"
    assert answers["tool"]["finish_reason"] == "ToolError" and not answers["tool"]["goal_sent"]


def test_a_sound_answer_does_become_a_goal(system):
    """The other side of the rule: a clean box and an answer produce exactly one /goal_pose."""
    harness, agent, server, _ = system
    server.clear()
    server.push({"text": "<think> b </think> Action: Object Mapper\n" + SOFA}, {"text": ANSWER})
    goals_before, answers_before = len(harness.goals), len(harness.answers)
    harness.query.publish(String(data='{"id": "sound", "question": "Go to the sofa", "target": "sofa"}'))
    _check_batch(harness, agent, [("", "sound")], goals_before, answers_before)
    [answer] = harness.answers[answers_before:]
    assert answer["goal_sent"] and len(harness.goals) == goals_before + 1
    goal = harness.goals[-1]
    assert goal.header.frame_id == "map"
    assert [goal.pose.position.x, goal.pose.position.y] == pytest.approx(answer["target_pose"]["position"][:2], abs=1e-4)


def test_a_burst_of_300_queries_gets_300_answers(system):
    """The issue measured 99 / 33 of 300 never answered at 0–1 ms gaps; a client that publishes
    reliable with a history as deep as its burst (README) loses none."""
    harness, agent, server, _ = system
    server.clear()
    answers_before = len(harness.answers)
    rng = np.random.default_rng(0)
    sent = []
    for k in range(300):
        qid = f"burst{k}"
        harness.query.publish(String(data=json.dumps({"id": qid, "question": "Where is the sofa?"})))
        sent.append(("", qid))
        time.sleep(float(rng.uniform(0.0, 0.001)))
    _check_batch(harness, agent, sent, len(harness.goals), answers_before)
    got = harness.answers[answers_before:]
    served = sum(1 for a in got if a["finish_reason"] != "rejected")
    print(f"300 queries at 0-1 ms gaps: {len(got)} answered ({served} served, {len(got) - served} rejected: queue full)")
