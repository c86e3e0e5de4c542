"""ViLaSR-data in another model family's coordinate convention (training on a Qwen3-VL base).

The released cold-start and reflective data are Qwen2.5-VL conversations. Every box and line an
assistant turn draws is in absolute pixels of the image its ``index`` names (1-based over the
conversation's images), at the size Qwen2.5-VL saw that image in the authors' SFT: LLaMA-Factory's
shrink (:func:`vilasr_ros_training.chat.llamafactory_shrink`, ``image_max_pixels``) and then the
Qwen2.5-VL processor's ``smart_resize`` (factor 28, the model's ``min_pixels`` 3136 and
``max_pixels`` 12845056 from its ``preprocessor_config.json``) — :func:`source_size`. The system
prompt's "bottom-right corner is (W, H)" and the captions "(width: W, height: H)" state those sizes.

For a family with another convention (``qwen3_vl``: 0–1000 relative) :func:`convert_example`
rewrites, per image, every ``bbox_2d`` / ``start_point_2d`` / ``end_point_2d`` with
:meth:`~vilasr_ros.families.ModelFamily.from_pixels` of that image's source size, and the stated sizes
with :meth:`~vilasr_ros.families.ModelFamily.coordinate_frame` — the same prompt the runtime shows
that family. Everything else in the text stays byte for byte (the numbers are replaced in place, the
JSON is not re-serialised). :class:`ConversionStats` measures the rounding: each converted coordinate
taken back to pixels of its source size, and of the original image file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vilasr_ros import protocol
from vilasr_ros.families import ModelFamily, model_family

SOURCE_FAMILY = "qwen2_5_vl"
"""The family the released data is written in (ViLaSR-7B's base, Qwen2.5-VL-7B-Instruct)."""
SOURCE_IMAGE_MAX_PIXELS = protocol.prompts()["image_max_pixels"]["cold_start_sft"]
"""``image_max_pixels`` of the authors' two SFT runs (cold start and reflective, 1003520): the size
rule the released boxes were written under, whatever cap the new model trains at."""
SOURCE_MIN_PIXELS = 56 * 56
SOURCE_MAX_PIXELS = 12845056
"""Qwen2.5-VL-7B-Instruct ``preprocessor_config.json`` ``min_pixels`` / ``max_pixels``: the processor's
own limits after LLaMA-Factory's shrink (the shrink's ``image_max_pixels`` is the one that binds)."""

_OBJECT_RE = re.compile(r"\{[^{}]*\}")
_COORD_RE = re.compile(r"""(["'](?:bbox_2d|start_point_2d|end_point_2d)["']\s*:\s*)\[([^\[\]]*)\]""")
_CORNER_RE = re.compile(r"(bottom-right corner is \()(\d+), (\d+)(\))")
_CAPTION_RE = re.compile(r"(\(width: )(\d+)(, height: )(\d+)(\))")


def source_size(path: str, max_pixels: int = SOURCE_IMAGE_MAX_PIXELS) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((width, height) the authors' Qwen2.5-VL SFT saw, (width, height) of the file)`` for one
    image (module docstring).

    Raises:
        OSError: The file cannot be read.
    """
    from PIL import Image

    from vilasr_ros_training.chat import llamafactory_shrink

    with Image.open(path) as im:
        original = im.size
        shrunk = llamafactory_shrink(im, max_pixels)
    return protocol.resized_size(shrunk.width, shrunk.height, SOURCE_MAX_PIXELS, protocol.IMAGE_FACTOR,
                                 SOURCE_MIN_PIXELS), original


@dataclass
class ConversionStats:
    """What a conversion changed and how much the rounding cost.

    Attributes:
        examples: Conversations converted.
        boxes: ``bbox_2d`` arrays converted; ``points``: ``start_point_2d``/``end_point_2d`` arrays.
        skipped: Arrays left as written (an index naming no image, values that are not numbers).
        max_error_px: Largest |converted → pixels − written| over all coordinates, in pixels of the
            source size (the size the authors' model wrote them in).
        max_error_original_px: The same in pixels of the image file.
    """

    examples: int = 0
    boxes: int = 0
    points: int = 0
    skipped: int = 0
    max_error_px: float = 0.0
    max_error_original_px: float = 0.0
    sizes: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "boxes": self.boxes, "points": self.points, "skipped": self.skipped,
                "max_error_px": round(self.max_error_px, 4),
                "max_error_original_px": round(self.max_error_original_px, 4)}


def _numbers(body: str) -> list[float] | None:
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError:
        return None
    return values if len(values) in (2, 4) else None


def _convert_text(text: str, family: ModelFamily, sizes: list[tuple[tuple[int, int], tuple[int, int]]],
                  stats: ConversionStats) -> str:
    def one_object(match: re.Match) -> str:
        obj = match.group(0)
        index = re.search(r"""["']index["']\s*:\s*(\d+)""", obj)
        k = int(index.group(1)) - 1 if index else -1

        def one_array(m: re.Match) -> str:
            values = _numbers(m.group(2))
            if values is None or not 0 <= k < len(sizes):
                stats.skipped += 1
                return m.group(0)
            size, original = sizes[k]
            converted = family.from_pixels(values, size)
            back = family.to_pixels(converted, size)
            for j, (v, b) in enumerate(zip(values, back)):
                err = abs(b - v)
                stats.max_error_px = max(stats.max_error_px, err)
                scale = original[j % 2] / size[j % 2]
                stats.max_error_original_px = max(stats.max_error_original_px, err * scale)
            if len(values) == 4:
                stats.boxes += 1
            else:
                stats.points += 1
            return m.group(1) + "[" + ", ".join(str(v) for v in converted) + "]"

        return _COORD_RE.sub(one_array, obj)

    return _OBJECT_RE.sub(one_object, text)


def _restate_sizes(text: str, family: ModelFamily) -> str:
    fw, fh = family.coordinate_frame((0, 0))
    text = _CORNER_RE.sub(lambda m: f"{m.group(1)}{fw}, {fh}{m.group(4)}", text)
    return _CAPTION_RE.sub(lambda m: f"{m.group(1)}{fw}{m.group(3)}{fh}{m.group(5)}", text)


def convert_example(example: dict[str, Any], family: ModelFamily | str, stats: ConversionStats | None = None,
                    max_pixels: int = SOURCE_IMAGE_MAX_PIXELS) -> dict[str, Any]:
    """One trl-format example (``{"messages", "images"}``, Qwen2.5-VL pixels) in ``family``'s
    convention (module docstring). A ``pixels`` family gets the example back unchanged.

    Args:
        example: As :func:`vilasr_ros_training.data.load_sharegpt` returns it.
        family: The target family (name or profile).
        stats: Accumulates counts and rounding errors (:class:`ConversionStats`).
        max_pixels: The ``image_max_pixels`` the boxes were written under (the authors' 1003520).

    Raises:
        OSError: An image cannot be read (its size is needed).
    """
    family = model_family(family)
    if family.coordinates == model_family(SOURCE_FAMILY).coordinates:
        return example
    stats = stats if stats is not None else ConversionStats()
    sizes = []
    for path in example["images"]:
        if path not in stats.sizes:
            stats.sizes[path] = source_size(path, max_pixels)
        sizes.append(stats.sizes[path])

    def text_of(part_text: str, role: str) -> str:
        if role == "assistant":
            return _convert_text(part_text, family, sizes, stats)
        return _restate_sizes(part_text, family)

    messages = []
    for message in example["messages"]:
        content = message["content"]
        if isinstance(content, str):
            content = text_of(content, message["role"])
        else:
            content = [{**p, "text": text_of(p["text"], message["role"])} if p.get("type") == "text" else p
                       for p in content]
        messages.append({**message, "content": content})
    stats.examples += 1
    return {**example, "messages": messages}
