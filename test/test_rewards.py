"""The training reward equals the reference's gcot.py on every vector (spec §5)."""

import json

from conftest import VECTORS
from vilasr_ros_training.rewards import vilasr_reward, vilasr_reward_func


def test_reward_vectors():
    cases = json.loads((VECTORS / "score_vectors.json").read_text())["reward"]
    assert len(cases) > 20
    for case in cases:
        assert vilasr_reward(case["predict_str"], case["ground_truth"], case["problem_type"]) == case["expected"], case


def test_batched_wrapper_returns_overall_per_completion():
    cases = json.loads((VECTORS / "score_vectors.json").read_text())["reward"][:5]
    got = vilasr_reward_func(
        [c["predict_str"] for c in cases], ground_truth=[c["ground_truth"] for c in cases],
        problem_type=[c["problem_type"] for c in cases],
    )
    assert got == [c["expected"]["overall"] for c in cases]
