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
from vilasr_ros.errors import QueryError
from vilasr_ros.trace import Trace

IGNORE_INDEX = -100
"""Label of tokens without loss (PyTorch ``cross_entropy`` ``ignore_index``)."""

_ASSISTANT_RE = re.compile(re.escape("<|im_start|>assistant\n") + r"(.*?)(" + re.escape(protocol.EOS_TOKEN) + r"|$)",
                           re.DOTALL)


def training_text(messages: list[dict[str, Any]]) -> str:
    """The chat text of a conversation that ends with the assistant (see module docstring).

    Raises:
        QueryError: The last message is not the assistant's.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise QueryError("a training conversation must end with an assistant message")
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
        raise QueryError("a trace without turns has nothing to train on")
    messages = [_plain(m) for m in trace.messages] + [{"role": "assistant", "content": trace.turns[-1].text}]
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


def load_images(paths: list[str | Path], max_pixels: int) -> list:
    """Open images as RGB, resized as the runtime resizes them (:func:`vilasr_ros.protocol.resize_for_model`)."""
    from PIL import Image

    out = []
    for path in paths:
        with Image.open(path) as im:
            out.append(protocol.resize_for_model(im.convert("RGB"), max_pixels))
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
    tok = tokenizer(expanded, add_special_tokens=False, return_offsets_mapping=True)
    spans = assistant_spans(expanded)
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
        max_length: Examples longer than this many tokens are cut (image tokens are never cut: an
            example whose images end past the limit raises).

    Each dataset row holds an ``example`` column: a JSON string of ``{"messages", "images"}``.
    """

    def __init__(self, tokenizer, image_processor, max_pixels: int, max_length: int | None = None):
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.max_pixels, self.max_length = max_pixels, max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.convert_tokens_to_ids(
            protocol.EOS_TOKEN)

    def encode_example(self, example: dict[str, Any]) -> dict[str, Any]:
        images = load_images(example["images"], self.max_pixels)
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
