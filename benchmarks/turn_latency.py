"""Per-turn latency of the transformers engine with turn reuse on and off (issue 8).

Builds a randomly initialised Qwen2.5-VL with the 3B or 7B text width (fewer layers, to fit the
machine) and a vision tower of the real width, then runs one conversation shaped like the loop:
16 frames, then turns 1..8, each answered by the model (greedy, ``--tokens`` new tokens) and
followed by one drawn image with its caption. Prints, per turn, the engine seconds and tokens
prefilled with reuse on and off, and the ratio of turn-8 to turn-2 latency for each (target with
reuse: ≤ 1.3; without it the ratio grows with the conversation).

Run: ``python benchmarks/turn_latency.py`` (CPU defaults: 3B width, 2 text layers, 2 vision
blocks, frames at 50176 px). On a GPU: ``python benchmarks/turn_latency.py --preset 7b --layers 8
--vision-depth 32 --max-pixels 351232 --device cuda --dtype bfloat16``.
"""

import argparse
import tempfile
import time

import numpy as np
from PIL import Image

from vilasr_ros import protocol
from vilasr_ros.drawing import draw_annotations
from vilasr_ros.engines.base import GenerationRequest, SamplingConfig
from vilasr_ros.engines.hf import TransformersEngine
from vilasr_ros.tiny_model import build_tiny_qwen2_5_vl

PRESETS = {  # Qwen2.5-VL text configs (hidden, heads, kv heads, MLP); vision tower 1280 wide, 16 heads, MLP 3420
    "3b": (2048, 16, 2, 11008),
    "7b": (3584, 28, 4, 18944),
}


def sync():
    """Wait for queued GPU work so wall-clock times include it (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def conversation(engine, frames, turns, tokens):
    """One conversation shaped like the loop: ``frames`` first, then ``turns`` greedy turns of at most
    ``tokens`` new tokens, each followed by one drawn image and its caption.

    Returns:
        Per turn ``{"s": engine seconds, "prefill": tokens prefilled, "prompt": prompt tokens,
        "text": the reply, "ids": its token ids}``.
    """
    sampling = SamplingConfig(temperature=0.0, max_tokens=tokens)
    images = list(frames)
    messages = protocol.initial_messages([im.size for im in images], "How far is the door from the sofa?", "regression")
    engine.reset()
    rows = []
    for turn in range(turns):
        request = GenerationRequest(protocol.render_chat(messages), list(images), messages, sampling)
        sync()
        t0 = time.perf_counter()
        result = engine.generate(request)
        sync()
        rows.append({"s": time.perf_counter() - t0, "prefill": len(engine.last_prefill_ids),
                     "prompt": result.prompt_tokens, "text": result.text, "ids": list(engine.last_generated_ids)})
        drawn = draw_annotations(images[turn % len(frames)], [{"bbox_2d": [40, 40, 160, 140], "label": f"obj {turn}"}], [])
        images.append(drawn)
        messages = messages + [{"role": "assistant", "content": result.text},
                               protocol.continuation_message([(len(images) - 1, drawn.size)], final=False)]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=PRESETS, default="3b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vision-depth", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per turn")
    ap.add_argument("--max-pixels", type=int, default=50176)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    args = ap.parse_args()
    hidden, heads, kv, mlp = PRESETS[args.preset]
    folder = build_tiny_qwen2_5_vl(tempfile.mkdtemp(prefix="turn_latency_"), hidden_size=hidden, num_layers=args.layers,
                                   num_heads=heads, num_kv_heads=kv, intermediate_size=mlp, vision_depth=args.vision_depth,
                                   vision_hidden_size=1280, vision_num_heads=16, vision_intermediate_size=3420,
                                   vocab_size=2000, initializer_range=0.02)
    rng = np.random.default_rng(0)
    frames = [protocol.resize_for_model(Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)), args.max_pixels)
              for _ in range(args.frames)]
    results = {}
    for reuse in (True, False):
        engine = TransformersEngine(str(folder), device=args.device, dtype=args.dtype, turn_reuse=reuse)
        conversation(engine, frames[:2], 2, 2)  # warm-up
        results[reuse] = conversation(engine, frames, args.turns, args.tokens)
        engine.close()
    print(f"model: {args.preset} width, {args.layers} text layers, vision 1280 x {args.vision_depth} blocks; "
          f"{args.frames} frames {frames[0].size[0]}x{frames[0].size[1]}; {args.tokens} new tokens per turn; "
          f"device {engine.device} {engine.dtype}")
    print(f"{'turn':>4} {'reuse on (s)':>13} {'prefilled':>9} {'reuse off (s)':>14} {'prefilled':>9} {'prompt':>7}")
    for k, (on, off) in enumerate(zip(results[True], results[False]), 1):
        print(f"{k:>4} {on['s']:>13.3f} {on['prefill']:>9} {off['s']:>14.3f} {off['prefill']:>9} {off['prompt']:>7}")
    if args.turns >= 8:
        for reuse in (True, False):
            rows = results[reuse]
            print(f"turn-8 / turn-2 latency, reuse {'on ' if reuse else 'off'}: {rows[7]['s'] / rows[1]['s']:.2f}")
        print(f"turn-8 speed-up from reuse: {results[False][7]['s'] / results[True][7]['s']:.1f}x")


if __name__ == "__main__":
    main()
