"""Benchmark scoring equals the authors' evaluate.py on every reference vector."""

import json

import pytest

from conftest import VECTORS
from vilasr_ros.scoring import mean_relative_accuracy, score_answer


def test_eval_vectors(shared_dir):
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


def test_unknown_problem_type_raises():
    with pytest.raises(ValueError, match="unknown problem type"):
        score_answer("1", "1", "essay")
