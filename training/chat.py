"""Training text and tensors — the same chat text and token ids the runtime produces.

A training example is trl's conversational vision format, ``{"messages": [...], "images": [...]}``:
HF chat messages whose content is a string or a list of ``{"type": "image"}``/``{"type": "text"}``
parts, the images in order of appearance, the last message the assistant's. It is rendered by
:func:`training_text` with the runtime's own renderer (:func:`vilasr_ros.protocol.render_chat`):
everything before the last assistant message, the generation prompt, the last message, then
``<|im_end|>`` — byte for byte :attr:`vilasr_ros.trace.Trace.chat_text` of the same conversation
(the reference's ``sequence``). Not trl's chat-template path: Qwen2.5-VL's template has no
``{% generation %}`` markers for assistant masks, and trl's tool-calling layout (``<tool_response>``)
is not what ViLaSR saw: drawn images come back as plain user turns (spec §3).

:func:`encode` then tokenises it as :class:`vilasr_ros.engines.hf.TransformersEngine` does (the
placeholders expanded by :func:`~vilasr_ros.engines.hf.expand_image_tokens`, no special tokens added,
``mm_token_type_ids`` for the 3D rotary positions) and marks the assistant tokens: the content of
every assistant message and its ``<|im_end|>`` (what the model writes; the reference's multi-turn SFT
trains on every assistant turn).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vilasr_ros import protocol
from vilasr_ros.engines.hf import IMAGE_PAD, expand_image_tokens
from vilasr_ros.errors import DatasetError
from vilasr_ros.trace import Trace

IGNORE_INDEX = -100
"""Label of tokens without loss (PyTorch ``cross_entropy`` ``ignore_index``)."""

_ASSISTANT_RE = re.compile(re.escape("<|im_start|>assistant\n") + r"(.*?)(" + re.escape(protocol.EOS_TOKEN) + r"|$)",
                           re.DOTALL)


def training_text(messages: list[dict[str, Any]]) -> str:
    """The chat text of a conversation that ends with the assistant (see module docstring).

    Raises:
        DatasetError: The last message is not the assistant's.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise DatasetError("a training conversation must end with an assistant message")
    last = messages[-1]["content"]
    if not isinstance(last, str):
        last = "".join(part.get("text", "") for part in last)
    return protocol.render_chat(messages[:-1], add_generation_prompt=True) + last + protocol.EOS_TOKEN


def example_from_trace(trace: Trace, image_paths: list[str]) -> dict[str, Any]:
    """A trace as a training example (its conversation, its last turn as the assistant's answer).

    Args:
        trace: A finished trace (at least one turn).
        image_paths: Where its images are saved (``Trace.image_paths``), in order.

    Returns:
        ``{"messages", "images"}``; :func:`training_text` of it equals ``trace.chat_text`` when the
        last turn ended with the end token (a turn cut by the token limit is not a training target).
    """
    if not trace.turns:
        raise DatasetError("a trace without turns has nothing to train on")
    messages = [_plain(m) for m in trace.messages] + [{"role": "assistant", "content": trace.model_output}]
    return {"messages": messages, "images": [str(p) for p in image_paths]}


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    """Image parts as trl's ``{"type": "image"}`` (order of appearance = order of ``images``)."""
    content = message["content"]
    if isinstance(content, str):
        return dict(message)
    parts = [{"type": "image"} if p.get("type") == "image" else {"type": "text", "text": p["text"]} for p in content]
    return {"role": message["role"], "content": parts}


def assistant_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of what the model writes: each assistant message's content and its ``<|im_end|>``."""
    return [(m.start(1), m.end(2)) for m in _ASSISTANT_RE.finditer(text)]


SFT_FORMATS = ("llamafactory", "runtime")
LF_IMAGE_MIN_PIXELS = 32 * 32
"""LLaMA-Factory's ``image_min_pixels`` default (``src/llamafactory/hparams/model_args.py``)."""


