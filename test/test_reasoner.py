"""The draw-to-reason loop against the reference vectors, and against hostile model output."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import VECTORS
from vilasr_ros.cli import main as vilasr
from vilasr_ros.engines.replay import ReplayEngine
from vilasr_ros.reasoner import Reasoner, ReasonerConfig
from vilasr_ros.trace import Trace

LOOP_CASES = sorted(p.name for p in (VECTORS / "loop").iterdir()) if (VECTORS / "loop").is_dir() else []


@pytest.mark.parametrize("name", LOOP_CASES)
def test_vilasr_ask_replay_reproduces_reference(name, tmp_path):
    case_dir = VECTORS / "loop" / name
    case = json.loads((case_dir / "case.json").read_text())
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps(case["responses"]))
    args = ["ask", "--engine", "replay", "--responses", str(responses), "--question", case["question"]]
    args += ["--type", case["problem_type"], "--max-pixels", str(case["max_pixels"])]
    args += ["--max-turns", str(case["max_num_steps"]), "--out", str(tmp_path / "run")]
    args += ["--kind", "single" if case["kind"] == "single" else "video"]
    for option in case["options"] or []:
        args += ["--option", option]
    args += ["--images"] + [str(case_dir / p) for p in case["inputs"]]
    assert vilasr(args) == 0

    trace = Trace.load(tmp_path / "run")
    expected = case["expected"]
    assert trace.chat_text == expected["final_sequence"]
    assert trace.finish_reason == expected["finish_reason"]
    assert len(trace.pil_images) == len(expected["images"])
    for k, rel in enumerate(expected["images"]):
        want = np.asarray(Image.open(case_dir / rel).convert("RGB"))
        got = np.asarray(Image.open(tmp_path / "run" / "images" / f"image_{k + 1}.png").convert("RGB"))
        assert got.shape == want.shape
        assert (got == want).all(axis=-1).mean() >= 0.99
    saved = json.loads((tmp_path / "run" / "trace.json").read_text())
    assert saved["chat_text"] == expected["final_sequence"]
    assert saved["messages"][:2] and saved["engine"]["engine"] == "replay"


def _frame(w=640, h=480):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _run(responses, n_frames=1, **cfg):
    reasoner = Reasoner(ReplayEngine(responses), ReasonerConfig(**cfg))
    return reasoner.run([_frame()] * n_frames, "Where is the cup?", "free-form")


def _tool(items):
    return "<think> t </think> Action: Object Mapper\n```json\n" + items + "\n```"


@pytest.mark.parametrize(
    "response,message",
    [
        (_tool("[{'index': 7, 'bbox_2d': [1, 2, 3, 4], 'label': 'cup'}]"), "does not exist"),
        (_tool("[{'index': 0, 'bbox_2d': [1, 2, 3, 4], 'label': 'cup'}]"), "is not an image"),
        (_tool("[{'index': '1', 'bbox_2d': [1, 2, 3, 4], 'label': 'cup'}]"), "integer"),
        (_tool("[{'index': 1, 'bbox_2d': ['a', 2, 3, 4], 'label': 'cup'}]"), "not a number"),
        (_tool("[{'index': 1, 'bbox_2d': [1e300, 2, 3, 4], 'label': 'cup'}]"), "out of range"),
        (_tool("[{'index': 1, 'bbox_2d': [1, 2, 3, 4], 'label': ['cup']}]"), "label"),
        (_tool("[{'index': 1, 'start_point_2d': [1], 'end_point_2d': [3, 4], 'label': 'p'}]"), "point"),
        (_tool("[{'index': 1, 'start_point_2d': [1, float('nan')], 'end_point_2d': [3, 4], 'label': 'p'}]"), "no box"),
        (_tool("[" * 3000 + "]" * 3000), "no box"),
        ("", "no box"),
        ("<think> I give up </think> Action: Object Mapper", "no box"),
    ],
)
def test_hostile_output_ends_with_tool_error(response, message):
    trace = _run([response])
    assert trace.finish_reason == "ToolError"
    assert message in trace.error
    assert trace.turns[-1].error == trace.error
    assert len(trace.pil_images) == 1


def test_hundreds_of_blocks_are_parsed_and_drawn_once_per_image():
    blocks = "\n".join(
        "```json\n[{'index': 1, 'bbox_2d': [%d, 5, %d, 50], 'label': 'b%d'}]\n```" % (i, i + 20, i % 5) for i in range(300)
    )
    trace = _run(["<think> many </think> Action: Object Mapper\n" + blocks, "<answer> ok </answer>"])
    assert trace.finish_reason == "stop"
    assert len(trace.pil_images) == 2
    assert len(trace.images[1].boxes) == 5  # label-keyed merge keeps one box per label


def test_several_images_in_one_turn_get_one_new_image_each_with_captions():
    turn = _tool("[{'index': 2, 'bbox_2d': [1, 2, 30, 40], 'label': 'a'}, {'index': 1, 'bbox_2d': [5, 5, 9, 9], 'label': 'b'}]")
    trace = _run([turn, "<answer> 1 </answer>"], n_frames=2)
    assert [(i.index, i.drawn_from, i.source_frame) for i in trace.images[2:]] == [(3, 2, 1), (4, 1, 0)]
    text = trace.chat_text
    assert "<|vision_end|>The index of the given image is 3 (width: 644, height: 476).\n" in text
    assert "The index of the given image is 4 (width: 644, height: 476). Continue your reasoning." in text


def test_turn_budget_gives_final_prompt_then_stops():
    turns = [_tool("[{'index': 1, 'bbox_2d': [1, 2, 30, 40], 'label': 'a%d'}]" % i) for i in range(3)]
    trace = _run(turns, max_turns=3)
    assert len(trace.turns) == 3
    assert "Then, you can not invoke the Object Mapper or Path Tracer tool." in trace.chat_text
    assert trace.finish_reason == "stop" and trace.answer is None


def test_image_budget_ends_with_too_many_images():
    turns = [_tool("[{'index': 1, 'bbox_2d': [1, 2, 30, 40], 'label': 'a'}]")] * 4
    trace = _run(turns, max_images=2, max_turns=10)
    assert trace.finish_reason == "TooManyImages"


def test_replay_script_too_short_is_an_engine_error_not_a_crash():
    trace = _run([_tool("[{'index': 1, 'bbox_2d': [1, 2, 30, 40], 'label': 'a'}]")])
    assert trace.finish_reason == "error" and "replay script" in trace.error


def test_trace_round_trip(tmp_path):
    trace = _run([_tool("[{'index': 1, 'bbox_2d': [1, 2, 30, 40], 'label': 'a'}]"), "<answer> here </answer>"])
    trace.save(tmp_path)
    loaded = Trace.load(tmp_path)
    assert loaded.chat_text == trace.chat_text
    assert loaded.answer == "here"
    assert loaded.images[1].drawn_from == 1 and loaded.images[1].boxes[0]["label"] == "a"


def test_retry_discards_a_failed_drawing_and_asks_again_as_the_reference_evaluates():
    """eval/infer.py L262-265 (the drawing raises → None → response dropped) and L365-366 (each call
    counts): the same prompt is generated again and the budget goes down."""
    bad = _tool("[{'index': 7, 'bbox_2d': [1, 2, 3, 4], 'label': 'cup'}]")
    good = _tool("[{'index': 1, 'bbox_2d': [10, 20, 30, 40], 'label': 'cup'}]")
    engine = ReplayEngine([bad, good, "<think> there </think> Action: Answer\n<answer> left </answer>"])
    prompts = []
    original = engine.generate
    engine.generate = lambda request: (prompts.append(request.prompt), original(request))[1]
    trace = Reasoner(engine, ReasonerConfig(on_tool_error="retry")).run([_frame()], "Where is the cup?", "free-form")
    assert trace.finish_reason == "stop" and trace.answer == "left" and trace.error is None
    assert [t.discarded for t in trace.turns] == [True, False, False]
    assert "does not exist" in trace.turns[0].error and not trace.turns[0].boxes
    assert prompts[0] == prompts[1]  # generated again from the same prompt
    assert "'index': 7" not in trace.chat_text and len(trace.pil_images) == 2
    assert trace.model_output.endswith("</answer>")

    # the budget counts the discarded turns: with 2 calls the second is the last, whatever it writes
    short = Reasoner(ReplayEngine([bad, bad]), ReasonerConfig(on_tool_error="retry", max_turns=2)).run(
        [_frame()], "Where is the cup?", "free-form")
    assert [t.discarded for t in short.turns] == [True, False] and short.answer is None
    # a turn with nothing to draw still ends with ToolError; "stop" (the robot's default) ends on the first
    assert _run(["<think> hm </think> Action: Object Mapper"], on_tool_error="retry").finish_reason == "ToolError"
    assert _run([bad, good]).finish_reason == "ToolError"


def test_saved_trace_keeps_discarded_turns(tmp_path):
    bad = _tool("[{'index': 1, 'bbox_2d': ['a', 2, 3, 4], 'label': 'cup'}]")
    trace = _run([bad, "<answer> 1 </answer>"], on_tool_error="retry")
    trace.save(tmp_path / "t")
    loaded = Trace.load(tmp_path / "t")
    assert [t.discarded for t in loaded.turns] == [True, False] and loaded.chat_text == trace.chat_text
