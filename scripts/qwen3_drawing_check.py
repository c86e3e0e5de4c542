"""Check that a Qwen3-VL draws through the transformers engine: a tiny random Qwen3-VL (built offline) is
taught the tool-call format by SFT on replayed two-turn trajectories (as the stage-3 test teaches the
tiny Qwen2.5-VL), then the drawing loop runs greedily with turn reuse on and off.

It holds (exit 0) when both runs draw a box in their first turn, come back for a second, write the
same tokens, the box written on the 0-1000 grid lands on the pixels it names, and the trace page
shows the family and the box. About 4 minutes on 2 CPU cores (the SFT is 80 steps); kept out of the
test suite for that reason.

Usage: ``python scripts/qwen3_drawing_check.py [--work DIR]`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BOX = [100, 100, 400, 400]
SMALL = 12544


def main() -> int:
    from PIL import Image

    from vilasr_ros.engines.base import SamplingConfig
    from vilasr_ros.engines.hf import TransformersEngine
    from vilasr_ros.engines.replay import ReplayEngine
    from vilasr_ros.families import model_family
    from vilasr_ros.reasoner import Reasoner, ReasonerConfig
    from vilasr_ros.tiny_model import build_tiny_qwen3_vl
    from vilasr_ros.trace import Trace
    from vilasr_ros.view import render_html
    from vilasr_ros_sim.dataset import generate_dataset
    from vilasr_ros_training.chat import example_from_trace
    from vilasr_ros_training.data import load_items
    from vilasr_ros_training.sft import train_sft

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="working folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="qwen3_drawing_"))
    build_tiny_qwen3_vl(work / "tiny")
    generate_dataset(work / "sim", scenes=1, seed=7, mazes=1)
    items, _ = load_items({"dataset": "sim", "path": str(work / "sim"), "types": ["maze_route", "maze_turns"]})
    script = ['<think> a </think> Action: Object Mapper\n```json\n[{"index": 1, "bbox_2d": %s, "label": "chair"}]\n```'
              % BOX, "<think> done </think> Action: Answer\n<answer> A </answer>"]
    examples = []
    for item in items:
        trace = Reasoner(ReplayEngine(script), ReasonerConfig(max_pixels=SMALL, model_family="qwen3_vl")).run(
            [Image.open(p).convert("RGB") for p in item.image_paths], item.question, item.problem_type,
            item.options, kind=item.kind)
        trace.save(work / "script" / item.id)
        examples.append(example_from_trace(trace, Trace.image_paths(work / "script" / item.id, len(trace.images))))
    summary = train_sft({"model": str(work / "tiny"), "max_pixels": SMALL, "sft_format": "runtime",
                         "args": {"report_to": "none", "save_strategy": "no", "use_cpu": True, "bf16": False,
                                  "gradient_checkpointing": False, "logging_steps": 10, "lr_scheduler_type": "constant",
                                  "seed": 0, "output_dir": str(work / "format"), "max_steps": 80,
                                  "per_device_train_batch_size": 4, "learning_rate": 3e-3}}, examples * 4)
    print(f"SFT: {summary['steps']} steps, loss {summary['losses'][0]:.3f} -> {summary['losses'][-1]:.3f}")

    item = items[0]
    images = [Image.open(p).convert("RGB") for p in item.image_paths]
    traces = {}
    for reuse in (True, False):
        engine = TransformersEngine(str(work / "format"), turn_reuse=reuse)
        config = ReasonerConfig(max_pixels=SMALL, sampling=SamplingConfig(temperature=0.0, max_tokens=64))
        traces[reuse] = trace = Reasoner(engine, config).run(images, item.question, item.problem_type, item.options,
                                                            kind=item.kind)
        print(f"turn reuse {'on ' if reuse else 'off'}: family {trace.settings['model_family']}, {len(trace.turns)} turns, "
              f"finish {trace.finish_reason}, boxes in pixels {[b['bbox_2d'] for t in trace.turns for b in t.boxes]}")
    on, off = traces[True], traces[False]
    size = on.images[0].size
    expected = model_family("qwen3_vl").to_pixels(BOX, size)
    page = render_html(on)
    (work / "trace.html").write_text(page, encoding="utf-8")
    checks = {
        "family qwen3_vl": on.settings["model_family"] == "qwen3_vl",
        "first turn draws, a second turn follows": len(on.turns) >= 2 and bool(on.turns[0].boxes) and bool(on.turns[0].new_images),
        "same tokens with reuse on and off": [t.text for t in on.turns] == [t.text for t in off.turns],
        "the 0-1000 box lands on its pixels": bool(on.turns[0].boxes) and on.turns[0].boxes[0]["bbox_2d"] == expected,
        "the trace page shows the family and the box": "model family: qwen3_vl" in page
        and str([round(v, 2) for v in expected]) in page,
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    print(f"trace page: {work / 'trace.html'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
