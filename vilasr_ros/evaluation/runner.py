"""``vilasr eval run``: an engine over a benchmark, one JSON line per item, resumable.

Layout of ``OUT``:

- ``run.json`` — dataset, data file, engine, loop settings, shard;
- ``results.jsonl`` (``results_<i>_<n>.jsonl`` for shard i of n) — one line per answered item: the
  item's own fields plus ``id``, ``model_output`` (the last turn, as the reference), ``conversations``
  (system, user and assistant messages; images as ``image_index`` parts), ``finish_reason``,
  ``error``, ``turns``, ``images``, ``drawings``, ``reflection``, ``trace_dir`` and timings; sim
  navigation items add ``grounding`` and ``position_error_m``;
- ``skipped.jsonl`` — items not run, with the reason (missing or unreadable images);
- ``traces/<id>/`` — each item's saved :class:`~vilasr_ros.trace.Trace` (drawn images included).

Resuming: items whose id is already in the results file are not run again; a line cut short by a
kill is dropped (the file is truncated to its last complete line) and that item runs again. Lines
are flushed and fsync'ed one by one. Sharding takes the contiguous slice
``[len·i/n, len·(i+1)/n)`` of the data file, as the reference's ``--split/--all``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vilasr_ros.engines.base import Engine
from vilasr_ros.errors import QueryError
from vilasr_ros.evaluation.datasets import DEFAULT_FRAMES, EvalItem, load_dataset
from vilasr_ros.reasoner import Reasoner, ReasonerConfig
from vilasr_ros.trace import Trace

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What one ``run_eval`` call did: items in the shard, already done before, run now, skipped."""

    total: int
    resumed: int
    ran: int
    skipped: int
    results_path: Path


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n``.

    Raises:
        QueryError: Malformed.
    """
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError as exc:
        raise QueryError(f"--shard must be i/n (e.g. 0/4), got {text!r}") from exc
    if not 0 <= i < n:
        raise QueryError(f"--shard {text}: need 0 <= i < n")
    return i, n


def results_name(shard: tuple[int, int]) -> str:
    return "results.jsonl" if shard[1] == 1 else f"results_{shard[0]}_{shard[1]}.jsonl"


def read_results(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Complete JSON lines of a results file. With ``repair``, a trailing partial line (a run killed
    while writing) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, good = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line)
    if good != len(data):
        logger.warning("%s: dropping %d bytes of an unfinished last line", path, len(data) - good)
        if repair:
            with open(path, "r+b") as f:
                f.truncate(good)
    return records


def reflective(trace: Trace) -> bool:
    """Some label got two different boxes across the trajectory (the reflection criterion, spec §5)."""
    seen: dict[str, set] = {}
    for turn in trace.turns:
        for box in turn.boxes:
            seen.setdefault(str(box.get("label")), set()).add(json.dumps(box.get("bbox_2d")))
    return any(len(v) > 1 for v in seen.values())


def _sim_grounding(item: EvalItem, trace: Trace, root: Path) -> dict[str, Any]:
    """Ground a sim navigation answer and measure it against the scene (metres)."""
    from vilasr_ros.grounding import GroundingConfig, ground_trace
    from vilasr_ros.sources import open_source
    from vilasr_ros_sim.views import visible_surface_point

    target = item.raw["target"]
    scene_dir = root / item.raw["scene"]
    with open_source(f"sim:{scene_dir}") as source:
        frames_by_index = {f.index: f for f in source}
    frames = [frames_by_index[int(p.stem)] for p in item.image_paths]
    result = ground_trace(trace, frames, target["category"], GroundingConfig(remove_floor=True))
    out: dict[str, Any] = {"grounding": result.to_dict(), "position_error_m": None, "error_reference": None}
    if not result.ok:
        return out
    world = np.array(result.position_world)
    try:
        reference = visible_surface_point(scene_dir, result.frame_index, int(target["instance_id"]))
        out["error_reference"] = "visible_surface"
    except ValueError:  # the chosen frame does not show the target: measure to its centre
        reference = np.array(target["position"])
        out["error_reference"] = "centre"
    out["position_error_m"] = round(float(np.linalg.norm(world - reference)), 4)
    out["centre_error_xy_m"] = round(float(np.linalg.norm(world[:2] - np.array(target["position"][:2]))), 4)
    return out


def _record(item: EvalItem, trace: Trace, trace_dir: str | None) -> dict[str, Any]:
    conversation = trace.messages + ([{"role": "assistant", "content": trace.model_output}] if trace.turns else [])
    return {
        **item.raw,
        "id": item.id,
        "model_output": trace.model_output,
        "conversations": conversation,
        "finish_reason": trace.finish_reason,
        "error": trace.error,
        "extracted_answer": trace.answer,
        "turns": len(trace.turns),
        "images": len(trace.images),
        "drawings": sum(len(t.boxes) + len(t.lines) for t in trace.turns),
        "reflection": reflective(trace),
        "trace_dir": trace_dir,
        "engine_s": round(sum(t.engine_s for t in trace.turns), 4),
        "total_s": round(trace.total_s, 4),
    }


def for_each(fn: Callable[[Any], None], items: list, workers: int) -> None:
    """``fn(item)`` for every item: in order when ``workers`` is 1, else on a thread pool (exceptions raised)."""
    if workers <= 1:
        for item in items:
            fn(item)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fn, items))


def run_eval(dataset: str, data: str | Path, engine: Engine, out: str | Path, *, config: ReasonerConfig | None = None,
             shard: tuple[int, int] = (0, 1), image_folder: str | Path | None = None, frames: int = DEFAULT_FRAMES,
             batch_size: int = 1, save_traces: bool = True, max_turns_override: int | None = None,
             progress: Callable[[str], None] | None = None) -> RunSummary:
    """Run ``engine`` over a dataset shard, appending to ``OUT/results*.jsonl`` (see module docstring).

    Args:
        dataset: One of :data:`~vilasr_ros.evaluation.datasets.DATASETS`.
        data: Question file or folder.
        engine: The model.
        out: Output folder (created; an existing one is resumed).
        config: Loop settings (max_pixels, sampling); the turn budget comes from the dataset
            (10; 20 for mazes) unless ``max_turns_override`` is given.
        shard: ``(i, n)``.
        image_folder: Root of ``image_path`` (default: the question file's folder).
        frames: Frames per video item.
        batch_size: Items in flight at once (capped by ``engine.max_concurrency``).
        save_traces: Save each trace under ``OUT/traces/<id>``.
        progress: Called with a line per item.

    Returns:
        A :class:`RunSummary`.

    Raises:
        QueryError: Bad dataset, data or shard; an ``OUT`` holding a run of another dataset.
    """
    config = config or ReasonerConfig()
    items, root = load_dataset(dataset, data, image_folder, frames)
    i, n = shard
    items = items[len(items) * i // n: len(items) * (i + 1) // n]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_info = {"dataset": dataset, "data": str(Path(data).resolve()), "image_folder": str(root.resolve()),
                "engine": engine.describe(), "frames": frames, "shard": list(shard),
                "settings": {"max_pixels": config.max_pixels, "max_images": config.max_images,
                             "max_turns": max_turns_override or "dataset default",
                             "sampling": vars(config.sampling).copy()}}
    info_path = out / "run.json"
    if info_path.exists():
        previous = json.loads(info_path.read_text())
        if previous.get("dataset") != dataset:
            raise QueryError(f"{out} holds a {previous.get('dataset')} run; use another --out for {dataset}")
    info_path.write_text(json.dumps(run_info, indent=1) + "\n")
    results_path = out / results_name(shard)
    done = {r.get("id") for r in read_results(results_path, repair=True)}
    todo = [it for it in items if it.id not in done]
    skipped = [it for it in todo if it.missing]
    with open(out / "skipped.jsonl", "w", encoding="utf-8") as f:
        for it in skipped:
            f.write(json.dumps({"id": it.id, "position": it.position, "reason": "missing or unreadable image",
                                "missing": it.missing}) + "\n")
            logger.warning("skipping %s: missing or unreadable image(s): %s", it.id, ", ".join(it.missing))
            if progress:
                progress(f"SKIPPED {it.id}: missing image(s) {', '.join(it.missing)}")
    todo = [it for it in todo if not it.missing]
    lock = threading.Lock()
    results_file = open(results_path, "a", encoding="utf-8")

    def one(item: EvalItem) -> None:
        from PIL import Image

        cfg = replace(config, max_turns=max_turns_override or item.max_turns)
        images = []
        for p in item.image_paths:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        trace = Reasoner(engine, cfg).run(images, item.question, item.problem_type, item.options, kind=item.kind,
                                          metadata={"item": item.raw, "root": str(root)})
        trace_dir = None
        if save_traces:
            trace_dir = f"traces/{item.id}"
            trace.save(out / trace_dir)
        record = _record(item, trace, trace_dir)
        if dataset == "sim" and item.raw.get("target") and item.raw.get("scene"):
            record.update(_sim_grounding(item, trace, root))
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with lock:
            results_file.write(line)
            results_file.flush()
            os.fsync(results_file.fileno())
        if progress:
            progress(f"{item.id}: {trace.finish_reason} answer={trace.answer!r} turns={len(trace.turns)}")

    try:
        for_each(one, todo, max(1, min(batch_size, engine.max_concurrency)))
    finally:
        results_file.close()
    return RunSummary(total=len(items), resumed=len(items) - len(todo) - len(skipped), ran=len(todo),
                      skipped=len(skipped), results_path=results_path)
