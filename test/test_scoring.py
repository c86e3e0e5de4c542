"""Benchmark scoring equals the authors' evaluate.py on every reference vector."""

import json

import pytest

from conftest import VECTORS
from vilasr_ros.scoring import mean_relative_accuracy, score_answer


def test_eval_vectors():
    cases = json.loads((VECTORS / "score_vectors.json").read_text())["eval"]
    assert len(cases) > 50
    wrong = [
        (c, score_answer(c["model_output"], c["answer"], c["problem_type"]))
        for c in cases
        if score_answer(c["model_output"], c["answer"], c["problem_type"]) != c["expected_score"]
    ]
    assert not wrong


def test_mra_inclusive_vs_strict_at_the_boundary():
    # |6.37 - 12.74| / 12.74 is exactly 0.5 in float32: counted by <=, not by <.
    assert mean_relative_accuracy(6.37, 12.74) == pytest.approx(0.1)
    assert mean_relative_accuracy(6.37, 12.74, inclusive=False) == 0.0


def test_problem_types_as_the_reference_compares_them():
    """eval/evaluate.py L74-101: types compared as written; anything else (free-form too) scores 0."""
    assert score_answer("B", "B", "multiple choice") == 1.0
    assert score_answer("B", "B", "Multiple Choice") == 0.0
    assert score_answer("a sofa", "a sofa", "free-form") == 0.0
    assert score_answer("1", "1", "essay") == 0.0
    # this project's sim datasets (lenient): normalised types, free-form exact match, unknown types raise
    assert score_answer("B", "B", "Multiple Choice", lenient=True) == 1.0
    assert score_answer("A Sofa", "a sofa", "free-form", lenient=True) == 1.0
    with pytest.raises(ValueError, match="unknown problem type"):
        score_answer("1", "1", "essay", lenient=True)


def test_view_change_keys_are_not_stripped_and_the_last_repeat_wins():
    """eval/evaluate.py L71-72 parse_instruction: {k: float(v) for k, v in [item.split(":") ...]}."""
    # " move_forward" (with its space) is not move_forward: forward counts 0 against 2 → 4 of 5 axes
    assert score_answer("move_right: 1.0, move_forward: 2", "move_right:1.0,move_forward:2.0", "vci") == pytest.approx(0.8)
    # a repeated key keeps its last value (2), not the sum (3)
    assert score_answer("move_right:1,move_right:2", "move_right:2", "vci") == 1.0
    assert score_answer("move_right 1", "move_right:2", "vci") == 0.0  # the reference raises and scores 0


def _records(rows):
    return [{"original_question_type": t, "score": s} for t, s in rows]


def test_spar_levels_are_item_means_over_the_reference_lists():
    """utils/cal_metric_sparbench.py: a level's average is total/count over its items (L70-72); the
    overall is the mean of the per-type means of the listed types (L73-84); "Other" types are left out."""
    from vilasr_ros.evaluation.scores import summarize

    records = _records([("depth_prediction_oc", 1.0), ("depth_prediction_oc", 0.0), ("distance_prediction_oo", 1.0),
                        ("view_change_infer", 0.5), ("spatial_imagination_oo", 1.0), ("made_up_type", 0.0)])
    summary = summarize(records, "spar_bench")
    assert summary["levels"] == {"low": pytest.approx(2 / 3), "medium": 0.5, "high": 1.0}
    assert summary["overall"] == pytest.approx((0.5 + 1.0 + 0.5 + 1.0) / 4)
    assert summary["left_out"] == ["made_up_type"] and summary["types"]["made_up_type"]["n"] == 1


def test_vsi_overall_is_the_mean_of_its_eight_types_with_levels_merged():
    """utils/cal_metric_vsibench.py: _easy/_medium/_hard merged into their base type (L16-24), the
    overall over QUESTION_TYPES only (L39-60)."""
    from vilasr_ros.evaluation.scores import summarize

    records = _records([("object_rel_direction_easy", 1.0), ("object_rel_direction_hard", 0.0),
                        ("object_rel_direction_hard", 0.0), ("object_counting", 0.5), ("route_planning", 1.0),
                        ("not_a_vsi_type", 0.0)])
    summary = summarize(records, "vsi_bench")
    assert summary["types"]["object_rel_direction"] == {"n": 3, "score": pytest.approx(1 / 3)}
    assert summary["overall"] == pytest.approx((1 / 3 + 0.5 + 1.0) / 3)
    assert summary["left_out"] == ["not_a_vsi_type"]
