"""``vilasr eval score``: per-item scores (spec §6, :func:`~vilasr_ros.scoring.score_answer`) and the
tables the authors print.

Aggregation (spec §6): VSI-Bench's overall is the mean over its eight task types, the three
``object_rel_direction`` levels merged into one type (their items pooled); SPAR-Bench's is the mean
over its task types, which are also grouped into SPAR's three levels by name (depth/distance
prediction → low, view change / position matching / camera motion → medium, the rest → high;
``_mv`` variants with their single-view type); the sim datasets, which carry VSI-Bench's tasks, are
averaged like VSI-Bench; every other benchmark is the mean over items.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.scoring import score_answer

VSI_TYPES = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation",
             "object_rel_distance", "object_rel_direction", "route_planning", "obj_appearance_order")
TYPE_MEAN_DATASETS = ("vsi_bench", "spar_bench", "sim")


def task_type(dataset: str, item: dict[str, Any]) -> str:
    """The type an item is tabulated under (``original_question_type``, levels merged where the
    benchmark merges them; ``"all"`` when the item has none)."""
    qtype = str(item.get("original_question_type") or "all")
    if dataset in ("vsi_bench", "sim") and qtype.startswith("object_rel_direction"):
        return "object_rel_direction"
    return qtype


def spar_level(qtype: str) -> str:
    base = qtype[:-3] if qtype.endswith("_mv") else qtype
    if base.startswith(("depth_prediction", "distance_prediction")):
        return "low"
    if base.startswith(("view_change", "position_matching", "camera_motion")):
        return "medium"
    return "high"


def score_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record with ``score`` added (``model_output`` vs ``answer`` under ``problem_type``)."""
    return [{**r, "score": score_answer(r.get("model_output") or "", str(r["answer"]), r["problem_type"])}
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
    if dataset in TYPE_MEAN_DATASETS:
        aggregation = "mean over task types"
        overall = float(np.mean([t["score"] for t in types.values()])) if types else 0.0
    else:
        aggregation = "mean over items"
        overall = float(np.mean([r["score"] for r in records])) if records else 0.0
    summary: dict[str, Any] = {"dataset": dataset, "items": len(records), "overall": overall,
                               "aggregation": aggregation, "types": types}
    if dataset == "spar_bench":
        levels: dict[str, list[float]] = defaultdict(list)
        for t, v in types.items():
            levels[spar_level(t)].append(v["score"])
        summary["levels"] = {k: float(np.mean(v)) for k, v in sorted(levels.items())}
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
    ``.summary.json``; return the summary."""
    scored = score_records(load_results(results))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for r in scored:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    summary = summarize(scored, dataset)
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