def llamafactory_shrink(image, max_pixels: int, min_pixels: int = LF_IMAGE_MIN_PIXELS):
    """An image as LLaMA-Factory's ``Qwen2VLPlugin._preprocess_image`` hands it to the processor
    (``src/llamafactory/data/mm_plugin.py``): above ``max_pixels`` scaled by √(max/area) with
    ``int()`` sides, below ``min_pixels`` scaled up the same way, ``convert("RGB")``, sides under 28
    raised to 28 (aspect kept), ratios over 200 clipped. The processor then rounds each side to a
    multiple of 28 (``smart_resize`` with its own, much larger cap), which can end above
    ``max_pixels``: 1296×968 at 1003520 → 1159×865 here → 1148×868 (grid 62×82) in the processor;
    the runtime's floor-based ``smart_resize`` gives 1148×840.
    """
    import math

    if image.width * image.height > max_pixels:
        factor = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if image.width * image.height < min_pixels:
        factor = math.sqrt(min_pixels / (image.width * image.height))
        image = image.resize((int(image.width * factor), int(image.height * factor)))
    if image.mode != "RGB":
        image = image.convert("RGB")
    if min(image.width, image.height) < 28:
        width, height = max(image.width, 28), max(image.height, 28)
        image = image.resize((width, height))
    if image.width / image.height > 200:
        image = image.resize((image.height * 180, image.height))
    if image.height / image.width > 200:
        image = image.resize((image.width, image.width * 180))
    return image


def load_images(paths: list[str | Path], max_pixels: int, sft_format: str = "runtime", family=None) -> list:
    """Open images for training: ``runtime`` — RGB (alpha over white), resized as the runtime
    resizes them for ``family`` (:func:`vilasr_ros.protocol.resize_for_model`; None: Qwen2.5-VL);
    ``llamafactory`` — as the authors' SFT saw them (:func:`llamafactory_shrink`; the model's
    processor finishes the resize)."""
    from PIL import Image

    from vilasr_ros.families import model_family

    family = model_family(family) if family is not None else None
    out = []
    for path in paths:
        with Image.open(path) as im:
            if sft_format == "llamafactory":
                im.load()
                out.append(llamafactory_shrink(im, max_pixels))
            else:
                out.append(protocol.resize_for_model(protocol.to_rgb(im), max_pixels, family))
    return out


