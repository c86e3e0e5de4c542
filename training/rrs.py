"""Stage 2, reflective rejection sampling: sample K trajectories per item with the stage-1 model,
keep the correct and reflective ones, report the yield, then SFT on them.

Sampling goes through the runtime :class:`~vilasr_ros.reasoner.Reasoner` (the same prompts, drawing
and budgets as the robot), one seed per sample (``seed + k``). Items are ViLaSR-eval items
(:func:`vilasr_ros.evaluation.datasets.load_dataset`: a sim dataset, a benchmark file, or a site
dataset from :mod:`vilasr_ros_training.site`). Several items are in flight at once when the engine
takes concurrent requests (``openai`` against ``vllm serve``: up to 16); in-process engines run one
at a time.

A trajectory is kept when (spec §5 reward, :func:`vilasr_ros_training.rewards.vilasr_reward`): it
ended with an answer (finish reason ``stop``), its format reward is 1, its accuracy reaches
``min_accuracy`` (1.0: exactly right; regression answers score MRA) and its reflection reward is 1
(some label was boxed again with different coordinates — the model corrected itself).

Output (``out``): ``samples.jsonl`` (one line per sample: id, sample, rewards, kept, finish reason;
resumable: samples already written are not redrawn), ``kept/<id>__<k>/`` (saved traces of the kept
ones), ``rrs_summary.json`` (the yield). With an ``sft`` block in the config, stage 2 then runs SFT
(:func:`vilasr_ros_training.sft.train_sft`) on the kept traces.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from vilasr_ros.engines.base import Engine, SamplingConfig
from vilasr_ros.images import open_rgb
from vilasr_ros.sanitize import safe_name
from vilasr_ros.evaluation.runner import for_each, read_results
from vilasr_ros.reasoner import Reasoner, ReasonerConfig
from vilasr_ros.trace import Trace
from vilasr_ros_training.rewards import vilasr_reward

logger = logging.getLogger(__name__)


def judge(trace: Trace, ground_truth: str, problem_type: str, min_accuracy: float = 1.0) -> dict[str, Any]:
    """Rewards of one trajectory and whether stage 2 keeps it (module docstring).

    Returns:
        ``{"overall", "format", "accuracy", "reflection", "kept"}``.
    """
    reward = vilasr_reward(trace.chat_text, ground_truth, problem_type)
    kept = (trace.finish_reason == "stop" and reward["format"] == 1.0 and reward["accuracy"] >= min_accuracy
            and reward["reflection"] == 1.0)
    return {**reward, "kept": kept}


def sample_and_select(config, engine: Engine | None = None,
                      progress: bool = False) -> dict[str, Any]:
    """Sample, judge and keep (no SFT). See :func:`run_rrs` for the config keys.

    Returns:
        The summary: ``items``, ``samples``, ``kept``, ``yield`` (kept / samples),
        ``items_with_kept``, ``out``.
    """
    from vilasr_ros.engines import create_engine
    from vilasr_ros_training.config import stage_config
    from vilasr_ros_training.data import load_items

    config = stage_config("rrs", config)
    items, root = load_items(config.items)
    if engine is None:
        options = dict(config.engine or {})
        engine = create_engine(options.pop("name", "transformers"), **options)
    k_samples, min_accuracy, seed = config.samples, config.min_accuracy, config.seed
    sampling = SamplingConfig(**{"temperature": 1.0, "top_p": 1.0, "max_tokens": 2048, **(config.sampling or {})})
    base = ReasonerConfig(max_pixels=config.max_pixels, sampling=sampling, model_family=config.model_family)
    out = Path(config.out)
    (out / "kept").mkdir(parents=True, exist_ok=True)
    samples_path = out / "samples.jsonl"
    done = done_samples(samples_path)
    lock = threading.Lock()
    sink = open(samples_path, "a", encoding="utf-8")

    def one(item) -> None:
        images = [open_rgb(p) for p in item.image_paths]
        for k in range(k_samples):
            if (item.id, k) in done:
                continue
            cfg = replace(base, max_turns=item.max_turns, sampling=replace(sampling, seed=seed + k))
            trace = Reasoner(engine, cfg).run(images, item.question, item.problem_type, item.options, kind=item.kind,
                                              metadata={"item": item.raw, "sample": k})
            verdict = judge(trace, str(item.raw.get("answer", "")), item.problem_type, min_accuracy)
            if verdict["kept"]:
                trace.save(out / "kept" / safe_name(f"{item.id}__{k}", 96))
            record = {"id": item.id, "sample": k, **verdict, "finish_reason": trace.finish_reason,
                      "answer": trace.answer, "turns": len(trace.turns)}
            with lock:
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
            bar.set_postfix_str(f"{item.id} #{k}: {'KEPT' if verdict['kept'] else 'dropped'}", refresh=False)
            bar.update(1)

    from tqdm import tqdm

    bar = tqdm(total=len(items) * k_samples, desc="rrs samples", unit="sample", disable=not progress, dynamic_ncols=True)
    try:
        for_each(one, items, max(1, min(config.batch_size, engine.max_concurrency)))
    finally:
        sink.close()
        bar.close()
    records = read_results(samples_path)
    kept = [r for r in records if r["kept"]]
    summary = {"items": len(items), "samples": len(records), "kept": len(kept),
               "yield": len(kept) / len(records) if records else 0.0,
               "items_with_kept": len({r["id"] for r in kept}), "out": str(out)}
    (out / "rrs_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def done_samples(path: Path) -> set[tuple[str, int]]:
    """``(item id, sample)`` of every sample already in ``samples.jsonl``, read as evaluation resumes
    (:func:`vilasr_ros.evaluation.runner.read_results` with ``repair``): a torn last line (a run killed
    while writing) is cut off the file, so the next sample is appended on a line of its own and that
    sample is drawn again; a garbled line elsewhere is skipped and kept."""
    return {(str(r["id"]), int(r["sample"])) for r in read_results(path, repair=True) if "id" in r and "sample" in r}


def run_rrs(config, engine: Engine | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Stage 2 from a config (``config/training/rrs.yaml``): :class:`vilasr_ros_training.config.RRSStage`
    or its mapping (``engine``: the stage-1 model; ``openai`` with a ``base_url`` of ``vllm serve`` for
    batched GPU sampling; ``sft``: an SFT stage without ``data``, trained on the kept traces).

    Returns:
        The sampling summary, plus ``sft`` (the SFT summary) when an ``sft`` block is given.
    """
    from vilasr_ros_training.config import stage_config

    config = stage_config("rrs", config)
    summary = sample_and_select(config, engine, progress)
    logger.info("reflective rejection sampling: kept %d of %d samples (yield %.1f %%) on %d of %d items",
                summary["kept"], summary["samples"], 100 * summary["yield"], summary["items_with_kept"],
                summary["items"])
    if config.sft is not None:
        from vilasr_ros_training.data import load_traces
        from vilasr_ros_training.sft import train_sft

        from vilasr_ros.engines.hf import resolve_model_path

        family = config.sft.family(resolve_model_path(config.sft.model))
        examples = load_traces(Path(config.out) / "kept", family.name)  # sampled in another family: one error
        if not examples:
            raise ValueError("stage 2 kept no trajectory: nothing to fine-tune on (see samples.jsonl)")
        summary["sft"] = train_sft(config.sft, examples)
    return summary
