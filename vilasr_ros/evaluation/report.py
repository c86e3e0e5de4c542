"""``vilasr eval report``: one Markdown page with PNG plots comparing evaluation runs.

Plots (matplotlib, Agg backend): score per task type side by side for every run; finish reasons;
turns and drawings per answer; reflection rate; for sim navigation items the CDF of the target
position error (metres). A gallery shows a few traces: question, answer, model output and the last
image the model drew.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.sanitize import is_inside, safe_name
from vilasr_ros.evaluation.scores import load_results, score_records, summarize


def _load_run(run_dir: Path) -> dict[str, Any]:
    info_path = run_dir / "run.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{run_dir} is not an evaluation run (no run.json)")
    info = json.loads(info_path.read_text())
    records = score_records(load_results(run_dir), info["dataset"])
    return {"name": run_dir.name, "dir": run_dir, "info": info, "records": records,
            "summary": summarize(records, info["dataset"])}


def _bar_groups(ax, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _plots(runs: list[dict], out: Path) -> dict[str, str]:
    from vilasr_ros.errors import require

    matplotlib = require("matplotlib", "eval")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files: dict[str, str] = {}
    types = sorted({t for r in runs for t in r["summary"]["types"]})
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(types) + 2), 4))
    _bar_groups(ax, types, {r["name"]: [100 * r["summary"]["types"].get(t, {}).get("score", np.nan) for t in types]
                            for r in runs}, "score (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Score per task type")
    fig.tight_layout()
    fig.savefig(out / "scores_by_type.png", dpi=110)
    plt.close(fig)
    files["scores"] = "scores_by_type.png"

    reasons = sorted({k for r in runs for k in r["summary"]["finish_reasons"]})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = np.zeros(len(runs))
    for reason in reasons:
        values = np.array([r["summary"]["finish_reasons"].get(reason, 0) / max(1, r["summary"]["items"]) for r in runs])
        ax.bar([r["name"] for r in runs], 100 * values, bottom=100 * bottom, label=reason)
        bottom += values
    ax.set_ylabel("items (%)")
    ax.set_title("Finish reasons")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "finish_reasons.png", dpi=110)
    plt.close(fig)
    files["finish"] = "finish_reasons.png"

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for key, ax, title in (("turns", axes[0], "Turns per answer"), ("drawings", axes[1], "Drawings per answer")):
        values = {run["name"]: [int(r.get(key) or 0) for r in run["records"]] for run in runs}
        top = max([max(v or [0]) for v in values.values()])
        edges = [0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 100]  # counts beyond 5 binned
        edges = [e for e in edges if e <= top] + [top + 1]
        labels = [str(a) if b == a + 1 else f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])]
        _bar_groups(ax, labels, {name: list(100 * np.histogram(v, bins=edges)[0] / max(1, len(v)))
                                 for name, v in values.items()}, "items (%)")
        ax.set_title(title)
        ax.set_xlabel("count (bins merge beyond 5)")
        ax.tick_params(axis="x", rotation=45)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    rates = [r["summary"]["reflection_rate"] for r in runs]
    bars = axes[2].bar([r["name"] for r in runs], [100 * (x or 0) for x in rates], color="tab:purple")
    for bar, rate in zip(bars, rates):  # the value is written on the bar: a 0 % bar is still visible as "0.0 %"
        axes[2].annotate("n/a" if rate is None else f"{100 * rate:.1f} %", (bar.get_x() + bar.get_width() / 2,
                         bar.get_height()), ha="center", va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points")
    axes[2].set_ylim(0, 105)
    axes[2].set_ylabel("items (%)")
    axes[2].set_title("Reflection rate (a label re-boxed)")
    fig.tight_layout()
    fig.savefig(out / "turns_drawings_reflection.png", dpi=110)
    plt.close(fig)
    files["turns"] = "turns_drawings_reflection.png"

    nav = [(r["name"], sorted(x["position_error_m"] for x in r["records"] if x.get("position_error_m") is not None))
           for r in runs]
    nav = [(name, e) for name, e in nav if e]
    if nav:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, (name, errors) in enumerate(nav):  # dashed styles keep identical curves visible
            ax.step([errors[0]] + errors, np.arange(len(errors) + 1) / len(errors), where="post",
                    linestyle=("-", "--", ":", "-.")[k % 4], linewidth=2.2 - 0.4 * (k % 4), label=f"{name} (n={len(errors)})")
        ax.set_xscale("log")
        ax.set_xlabel("target position error (m)")
        ax.set_ylabel("fraction of navigation items")
        ax.set_title("Navigation target error (CDF)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "navigation_error_cdf.png", dpi=110)
        plt.close(fig)
        files["nav"] = "navigation_error_cdf.png"
    return files


def _gallery(run: dict, out: Path, count: int) -> list[str]:
    lines: list[str] = []
    picked, seen_types = [], set()
    for r in sorted(run["records"], key=lambda r: -(r.get("drawings") or 0)):
        qtype = r.get("original_question_type")
        if isinstance(r.get("trace_dir"), str) and is_inside(run["dir"], run["dir"] / r["trace_dir"]) \
                and qtype not in seen_types and len(picked) < count:
            picked.append(r)
            seen_types.add(qtype)
    for r in picked:
        images = sorted((run["dir"] / r["trace_dir"] / "images").glob("image_*.png"), key=lambda p: int(p.stem.split("_")[1]))
        lines.append(f"#### {run['name']} · {r['id']} · {r.get('original_question_type', '')}\n")
        options = r.get("options") or []
        shown_options = "  \n".join(str(o) for o in options) if isinstance(options, list) else str(options)
        lines.append(f"**Q:** {r['question']}  \n" + (f"**options:**  \n{shown_options}  \n" if options else "")
                     + f"**ground truth:** {r['answer']} · **answer:** "
                     f"{r.get('extracted_answer')} · **score:** {r['score']:.2f} · finish: {r.get('finish_reason')}\n")
        if images:
            dest = out / "gallery" / f"{safe_name(run['name'] + '_' + str(r['id']), 96)}.png"
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(images[-1], dest)
            lines.append(f"![last drawn image]({dest.relative_to(out).as_posix()})\n")
        text = (r.get("model_output") or "").replace("```", "'''")
        lines.append("```text\n" + text[:800] + "\n```\n")
    return lines


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, gallery: int = 4) -> Path:
    """Write ``report.md`` and its PNGs for one or more run folders.

    Args:
        run_dirs: Folders written by ``vilasr eval run``.
        out: Report folder (default ``<first run>/report``).
        gallery: Traces shown per run.

    Returns:
        Path of ``report.md``.

    Raises:
        FileNotFoundError: A folder is not a run.
    """
    runs = [_load_run(Path(d)) for d in run_dirs]
    names = [r["name"] for r in runs]
    for k, r in enumerate(runs):  # same folder names under different parents: keep them apart
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']}#{k + 1}"
    out = Path(out) if out else Path(run_dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    files = _plots(runs, out)
    md = ["# Evaluation report\n", "| run | dataset | engine | family | mode | items | overall (%) | reflection (%) | "
          "mean turns | nav. error median (m) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        s, eng = r["summary"], r["info"].get("engine", {})
        pe = (s.get("position_error_m") or {}).get("median")
        family, mode = r["info"].get("model_family", "qwen2_5_vl"), r["info"].get("mode", "tools")
        md.append(f"| {r['name']} | {s['dataset']} | {eng.get('engine')} {eng.get('model', '')} | {family} | {mode} | {s['items']} | "
                  f"{100 * s['overall']:.2f} | {100 * (s['reflection_rate'] or 0):.1f} | {s['mean_turns'] or 0:.2f} | "
                  f"{'' if pe is None else f'{pe:.3f}'} |")
    types = sorted({t for r in runs for t in r["summary"]["types"]})
    md += ["", "## Score per task type (%)", "", "| type | " + " | ".join(r["name"] for r in runs) + " |",
           "|---|" + "---|" * len(runs)]
    for t in types:
        cells = [r["summary"]["types"].get(t) for r in runs]
        md.append(f"| {t} | " + " | ".join("" if c is None else f"{100 * c['score']:.1f} (n={c['n']})" for c in cells) + " |")
    md += ["", f"![scores per type]({files['scores']})", "", "## Finish reasons", "", f"![finish reasons]({files['finish']})",
           "", "## Turns, drawings, reflection", "", f"![turns and drawings]({files['turns']})", ""]
    if "nav" in files:
        md += ["## Navigation target error", "",
               "Grounded target position (the model's box → depth → world) against the target's visible surface in "
               "the frame the box was drawn on.", "", f"![navigation error CDF]({files['nav']})", ""]
    md += ["## Gallery", ""]
    for r in runs:
        md += _gallery(r, out, gallery)
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return path