LF_DEFAULT_SYSTEM = "You are a helpful assistant."
"""``default_system`` of LLaMA-Factory's ``qwen2_vl`` template (``src/llamafactory/data/template.py``)."""


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory ``processor_utils.infer_seqlen`` (L76-88): how much of a (prompt, response) pair
    fits in ``cutoff_len``."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def encode_llamafactory(messages: list[dict[str, Any]], images: list, tokenizer, image_processor,
                        cutoff_len: int | None = None, default_system: str | None = LF_DEFAULT_SYSTEM
                        ) -> dict[str, Any]:
    """Token ids and labels of one example exactly as LLaMA-Factory's supervised processor makes
    them with the ``qwen2_vl`` template (the authors' SFT stages), or ``qwen3_vl_nothink`` (the
    same pieces, no default system: ``default_system=None``, :attr:`ModelFamily.default_system`).

    Each image part becomes ``<|vision_start|>`` + ``<|image_pad|>`` × (grid / merge²) +
    ``<|vision_end|>`` (``Qwen2VLPlugin.process_messages``). The conversation is split in (prompt,
    response) pairs (``Template.encode_multiturn``): prompt = ``<|im_start|>system\\n{system}<|im_end|>\\n``
    (first pair only; default :data:`LF_DEFAULT_SYSTEM`) and ``<|im_start|>user\\n{content}<|im_end|>\\n<|im_start|>assistant\\n``,
    response = ``{content}<|im_end|>\\n`` — each string tokenised on its own, no special tokens added
    (``Template._convert_elements_to_ids``). Responses are labelled, prompts not (``mask_history``
    and ``train_on_prompt`` false); ``cutoff_len`` truncates pair by pair (:func:`infer_seqlen`,
    ``processor/supervised.py`` ``_encode_data_example``).

    Args:
        messages: trl-format messages (``system``? then user/assistant alternating, assistant last).
        images: The images in order, as :func:`llamafactory_shrink` leaves them (the processor finishes).

    Returns:
        ``input_ids``, ``assistant_mask`` (1 = labelled), and ``pixel_values``/``image_grid_thw``
        when there are images.

    Raises:
        DatasetError: Roles that do not alternate, or image parts ≠ images.
    """
    out: dict[str, Any] = {}
    pads: list[int] = []
    if images:
        vision = image_processor(images=images, return_tensors="pt")
        out["pixel_values"], out["image_grid_thw"] = vision["pixel_values"], vision["image_grid_thw"]
        merge = image_processor.merge_size ** 2
        pads = [int(g.prod()) // merge for g in vision["image_grid_thw"]]
    it = iter(pads)

    def content(message: dict[str, Any]) -> str:
        parts = message["content"]
        if isinstance(parts, str):
            return parts
        text = ""
        for part in parts:
            if part.get("type") == "image":
                n = next(it, None)
                if n is None:
                    raise DatasetError("more image parts than images")
                text += "<|vision_start|>" + IMAGE_PAD * n + "<|vision_end|>"
            else:
                text += part.get("text", "")
        return text

    system = default_system
    turns = list(messages)
    if turns and turns[0]["role"] == "system":
        system = content(turns[0])
        turns = turns[1:]
    if len(turns) % 2 or any(m["role"] != ("user" if k % 2 == 0 else "assistant") for k, m in enumerate(turns)):
        raise DatasetError("a LLaMA-Factory example alternates user and assistant turns and ends with the assistant")

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False) if text else []

    input_ids: list[int] = []
    mask: list[int] = []
    total = 0
    for k in range(0, len(turns), 2):
        source = (ids(f"<|im_start|>system\n{system}<|im_end|>\n") if k == 0 and system is not None else []) + ids(
            f"<|im_start|>user\n{content(turns[k])}<|im_end|>\n<|im_start|>assistant\n")
        target = ids(f"{content(turns[k + 1])}<|im_end|>\n")
        if cutoff_len is not None:
            if total >= cutoff_len:
                break
            source_len, target_len = infer_seqlen(len(source), len(target), cutoff_len - total)
            source, target = source[:source_len], target[:target_len]
            total += source_len + target_len
        input_ids += source + target
        mask += [0] * len(source) + [1] * len(target)
    if next(it, None) is not None:
        raise DatasetError("more images than image parts")
    out["input_ids"], out["assistant_mask"] = input_ids, mask
    return out


def encode(text: str, images: list, tokenizer, image_processor) -> dict[str, Any]:
    """Token ids, assistant mask and vision inputs of one chat text.

    Args:
        text: Chat text with one ``<|image_pad|>`` per image.
        images: ``PIL.Image`` list, in order (already resized).
        tokenizer: The model's tokenizer (fast: offsets are used).
        image_processor: The model's image processor.

    Returns:
        ``input_ids`` (list of T ints), ``assistant_mask`` (T ints, 1 = written by the model),
        ``pixel_values`` ((sum of patches, C) tensor) and ``image_grid_thw`` ((n_images, 3)) when
        there are images.

    Raises:
        EngineError: Placeholder and image counts differ.
    """
    out: dict[str, Any] = {}
    grids = []
    if images:
        vision = image_processor(images=images, return_tensors="pt")
        out["pixel_values"], out["image_grid_thw"] = vision["pixel_values"], vision["image_grid_thw"]
        grids = list(vision["image_grid_thw"])
    expanded = expand_image_tokens(text, grids, image_processor.merge_size)
    spans = assistant_spans(expanded)
    tok = tokenizer(expanded, add_special_tokens=False, return_offsets_mapping=True)
    mask, k = [], 0
    for start, _ in tok["offset_mapping"]:
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        mask.append(int(k < len(spans) and spans[k][0] <= start < spans[k][1]))
    out["input_ids"], out["assistant_mask"] = list(tok["input_ids"]), mask
    return out


