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

Resuming: items whose id is already in the results file are not run again; a last line cut short by
a kill is dropped (the file is truncated to its last complete line) and that item runs again. A
garbled line *inside* the file (a disk error, a hand edit) is reported, skipped and left in place for
inspection — nothing after it is lost or re-run. Lines are flushed and fsync'ed one by one. An item
that fails for any reason (an image that does not decode, an unexpected error) is listed in
``skipped.jsonl`` with the reason and the run goes on. Sharding takes the contiguous slice
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


from vilasr_ros.engines.base import Engine
from vilasr_ros.errors import ConfigError, DatasetError, ImageError
from vilasr_ros.evaluation.datasets import DEFAULT_FRAMES, EvalItem, load_dataset
from vilasr_ros.images import open_rgb
from vilasr_ros.reasoner import Reasoner, ReasonerConfig
from vilasr_ros.sanitize import clean_text, safe_name
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
        ConfigError: Malformed.
    """
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError as exc:
        raise ConfigError(f"--shard must be i/n (e.g. 0/4), got {text!r}") from exc
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= i < n")
    return i, n


def results_name(shard: tuple[int, int]) -> str:
    return "results.jsonl" if shard[1] == 1 else f"results_{shard[0]}_{shard[1]}.jsonl"


def read_results(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The JSON records of a results file.

    A last line without its newline (a run killed while writing) is dropped — and with ``repair``
    cut off the file. A line that is not a JSON object anywhere else is logged with its line number
    and skipped, never truncated: every finished result around it is kept.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    records = []
    torn = bool(lines) and not lines[-1].endswith(b"\n")
    for number, line in enumerate(lines[:-1] if torn else lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            logger.warning("%s:%d is not a JSON result line (kept in the file, skipped): %r", path, number, line[:120])
            continue
        records.append(record)
    if torn:
        logger.warning("%s: dropping %d bytes of an unfinished last line", path, len(lines[-1]))
        if repair:
            with open(path, "r+b") as f:
                f.truncate(len(data) - len(lines[-1]))
    return records


def reflective(trace: Trace) -> bool:
    """Some label got two different boxes across the trajectory (the reflection criterion, spec §5)."""
    seen: dict[str, set] = {}
    for turn in trace.turns:
        for box in turn.boxes:
            seen.setdefault(str(box.get("label")), set()).add(json.dumps(box.get("bbox_2d")))
    return any(len(v) > 1 for v in seen.values())


def _measure(dataset: str):
    """The ``vilasr_ros.eval_measures`` entry registered for ``dataset`` (sim: navigation error), or None."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="vilasr_ros.eval_measures"):
        if ep.name == dataset:
            return ep.load()
    return None


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
        "discarded_turns": sum(t.discarded for t in trace.turns),
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
             progress: bool = False) -> RunSummary:
    """Run ``engine`` over a dataset shard, appending to ``OUT/results*.jsonl`` (see module docstring).

    Args:
        dataset: One of :data:`~vilasr_ros.evaluation.datasets.DATASETS`.
        data: Question file or folder.
        engine: The model.
        out: Output folder (created; an existing one is resumed).
        config: Loop settings (max_pixels, sampling; default: a failed drawing is discarded and
            generated again, as the reference evaluates); the turn budget comes from the dataset
            (10; 20 for mazes) unless ``max_turns_override`` is given.
        shard: ``(i, n)``.
        image_folder: Root of ``image_path`` (default: the question file's folder).
        frames: Frames per video item.
        batch_size: Items in flight at once (capped by ``engine.max_concurrency``).
        save_traces: Save each trace under ``OUT/traces/<id>``.
        progress: Show a progress bar (n/N, rate, ETA) on stderr.

    Returns:
        A :class:`RunSummary`.

    Raises:
        DatasetError / ConfigError: Bad dataset, data or shard; an ``OUT`` holding a run of another dataset.
    """
    config = config or ReasonerConfig(on_tool_error="retry")
    items, root = load_dataset(dataset, data, image_folder, frames)
    i, n = shard
    items = items[len(items) * i // n: len(items) * (i + 1) // n]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run_info = {"dataset": dataset, "data": str(Path(data).resolve()), "image_folder": str(root.resolve()),
                "engine": engine.describe(), "frames": frames, "shard": list(shard),
                "model_family": Reasoner(engine, config).family.name,
                "mode": "no tools" if config.prompt_layout == "baseline" else "tools",
                "settings": {"max_pixels": config.max_pixels, "max_images": config.max_images,
                             "on_tool_error": config.on_tool_error,
                             "max_turns": max_turns_override or "dataset default",
                             "sampling": vars(config.sampling).copy()}}
    info_path = out / "run.json"
    if info_path.exists():
        previous = json.loads(info_path.read_text())
        if previous.get("dataset") != dataset:
            raise DatasetError(f"{out} holds a {previous.get('dataset')} run; use another --out for {dataset}")
    info_path.write_text(json.dumps(run_info, indent=1) + "\n")
    results_path = out / results_name(shard)
    done = {r.get("id") for r in read_results(results_path, repair=True)}
    todo = [it for it in items if it.id not in done]
    skipped = [it for it in todo if it.missing or it.invalid]
    skipped_file = open(out / "skipped.jsonl", "w", encoding="utf-8")
    for it in skipped:
        reason = it.invalid or "missing or unreadable image"
        skipped_file.write(json.dumps({"id": it.id, "position": it.position, "reason": reason,
                                       "missing": it.missing}, ensure_ascii=False) + "\n")
        logger.warning("skipping %s: %s %s", it.id, reason, ", ".join(it.missing))
    skipped_file.flush()
    failed: list[str] = []
    todo = [it for it in todo if not (it.missing or it.invalid)]
    from tqdm import tqdm

    measure = _measure(dataset)
    bar = tqdm(total=len(todo), desc=f"eval {dataset}", unit="item", disable=not progress, dynamic_ncols=True)
    lock = threading.Lock()
    results_file = open(results_path, "a", encoding="utf-8")

    def one(item: EvalItem) -> None:
        try:
            run_one(item)
        except Exception as exc:  # noqa: BLE001 - one item's failure is reported, the run goes on
            reason = f"{type(exc).__name__}: {clean_text(exc)}"
            logger.warning("skipping %s: %s", item.id, reason)
            with lock:
                skipped_file.write(json.dumps({"id": item.id, "position": item.position, "reason": reason},
                                              ensure_ascii=False) + "\n")
                skipped_file.flush()
                failed.append(item.id)
            bar.update(1)

    def run_one(item: EvalItem) -> None:
        cfg = replace(config, max_turns=max_turns_override or item.max_turns)
        try:
            images = [open_rgb(p) for p in item.image_paths]
        except ImageError as exc:
            raise DatasetError(f"image {exc}") from exc
        trace = Reasoner(engine, cfg).run(images, item.question, item.problem_type, item.options, kind=item.kind,
                                          metadata={"item": item.raw})
        trace_dir = None
        if save_traces:
            trace_dir = f"traces/{safe_name(item.id)}"
            trace.save(out / trace_dir)
        record = _record(item, trace, trace_dir)
        if measure is not None:
            record.update(measure(item.raw, item.image_paths, trace, root))
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with lock:
            results_file.write(line)
            results_file.flush()
            os.fsync(results_file.fileno())
        bar.set_postfix_str(f"{item.id}: {trace.finish_reason}", refresh=False)
        bar.update(1)

    try:
        for_each(one, todo, max(1, min(batch_size, engine.max_concurrency)))
    finally:
        results_file.close()
        skipped_file.close()
        bar.close()
    return RunSummary(total=len(items), resumed=len(items) - len(todo) - len(skipped), ran=len(todo) - len(failed),
                      skipped=len(skipped) + len(failed), results_path=results_path)
