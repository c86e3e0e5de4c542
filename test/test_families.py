"""Model families (issue 27, first part): the profile of Qwen2.5-VL and Qwen3-VL, found by name or from a
model folder; the same box in either family's coordinates lands on the same sensor pixels and 3D point."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vilasr_ros import protocol
from vilasr_ros.errors import ConfigError, QueryError
from vilasr_ros.families import FAMILIES, detect_family, model_family, resolve_family
from vilasr_ros.frames import CameraIntrinsics
from vilasr_ros.geometry import deproject, model_to_sensor_box

QWEN25, QWEN3 = model_family("qwen2_5_vl"), model_family("qwen3_vl")
EVAL_MAX_PIXELS = 351232  # the reference's evaluation cap (spec §1)
# (width, height): VGA, 720p, RealSense 848x480, a tall crop, a wide strip, odd sides
SENSOR_SIZES = [(640, 480), (1280, 720), (848, 480), (300, 1000), (1000, 97), (333, 777)]


def test_families_by_name_default_and_an_unknown_one():
    assert model_family(None) is QWEN25 and model_family("Qwen3-VL") is QWEN3
    with pytest.raises(ConfigError, match="known: qwen2_5_vl, qwen3_vl"):
        model_family("llava")
    assert (QWEN25.factor, QWEN3.factor) == (28, 32) and (QWEN25.min_pixels, QWEN3.min_pixels) == (3136, 4096)


def test_qwen2_5_vl_resize_is_the_vilasr_rule_and_qwen3_vl_follows_transformers_smart_resize():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize  # no torchvision here

    for w, h in SENSOR_SIZES + [(17, 3000), (4000, 3000), (64, 64)]:
        assert QWEN25.resized_size(w, h, EVAL_MAX_PIXELS) == protocol.resized_size(w, h, EVAL_MAX_PIXELS)
        rw, rh = QWEN3.resized_size(w, h, EVAL_MAX_PIXELS)
        assert rw % 32 == 0 and rh % 32 == 0 and QWEN3.min_pixels <= rw * rh <= EVAL_MAX_PIXELS
        th, tw = smart_resize(h, w, factor=32, min_pixels=QWEN3.min_pixels, max_pixels=EVAL_MAX_PIXELS)
        assert (rw, rh) == (tw, th), (w, h)
    with pytest.raises(QueryError, match="aspect ratio"):
        QWEN3.resized_size(1, 500, EVAL_MAX_PIXELS)


@pytest.mark.parametrize("sensor", SENSOR_SIZES)
def test_the_same_box_from_either_family_lands_on_the_same_sensor_pixels_and_3d_point(sensor):
    """What each model would write for one object (integers, in its own convention on its own resized
    image) maps back to the object's sensor pixels (±1 px each) and both deproject to the same point
    (±1 cm at 2 m)."""
    W, H = sensor
    rng = np.random.default_rng(W * 7 + H)
    K = CameraIntrinsics(width=W, height=H, fx=0.8 * W, fy=0.8 * W, cx=W / 2, cy=H / 2)
    depth = np.full((H, W), 2.0)
    for _ in range(20):
        x1, x2 = sorted(rng.uniform(0, W, 2))
        y1, y2 = sorted(rng.uniform(0, H, 2))
        truth = np.array([x1, y1, x2, y2])
        boxes = {}
        for family in (QWEN25, QWEN3):
            size = family.resized_size(W, H, EVAL_MAX_PIXELS)
            written = family.from_pixels(truth * np.array([size[0] / W, size[1] / H] * 2), size)  # what the model writes
            boxes[family.name] = model_to_sensor_box(family.to_pixels(written, size), size, sensor)
            assert np.abs(boxes[family.name] - truth).max() <= 1.0, (family.name, sensor, truth, boxes[family.name])
        a, b = boxes["qwen2_5_vl"], boxes["qwen3_vl"]
        centres = [np.array([[(x[0] + x[2]) / 2, (x[1] + x[3]) / 2]]) for x in (a, b)]
        points = [deproject(c, np.array([2.0]), K)[0] for c in centres]
        assert np.linalg.norm(points[0] - points[1]) <= 0.01
        assert depth.shape == (H, W)


def test_relative_coordinates_round_trip_within_a_pixel():
    for w, h in [(644, 476), (1280, 736), (32, 3200)]:
        for v in np.linspace(0, 1, 11):
            px = [v * w, v * h, (1 - v) * w, (1 - v) * h]
            back = QWEN3.to_pixels(QWEN3.from_pixels(px, (w, h)), (w, h))
            assert np.abs(np.subtract(back, px)).max() <= max(w, h) / 2000 + 1e-9
    assert QWEN25.to_pixels([10, 20, 30, 40], (644, 476)) == [10.0, 20.0, 30.0, 40.0]  # ViLaSR: unchanged


def test_the_family_is_detected_from_config_json(tmp_path, tiny_model_dir):
    from transformers import Qwen3VLConfig

    assert detect_family(tiny_model_dir) is QWEN25
    qwen3 = tmp_path / "qwen3"
    Qwen3VLConfig().save_pretrained(qwen3)
    assert detect_family(qwen3) is QWEN3
    assert resolve_family(None, qwen3) is QWEN3 and resolve_family("qwen2_5_vl", qwen3) is QWEN25  # explicit wins
    assert detect_family(tmp_path / "served-model-name") is None and resolve_family(None, tmp_path) is QWEN25
    other = tmp_path / "llava"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ConfigError, match="'llava' is not a known model family"):
        detect_family(other)
    assert set(FAMILIES) == {"qwen2_5_vl", "qwen3_vl"}


def test_a_qwen3_vl_loop_draws_its_relative_box_on_the_right_pixels_and_qwen2_5_vl_is_unchanged():
    """The drawing loop with a scripted model: the same object boxed by a Qwen2.5-VL answer (resized
    pixels) and a Qwen3-VL answer (0-1000) is drawn where it is and maps to the same sensor pixels."""
    from PIL import Image

    from vilasr_ros.engines.replay import ReplayEngine
    from vilasr_ros.reasoner import Reasoner, ReasonerConfig

    sensor = (848, 480)
    truth = np.array([212.0, 120.0, 636.0, 360.0])  # sensor pixels
    answer = "<think> done </think> Action: Answer\n<answer> A </answer>"
    image = Image.new("RGB", sensor, (40, 40, 40))
    boxes = {}
    for family in (QWEN25, QWEN3):
        size = family.resized_size(*sensor, EVAL_MAX_PIXELS)
        written = family.from_pixels(truth * np.array([size[0] / sensor[0], size[1] / sensor[1]] * 2), size)
        call = ('<think> find it </think> Action: Object Mapper\n```json\n'
                f'[{{"index": 1, "bbox_2d": {written}, "label": "chair"}}]\n```')
        trace = Reasoner(ReplayEngine([call, answer]), ReasonerConfig(model_family=family.name)).run(
            [image], "Where is the chair?", "free-form")
        assert trace.finish_reason == "stop" and trace.pil_images[0].size == size
        assert str(written) in trace.turns[0].text  # the text keeps what the model wrote
        drawn = np.asarray(trace.pil_images[1])
        x1, y1, x2, y2 = (int(v) for v in trace.turns[0].boxes[0]["bbox_2d"])
        assert drawn[(y1 + y2) // 2, x1].tolist() != [40, 40, 40]  # the outline is on the box's left edge
        assert drawn[(y1 + y2) // 2, (x1 + x2) // 2].tolist() == [40, 40, 40]  # and not inside it
        boxes[family.name] = model_to_sensor_box(trace.turns[0].boxes[0]["bbox_2d"], size, sensor)
        from vilasr_ros.view import render_html

        page = render_html(trace)  # the trace page: the family, and the box in pixels beside the text as written
        assert f"model family: {family.name}" in page
        shown = [round(v, 2) for v in trace.turns[0].boxes[0]["bbox_2d"]]
        assert f"<td>{shown}</td>" in page and str(written) in page
    assert boxes["qwen2_5_vl"].tolist() != [] and np.abs(boxes["qwen2_5_vl"] - truth).max() <= 1.0
    assert np.abs(boxes["qwen3_vl"] - truth).max() <= 1.0
    with pytest.raises(ConfigError, match="unknown model family"):
        ReasonerConfig(model_family="gpt4v")


def test_the_loop_takes_the_engines_family_unless_one_is_set(caplog):
    from PIL import Image

    from vilasr_ros.engines.replay import ReplayEngine
    from vilasr_ros.reasoner import Reasoner, ReasonerConfig

    engine = ReplayEngine(["<think> done </think> Action: Answer\n<answer> A </answer>"])
    assert Reasoner(engine).family is QWEN25  # an engine that does not know its model: ViLaSR's
    engine.family = QWEN3  # what the transformers engine reads from config.json
    trace = Reasoner(engine).run([Image.new("RGB", (640, 480))], "q", "free-form")
    assert trace.pil_images[0].size == QWEN3.resized_size(640, 480, ReasonerConfig().max_pixels) == (640, 480)
    with caplog.at_level("WARNING"):
        assert Reasoner(engine, ReasonerConfig(model_family="qwen2_5_vl")).family is QWEN25
    assert "wrong coordinates" in caplog.text
