"""Failure behaviour without a ROS graph: each class of fault from the hardening issue, with its example.

Hostile queries, answers that must not become goals, sensor faults, misbehaving servers, bad files,
bad config, ids that would become paths, secrets, disk retention. The running node is driven by
``test_fuzz.py``; here the core that node wraps is held to the same rules.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from misbehaving_server import MisbehavingServer
from vilasr_ros.agent import AgentConfig, Answer, BadQueryError, SpatialAgent, goal_decision, parse_query
from vilasr_ros.buffer import BufferConfig, FrameBuffer
from vilasr_ros.cli import main
from vilasr_ros.engines import create_engine
from vilasr_ros.errors import EngineError, MessageError
from vilasr_ros.reasoner import Reasoner, ReasonerConfig
from vilasr_ros.sources import SourceError, open_source
from vilasr_ros.trace import Trace
from vilasr_ros.trace_store import TraceStore

SOFA_BOX = "```json\n[{\"index\": 11, \"bbox_2d\": [47, 93, 209, 202], \"label\": \"sofa\"}]\n```"
ANSWER = "<think> done </think> Action: Answer\n<answer> by the wall </answer>"


@pytest.fixture(scope="module")
def demo_frames():
    with open_source("sim:demo") as source:
        return list(source)


def _agent(tmp_path, frames, turns, **config) -> SpatialAgent:
    buf = FrameBuffer(BufferConfig(max_interval_s=0.0, min_translation_m=0.0))
    now = time.time()
    for i, f in enumerate(frames):
        buf.add(dataclasses.replace(f, stamp_s=now - len(frames) + i))
    reasoner = Reasoner(create_engine("replay", responses=turns), ReasonerConfig(max_turns=4))
    return SpatialAgent(reasoner, buf, AgentConfig(trace_root=str(tmp_path), save_async=False, max_age_s=None, **config))


# ----------------------------------------------------------------------------- hostile queries


@pytest.mark.parametrize("text, match", [
    ('{"id": "deep", "question": "?", "x": ' + "[" * 5000 + "]" * 5000 + "}", "too deeply nested"),
    ('{"id": "deep2", "question": ' + "[" * 100000, "nested"),
    ('{"id": "sur\\ud800", "question": "?"}', "not valid Unicode"),
    ('{"id": "qs", "question": "where \\udc00 is it"}', "not valid Unicode"),
    ('{"id": "opt", "question": "?", "options": 5, "type": "multiple choice"}', "options"),
    ('{"id": "nul", "question": null}', "question"),
])
def test_hostile_queries_are_refused_with_an_answer_that_encodes(text, match):
    with pytest.raises(BadQueryError, match=match) as info:
        parse_query(text, max_bytes=1 << 20)
    assert info.value.query_id is not None  # answered under its id, even before the JSON is parsed
    Answer.failure(info.value.query_id, str(info.value)).to_json().encode("utf-8")  # publishable


def test_an_oversized_query_is_answered_under_its_id():
    with pytest.raises(BadQueryError, match="bytes") as info:
        parse_query(json.dumps({"id": "big-1", "question": "x" * 10_000}))
    assert info.value.query_id == "big-1"


# ----------------------------------------------------------------------------- goals


def test_a_failed_answer_never_becomes_a_goal(demo_frames, tmp_path):
    # The example: one valid box and one invalid item in a tool turn -> ToolError.
    bad_turn = ("<think> box </think> Action: Object Mapper\n```json\n[{\"index\": 11, \"bbox_2d\": [47, 93, 209, 202], "
                "\"label\": \"sofa\"}, {\"index\": 99, \"bbox_2d\": [1, 2, 3, 4], \"label\": \"ghost\"}]\n```")
    agent = _agent(tmp_path, demo_frames, [bad_turn, ANSWER])
    result = agent.answer(parse_query('{"id": "t", "question": "Go to the sofa", "target": "sofa"}'))
    a = result.answer
    assert a.finish_reason == "ToolError" and not a.goal_sent and a.target_pose is None
    assert "rejected tool call" in a.goal_reason or "did not finish" in a.goal_reason
    # The same box in a clean turn is a goal; below min_goal_confidence it is not.
    good = _agent(tmp_path, demo_frames, ["<think> box </think> Action: Object Mapper\n" + SOFA_BOX, ANSWER])
    assert good.answer(parse_query('{"id": "g", "question": "Go to the sofa", "target": "sofa"}')).answer.goal_sent
    result = good.answer(parse_query('{"id": "s", "question": "Go to the sofa", "target": "sofa"}'))
    weak = dataclasses.replace(result.grounding, confidence=0.2)
    ok, why = goal_decision(result.trace, weak, 0.3)
    assert not ok and "below min_goal_confidence" in why


def test_goal_rule_checks_the_turn_the_box_came_from(demo_frames, tmp_path):
    agent = _agent(tmp_path, demo_frames, ["<think> box </think> Action: Object Mapper\n" + SOFA_BOX, ANSWER])
    result = agent.answer(parse_query('{"id": "g", "question": "Go to the sofa", "target": "sofa"}'))
    trace, grounding = result.trace, result.grounding
    assert goal_decision(trace, grounding, 0.3) == (True, None)
    trace.turns[grounding.turn].error = "tool call rejected"
    assert goal_decision(trace, grounding, 0.3)[0] is False


# ----------------------------------------------------------------------------- engines and servers


class Exploding:
    name = "exploding"

    def describe(self):
        return {"engine": "exploding"}

    def reset(self):
        pass

    def generate(self, request):
        raise KeyError("a bug inside an engine")


def test_any_engine_failure_ends_the_query_not_the_caller():
    trace = Reasoner(Exploding()).run([np.zeros((64, 64, 3), np.uint8)], "q")
    assert trace.finish_reason == "error" and "KeyError" in trace.error


def _request():
    from vilasr_ros import protocol
    from vilasr_ros.engines.base import GenerationRequest, SamplingConfig

    image = Image.new("RGB", (56, 56))
    messages = protocol.initial_messages([image.size], "q", "free-form")
    return GenerationRequest(prompt=protocol.render_chat(messages), images=[image], messages=messages,
                             sampling=SamplingConfig(temperature=0.0, max_tokens=16))


@pytest.fixture()
def server():
    s = MisbehavingServer()
    yield s
    s.close()


def test_a_slow_drip_server_ends_the_query_at_its_deadline(server):
    server.push({"drip_s": 2.0})
    engine = create_engine("openai", base_url=server.url, timeout_s=5.0, max_retries=0)
    start = time.monotonic()
    trace = Reasoner(engine, ReasonerConfig(max_turns=1)).run([Image.new("RGB", (56, 56))], "q")
    elapsed = time.monotonic() - start
    print(f"slow drip (1 byte / 2 s), timeout 5 s: query ended after {elapsed:.2f} s")
    assert trace.finish_reason == "error" and "deadline" in trace.error
    assert elapsed <= 5.0 * 1.1


@pytest.mark.parametrize("behaviour, match", [
    ({"huge_bytes": 6 * 2**20}, "max_reply_bytes"),
    ({"raw": b"{not json", "status": 200}, "not JSON"),
    ({"raw": b'{"choices": []}', "status": 200}, "no choices"),
    ({"raw": b'{"choices": [{"message": {"content": 5}}]}', "status": 200}, "content is int"),
    ({"raw": b"oops", "status": 404}, "HTTP 404"),
    ({"close": True}, "cannot reach"),
])
def test_every_bad_reply_is_a_clear_engine_error(server, behaviour, match):
    server.push(behaviour)
    engine = create_engine("openai", base_url=server.url, timeout_s=10.0, max_retries=0)
    with pytest.raises(EngineError, match=match):
        engine.generate(_request())


def test_odd_reply_fields_are_read_robustly(server):
    server.push({"text": "<answer> ok \udc80 </answer>", "usage": {"prompt_tokens": "many", "completion_tokens": None,
                                                                      "prompt_tokens_details": {"cached_tokens": -3}}},
                {"text": "x", "usage": "not a mapping", "finish_reason": "weird"})
    engine = create_engine("openai", base_url=server.url, timeout_s=10.0, max_retries=0)
    first = engine.generate(_request())
    assert first.text == "<answer> ok \ufffd </answer>" and first.prompt_tokens is None and first.cached_tokens is None
    second = engine.generate(_request())
    assert second.finish_reason == "stop" and second.prompt_tokens is None


def test_eval_survives_non_numeric_usage(server, tmp_path):
    _image(tmp_path / "a.png")
    items = [{"id": "u", "question": "Left?", "answer": "A", "problem_type": "multiple choice",
              "options": ["A. yes", "B. no"], "image_path": "a.png"}]
    (tmp_path / "q.json").write_text(json.dumps(items))
    server.push({"text": "<answer> A </answer>", "usage": {"prompt_tokens": "NaN", "completion_tokens": [1]}})
    assert main(["eval", "run", "--dataset", "spatialeval_real", "--data", str(tmp_path / "q.json"), "--out",
                 str(tmp_path / "run"), "--base-url", server.url, "-q"]) == 0
    [line] = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["extracted_answer"] == "A"


def test_a_flood_of_boxes_is_bounded():
    boxes = ",".join(f'{{"index": 1, "bbox_2d": [{i % 50}, 1, {i % 50 + 5}, 9], "label": "b{i}"}}' for i in range(200_000))
    text = "<think> x </think> Action: Object Mapper\n```json\n[" + boxes + "]\n```"
    start = time.monotonic()
    trace = Reasoner(create_engine("replay", responses=[text, ANSWER])).run([Image.new("RGB", (56, 56))], "q")
    assert time.monotonic() - start < 5.0 and trace.finish_reason == "ToolError"
    many = "```json\n[" + ",".join(f'{{"index": 1, "bbox_2d": [1, 1, 5, 5], "label": "b{i}"}}' for i in range(600)) + "]\n```"
    trace = Reasoner(create_engine("replay", responses=["<think> x </think>\n" + many, ANSWER])).run(
        [Image.new("RGB", (56, 56))], "q")
    assert trace.finish_reason == "ToolError" and "at most 512" in trace.error


def test_credentials_in_base_url_never_reach_traces_or_errors(server, tmp_path, monkeypatch):
    monkeypatch.setenv("FUZZ_KEY", "sk-secret-123456")
    url = server.url.replace("http://", "http://alice:pa55word@")
    engine = create_engine("openai", base_url=url, api_key_env="FUZZ_KEY", timeout_s=10.0, max_retries=0)
    server.push({"raw": b"denied sk-secret-123456", "status": 401})
    trace = Reasoner(engine, ReasonerConfig(max_turns=1)).run([Image.new("RGB", (56, 56))], "q")
    trace.save(tmp_path / "t")
    saved = (tmp_path / "t" / "trace.json").read_text()
    assert trace.finish_reason == "error" and "401" in trace.error
    for secret in ("pa55word", "alice", "sk-secret-123456"):
        assert secret not in saved and secret not in trace.error
    assert "***@127.0.0.1" in json.dumps(engine.describe())


# ----------------------------------------------------------------------------- sensors


def _frame(t, x=0.0):
    from vilasr_ros.frames import CameraIntrinsics, Frame

    T = np.eye(4)
    T[0, 3] = x
    return Frame(rgb=np.zeros((4, 4, 3), np.uint8), depth_m=np.ones((4, 4), np.float32),
                 intrinsics=CameraIntrinsics(4, 4, 2.0, 2.0, 1.5, 1.5), T_world_camera=T, stamp_s=t)


def test_a_future_stamp_neither_freezes_the_buffer_nor_hides_a_dead_camera():
    wall, mono = [1000.0], [50.0]
    buf = FrameBuffer(BufferConfig(max_interval_s=0.5, min_translation_m=10.0), clock=lambda: mono[0],
                      wall_clock=lambda: wall[0])
    assert buf.add(_frame(1000.0))
    assert not buf.add(_frame(1000.0 + 3.15e7))  # a year ahead: dropped and counted
    assert buf.health.dropped["future_stamp"] == 1
    for k in range(1, 4):  # later frames still become keyframes
        wall[0] += 0.6
        assert buf.add(_frame(1000.0 + 0.6 * k))
    mono[0] += 10.0  # then the camera stops: stale by arrival time, whatever the stamps said
    with pytest.raises(Exception, match="no usable frame for 10.00 s"):
        buf.select(4, max_age_s=5.0)


def test_a_backward_time_jump_restarts_the_buffer():
    buf = FrameBuffer(BufferConfig(max_interval_s=0.5, min_translation_m=10.0), wall_clock=lambda: 1e9)
    for t in (100.0, 101.0, 102.0):
        buf.add(_frame(t))
    assert buf.add(_frame(5.0)) and len(buf) == 1 and buf.resets == 1


def _assembler(**kw):
    from vilasr_ros.pairing import FrameAssembler

    from vilasr_ros.frames import CameraIntrinsics

    asm = FrameAssembler(lambda m: np.zeros((4, 4, 3), np.uint8), lambda m: np.ones((4, 4), np.float32),
                         expect_depth=False, **kw)
    asm.add_camera_info(CameraIntrinsics(4, 4, 2.0, 2.0, 1.5, 1.5))
    return asm


@pytest.mark.parametrize("jump", [1000.0, 1e300, float("nan")])
def test_odometry_jumps_are_rejected_and_reported(jump):
    asm = _assembler(max_speed_mps=5.0)
    T = np.eye(4)
    asm.add_pose(0.0, T, "odom")
    far = np.eye(4)
    far[0, 3] = jump
    assert asm.add_pose(0.1, far, "odom") == []
    assert asm.stats.odometry_rejected == 1 and asm.health.dropped["odometry"] == 1
    [f] = asm.add_colour(0.1, object(), "cam") + asm.add_pose(0.2, T, "odom")
    assert abs(f.T_world_camera[0, 3]) < 1e-9  # the frame is posed from the sane odometry


def test_a_consistent_new_odometry_track_is_accepted_as_a_reset():
    asm = _assembler(odometry_reset_after=5)
    asm.add_pose(0.0, np.eye(4), "odom")
    for k in range(5):
        T = np.eye(4)
        T[0, 3] = 50.0 + 0.01 * k
        asm.add_pose(0.1 * (k + 1), T, "odom")
    assert asm.stats.odometry_resets == 1 and asm.stats.odometry_rejected == 4


def test_a_camera_info_of_another_size_is_reported_not_silent():
    from vilasr_ros.frames import CameraIntrinsics
    from vilasr_ros.pairing import FrameAssembler

    asm = FrameAssembler(lambda m: np.zeros((480, 640, 3), np.uint8), lambda m: None, expect_depth=False)
    asm.add_camera_info(CameraIntrinsics(320, 240, 200.0, 200.0, 160.0, 120.0))
    assert asm.add_colour(0.0, object(), "cam") == []
    assert asm.health.dropped["camera_info"] == 1
    assert "CameraInfo does not match the colour image" in asm.health.last_reason
    assert "320x240" in asm.health.last_reason and "640x480" in asm.health.last_reason


class DepthMsg:
    def __init__(self, values: np.ndarray, dtype: str, flag: int, encoding: str = "16UC1"):
        self.height, self.width = values.shape
        self.encoding, self.is_bigendian = encoding, flag
        self.step = self.width * np.dtype(dtype).itemsize
        self.data = values.astype(dtype).tobytes()


def test_depth_byte_order_is_honoured_and_a_wrong_flag_is_refused():
    from vilasr_ros.sources.bag import IMAGE, decode_depth

    mm = np.random.default_rng(0).integers(800, 4000, (48, 64))
    np.testing.assert_allclose(decode_depth(DepthMsg(mm, ">u2", 1), IMAGE), mm / 1000.0, atol=1e-6)
    np.testing.assert_allclose(decode_depth(DepthMsg(mm, "<u2", 0), IMAGE), mm / 1000.0, atol=1e-6)
    with pytest.raises(MessageError, match="byte order"):
        decode_depth(DepthMsg(mm, "<u2", 1), IMAGE)  # little-endian data flagged big-endian
    m = mm / 1000.0
    np.testing.assert_allclose(decode_depth(DepthMsg(m, ">f4", 1, "32FC1"), IMAGE), m, atol=1e-6)
    with pytest.raises(MessageError, match="byte order"):
        decode_depth(DepthMsg(m, "<f4", 1, "32FC1"), IMAGE)


def test_a_frame_larger_than_the_buffer_is_counted_not_raised():
    buf = FrameBuffer(BufferConfig(max_bytes=10))
    assert buf.add(_frame(0.0)) is False and buf.health.dropped["too_large"] == 1


# ----------------------------------------------------------------------------- files


def _copy_folder(tmp_path) -> Path:
    dst = tmp_path / "scene"
    shutil.copytree(Path(open_source("sim:demo").scene_dir), dst)
    return dst


def test_a_corrupt_image_in_a_folder_is_skipped_and_named(tmp_path):
    folder = _copy_folder(tmp_path)
    (folder / "color" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    source = open_source(f"rgbd_folder:{folder}")
    frames = list(source)
    assert len(frames) == 15 and [f.index for f in frames][:4] == [0, 1, 2, 4]
    assert len(source.skipped) == 1 and "00003.png" in source.skipped[0]


@pytest.mark.parametrize("edit, match", [
    (lambda f: (f / "camera_intrinsic.json").write_text('{"width": 320, "height": 240, "intrinsic_matrix": [1, 2]}'),
     "camera_intrinsic.json.*9 numbers"),
    (lambda f: (f / "rgbd.json").write_text('{"depth_scale": 1000, "pose_file": "../../etc/passwd"}'),
     "pose_file.*inside the folder"),
    (lambda f: (f / "rgbd.json").write_text("{broken"), "rgbd.json"),
    (lambda f: (f / "trajectory.log").write_text("0 0 1\n1 2 3\n"), "trajectory.log"),
])
def test_bad_folder_metadata_is_one_clear_error_naming_the_file(tmp_path, edit, match):
    folder = _copy_folder(tmp_path)
    edit(folder)
    with pytest.raises(SourceError, match=match):
        open_source(f"rgbd_folder:{folder}")


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_bag_corrupted_mid_file_is_a_clear_error(tmp_path, demo_frames, storage):
    from vilasr_ros.sources.bag import write_bag

    bag = write_bag(demo_frames[:8], tmp_path / "bag", storage=storage)
    f = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data = bytearray(f.read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 4096):
        data[k] ^= 0x5A
    f.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=f"bag {bag}"):
        list(open_source(f"bag:{bag}"))


def test_a_camera_node_on_a_corrupt_bag_logs_and_keeps_the_process(tmp_path, demo_frames):
    pytest.importorskip("rclpy")
    from vilasr_ros.sources.bag import write_bag

    bag = write_bag(demo_frames[:8], tmp_path / "bag", storage="sqlite3")
    f = next(bag.glob("*.db3"))
    data = bytearray(f.read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 4096):
        data[k] ^= 0x5A
    f.write_bytes(bytes(data))
    code = ("import rclpy, time\nfrom vilasr_ros.ros.camera_node import CameraNode\nfrom rclpy.parameter import Parameter\n"
            "rclpy.init()\nn = CameraNode(parameter_overrides=[Parameter('source', value='bag:%s'), "
            "Parameter('loop', value=False)])\nt = time.monotonic()\n"
            "while not n.finished.is_set() and time.monotonic() - t < 60: rclpy.spin_once(n, timeout_sec=0.1)\n"
            "print('ALIVE error=%%s' %% n.error)\nn.destroy_node()\nrclpy.shutdown()\n") % bag
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ALIVE error=SourceError" in out.stdout, out.stdout + out.stderr
    assert "playback stopped" in out.stderr


def _image(path: Path, size=(64, 48)) -> None:
    Image.new("RGB", size, (120, 30, 200)).save(path)


def test_eval_skips_bad_items_and_truncated_images_and_carries_on(tmp_path):
    _image(tmp_path / "ok.png")
    good = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)).save(good, quality=95)
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])  # passes PIL's verify(), fails to decode
    with Image.open(tmp_path / "cut.jpg") as im:
        im.verify()
    base = {"answer": "A", "problem_type": "multiple choice", "options": ["A. yes", "B. no"], "question": "Left?"}
    items = [{**base, "id": "fine", "image_path": "ok.png"},
             {**base, "id": "cut", "image_path": "cut.jpg"},
             {**base, "id": "opts", "options": 5, "image_path": "ok.png"},
             {**base, "id": "none", "question": None, "image_path": "ok.png"},
             {**base, "id": "../../escape", "image_path": "ok.png"}]
    (tmp_path / "q.json").write_text(json.dumps(items))
    replay = tmp_path / "r.json"
    replay.write_text(json.dumps(["<answer> A </answer>"]))
    args = ["eval", "run", "--dataset", "spatialeval_real", "--data", str(tmp_path / "q.json"), "--engine", "replay",
            "--responses", str(replay), "--out", str(tmp_path / "run"), "-q"]
    assert main(args) == 0
    done = [json.loads(x)["id"] for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    skipped = {json.loads(x)["id"]: json.loads(x)["reason"] for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()}
    assert sorted(done) == sorted(["fine", "../../escape"])  # workers finish in any order
    assert set(skipped) == {"cut", "opts", "none"} and "options" in skipped["opts"] and "question" in skipped["none"]
    traces = [p for p in (tmp_path / "run" / "traces").iterdir()]
    assert all(p.resolve().is_relative_to((tmp_path / "run").resolve()) for p in traces) and len(traces) == 2
    assert not (tmp_path / "escape").exists()
    assert main(args) == 0  # resume: nothing lost, nothing repeated
    assert [json.loads(x)["id"] for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()] == done


def test_resume_keeps_every_result_around_a_garbled_middle_line(tmp_path):
    for k in range(6):
        _image(tmp_path / f"{k}.png")
    items = [{"id": f"i{k}", "question": "Left?", "answer": "A", "problem_type": "multiple choice",
              "options": ["A. yes", "B. no"], "image_path": f"{k}.png"} for k in range(6)]
    (tmp_path / "q.json").write_text(json.dumps(items))
    replay = tmp_path / "r.json"
    replay.write_text(json.dumps(["<answer> A </answer>"]))
    args = ["eval", "run", "--dataset", "spatialeval_real", "--data", str(tmp_path / "q.json"), "--engine", "replay",
            "--responses", str(replay), "--out", str(tmp_path / "run"), "-q"]
    assert main(args) == 0
    results = tmp_path / "run" / "results.jsonl"
    lines = results.read_text().splitlines()
    lines[2] = lines[2][:40] + "\x00garbled"  # a damaged line in the middle
    results.write_text("\n".join(lines[:5]) + "\n")  # and item i5 never finished
    assert main(args) == 0
    after = results.read_text().splitlines()
    ids = [json.loads(x)["id"] for x in after if not x.endswith("garbled")]
    assert after[2] == lines[2]  # kept for inspection
    assert sorted(ids) == ["i0", "i1", "i2", "i3", "i4", "i5"]  # i2 ran again; i3, i4 were kept, not re-run
    assert ids.count("i3") == 1 and ids.count("i4") == 1


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("extra, match", [
    (["--set", "lr=abc"], "unknown key(s) lr"),
    (["--set", "=5"], "empty key"),
    (["--set", "args.max_steps=-5"], "max_steps"),
    (["--set", "args.learning_rate=abc"], "learning_rate must be a number"),
    (["--set", "args.eval_steps=[1, 2"], "YAML error"),
])
def test_training_config_mistakes_are_one_line(capsys, extra, match):
    code = main(["train", "sft", "--config", str(REPO / "config/training/smoke/sft.yaml"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err, err


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: runs/tiny\nargs:\n  max_steps: [1, 2\n")
    assert main(["train", "sft", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml: line" in err and "YAML error" in err


def test_every_shipped_training_config_checks():
    from vilasr_ros_training.config import load_config

    for stage in ("sft", "rrs", "grpo"):
        for path in (REPO / "config/training" / f"{stage}.yaml", REPO / "config/training/smoke" / f"{stage}.yaml"):
            load_config(path, stage=stage)


# ----------------------------------------------------------------------------- paths and disk


def test_ids_never_leave_their_folder(tmp_path):
    from vilasr_ros.sanitize import child_path, safe_name

    for hostile in ("../../x", "/etc/passwd", "..", ".", "a/../../b", "\ud800", "", None, "x" * 500):
        path = child_path(tmp_path, hostile)
        assert path.parent == tmp_path and path.name not in ("", ".", "..")
    assert safe_name("a/b") != safe_name("a_b")  # different ids, different folders


def test_trace_retention_bounds_size_and_age_oldest_first(tmp_path):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), np.uint8))
    trace = Trace(question="q", problem_type="free-form", options=None, kind="single")
    from vilasr_ros.trace import TraceImage

    trace.images, trace.pil_images = [TraceImage(1, (200, 200), 0)], [image]
    now = [1000.0]
    store = TraceStore(tmp_path / "traces", max_total_bytes=3 * 130_000, max_age_s=3600.0, clock=lambda: now[0])
    names = []
    for k in range(6):
        names.append(f"t{k}")
        assert store.save(trace, names[-1]) is not None
        now[0] += 1.0
    kept = sorted(p.name for p in (tmp_path / "traces").iterdir())
    assert kept == names[-len(kept):] and 1 <= len(kept) <= 3 and store.total_bytes <= 3 * 130_000
    now[0] += 7200.0
    store.save(trace, "fresh")
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["fresh"]  # the old ones aged out
    (tmp_path / "traces" / ".dead.tmp-1234").mkdir()  # a write interrupted by a crash
    TraceStore(tmp_path / "traces").enforce()
    assert not (tmp_path / "traces" / ".dead.tmp-1234").exists()


def test_a_trace_with_lone_surrogates_is_saved_whole(tmp_path):
    turns = ["<think> \ud83d odd </think> Action: Answer\n<answer> fine \udfff </answer>"]
    trace = Reasoner(create_engine("replay", responses=turns)).run([Image.new("RGB", (56, 56))], "q")
    path = trace.save(tmp_path / "t")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["answer"] == "fine \ufffd" and os.path.getsize(path) > 100


def test_parameters_that_write_files_or_move_the_robot_are_read_only(tmp_path):
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.parameter import Parameter

    from vilasr_ros.ros.agent_node import VilasrAgentNode

    rclpy.init()
    try:
        node = VilasrAgentNode(reasoner=Reasoner(create_engine("replay")),
                               parameter_overrides=[Parameter("trace_root", value=str(tmp_path))])
        results = node.set_parameters([Parameter("trace_root", value="/tmp/elsewhere"),
                                       Parameter("publish_goal_pose", value=True),
                                       Parameter("min_goal_confidence", value=0.5)])
        assert [r.successful for r in results] == [False, False, True]
        assert node.agent.config.trace_root == str(tmp_path) and node.p["publish_goal_pose"] is False
        node.destroy_node()
    finally:
        rclpy.shutdown()


def test_the_scripted_demo_never_drives_a_robot():
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.parameter import Parameter

    from vilasr_ros.ros.agent_node import VilasrAgentNode

    rclpy.init()
    try:
        with pytest.raises(ValueError, match="scripted answer never drives a robot"):
            VilasrAgentNode(parameter_overrides=[Parameter("engine", value="replay"),
                                                 Parameter("publish_goal_pose", value=True)])
    finally:
        rclpy.shutdown()
