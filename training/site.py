"""Site data: the robot's ROS 2 bags plus a JSONL of questions about time windows → ViLaSR-eval items.

Each JSONL line is one question::

    {"id": "kitchen_001", "bag": "bags/2026-11-02_kitchen", "window": [12.0, 42.0],
     "question": "How far is the door from the sofa (in metres)?", "answer": "2.4",
     "type": "regression", "options": [], "task": "abs_distance"}

``bag`` is a bag folder or file (relative to the JSONL's folder), read through the runtime's frame
source (:class:`vilasr_ros.sources.bag.BagSource`: sqlite3 or mcap, raw or compressed images);
``window`` is ``[start, end]`` in seconds from the bag's first colour frame (inclusive);
``type`` is ``multiple choice`` (with ``options``: ``["A. ...", ...]``), ``numerical``, ``regression``
or ``free-form``; ``task`` (optional) names the VSI-Bench task type it belongs to.

Frames in the window are sampled uniformly (``frames``, 16 as the reference's VSI-Bench runs) and
written as PNG under ``OUT/frames/<id>/``; ``OUT/questions.json`` holds the items in the ViLaSR-eval
layout (``question``, ``options``, ``answer``, ``problem_type``, ``original_question_type``,
``image_path``, ``data_type``), so the result is used like any benchmark or sim dataset:
``vilasr eval run --dataset vsi_bench --data OUT``, stage 2 and stage 3 ``items`` with
``dataset: vsi_bench``. Answers only, no drawings: site items train through stage 2 (the model's own
trajectories, kept when correct and reflective) and stage 3 (reward), not through stage 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.sanitize import safe_name
from vilasr_ros.errors import DatasetError

TYPES = ("multiple choice", "numerical", "regression", "free-form")


def _check(line: dict[str, Any], where: str) -> None:
    for key in ("id", "bag", "window", "question", "answer"):
        if key not in line:
            raise DatasetError(f"{where}: missing {key!r}")
    window = line["window"]
    if not (isinstance(window, list) and len(window) == 2 and all(isinstance(t, (int, float)) for t in window)
            and window[0] <= window[1]):
        raise DatasetError(f"{where}: window must be [start_s, end_s] with start <= end, got {window!r}")
    ptype = line.get("type", "free-form")
    if ptype not in TYPES:
        raise DatasetError(f"{where}: type must be one of {TYPES}, got {ptype!r}")
    if ptype == "multiple choice" and not line.get("options"):
        raise DatasetError(f"{where}: a multiple-choice question needs options")


def convert_site(questions: str | Path, out: str | Path, *, frames: int = 16) -> list[dict[str, Any]]:
    """Convert (module docstring).

    Args:
        questions: The JSONL file.
        out: Output folder (``questions.json`` and ``frames/``).
        frames: Frames per question (fewer when the window holds fewer).

    Returns:
        The items written.

    Raises:
        DatasetError: A malformed line, a missing bag, or a window without frames (the line is named).
    """
    from PIL import Image

    from vilasr_ros.sources.bag import BagSource

    questions, out = Path(questions), Path(out)
    lines = []
    for n, text in enumerate(questions.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{questions}:{n}: not JSON: {exc}") from exc
        _check(line, f"{questions}:{n}")
        lines.append((n, line))
    ids = [line["id"] for _, line in lines]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{questions}: question ids are not unique")

    by_bag: dict[Path, list] = {}
    for n, line in lines:
        bag = (questions.parent / line["bag"]).resolve()
        if not bag.exists():
            raise DatasetError(f"{questions}:{n}: bag not found: {bag}")
        by_bag.setdefault(bag, []).append((n, line))

    items = []
    for bag, entries in by_bag.items():
        # Two passes over the bag: stamps first, then only the frames a question uses (a long bag does
        # not fit in memory decoded).
        with BagSource(bag) as source:
            stamps = np.array([f.stamp_s for f in source])
        if stamps.size == 0:
            raise DatasetError(f"{bag}: no colour frames")
        stamps = stamps - stamps[0]
        wanted: dict[int, list[Path]] = {}
        for n, line in entries:
            start, end = line["window"]
            inside = np.flatnonzero((stamps >= start) & (stamps <= end))
            if inside.size == 0:
                raise DatasetError(f"{questions}:{n}: no frames in window {line['window']} s of {bag.name} "
                                 f"(the bag spans 0–{stamps[-1]:.2f} s)")
            picks = inside[np.unique(np.linspace(0, inside.size - 1, min(frames, inside.size)).round().astype(int))]
            folder = out / "frames" / safe_name(line["id"])
            folder.mkdir(parents=True, exist_ok=True)
            paths = [folder / f"{k:05d}.png" for k in range(len(picks))]
            for index, path in zip(picks, paths):
                wanted.setdefault(int(index), []).append(path)
            items.append({"id": line["id"], "question": line["question"], "options": line.get("options") or [],
                          "answer": str(line["answer"]), "problem_type": line.get("type", "free-form"),
                          "original_question_type": line.get("task", "site"),
                          "image_path": [str(p.relative_to(out)) for p in paths],
                          "data_type": "multi_view", "bag": str(bag), "window": line["window"],
                          "stamps_s": [round(float(stamps[i]), 6) for i in picks]})
        with BagSource(bag) as source:
            for index, frame in enumerate(source):
                for path in wanted.get(index, []):
                    Image.fromarray(frame.rgb).save(path)
    order = {line["id"]: k for k, (_, line) in enumerate(lines)}
    items.sort(key=lambda item: order[item["id"]])
    out.mkdir(parents=True, exist_ok=True)
    (out / "questions.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return items
