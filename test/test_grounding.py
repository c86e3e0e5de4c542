"""Grounding the model's box into world coordinates on real RGB-D data."""

import json

import numpy as np
import pytest

from conftest import RGBD
from vilasr_ros import protocol
from vilasr_ros.cli import main as vilasr
from vilasr_ros.engines.replay import ReplayEngine
from vilasr_ros.geometry import GroundingError, model_to_sensor_box, surface_in_box
from vilasr_ros.grounding import GroundingConfig, ground_trace
from vilasr_ros.reasoner import Reasoner
from vilasr_ros.sources import open_source

MODEL_SIZE = protocol.resized_size(640, 480, protocol.prompts()["image_max_pixels"]["eval_default"])  # 644x476
BACKREST = {0: [370, 120, 470, 220], 4: [355, 120, 455, 220]}  # sensor pixels around the chair's back cushion


def to_model(box):
    sx, sy = MODEL_SIZE[0] / 640, MODEL_SIZE[1] / 480
    return [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]


@pytest.fixture(scope="module")
def frames():
    return list(open_source(f"rgbd_folder:{RGBD / 'open3d_testdata_rgbd'}"))


def run_with_box(frames, image_index, box_model, label="chair back"):
    turn = ("<think> box it </think> Action: Object Mapper\n```json\n"
            + json.dumps([{"index": image_index, "bbox_2d": box_model, "label": label}]) + "\n```")
    reasoner = Reasoner(ReplayEngine([turn, "<think> ok </think> Action: Answer\n<answer> there </answer>"]))
    return reasoner.run([f.rgb for f in frames], "Go to the chair", "free-form")


def independent_world_point(frame, box_model):
    """numpy only: box → sensor pixels, median depth inside, centre ray, pose."""
    b = np.array(box_model, float) * np.tile([640 / MODEL_SIZE[0], 480 / MODEL_SIZE[1]], 2)
    x1, y1, x2, y2 = np.round(b).astype(int)
    patch = frame.depth_m[y1:y2 + 1, x1:x2 + 1]
    z = np.median(patch[patch > 0])
    u, v = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    p = np.array([(u - 319.5) * z / 525.0, (v - 239.5) * z / 525.0, z, 1.0])
    return (frame.T_world_camera @ p)[:3]


@pytest.mark.parametrize("frame_index", [0, 4])
def test_world_position_matches_independent_deprojection(frames, frame_index):
    box = to_model(BACKREST[frame_index])
    trace = run_with_box(frames, frame_index + 1, box)
    result = ground_trace(trace, frames, "chair back")
    assert result.ok, result.reason
    assert result.frame_index == frame_index and result.image_index == frame_index + 1
    assert np.linalg.norm(np.array(result.position_world) - independent_world_point(frames[frame_index], box)) < 0.02


def test_same_object_in_two_frames_lands_within_10cm(frames):
    a = ground_trace(run_with_box(frames, 1, to_model(BACKREST[0])), frames, "chair back")
    b = ground_trace(run_with_box(frames, 5, to_model(BACKREST[4])), frames, "chair back")
    assert np.linalg.norm(np.array(a.position_world) - np.array(b.position_world)) < 0.10


def test_box_drawn_on_a_drawn_image_follows_provenance(frames):
    first = ("<think> a </think> Action: Object Mapper\n```json\n"
             + json.dumps([{"index": 5, "bbox_2d": [1, 1, 5, 5], "label": "tmp"}]) + "\n```")
    second = ("<think> b </think> Action: Object Mapper\n```json\n"
              + json.dumps([{"index": 6, "bbox_2d": to_model(BACKREST[4]), "label": "chair"}]) + "\n```")
    trace = Reasoner(ReplayEngine([first, second, "<answer> x </answer>"])).run([f.rgb for f in frames], "q", "free-form")
    result = ground_trace(trace, frames, "Chair")
    assert result.ok and result.match == "exact" and result.image_index == 6 and result.frame_index == 4


