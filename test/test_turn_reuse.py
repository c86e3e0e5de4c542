"""Turn reuse in the transformers engine: KV cache and vision features kept across turns (issue 8)."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from vilasr_ros import protocol
from vilasr_ros.drawing import draw_annotations
from vilasr_ros.engines.base import GenerationRequest, SamplingConfig
from vilasr_ros.engines.hf import IMAGE_PAD, TransformersEngine

GREEDY = SamplingConfig(temperature=0.0, max_tokens=10)
MAX_PIXELS = 28 * 28 * 30


@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    """The session's tiny model (near-degenerate output that re-tokenises to the generated ids)."""
    return TransformersEngine(str(tiny_model_dir)), TransformersEngine(str(tiny_model_dir), turn_reuse=False)


@pytest.fixture(scope="module")
def diverse_engines(tmp_path_factory):
    """A tiny model with larger random weights: varied output (often not re-tokenising to the same ids)."""
    from vilasr_ros.tiny_model import build_tiny_qwen2_5_vl

    folder = build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("diverse_qwen"), initializer_range=0.3, seed=1)
    return TransformersEngine(str(folder)), TransformersEngine(str(folder), turn_reuse=False)


@pytest.fixture(scope="module")
def qwen3_engines(tmp_path_factory):
    """A tiny random Qwen3-VL (DeepStack, interleaved M-RoPE, patch 16) with varied output."""
    from vilasr_ros.tiny_model import build_tiny_qwen3_vl

    folder = build_tiny_qwen3_vl(tmp_path_factory.mktemp("diverse_qwen3"), initializer_range=0.3, seed=1)
    return TransformersEngine(str(folder)), TransformersEngine(str(folder), turn_reuse=False)


def _frames(n, seed, family=None):
    rng = np.random.default_rng(seed)
    return [protocol.resize_for_model(Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)), MAX_PIXELS,
                                      family) for _ in range(n)]


def _conversation(engine, n_frames, seed, turns=4, on_request=None):
    """The loop's shape: every assistant turn is what the engine wrote, each followed by a drawn image."""
    images = _frames(n_frames, seed, engine.family)
    messages = protocol.initial_messages([im.size for im in images], "Where is the chair?", "free-form")
    engine.reset()
    texts = []
    for turn in range(turns):
        request = GenerationRequest(protocol.render_chat(messages), list(images), messages, GREEDY)
        result = engine.generate(request)
        texts.append(result.text)
        if on_request:
            on_request(turn, request, result)
        drawn = draw_annotations(images[turn % len(images)], [{"bbox_2d": [5, 5, 60, 50], "label": f"x{turn}"}], [])
        images.append(drawn)
        messages = messages + [{"role": "assistant", "content": result.text},
                               protocol.continuation_message([(len(images) - 1, drawn.size)], final=turn == turns - 2)]
    return texts


