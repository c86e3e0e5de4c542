"""Protocol details a user would notice: exact strings, sizes, parsing, prompts."""

import json

import pytest

from conftest import SPEC, VECTORS
from vilasr_ros import protocol
from vilasr_ros.annotations import AnnotationState
from vilasr_ros.errors import QueryError


def test_shipped_prompts_equal_the_spec():
    shipped = protocol.prompts()
    assert shipped == json.loads((SPEC / "vilasr_prompts.json").read_text())


@pytest.mark.parametrize(
    "size,max_pixels,expected",
    [((640, 480), 351232, (644, 476)), ((640, 480), 200704, (504, 364))],
)
def test_smart_resize_sizes(size, max_pixels, expected):
    assert protocol.resized_size(*size, max_pixels) == expected


def test_resize_for_model_gives_28_multiples_and_rgb():
    from PIL import Image

    image = Image.new("RGBA", (333, 257), (10, 20, 30, 0))
    resized = protocol.resize_for_model(image, 351232)
    assert resized.mode == "RGB"
    assert resized.width % 28 == 0 and resized.height % 28 == 0
    assert resized.getpixel((0, 0)) == (255, 255, 255)  # transparent pixels over white, as fetch_image


def test_parse_vectors_match_reference():
    cases = json.loads((VECTORS / "score_vectors.json").read_text())["parse"]
    assert cases
    for case in cases:
        boxes, lines = protocol.parse_tool_calls(case["response"])
        assert boxes == case["expected"]["bboxes"], case["response"]
        assert lines == case["expected"]["lines"], case["response"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "```json\n" + "[" * 5000 + "]" * 5000 + "\n```",
        "```json\n42\n```",
        "```json\n{'index': 1, 'bbox_2d': [1, 2, 3, 4], 'label': 'x'}\n```",
        "```json\n['bbox_2d label', 7, None]\n```",
        "```json\n[{'index': 1, 'bbox_2d': [1, 2, 3, 4], 'label': 'x'}\n",
        None,
    ],
)
def test_parse_never_raises(text):
    boxes, lines = protocol.parse_tool_calls(text)
    assert boxes == [] and lines == []


def test_unclosed_block_ends_at_think():
    text = "```json\n[{'index': 1, 'bbox_2d': [1, 2, 3, 4], 'label': 'cup'}] </think> tail"
    assert protocol.parse_tool_calls(text)[0] == [{"index": 1, "bbox_2d": [1, 2, 3, 4], "label": "cup"}]


def test_question_text_for_multiple_choice_single_image():
    text = protocol.build_question_text("Left?", "multiple-choice", ["A. yes", "B. no"])
    assert text == (
        "\n### Question:\nLeft?\nA. yes\nB. no\nThe index of the given image is 1.\n"
        "Answer with the option's letter from the given choices directly.\n\n"
        "Begin your reasoning. After each tool use, critically evaluate the visualization and adjust if needed:\n"
    )


def test_bad_queries_are_refused():
    with pytest.raises(QueryError, match="unknown problem type"):
        protocol.normalize_problem_type("essay")
    with pytest.raises(QueryError, match="empty"):
        protocol.build_question_text("  ", "free-form")
    with pytest.raises(QueryError, match="at least one image"):
        protocol.initial_messages([], "q", "free-form")


def test_merge_replaces_same_label_and_carries_the_rest():
    state = AnnotationState(1)
    first = state.plan([{"index": 1, "bbox_2d": [0, 0, 5, 5], "label": "a"}], [], 1)
    state.commit(first[0])
    edits = state.plan(
        [{"index": 2, "bbox_2d": [1, 1, 6, 6], "label": "a"}, {"index": 2, "bbox_2d": [9, 9, 20, 20], "label": "b"}],
        [{"index": 2, "start_point_2d": [0, 0], "end_point_2d": [3, 3], "label": "l"}],
        2,
    )
    assert [e.source_index for e in edits] == [1]
    assert edits[0].new_index == 2
    assert [b["bbox_2d"] for b in edits[0].boxes] == [[1, 1, 6, 6], [9, 9, 20, 20]]
    assert [ln["label"] for ln in edits[0].lines] == ["l"]