def test_approach_pose_faces_the_target(frames):
    """(stand-off from the near edge and free floor: test_fusion.py, on a z-up scene)"""
    trace = run_with_box(frames, 1, to_model(BACKREST[0]))
    result = ground_trace(trace, frames, "chair", GroundingConfig(standoff_m=0.5))
    assert result.match == "substring"
    target, pose = np.array(result.position_world), np.array(result.approach_position)
    assert np.linalg.norm(target[:2] - pose[:2]) >= 0.5
    x, y, z, w = result.approach_orientation
    yaw = 2 * np.arctan2(z, w)
    heading = np.array([np.cos(yaw), np.sin(yaw)])
    assert heading @ (target[:2] - pose[:2]) / np.linalg.norm(target[:2] - pose[:2]) == pytest.approx(1.0, abs=1e-3)


def test_no_matching_label_gives_a_reason_not_a_guess(frames):
    result = ground_trace(run_with_box(frames, 1, to_model(BACKREST[0]), label="lamp"), frames, "sofa")
    assert not result.ok and "no box labelled like 'sofa'" in result.reason and "lamp" in result.reason


def test_box_outside_image_and_box_without_depth(frames):
    with pytest.raises(GroundingError, match="outside"):
        model_to_sensor_box([700, 500, 800, 600], MODEL_SIZE, (640, 480))
    f = frames[0]
    empty = type(f)(f.rgb, np.zeros_like(f.depth_m), f.intrinsics, f.T_world_camera)
    with pytest.raises(GroundingError, match="no valid depth"):
        surface_in_box(empty, np.array([10.0, 10.0, 50.0, 50.0]))
    nan = type(f)(f.rgb, np.full_like(f.depth_m, np.nan), f.intrinsics, f.T_world_camera)
    trace = run_with_box(frames, 1, to_model(BACKREST[0]))
    result = ground_trace(trace, [nan] + frames[1:], "chair")
    assert not result.ok and "no valid depth" in result.reason


def test_background_leaking_into_the_box_is_ignored(frames):
    f = frames[0]
    tight = surface_in_box(f, np.array(BACKREST[0], float))
    wide = surface_in_box(f, np.array([350, 100, 490, 240], float))  # wall shows around the cushion
    assert abs(wide.depth_m - tight.depth_m) < 0.05


def test_a_part_hidden_by_something_in_front_does_not_take_the_target(frames):
    """A bin at 3 m fills its tight box; a box at 1.5 m in front hides its lower-left corner (a fifth
    of the pixels: enough to be a cluster of its own). The object is what reaches across the box —
    the bin — not the nearer part; with the preference off the older rule takes the nearest."""
    f = frames[0]
    depth = np.full(f.depth_m.shape, 3.0, np.float32)
    depth[150:200, 80:120] = 1.5  # the occluder: 40 % of the box's width, half its height
    frame = type(f)(f.rgb, depth, f.intrinsics, None)
    box = np.array([80, 100, 179, 199], float)
    assert surface_in_box(frame, box, min_box_span=GroundingConfig().min_box_span).depth_m == pytest.approx(3.0, abs=0.01)
    assert surface_in_box(frame, box, min_box_span=0.0).depth_m == pytest.approx(1.5, abs=0.01)
    with pytest.raises(ValueError, match="min_box_span"):
        GroundingConfig(min_box_span=1.5)


def test_vilasr_ask_with_source_and_target_writes_the_target(tmp_path):
    turn = ("<think> box it </think> Action: Object Mapper\n```json\n"
            + json.dumps([{"index": 1, "bbox_2d": to_model(BACKREST[0]), "label": "chair"}]) + "\n```")
    responses = tmp_path / "r.json"
    responses.write_text(json.dumps([turn, "<answer> ok </answer>"]))
    code = vilasr(["ask", "--source", f"rgbd_folder:{RGBD / 'open3d_testdata_rgbd'}", "--frames", "5",
                   "--question", "Go to the chair", "--target", "chair", "--engine", "replay",
                   "--responses", str(responses), "--out", str(tmp_path / "run")])
    assert code == 0
    target = json.loads((tmp_path / "run" / "trace.json").read_text())["target"]
    assert target["ok"] and target["frame_id"] == "map" and target["frame_index"] == 0
    assert len(target["approach_orientation"]) == 4 and len(target["position_world"]) == 3
