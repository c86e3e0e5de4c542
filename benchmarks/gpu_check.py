"""GPU check of the transformers engine: randomly initialised Qwen2.5-VL-7B- and Qwen3-VL-8B-shaped
models, bf16, CUDA — one table per model family (``--family``; default both, one after the other).

Nothing is downloaded: the tokenizer, image processor and chat template come from the tiny builder
(``vilasr_ros.tiny_model``); each model is the released architecture at full size, randomly
initialised on the GPU:

- ``qwen2_5_vl``: Qwen2.5-VL-7B (text: 28 layers, 3584 wide, 28 heads / 4 KV heads, MLP 18944,
  vocabulary 152064; vision: 32 blocks, 1280 wide, 16 heads, patch 14); 16 frames of 640×480 are
  seen at 644×476 (351232 px cap);
- ``qwen3_vl``: Qwen3-VL-8B-Instruct's ``config.json`` (text: 36 layers, 4096 wide, 32 heads / 8 KV
  heads, head_dim 128, MLP 12288, vocabulary 151936, interleaved M-RoPE [24, 20, 20]; vision: 27
  blocks, 1152 wide, 16 heads, MLP 4304, patch 16, DeepStack from blocks 8, 16, 24); the same frames
  are seen at 640×480 (multiples of 32), and turn reuse keeps each image's DeepStack features.

For each it measures and prints:

- time to first token (vision tower + prefill of the 16-frame first turn + one token),
- decode tokens/s (``--decode-tokens`` forced tokens after the first),
- per-turn latency for turns 1–8 (each turn answers ``--turn-tokens`` tokens, then one drawn image
  and its caption are appended, as the loop does) with turn reuse on and off, and the turn-8/turn-2
  ratio of each,
- whether greedy outputs are equal with reuse on and off (bf16: kernels may differ in the last bits;
  the first differing turn is named),
- peak GPU memory.

Run on one H100/H200 (about 2 minutes per family; well under 8): ``python benchmarks/gpu_check.py``.
CPU smoke of the same code at a tiny size: ``python benchmarks/gpu_check.py --tiny``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from PIL import Image

from vilasr_ros import protocol
from vilasr_ros.engines.base import GenerationRequest, SamplingConfig
from vilasr_ros.engines.hf import TransformersEngine
from vilasr_ros.families import FAMILIES, model_family
from vilasr_ros.tiny_model import build_tiny_qwen2_5_vl

from turn_latency import conversation as run_turns, sync  # benchmarks/: the same loop-shaped conversation, timed

SEVEN_B = {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
           "intermediate_size": 18944, "vocab_size": 152064, "max_position_embeddings": 128000,
           "tie_word_embeddings": False}
SEVEN_B_VISION = {"depth": 32, "hidden_size": 1280, "num_heads": 16, "intermediate_size": 3420, "out_hidden_size": 3584,
                  "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2}
EIGHT_B_QWEN3 = {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                 "head_dim": 128, "intermediate_size": 12288, "vocab_size": 151936, "max_position_embeddings": 262144,
                 "tie_word_embeddings": False,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                                     "mrope_section": [24, 20, 20]}}
EIGHT_B_QWEN3_VISION = {"depth": 27, "hidden_size": 1152, "num_heads": 16, "intermediate_size": 4304,
                        "out_hidden_size": 4096, "patch_size": 16, "spatial_merge_size": 2,
                        "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24]}
TINY_QWEN3 = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 16, "intermediate_size": 128, "vocab_size": 2000, "max_position_embeddings": 32768}
TINY_QWEN3_VISION = {"depth": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "out_hidden_size": 64,
                     "patch_size": 16, "spatial_merge_size": 2, "deepstack_visual_indexes": [0]}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 2000, "max_position_embeddings": 32768}
TINY_VISION = {"depth": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "out_hidden_size": 64,
               "fullatt_block_indexes": [1], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2}


def build(family: str, tiny: bool, device: str, dtype: str):
    """A random model of ``family`` at full (or ``tiny``) size on ``device``, with the tiny builder's
    tokenizer and image processor. Returns ``(model, tokenizer, image_processor, parameters)``."""
    import torch
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    folder = build_tiny_qwen2_5_vl(tempfile.mkdtemp(prefix="gpu_check_tok_"), family=family)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    config_class = getattr(transformers, model_family(family).model_class.replace("ForConditionalGeneration", "Config"))
    base = config_class.from_pretrained(folder)
    if family == "qwen3_vl":
        text = {**base.text_config.to_dict(), **(TINY_QWEN3 if tiny else EIGHT_B_QWEN3)}
        vision = {**base.vision_config.to_dict(), **(TINY_QWEN3_VISION if tiny else EIGHT_B_QWEN3_VISION)}
    else:
        text = {**base.text_config.to_dict(), **(TINY if tiny else SEVEN_B)}
        vision = {**base.vision_config.to_dict(), **(TINY_VISION if tiny else SEVEN_B_VISION)}
        text["rope_scaling"] = text.get("rope_scaling") or base.text_config.rope_scaling
    text.pop("layer_types", None)  # the tiny model's per-layer list: derived again for the new depth
    config = config_class(text_config=text, vision_config=vision, image_token_id=base.image_token_id,
                          tie_word_embeddings=text.get("tie_word_embeddings", True),
                          video_token_id=base.video_token_id, vision_start_token_id=base.vision_start_token_id,
                          vision_end_token_id=base.vision_end_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(transformers, model_family(family).model_class)._from_config(config, dtype=getattr(torch, dtype))
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    return model, tokenizer, image_processor, params


def frames(n: int, family: str = "qwen2_5_vl") -> list:
    """``n`` random 640×480 frames as ``family``'s model sees them at the evaluation's 351232 px."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        base = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((640, 480), Image.BICUBIC)
        out.append(protocol.resize_for_model(img, 351232, model_family(family)))
    return out


