"""Build a tiny, randomly initialised Qwen2.5-VL offline (tests, smoke runs, benchmarks).

The result is a normal Hugging Face model folder (config, safetensors, tokenizer, processor and
the Qwen2.5-VL chat template) that loads through the same ``from_pretrained`` path as the real
ViLaSR weights. Its tokenizer is a byte-level BPE trained here with ``tokenizers`` on the protocol's
own strings, plus Qwen's special tokens; nothing is downloaded. It writes garbage, quickly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The chat template Qwen2.5-VL (and ViLaSR) ship in ``chat_template.json``."""


def _corpus() -> list[str]:
    from vilasr_ros.protocol import prompts

    p = prompts()
    texts = [v for v in p.values() if isinstance(v, str)]
    texts += list(p["answer_type_suffix"].values())
    texts += [
        "<think> Locate the chair and the table. </think> Action: Object Mapper",
        "```json\n[{\"index\": 1, \"bbox_2d\": [10, 20, 110, 220], \"label\": \"chair\"}]\n```",
        "<think> done </think> Action: Answer\n<answer> A </answer>",
        " ".join(str(i) for i in range(1000)),
    ]
    return texts * 4


def build_tiny_qwen2_5_vl(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vision_depth: int = 2,
    vision_hidden_size: int = 32,
    vision_num_heads: int = 2,
    vision_intermediate_size: int | None = None,
    vocab_size: int = 600,
    initializer_range: float = 0.02,
    seed: int = 0,
    family: str = "qwen2_5_vl",
) -> Path:
    """Write a random Qwen2.5-VL (or, with ``family="qwen3_vl"``, Qwen3-VL) with the real
    architecture at a tiny size.

    Args:
        out_dir: Folder to create (model, tokenizer, processor).
        hidden_size: Text width (the 7B uses 3584).
        num_layers: Text decoder layers.
        num_heads: Attention heads (head_dim = hidden_size / num_heads, must be even).
        num_kv_heads: Key/value heads (GQA).
        intermediate_size: Text MLP width.
        vision_depth: Vision transformer blocks.
        vision_hidden_size: Vision width (the 7B's vision tower: 1280, 16 heads, MLP 3420, depth 32).
        vision_num_heads: Vision attention heads.
        vision_intermediate_size: Vision MLP width (default 2 × width).
        vocab_size: BPE vocabulary size before special tokens.
        initializer_range: Std of the random weights (larger: less degenerate greedy output; at 0.02 a
            2-layer model mostly repeats its last input token).
        seed: torch seed for the random weights.
        family: ``qwen2_5_vl`` or ``qwen3_vl`` (:mod:`vilasr_ros.families`; the same tokenizer).

    Returns:
        ``out_dir`` as a Path.
    """
    from vilasr_ros.errors import require

    require("torch", "transformers")  # a clear error when the extra is missing
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        AutoTokenizer,
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=QWEN_SPECIAL_TOKENS,
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
        model_max_length=32768,
    )
    fast.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}

    head_dim = hidden_size // num_heads
    section = head_dim // 2
    mrope = [section - 2 * (section // 3), section // 3, section // 3]
    if family == "qwen3_vl":
        return _finish_qwen3_vl(out_dir, tokenizer, ids, hidden_size=hidden_size, num_layers=num_layers,
                                num_heads=num_heads, num_kv_heads=num_kv_heads, intermediate_size=intermediate_size,
                                vision_depth=vision_depth, vision_hidden_size=vision_hidden_size,
                                vision_num_heads=vision_num_heads,
                                vision_intermediate_size=vision_intermediate_size or vision_hidden_size * 2,
                                initializer_range=initializer_range, seed=seed)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            rope_scaling={"type": "mrope", "mrope_section": mrope},
            tie_word_embeddings=True,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            initializer_range=initializer_range,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_hidden_size,
            intermediate_size=vision_intermediate_size or vision_hidden_size * 2,
            num_heads=vision_num_heads,
            out_hidden_size=hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[vision_depth - 1],
            in_chans=3,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    _save_random(Qwen2_5_VLForConditionalGeneration, config, ids, seed, out_dir)

    # The processor files Qwen2.5-VL checkpoints ship (written directly: constructing
    # Qwen2_5_VLProcessor needs torchvision for its video processor, which CPU-only hosts lack).
    preprocessor = {
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (out_dir / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_5_VL_CHAT_TEMPLATE}))
    logger.info("tiny Qwen2.5-VL written to %s", out_dir)
    return out_dir


def _save_random(model_class, config, ids: dict, seed: int, out_dir: Path) -> None:
    """Random weights of ``model_class`` (seeded), greedy generation ending on ``<|im_end|>``, saved."""
    import torch

    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out_dir)


def build_tiny_qwen3_vl(out_dir: str | Path, **options) -> Path:
    """A tiny random Qwen3-VL (patch 16, relative 0-1000 boxes): :func:`build_tiny_qwen2_5_vl` with
    ``family="qwen3_vl"``."""
    return build_tiny_qwen2_5_vl(out_dir, family="qwen3_vl", **options)


def _finish_qwen3_vl(out_dir: Path, tokenizer, ids: dict, *, hidden_size: int, num_layers: int, num_heads: int,
                     num_kv_heads: int, intermediate_size: int, vision_depth: int, vision_hidden_size: int,
                     vision_num_heads: int, vision_intermediate_size: int, initializer_range: float, seed: int) -> Path:
    """The Qwen3-VL model and processor files beside the shared tokenizer (Qwen/Qwen3-VL-8B-Instruct's
    layout: interleaved M-RoPE, DeepStack features from one vision block, 0.5 mean/std)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    head_dim = hidden_size // num_heads
    half = head_dim // 2
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
            head_dim=head_dim, max_position_embeddings=32768, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                             "mrope_section": [half - 2 * (half // 4), half // 4, half // 4]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            initializer_range=initializer_range,
        ),
        vision_config=dict(
            depth=vision_depth, hidden_size=vision_hidden_size, intermediate_size=vision_intermediate_size,
            num_heads=vision_num_heads, out_hidden_size=hidden_size, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, num_position_embeddings=256, deepstack_visual_indexes=[0], in_channels=3,
            initializer_range=initializer_range,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    _save_random(Qwen3VLForConditionalGeneration, config, ids, seed, out_dir)
    preprocessor = {
        "size": {"shortest_edge": 4096, "longest_edge": 16777216},
        "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen3VLProcessor",
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (out_dir / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_5_VL_CHAT_TEMPLATE}))
    logger.info("tiny Qwen3-VL written to %s", out_dir)
    return out_dir


def build_tiny_clip(out: str | Path, seed: int = 0) -> Path:
    """A tiny random CLIP (``CLIPModel``, a word-level tokenizer, a 32-px image processor) saved as a
    Hugging Face folder, for the keyframe memory's embedder tests (nothing is downloaded)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "a", "an", "the", "of", "photo", "red", "blue", "backpack", "chair", "sofa", "cart",
             "table", "door", "lamp", "plant", "box"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    config = CLIPConfig(
        text_config={"vocab_size": len(words), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 0, "bos_token_id": 0,
                     "eos_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    torch.manual_seed(seed)
    out = Path(out)
    CLIPModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out