class VilasrCollator:
    """Batches training examples for ``SFTTrainer`` (labels = assistant tokens only, right padding).

    Args:
        tokenizer: The model's tokenizer.
        image_processor: The model's image processor.
        max_pixels: Image area cap (the paper's SFT: 1003520).
        max_length: LLaMA-Factory's ``cutoff_len`` (``llamafactory``: pair by pair,
            :func:`encode_llamafactory`; ``runtime``: the right end is cut). Image tokens are never
            cut: an example that would lose some raises.
        sft_format: ``llamafactory`` (default: the authors' SFT — :func:`encode_llamafactory`,
            images by :func:`llamafactory_shrink`) or ``runtime`` (images as the runtime resizes
            them, text exactly ``Trace.chat_text``, one tokenisation of the whole text).
        family: The model family (:mod:`vilasr_ros.families`; None: ``qwen2_5_vl``): the runtime
            resize and the LLaMA-Factory template's default system.

    Each dataset row holds an ``example`` column: a JSON string of ``{"messages", "images"}``.
    """

    def __init__(self, tokenizer, image_processor, max_pixels: int, max_length: int | None = None,
                 sft_format: str = "llamafactory", family=None):
        from vilasr_ros.families import model_family

        if sft_format not in SFT_FORMATS:
            raise ValueError(f"sft_format must be one of {SFT_FORMATS}, got {sft_format!r}")
        self.sft_format = sft_format
        self.family = model_family(family)
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.max_pixels, self.max_length = max_pixels, max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.convert_tokens_to_ids(
            protocol.EOS_TOKEN)

    def encode_example(self, example: dict[str, Any]) -> dict[str, Any]:
        images = load_images(example["images"], self.max_pixels, self.sft_format, self.family)
        if self.sft_format == "llamafactory":
            enc = encode_llamafactory(example["messages"], images, self.tokenizer, self.image_processor, self.max_length,
                                      self.family.default_system)
            expected = sum(int(g.prod()) for g in enc.get("image_grid_thw", [])) // self.image_processor.merge_size ** 2
            if enc["input_ids"].count(self.image_token_id) != expected:
                raise ValueError(f"example truncated at max_length={self.max_length} would lose image tokens")
            return enc
        enc = encode(training_text(example["messages"]), images, self.tokenizer, self.image_processor)
        if self.max_length and len(enc["input_ids"]) > self.max_length:
            ids = enc["input_ids"]
            if self.image_token_id in ids[self.max_length:]:
                raise ValueError(f"example of {len(ids)} tokens has image tokens past max_length={self.max_length}")
            enc["input_ids"], enc["assistant_mask"] = ids[: self.max_length], enc["assistant_mask"][: self.max_length]
        return enc

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import json

        import torch

        encoded = [self.encode_example(json.loads(r["example"]) if isinstance(r["example"], str) else r["example"])
                   for r in rows]
        width = max(len(e["input_ids"]) for e in encoded)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for b, e in enumerate(encoded):
            row = torch.tensor(e["input_ids"])
            ids[b, : len(row)] = row
            attention[b, : len(row)] = 1
            keep = torch.tensor(e["assistant_mask"], dtype=torch.bool)
            labels[b, : len(row)] = torch.where(keep, row, torch.full_like(row, IGNORE_INDEX))
        batch = {"input_ids": ids, "attention_mask": attention, "labels": labels,
                 "mm_token_type_ids": (ids == self.image_token_id).long() * attention}
        with_images = [e for e in encoded if "pixel_values" in e]
        if with_images:
            batch["pixel_values"] = torch.cat([e["pixel_values"] for e in with_images])
            batch["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in with_images])
        return batch