def check(family: str, args, device: str, dtype: str) -> None:
    """Measure one family's model and print its table (module docstring)."""
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model, tokenizer, processor, params = build(family, args.tiny, device, dtype)
    build_s = time.perf_counter() - t0
    images = frames(args.frames, family)
    shape = {"qwen2_5_vl": "Qwen2.5-VL 7B", "qwen3_vl": "Qwen3-VL 8B"}[family]
    engine = TransformersEngine.from_model(model, tokenizer, processor, turn_reuse=True, name=f"random {shape} shape")
    eos = set(engine.eos_ids)
    engine.eos_ids = {-1}  # a random model: force the token counts asked for

    # time to first token and decode rate, on the 16-frame first turn
    sizes = [engine.family.coordinate_frame(im.size) for im in images]
    messages = protocol.initial_messages(sizes, "How far is the door from the sofa?", "regression")
    first = GenerationRequest(protocol.render_chat(messages), list(images), messages, SamplingConfig(temperature=0.0, max_tokens=1))
    run_turns(engine, images[:1], 1, 2)  # warm-up (kernels, allocator)
    engine.reset()
    sync()
    t = time.perf_counter()
    result = engine.generate(first)
    sync()
    ttft = time.perf_counter() - t
    prompt_tokens = result.prompt_tokens
    engine.reset()
    long = GenerationRequest(first.prompt, first.images, first.messages,
                             SamplingConfig(temperature=0.0, max_tokens=args.decode_tokens))
    steps: list[float] = []
    forward = engine._forward

    def timed_forward(embeds, positions, **deepstack):  # the first call is the prefill, every later one a decode step
        sync()
        start = time.perf_counter()
        out = forward(embeds, positions, **deepstack)
        sync()
        steps.append(time.perf_counter() - start)
        return out

    engine._forward = timed_forward
    engine.generate(long)
    engine._forward = forward
    decode_rate = (len(steps) - 1) / max(1e-9, sum(steps[1:]))

    on = run_turns(engine, images, args.turns, args.turn_tokens)
    engine_off = TransformersEngine.from_model(model, tokenizer, processor, turn_reuse=False, name="same, reuse off")
    engine_off.eos_ids = {-1}
    off = run_turns(engine_off, images, args.turns, args.turn_tokens)
    engine.eos_ids = engine_off.eos_ids = eos
    first_diff = next((k + 1 for k, (a, b) in enumerate(zip(on, off)) if a["ids"] != b["ids"]), None)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"gpu_check [{family}]: {name}, {dtype}, random {shape}-shaped model{' (tiny)' if args.tiny else ''} "
          f"({params / 1e9:.2f} B parameters, built in {build_s:.1f} s), {args.frames} frames 640x480 -> "
          f"{images[0].size[0]}x{images[0].size[1]}")
    print(f"{'measure':<38} {'value':>12}")
    print(f"{'first turn prompt tokens':<38} {prompt_tokens:>12d}")
    print(f"{'time to first token (s)':<38} {ttft:>12.3f}")
    print(f"{'decode rate (tokens/s)':<38} {decode_rate:>12.1f}")
    print(f"{'peak GPU memory (GiB)':<38} {peak:>12.2f}")
    print(f"{'turn':<6} {'reuse on s':>11} {'prefill':>8} {'reuse off s':>12} {'prefill':>8} {'prompt':>8}")
    for k, (a, b) in enumerate(zip(on, off), start=1):
        print(f"{k:<6} {a['s']:>11.3f} {a['prefill']:>8d} {b['s']:>12.3f} {b['prefill']:>8d} {a['prompt']:>8d}")
    if len(on) >= 8:
        print(f"turn-8/turn-2 latency: reuse on {on[7]['s'] / on[1]['s']:.2f}, reuse off {off[7]['s'] / off[1]['s']:.2f}")
    print("greedy outputs with reuse on and off: " + ("equal on every turn" if first_diff is None else
                                                       f"first differ at turn {first_diff} (bf16 kernels)"))
    del model, engine, engine_off


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (a smoke run of this script)")
    ap.add_argument("--family", choices=(*FAMILIES, "both"), default="both",
                    help="model family measured (default both: qwen2_5_vl, then qwen3_vl)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--turn-tokens", type=int, default=32, help="tokens each turn answers")
    ap.add_argument("--decode-tokens", type=int, default=128, help="forced tokens for the decode rate")
    args = ap.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = "float32" if device == "cpu" else "bfloat16"
    for k, family in enumerate(FAMILIES if args.family == "both" else [args.family]):
        if k:
            print()
        check(family, args, device, dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
