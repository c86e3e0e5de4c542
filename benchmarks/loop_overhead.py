"""Host-side time per turn of the draw-to-reason loop (parse, merge, draw, prompt update).

16 frames of 640×480 at the evaluation max_pixels, the replay engine (zero model time), eight tool
turns each drawing on a different frame, then an answer. Prints per-turn host milliseconds and
the median, plus the one-off image preparation (smart_resize of the 16 frames).
Image encoding for a remote server is measured separately (PNG data URL of a drawn image).

Run: ``python benchmarks/loop_overhead.py [--repeats 5]``. Target: median ≤ 15 ms per turn.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vilasr_ros.engines.openai_compat import image_data_url
from vilasr_ros.engines.replay import ReplayEngine
from vilasr_ros.reasoner import Reasoner, ReasonerConfig


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sample = Path(__file__).resolve().parents[1] / "test/data/rgbd/open3d_testdata_rgbd/color"
    real = [Image.open(p).convert("RGB") for p in sorted(sample.glob("*.jpg"))] if sample.is_dir() else []
    rng = np.random.default_rng(0)
    frames = [real[i % len(real)] if real else Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for i in range(16)]
    turns = []
    for t in range(8):
        turns.append(
            "<think> step %d </think> Action: Object Mapper\n```json\n[" % t
            + ", ".join(
                "{'index': %d, 'bbox_2d': [%d, %d, %d, %d], 'label': 'obj %d'}" % (t + 1, 10 + i, 20, 200 + i, 300, i)
                for i in range(4)
            )
            + "]\n```\n```json\n[{'index': %d, 'start_point_2d': [50, 60], 'end_point_2d': [400, 300], 'label': 'path'}]\n```" % (t + 1)
        )
    turns.append("<think> done </think> Action: Answer\n<answer> 3 </answer>")
    reasoner = Reasoner(ReplayEngine(turns), ReasonerConfig(max_turns=10))
    reasoner.run(frames, "warm-up", "numerical")
    host_ms, prep_ms = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        trace = reasoner.run(frames, "How many objects?", "numerical")
        total = time.perf_counter() - start
        per_turn = [t.host_s * 1e3 for t in trace.turns[:-1]]
        host_ms += per_turn
        prep_ms.append(total * 1e3 - sum(t.host_s + t.engine_s for t in trace.turns) * 1e3)
    assert trace.finish_reason == "stop" and len(trace.images) == 24
    encode_ms = {}
    for fmt in ("png", "bmp", "jpeg"):
        t0 = time.perf_counter()
        for _ in range(10):
            image_data_url(trace.pil_images[-1], fmt)
        encode_ms[fmt] = (time.perf_counter() - t0) / 10 * 1e3
    print(f"frames: 16 x 640x480 -> {trace.images[0].size[0]}x{trace.images[0].size[1]}, tool turns per run: 8, runs: {args.repeats}")
    print(f"host time per tool turn (parse+merge+draw+prompt): median {statistics.median(host_ms):.2f} ms, "
          f"p90 {np.percentile(host_ms, 90):.2f} ms, max {max(host_ms):.2f} ms")
    print(f"per-query preparation (resize 16 frames + first prompt): median {statistics.median(prep_ms):.1f} ms")
    print(f"frames from: {'test/data/rgbd sample' if real else 'random noise'}")
    print("openai engine, encoding of each new drawn image (once per image): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in encode_ms.items()))
    med = statistics.median(host_ms)
    print("host time per tool turn incl. that encoding: "
          + ", ".join(f"{k} {med + v:.1f} ms" for k, v in encode_ms.items()))


if __name__ == "__main__":
    main()
