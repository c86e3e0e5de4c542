"""Benchmark scoring exactly as the authors' ``eval/evaluate.py`` scores (spec §6).

This differs from the training reward (spec §5, ``vilasr_ros_training.rewards``) on purpose:
multiple choice compares first characters, numerical answers must match after rounding, and the
mean relative accuracy (MRA) here counts a threshold as met with ``<=``. The arithmetic follows the
reference's float32 tensors so that boundary cases score the same: values, thresholds
(``linspace(0.5, 0.95, 10)``) and the mean in float32; the SPAR view-change score is the float64
mean of the five per-axis float32 MRAs.
"""

from __future__ import annotations

import re

import numpy as np

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

MRA_THRESHOLDS = np.linspace(0.5, 0.95, 10).astype(np.float32)
"""θ ∈ {0.50, 0.55, …, 0.95} (VSI-Bench's mean relative accuracy)."""

VCI_PAIRS = (
    ("move_right", "move_left"),
    ("move_up", "move_down"),
    ("move_forward", "move_backward"),
    ("rotate_right", "rotate_left"),
    ("rotate_up", "rotate_down"),
)
"""SPAR-Bench view-change axes: net value = first − second."""


def extract_answer_text(text: str) -> str:
    """``extract_answer`` of ``eval/evaluate.py`` (L10-15): the stripped content of the first
    ``<answer>…</answer>``, else the whole text *as it is* — not stripped, so a view-change answer
    without tags that starts with a line break has another first key (``"\nmove_right"``)."""
    text = "" if text is None else str(text)
    match = _ANSWER_RE.search(text)
    return match.group(1).strip() if match else text


def mean_relative_accuracy(pred: float, target: float, *, inclusive: bool = True) -> float:
    """MRA: the share of θ in 0.50…0.95 with ``|pred−target| / (|target|+1e-8)`` within ``1−θ``.

    Args:
        pred: Predicted value.
        target: Ground truth.
        inclusive: ``<=`` (benchmark scoring, spec §6) or ``<`` (training reward, spec §5).

    Returns:
        A value in {0.0, 0.1, …, 1.0}, rounded to float32 as the reference reports it.

    >>> mean_relative_accuracy(11.2, 16)
    0.5
    """
    p, t = np.float32(pred), np.float32(target)
    rel = np.abs(p - t) / (np.abs(t) + np.float32(1e-8))
    bound = np.float32(1) - MRA_THRESHOLDS
    hits = rel <= bound if inclusive else rel < bound
    return float(hits.astype(np.float32).mean(dtype=np.float32))


def _parse_number(text: str) -> float | None:
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _parse_vci(text: str) -> dict[str, float] | None:
    """``parse_instruction`` of ``eval/evaluate.py`` (L71-72): ``key:value`` items split on ``,``;
    keys are not stripped (``" move_forward"`` is another key) and a repeated key keeps its last
    value. None where the reference raises (and scores 0)."""
    try:
        return {k: float(v) for k, v in [item.split(":") for item in text.split(",")]}
    except ValueError:
        return None


REFERENCE_TYPES = ("multiple choice", "numerical", "regression", "vci")
"""The problem types ``reward_fn`` of ``eval/evaluate.py`` (L74-101) scores, compared as written."""


def score_answer(model_output: str, answer: str, problem_type: str, *, lenient: bool = False) -> float:
    """Score one model output against the ground truth as the authors' ``eval/evaluate.py`` does.

    Args:
        model_output: The model's last turn (``<answer>`` content is used when present).
        answer: Ground truth (may itself be wrapped in ``<answer>``; options like ``"B. text"``).
        problem_type: ``multiple choice``, ``numerical``, ``regression`` or ``vci`` (SPAR view
            change), compared case-sensitively as the reference does; any other type scores 0
            there (``reward_fn``'s ``else``), so it does here.
        lenient: This project's own datasets (``sim``): types compared after lower-casing and
            ``-``/``_`` → space, ``free-form`` scored by case-insensitive exact match, and an unknown
            type raises.

    Returns:
        A score in [0, 1]. Unparseable output scores 0; this never raises on model output (an
        empty multiple-choice answer scores 0 where the reference raises ``IndexError``).

    Raises:
        ValueError: Unknown problem type (``lenient`` only).

    >>> score_answer("<answer> B. left </answer>", "B", "multiple choice")
    1.0
    >>> score_answer("3", "3.0", "numerical")
    0.0
    >>> score_answer("B", "B", "Multiple Choice")  # the reference compares types as written
    0.0
    """
    ptype = str(problem_type)
    if lenient:
        ptype = ptype.strip().lower().replace("-", " ").replace("_", " ")
        if ptype not in REFERENCE_TYPES + ("free form",):
            raise ValueError(f"unknown problem type {problem_type!r}")
    pred = extract_answer_text(model_output)
    truth = extract_answer_text(answer)
    if ptype == "multiple choice":  # output_ans.strip()[0] (an empty answer raises there: 0 here)
        p, t = pred.strip(), truth.strip()
        if not p or not t:
            return 0.0
        return 1.0 if p[0].lower() == t[0].lower() else 0.0
    if ptype == "numerical":
        if ("." in pred or "," in pred) != ("." in truth or "," in truth):
            return 0.0
        p, t = _parse_number(pred), _parse_number(truth)
        if p is None or t is None:
            return 0.0
        return 1.0 if round(p, 2) == round(t, 2) else 0.0
    if ptype == "regression":
        p, t = _parse_number(pred), _parse_number(truth)
        if p is None or t is None:
            return 0.0
        return mean_relative_accuracy(p, t)
    if ptype == "vci":
        p_map, t_map = _parse_vci(pred), _parse_vci(truth)
        if p_map is None or t_map is None:
            return 0.0
        scores = []
        for pos, neg in VCI_PAIRS:
            p = p_map.get(pos, 0.0) - p_map.get(neg, 0.0)
            t = t_map.get(pos, 0.0) - t_map.get(neg, 0.0)
            scores.append(mean_relative_accuracy(p, t))
        return float(np.mean(scores))
    if ptype == "free form":  # lenient only
        return 1.0 if pred.strip().lower() == truth.strip().lower() else 0.0
    return 0.0