@pytest.mark.parametrize("n_frames", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_outputs_identical_with_reuse_on_and_off(diverse_engines, n_frames, seed):
    on, off = diverse_engines
    with_reuse = _conversation(on, n_frames, seed)
    without = _conversation(off, n_frames, seed)
    assert with_reuse == without
    assert len(set(with_reuse)) > 1  # the turns differ: a drawn image changed what the model saw


def test_reuse_off_matches_transformers_generate(diverse_engines):
    _, off = diverse_engines

    def check(turn, request, result):
        inputs = off.encode(request)
        with torch.inference_mode():
            out = off.model.generate(**inputs, max_new_tokens=GREEDY.max_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        assert result.text == off.tokenizer.decode(new, skip_special_tokens=True)

    _conversation(off, 2, seed=5, turns=3, on_request=check)


def test_each_turn_prefills_only_its_new_message(engines):
    on, _ = engines
    seen = []

    def record(turn, request, result):
        seen.append((request.prompt, list(on.last_input_ids), list(on.last_prefill_ids), result, len(request.images)))

    _conversation(on, 3, seed=4, turns=4, on_request=record)
    merge = on.image_processor.merge_size ** 2
    for (prev_prompt, prev_ids, _, prev_result, _), (prompt, ids, prefilled, result, n_images) in zip(seen, seen[1:]):
        new_text = prompt[len(prev_prompt) + len(prev_result.text):]  # "<|im_end|>\n<|im_start|>user\n<image>caption..."
        assert new_text.startswith("<|im_end|>\n<|im_start|>user\n<|vision_start|>") and new_text.endswith("assistant\n")
        grid = on.image_processor(images=[_frames(1, 0)[0]], return_tensors="pt")["image_grid_thw"][0]
        expanded = new_text.replace(IMAGE_PAD, IMAGE_PAD * int(grid.prod().item() // merge))
        expected = on.tokenizer(expanded, add_special_tokens=False)["input_ids"]
        # A turn cut by the token limit leaves its last token unfed (the loop itself stops on such a turn).
        unfed = 1 if prev_result.finish_reason == "length" else 0
        assert prefilled[unfed:] == expected and len(prefilled) == len(expected) + unfed
        assert result.cached_tokens == len(ids) - len(prefilled) == len(prev_ids) + prev_result.completion_tokens - 1
    assert seen[0][2] == seen[0][1]  # the first turn prefills everything


def test_vision_tower_runs_only_on_new_images(engines):
    on, off = engines
    calls = []
    hook = on.model.model.visual.register_forward_hook(lambda m, args, kw, out: calls.append(int(kw["grid_thw"].shape[0])),
                                                       with_kwargs=True)
    try:
        _conversation(on, 3, seed=6, turns=4)
    finally:
        hook.remove()
    assert calls == [3, 1, 1, 1]


def test_a_conversation_that_is_not_an_extension_falls_back_and_says_so(engines, caplog):
    on, off = engines
    _conversation(on, 2, seed=7, turns=2)
    images = _frames(2, seed=8)  # other pictures, same question: only the system prompt is shared
    messages = protocol.initial_messages([im.size for im in images], "Where is the chair?", "free-form")
    request = GenerationRequest(protocol.render_chat(messages), images, messages, GREEDY)
    with caplog.at_level(logging.INFO, logger="vilasr_ros.engines.hf"):
        result = on.generate(request)
    assert "turn reuse: cut back" in caplog.text or "turn reuse: full recompute" in caplog.text
    first_image = on.last_input_ids.index(on.image_token_id)
    assert 0 < result.cached_tokens <= first_image  # the shared text before the first image, no picture
    off.reset()
    assert result.text == off.generate(request).text


@pytest.mark.parametrize("n_frames, seed", [(1, 0), (3, 1)])
def test_qwen3_vl_greedy_outputs_identical_with_reuse_on_and_off_and_equal_to_generate(qwen3_engines, n_frames, seed):
    """Issue 27: the same engine on a Qwen3-VL (loaded by its config.json): reuse keeps each image's
    DeepStack features with its vision tokens, and the loop's turns equal transformers' own generate."""
    on, off = qwen3_engines
    assert on.family.name == "qwen3_vl" and type(on.model).__name__ == "Qwen3VLForConditionalGeneration"

    def check(turn, request, result):
        assert all(im.width % 32 == 0 and im.height % 32 == 0 for im in request.images)
        inputs = off.encode(request)
        with torch.inference_mode():
            out = off.model.generate(**inputs, max_new_tokens=GREEDY.max_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None)
        assert result.text == off.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:].tolist(), skip_special_tokens=True)

    with_reuse = _conversation(on, n_frames, seed)
    without = _conversation(off, n_frames, seed, on_request=check)
    assert with_reuse == without and len(set(with_reuse)) > 1


@pytest.mark.parametrize("family,billions", [("qwen2_5_vl", 8.29), ("qwen3_vl", 8.77)])
def test_the_gpu_check_builds_the_released_shapes(family, billions):
    """benchmarks/gpu_check.py's full-size models, built on the meta device (no memory): the released
    checkpoints' parameter counts (Qwen2.5-VL-7B-Instruct 8.29 B, Qwen3-VL-8B-Instruct 8.77 B) and the
    family's loading class, so the first GPU it meets runs it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gpu_check

    model, _, processor, params = gpu_check.build(family, False, "meta", "bfloat16")
    assert round(params / 1e9, 2) == billions
    assert type(model).__name__ == {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                                    "qwen3_vl": "Qwen3VLForConditionalGeneration"}[family]
    assert processor.patch_size * processor.merge_size == {"qwen2_5_vl": 28, "qwen3_vl": 32}[family]
