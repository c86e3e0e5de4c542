"""``vilasr eval score``: per-item scores (spec §6, :func:`~vilasr_ros.scoring.score_answer`) and the
tables the authors print.

Aggregation, as the reference computes it:

- VSI-Bench (``utils/cal_metric_vsibench.py``): types with ``_easy``/``_medium``/``_hard`` in their
  name are merged into their base type (items pooled, ``merge_difficulty_levels`` L16-24); the
  overall is the mean over the eight ``QUESTION_TYPES`` (L5-14) present — other types are listed
  but left out (L58-60).
- SPAR-Bench (``utils/cal_metric_sparbench.py``): each level (Low, Medium, High) is the mean over
  its items, its types given by explicit lists (L6-24); a type in none of them is "Other": listed,
  left out of the levels and the overall; the overall is the mean of the per-type means of the
  listed types (L62-84).
- The sim datasets (this project's; VSI-Bench's tasks) are averaged over their task types.
- Every other benchmark: the mean over items (``eval/evaluate.py`` L117).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.scoring import score_answer

VSI_TYPES = ("object_rel_distance", "object_rel_direction", "route_planning", "obj_appearance_order",
             "object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation")
"""``QUESTION_TYPES`` of ``utils/cal_metric_vsibench.py`` L5-14, in its print order."""
SPAR_LEVELS = {
    "low": ("depth_prediction_oc", "depth_prediction_oc_mv", "depth_prediction_oo", "depth_prediction_oo_mv",
            "distance_prediction_oc", "distance_prediction_oc_mv", "distance_prediction_oo", "distance_prediction_oo_mv"),
    "medium": ("position_matching", "camera_motion_infer", "view_change_infer"),
    "high": ("distance_infer_center_oo", "distance_infer_center_oo_mv", "obj_spatial_relation_oc_mv",
             "obj_spatial_relation_oo", "obj_spatial_relation_oo_mv", "spatial_imagination_oc",
             "spatial_imagination_oc_mv", "spatial_imagination_oo", "spatial_imagination_oo_mv"),
}
"""``low_types``/``medium_types``/``high_types`` of ``utils/cal_metric_sparbench.py`` L6-24."""
LENIENT_DATASETS = ("sim",)
"""Datasets of this project (not the reference's): types normalised, free-form scored."""


def task_type(dataset: str, item: dict[str, Any]) -> str:
    """The type an item is tabulated under (``original_question_type``; for VSI-Bench and sim the
    difficulty levels merged as ``merge_difficulty_levels`` does; ``"all"`` when there is none)."""
    qtype = str(item.get("original_question_type") or "all")
    if dataset in ("vsi_bench", "sim") and any(d in qtype for d in ("_easy", "_medium", "_hard")):
        return qtype.split("_easy")[0].split("_medium")[0].split("_hard")[0]
    return qtype


def spar_level(qtype: str) -> str:
    """``low``, ``medium``, ``high`` or ``other`` (SPAR's explicit lists)."""
    return next((level for level, types in SPAR_LEVELS.items() if qtype in types), "other")


def score_records(records: list[dict[str, Any]], dataset: str | None = None) -> list[dict[str, Any]]:
    """Each record with ``score`` added (``model_output`` vs ``answer`` under ``problem_type``;
    lenient types for this project's datasets, :data:`LENIENT_DATASETS`)."""
    lenient = dataset in LENIENT_DATASETS
    return [{**r, "score": score_answer(r.get("model_output") or "", str(r["answer"]), r["problem_type"], lenient=lenient)}
            for r in records]


def summarize(records: list[dict[str, Any]], dataset: str) -> dict[str, Any]:
    """Per-type means, overall and run statistics of scored records.

    Returns:
        ``{"dataset", "items", "overall", "aggregation", "types": {type: {"n", "score"}},
        "levels" (spar_bench), "finish_reasons", "reflection_rate", "mean_turns", "mean_drawings",
        "position_error_m" (sim navigation: n, median, p90)}``; scores are in [0, 1].
    """
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_type[task_type(dataset, r)].append(float(r["score"]))
    types = {t: {"n": len(v), "score": float(np.mean(v))} for t, v in sorted(by_type.items())}
    if dataset == "vsi_bench":
        aggregation = "mean over VSI-Bench's 8 task types"
        counted = [types[t]["score"] for t in VSI_TYPES if t in types]
        overall = float(np.mean(counted)) if counted else 0.0
    elif dataset == "spar_bench":
        aggregation = "mean over SPAR's listed task types"
        counted = [v["score"] for t, v in types.items() if spar_level(t) != "other"]
        overall = float(np.mean(counted)) if counted else 0.0
    elif dataset == "sim":
        aggregation = "mean over task types"
        overall = float(np.mean([t["score"] for t in types.values()])) if types else 0.0
    else:
        aggregation = "mean over items"
        overall = float(np.mean([r["score"] for r in records])) if records else 0.0
    summary: dict[str, Any] = {"dataset": dataset, "items": len(records), "overall": overall,
                               "aggregation": aggregation, "types": types}
    if dataset == "spar_bench":  # each level: the mean over its items
        levels: dict[str, list[float]] = defaultdict(list)
        for r in records:
            level = spar_level(task_type(dataset, r))
            if level != "other":
                levels[level].append(float(r["score"]))
        summary["levels"] = {k: float(np.mean(levels[k])) for k in SPAR_LEVELS if levels.get(k)}
        summary["left_out"] = sorted(t for t in types if spar_level(t) == "other")
    if dataset == "vsi_bench":
        summary["left_out"] = sorted(t for t in types if t not in VSI_TYPES)
    summary["finish_reasons"] = dict(Counter(str(r.get("finish_reason")) for r in records))
    for key, name in (("reflection", "reflection_rate"), ("turns", "mean_turns"), ("drawings", "mean_drawings")):
        values = [float(r[key]) for r in records if r.get(key) is not None]
        summary[name] = float(np.mean(values)) if values else None
    errors = [r["position_error_m"] for r in records if r.get("position_error_m") is not None]
    nav = [r for r in records if r.get("target")]
    if nav:
        summary["position_error_m"] = {
            "n": len(errors), "asked": len(nav),
            "median": float(np.median(errors)) if errors else None,
            "p90": float(np.percentile(errors, 90)) if errors else None,
        }
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """The per-type table (scores in %) and the overall, as printed by ``vilasr eval score``."""
    rows = [f"{'type':<28} {'n':>5} {'score':>7}"]
    for t, v in summary["types"].items():
        rows.append(f"{t:<28} {v['n']:>5} {100 * v['score']:>7.2f}")
    for level, value in (summary.get("levels") or {}).items():
        rows.append(f"{'level ' + level:<28} {'':>5} {100 * value:>7.2f}")
    rows.append(f"{'overall (' + summary['aggregation'] + ')':<28} {summary['items']:>5} {100 * summary['overall']:>7.2f}")
    pe = summary.get("position_error_m")
    if pe and pe["median"] is not None:
        rows.append(f"navigation target error: median {pe['median']:.3f} m, p90 {pe['p90']:.3f} m "
                    f"({pe['n']} of {pe['asked']} grounded)")
    return "\n".join(rows)


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """Records of a results file, or of every ``results*.jsonl`` in a run folder (shards merged,
    one record per id)."""
    from vilasr_ros.evaluation.runner import read_results

    path = Path(path)
    files = sorted(path.glob("results*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(f"no results file at {path}")
    merged: dict[str, dict] = {}
    for f in files:
        for r in read_results(f):
            merged[str(r.get("id", len(merged)))] = r
    return list(merged.values())


def score_file(results: str | Path, dataset: str, out: str | Path) -> dict[str, Any]:
    """Score a results file (or run folder), write ``out`` (scored JSONL) and ``out`` with suffix
    ``.summary.json``; return the summary. ``dataset``: ours or the reference's name.
    """
    from vilasr_ros.evaluation.datasets import canonical_dataset

    dataset = canonical_dataset(dataset)
    scored = score_records(load_results(results), dataset)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for r in scored:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    summary = summarize(scored, dataset)
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
