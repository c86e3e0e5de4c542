"""The agent core without rclpy: query validation, answers from a buffer, frame pairing."""

import dataclasses
import json
import time

import numpy as np
import pytest

from vilasr_ros.agent import AgentConfig, BadQueryError, SpatialAgent, parse_query
from vilasr_ros.buffer import BufferConfig, FrameBuffer
from vilasr_ros.engines import create_engine
from vilasr_ros.frames import CameraIntrinsics
from vilasr_ros.grounding import ground_trace
from vilasr_ros.reasoner import Reasoner
from vilasr_ros.engines.replay import demo_responses
from vilasr_ros.ros.launcher import flatten, load_parameters
from vilasr_ros.pairing import FrameAssembler
from vilasr_ros.sources import open_source


@pytest.mark.parametrize("text, match, qid", [
    ("not json", "not JSON", None),
    ('["a list"]', "JSON object", None),
    ('{"id": "a"}', "question", "a"),
    ('{"id": "b", "question": "?", "type": "essay"}', "unknown problem type", "b"),
    ('{"id": "c", "question": "?", "type": "multiple-choice"}', "needs 'options'", "c"),
    ('{"id": "d", "question": "?", "frames": 0}', "frames", "d"),
    ('{"id": "e", "question": "?", "frames": true}', "frames", "e"),
    ('{"id": "f", "question": "?", "colour": "red"}', "unknown query fields", "f"),
    ('{"id": 7, "question": "?", "target": ""}', "target", "7"),
    (json.dumps({"id": "big", "question": "x" * 10_000}), "bytes", "big"),
])
def test_bad_queries_are_refused_with_their_id(text, match, qid):
    with pytest.raises(BadQueryError, match=match) as info:
        parse_query(text)
    assert info.value.query_id == qid


def test_good_query_is_normalised():
    q = parse_query('{"id": "q", "question": "Which?", "type": "Multiple Choice", "options": ["A. x", "B. y"], '
                    '"target": "chair", "frames": 8}')
    assert (q.id, q.problem_type, q.options, q.target, q.frames) == ("q", "multiple choice", ["A. x", "B. y"], "chair", 8)


@pytest.fixture(scope="module")
def demo_frames():
    """The bundled demo scene (sim:demo): 16 frames of a z-up room with one sofa."""
    with open_source("sim:demo") as source:
        return list(source)


def _agent(tmp_path, frames, clock=time.monotonic, **config):
    buf = FrameBuffer(BufferConfig(max_interval_s=0.0, min_translation_m=0.0), clock=clock)
    now = time.time()
    for i, f in enumerate(frames):
        buf.add(dataclasses.replace(f, stamp_s=now - len(frames) + i))
    reasoner = Reasoner(create_engine("replay", responses=str(demo_responses())))
    return SpatialAgent(reasoner, buf, AgentConfig(trace_root=str(tmp_path), save_async=False, **config))


def test_agent_answers_grounds_and_saves_the_trace(demo_frames, tmp_path):
    agent = _agent(tmp_path, demo_frames, max_age_s=None)
    result = agent.answer(parse_query('{"id": "k", "question": "Go to the sofa", "target": "sofa"}'))
    a = result.answer
    assert a.id == "k" and a.error is None and a.finish_reason == "stop" and a.engine == "replay"
    expected = ground_trace(result.trace, demo_frames, "sofa")
    assert a.target_pose == {"position": expected.approach_position, "orientation": expected.approach_orientation,
                             "frame_id": "map"}
    assert [f["index"] for f in a.frames] == list(range(16))
    assert a.goal_sent and a.goal_reason is None
    assert (tmp_path / a.trace_dir.split("/")[-1] / "trace.json").is_file()
    assert json.loads(a.to_json())["target_pose"]["frame_id"] == "map"


def test_agent_reports_empty_stale_and_unmatched_targets(demo_frames, tmp_path):
    empty = _agent(tmp_path, [])
    assert "empty" in empty.answer(parse_query('{"id": "e", "question": "?"}')).answer.error
    now = [100.0]
    stale = _agent(tmp_path, demo_frames, clock=lambda: now[0], max_age_s=0.5)
    now[0] += 0.6  # no frame arrived for 0.6 s (arrival time on a monotonic clock; stamps play no part)
    assert "no usable frame for 0.60 s" in stale.answer(parse_query('{"id": "s", "question": "?"}')).answer.error
    fresh = _agent(tmp_path, demo_frames, max_age_s=None)
    a = fresh.answer(parse_query('{"id": "t", "question": "?", "target": "refrigerator"}')).answer
    assert a.target_pose is None and a.error.startswith("no target: no box labelled like 'refrigerator'")
    assert not a.goal_sent and "could not be grounded" in a.goal_reason
    assert a.answer is not None  # the answer itself still comes back


class Msg:
    def __init__(self, value):
        self.value = value


INTR = CameraIntrinsics(4, 3, 2.0, 2.0, 1.5, 1.0)


def _assembler(**kw):
    asm = FrameAssembler(lambda m: np.full((3, 4, 3), m.value, np.uint8),
                         lambda m: np.full((3, 4), m.value, np.float32), **kw)
    asm.add_camera_info(INTR)
    return asm


