"""The RL-stage reward of ViLaSR (spec §5; reference ``verl/utils/reward_score/gcot.py``).

``overall = 0.5·accuracy + 0.5·format`` when accuracy > 0, else accuracy. Differs from benchmark
scoring (:mod:`vilasr_ros.scoring`) on purpose: multiple choice needs the whole stripped answer to
match, numbers are the first number found in each string, MRA counts a threshold with ``<``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from vilasr_ros.scoring import mean_relative_accuracy

_TURN_RE = re.compile(r"<think>(.*?)</think>\s*Action:\s*(.*?)(?=\n|$)", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_NUMBER_RE = re.compile(r"([-+]?\d*\.?\d+)")


def parse_dialog(chat_text: str) -> list[dict[str, Any]]:
    """Split a Qwen chat text into ``system``/``user``/``assistant`` turns (reference ``parse_dialog``)."""
    segments = [s for s in re.split(r"<\|im_start\|>|<\|im_end\|>", chat_text) if s]
    conversations: list[dict[str, Any]] = []
    if segments and segments[0].startswith("system"):
        conversations.append({"role": "system", "content": segments[0].replace("system\n\n", "", 1)})
        segments = segments[1:]
    for segment in segments:
        if segment.startswith("user"):
            conversations.append({"role": "user", "content": segment.replace("user\n", "", 1)})
        elif segment.startswith("assistant"):
            conversations.append({"role": "assistant", "content": segment.replace("assistant\n", "", 1)})
    return conversations


def _blocks_all_valid(text: str) -> tuple[bool, list[dict]]:
    """Every ```` ```json ```` block parses and holds only boxes/lines (the format check's parse)."""
    lines = text.splitlines()
    boxes: list[dict] = []
    for i, line in enumerate(lines):
        if line.strip() != "```json":
            continue
        body = "\n".join(lines[i + 1 :]).split("```")[0]
        try:
            value = ast.literal_eval(body)
            items = list(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return False, []
        for item in items:
            # gcot.py L52-58: membership tests on whatever the item is, so a list or a string holding
            # "bbox_2d" and "label" counts as a box (its coordinates then fail the reflection check and are
            # skipped, L115-126). Where ``in`` raises (an int, None) verl stops with a TypeError; here the
            # format reward is 0 (README: deliberate differences).
            try:
                is_box = "bbox_2d" in item and "label" in item
                is_line = "start_point_2d" in item and "end_point_2d" in item and "label" in item
            except TypeError:
                return False, []
            if is_box:
                boxes.append(item)
            elif not is_line:
                return False, []
    return True, boxes


def format_and_reflection(conversations: list[dict[str, Any]]) -> tuple[float, float]:
    """Format reward (1/0) and reflection reward (1 when a label was re-boxed differently)."""
    total = ""
    for i in range(2, len(conversations), 2):
        content = conversations[i]["content"]
        last = i == len(conversations) - 1
        has_answer = "<answer>" in content and "</answer>" in content
        mentions_answer = "<answer>" in content or "</answer>" in content
        if not isinstance(content, str) or _TURN_RE.fullmatch(content) is None or (last and not has_answer) or (
            not last and mentions_answer
        ):
            return 0.0, 0.0
        total += content
    valid, boxes = _blocks_all_valid(total)
    if not valid:
        return 0.0, 0.0
    seen: dict[Any, set] = {}
    reflected = False
    for box in boxes:
        try:
            coords = tuple(map(float, box["bbox_2d"]))
            label = box["label"]
            if label in seen and coords not in seen[label]:
                reflected = True
            seen.setdefault(label, set()).add(coords)
        except (TypeError, ValueError):
            continue
    return 1.0, 1.0 if reflected else 0.0


def _extract(text: Any) -> str:
    text = "" if text is None else str(text)
    match = _ANSWER_RE.search(text)
    return match.group(1).strip() if match else text.strip()


def _first_number(text: str) -> float | None:
    match = _NUMBER_RE.search(text)
    return float(match.group(1).rstrip(".")) if match else None


def accuracy_reward(output: str, ground_truth: str, problem_type: str) -> float:
    """Accuracy of the last turn: exact option match, or MRA (``<``) of the first numbers."""
    pred, truth = _extract(output), _extract(ground_truth)
    if problem_type == "multiple choice":
        return 1.0 if pred.strip() == truth.strip() else 0.0
    if problem_type in ("regression", "numerical"):
        p, t = _first_number(pred), _first_number(truth)
        if p is None or t is None:
            return 0.0
        return mean_relative_accuracy(p, t, inclusive=False)
    return 0.0


def vilasr_reward(predict_str: str, ground_truth: str, problem_type: str) -> dict[str, float]:
    """ViLaSR's GRPO reward for one whole trajectory.

    Args:
        predict_str: The full chat text (``Trace.chat_text``): system, user and assistant turns.
        ground_truth: The answer (``"B"``, ``"3.5"``, optionally in ``<answer>``).
        problem_type: ``multiple choice``, ``numerical``, ``regression`` (others score 0 accuracy).

    Returns:
        ``{"overall", "format", "accuracy", "reflection"}``.

    >>> r = vilasr_reward("<|im_start|>system\\nS<|im_end|>\\n<|im_start|>user\\nq<|im_end|>\\n"
    ...                   "<|im_start|>assistant\\n<think> x </think> Action: Answer\\n<answer> B </answer><|im_end|>",
    ...                   "B", "multiple choice")
    >>> (r["overall"], r["format"], r["accuracy"], r["reflection"])
    (1.0, 1.0, 1.0, 0.0)
    """
    conversations = parse_dialog(predict_str)
    fmt, reflection = format_and_reflection(conversations)
    accuracy = accuracy_reward(conversations[-1]["content"] if conversations else "", ground_truth, problem_type)
    overall = 0.5 * accuracy + 0.5 * fmt if accuracy > 0.0 else accuracy
    return {"overall": overall, "format": fmt, "accuracy": accuracy, "reflection": reflection}


def vilasr_reward_func(completions: list, ground_truth: list[str], problem_type: list[str], **_: Any) -> list[float]:
    """trl-style batched reward: ``(completions, **dataset_columns) -> list[float]`` (the overall score).

    ``completions`` are chat texts (strings) or trl conversational completions (lists of messages,
    whose ``content`` strings are joined).
    """
    rewards = []
    for completion, truth, ptype in zip(completions, ground_truth, problem_type):
        if not isinstance(completion, str):
            completion = "".join(m["content"] if isinstance(m["content"], str) else "" for m in completion)
        rewards.append(vilasr_reward(completion, truth, ptype)["overall"])
    return rewards