def test_assembler_pairs_by_stamp_in_any_order_and_drops_unpaired():
    asm = _assembler(tolerance_s=0.01, wait_s=0.1)
    assert asm.add_colour(1.000, Msg(10), "cam") == []  # waits for its depth
    [f] = asm.add_depth(1.004, Msg(2))
    assert f.stamp_s == 1.0 and f.rgb[0, 0, 0] == 10 and f.depth_m[0, 0] == 2.0
    [g] = asm.add_depth(2.0, Msg(3)) + asm.add_colour(2.0, Msg(20), "cam")  # depth first
    assert g.rgb[0, 0, 0] == 20 and g.index == 1
    assert asm.add_colour(3.0, Msg(30), "cam") == []
    assert asm.add_depth(3.5, Msg(4)) == []  # colour at 3.0 never got depth: dropped after wait_s
    assert asm.stats.unpaired == 1 and asm.stats.frames == 2


def test_assembler_composes_odometry_with_the_camera_extrinsic():
    T_base_camera = np.eye(4)
    T_base_camera[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]  # REP-103 optical frame in a z-up base
    T_base_camera[:3, 3] = [0.2, 0.0, 0.5]
    asm = _assembler(T_base_camera=T_base_camera, expect_depth=False)
    T_world_base = np.eye(4)
    T_world_base[:3, 3] = [1.0, 2.0, 0.0]
    asm.add_pose(5.0, T_world_base, "odom")
    [f] = asm.add_colour(5.0, Msg(1), "cam")
    np.testing.assert_allclose(f.T_world_camera, T_world_base @ T_base_camera)
    assert f.world_frame_id == "odom" and f.depth_m is None
    assert asm.add_colour(9.0, Msg(1), "cam") == []  # waits for odometry...
    [g] = asm.add_colour(9.5, Msg(1), "cam")  # ...until wait_s passed: no pose, counted
    assert g.stamp_s == 9.0 and g.T_world_camera is None and asm.stats.without_pose == 1


def test_assembler_waits_for_camera_info():
    asm = FrameAssembler(lambda m: np.zeros((3, 4, 3), np.uint8), lambda m: None, expect_depth=False, wait_s=0.2)
    assert asm.add_colour(0.0, Msg(0), "cam") == []  # the first CameraInfo may arrive after the first image
    [f] = asm.add_camera_info(INTR)
    assert f.stamp_s == 0.0 and asm.stats.no_camera_info == 0
    asm = FrameAssembler(lambda m: np.zeros((3, 4, 3), np.uint8), lambda m: None, expect_depth=False, wait_s=0.2)
    assert asm.add_colour(0.0, Msg(0), "cam") == [] and asm.add_colour(0.5, Msg(0), "cam") == []
    assert asm.stats.no_camera_info == 1  # waited wait_s for it, then dropped and counted
    assert "no CameraInfo" in asm.health.last_reason


def test_shipped_parameter_file_holds_every_default():
    """Each default is written once: the node's parameters are generated from AgentNodeSettings, whose
    defaults are read from the component configs; config/agent.yaml must hold the same values."""
    import inspect

    from vilasr_ros.agent_settings import AgentNodeSettings
    from vilasr_ros.pairing import FrameAssembler, MapAlignment
    from vilasr_ros.reasoner import ReasonerConfig, reasoner_config
    from vilasr_ros.ros.env import fastdds_profile
    from vilasr_ros.settings import specs

    params = load_parameters(fastdds_profile().parent / "agent.yaml")
    assert set(params) == {"camera_node", "vilasr_agent"}
    assert flatten({"buffer": {"max_frames": 3}}) == {"buffer.max_frames": 3}
    table = specs(AgentNodeSettings)
    assert set(params["vilasr_agent"]) == set(table)
    for name, spec in table.items():
        assert params["vilasr_agent"][name] == spec.default, f"config/agent.yaml {name}"
    # The node's defaults build exactly the components' defaults.
    settings = AgentNodeSettings()
    assert settings.agent_config() == AgentConfig()
    assert settings.buffer_config() == BufferConfig()
    assert reasoner_config(**settings.loop_options()) == ReasonerConfig()
    defaults = inspect.signature(FrameAssembler.__init__).parameters
    for option, value in settings.assembler_options().items():
        if option not in ("world_frame_id", "source_id", "expect_pose"):  # the node's own
            assert defaults[option].default == value, option
    assert MapAlignment(lambda t: (None, None)).max_covariance_m2 == settings.max_map_covariance
    pytest.importorskip("rclpy")
    from vilasr_ros.ros.agent_node import PARAMETERS
    from vilasr_ros.ros.camera_node import DEFAULTS

    assert PARAMETERS == table  # the node declares exactly these
    assert set(params["camera_node"]) == set(DEFAULTS)
    for name, default in DEFAULTS.items():
        if name != "source":  # the YAML names the robot's camera; the code has no default source
            assert params["camera_node"][name] == default, name


def test_assembler_waits_for_odometry_and_interpolates():
    asm = _assembler(expect_depth=False, wait_s=0.5)
    A, B = np.eye(4), np.eye(4)
    B[:3, 3] = [0.3, 0.0, 0.0]  # 3 m/s: within max_speed_mps
    B[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90° about z
    asm.add_pose(1.0, A, "map")
    assert asm.add_colour(1.05, Msg(1), "cam") == []  # odometry has not reached 1.05 yet
    [f] = asm.add_pose(1.1, B, "map")
    np.testing.assert_allclose(f.T_world_camera[:3, 3], [0.15, 0.0, 0.0], atol=1e-9)
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    np.testing.assert_allclose(f.T_world_camera[:3, :3], [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-9)
