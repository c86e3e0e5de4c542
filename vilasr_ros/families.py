"""Model families: what differs between Qwen2.5-VL (ViLaSR) and Qwen3-VL in the drawing loop.

A :class:`ModelFamily` is a frozen, validated profile: the resize rule (patch × merge factor, pixel
limits), the vision-token expansion (``merge_size``), the coordinate convention of tool calls and
answers, the chat's stop token and the transformers class that loads the weights. It is found by
name (:func:`model_family`) or from a model folder's ``config.json`` (:func:`detect_family`).

Coordinates. Every part of the project past the parser (drawing, grounding, traces, the trace page)
works in pixels of the *resized* image the model saw (``protocol`` module docstring, spec §1). A
family whose model writes another convention converts at the boundary, both ways:

- ``qwen2_5_vl`` (ViLaSR-7B; the default): absolute pixels of the resized image (Qwen2.5-VL's
  grounding convention) — :meth:`ModelFamily.to_pixels` is the identity, so every byte of the ViLaSR
  conversation stays as it is;
- ``qwen3_vl``: relative coordinates on a 0–1000 grid of the image (Qwen3-VL's grounding convention,
  QwenLM/Qwen3-VL cookbooks ``2d_grounding``: ``x_px = x / 1000 * width``). Its prompts say so: the
  system prompt's bottom-right corner and each image caption give ``(1000, 1000)``
  (:meth:`ModelFamily.coordinate_frame`), and its training data is converted to that grid
  (``vilasr_ros_training.convert``).

Resize rule: ``qwen_vl_utils.smart_resize`` with ``factor = patch_size * merge_size`` (28 for
Qwen2.5-VL, 32 for Qwen3-VL) and ``min_pixels = 4 * factor**2`` (qwen-vl-utils'
``IMAGE_MIN_TOKEN_NUM = 4``): :func:`vilasr_ros.protocol.resized_size` with the family's numbers. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from vilasr_ros.errors import ConfigError

COORDINATES = ("pixels", "relative_1000")
"""Coordinate conventions: absolute pixels of the resized image, or 0–1000 relative to it."""
RELATIVE_SCALE = 1000.0


@dataclass(frozen=True)
class ModelFamily:
    """One model family's profile (module docstring).

    Attributes:
        name: Registry name (``qwen2_5_vl``, ``qwen3_vl``).
        model_types: ``config.json`` ``model_type`` values of this family.
        model_class: transformers class that loads the weights.
        patch_size: Vision patch side in pixels (14, 16).
        merge_size: Patches merged per side into one vision token (2).
        coordinates: ``pixels`` or ``relative_1000`` (:data:`COORDINATES`).
        stop_token: End of an assistant turn in the chat template.
        sft_template: LLaMA-Factory template whose tokens SFT reproduces (``qwen2_vl``;
            ``qwen3_vl_nothink``, the Instruct models' template) — ``src/llamafactory/data/template.py``.
        default_system: The system message that template (and the model's chat template) adds when
            a conversation has none (None: no system turn).
    """

    name: str
    model_types: tuple[str, ...]
    model_class: str
    patch_size: int
    merge_size: int
    coordinates: str
    stop_token: str = "<|im_end|>"
    sft_template: str = "qwen2_vl"
    default_system: str | None = "You are a helpful assistant."

    def __post_init__(self):
        if self.coordinates not in COORDINATES:
            raise ConfigError(f"model family {self.name}: coordinates must be one of {COORDINATES}, got {self.coordinates!r}")
        if self.patch_size < 1 or self.merge_size < 1:
            raise ConfigError(f"model family {self.name}: patch_size and merge_size must be >= 1")

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this: ``patch_size * merge_size`` pixels."""
        return self.patch_size * self.merge_size

    @property
    def min_pixels(self) -> int:
        """Smallest resized area: 4 vision tokens (qwen-vl-utils)."""
        return 4 * self.factor * self.factor

    def resized_size(self, width: int, height: int, max_pixels: int) -> tuple[int, int]:
        """``(width, height)`` of the image this family's model sees for a ``width × height`` image.

        Raises:
            QueryError: degenerate size, aspect ratio over 200, or a side the rule takes to 0.
        """
        from vilasr_ros import protocol

        return protocol.resized_size(width, height, max_pixels, self.factor, self.min_pixels)

    def coordinate_frame(self, size: tuple[int, int]) -> tuple[int, int]:
        """The ``(width, height)`` the prompts give the model for an image of resized ``size``: the
        bottom-right corner of its coordinate frame (ViLaSR's system prompt "the bottom-right corner
        is ({width}, {height})" and the per-image captions, spec §2). ``pixels``: the resized size
        itself (ViLaSR, unchanged); ``relative_1000``: ``(1000, 1000)`` for every image, the grid the
        model's boxes are written on."""
        if self.coordinates == "pixels":
            return size
        return (int(RELATIVE_SCALE), int(RELATIVE_SCALE))

    def to_pixels(self, coords, size: tuple[int, int]) -> list[float]:
        """Model coordinates → pixels of the resized image.

        Args:
            coords: ``[x1, y1, x2, y2]`` (a box) or ``[x, y]`` (a point) as the model wrote them.
            size: ``(width, height)`` of the resized image the coordinates refer to.

        Returns:
            The same shape in resized-image pixels (floats; unchanged for ``pixels`` families).
        """
        values = [float(v) for v in coords]
        if self.coordinates == "pixels":
            return values
        w, h = size
        return [v / RELATIVE_SCALE * (w if k % 2 == 0 else h) for k, v in enumerate(values)]

    def from_pixels(self, coords, size: tuple[int, int]) -> list[int]:
        """Pixels of the resized image → the model's convention, rounded to integers as a model writes
        them (training data conversion; the teacher). Inverse of :meth:`to_pixels` up to rounding:
        at most ``size / 2000`` pixels off for ``relative_1000``."""
        if self.coordinates == "pixels":
            return [int(round(float(v))) for v in coords]
        w, h = size
        return [int(round(float(v) / (w if k % 2 == 0 else h) * RELATIVE_SCALE)) for k, v in enumerate(coords)]


FAMILIES: dict[str, ModelFamily] = {
    f.name: f for f in (
        ModelFamily("qwen2_5_vl", ("qwen2_5_vl",), "Qwen2_5_VLForConditionalGeneration", patch_size=14, merge_size=2,
                    coordinates="pixels"),
        ModelFamily("qwen3_vl", ("qwen3_vl",), "Qwen3VLForConditionalGeneration", patch_size=16, merge_size=2,
                    coordinates="relative_1000", sft_template="qwen3_vl_nothink", default_system=None),
    )
}
DEFAULT_FAMILY = "qwen2_5_vl"


def model_family(name: str | ModelFamily | None = None) -> ModelFamily:
    """The family called ``name`` (``None``: the default, ViLaSR's ``qwen2_5_vl``).

    Raises:
        ConfigError: an unknown name; the message lists the known ones.
    """
    if isinstance(name, ModelFamily):
        return name
    key = DEFAULT_FAMILY if name in (None, "") else str(name).strip().lower().replace("-", "_").replace(".", "_")
    if key not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[key]


def family_of_model_type(model_type: str | None) -> ModelFamily | None:
    """The family whose ``config.json`` ``model_type`` this is, or None."""
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def detect_family(model_dir: str | Path) -> ModelFamily | None:
    """The family of a Hugging Face model folder, from its ``config.json`` ``model_type``.

    Returns:
        The family, or ``None`` when the folder has no readable ``config.json`` (a served model, a
        hub name): the caller falls back to the default or an explicit ``--model-family``.

    Raises:
        ConfigError: ``config.json`` names a ``model_type`` no family has (the message lists them).
    """
    path = Path(model_dir) / "config.json"
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    found = family_of_model_type(model_type)
    if found is not None:
        return found
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise ConfigError(f"{path}: model_type {model_type!r} is not a known model family ({known}); "
                      "set the family explicitly (--model-family) if it is one of them")


def resolve_family(name: str | ModelFamily | None, model_dir: str | Path | None = None) -> ModelFamily:
    """An explicit ``name`` (or profile) wins; else the family detected from ``model_dir``; else the default."""
    if name:
        return model_family(name)
    if model_dir is not None:
        found = detect_family(model_dir)
        if found is not None:
            return found
    return model_family(None)


def _numbers(values, n: int) -> list[float] | None:
    if not isinstance(values, (list, tuple)) or len(values) != n:
        return None
    try:
        out = [float(v) for v in values if not isinstance(v, bool)]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def calls_to_pixels(family: ModelFamily, boxes: list[dict], lines: list[dict],
                    sizes: list[tuple[int, int]]) -> tuple[list[dict], list[dict]]:
    """Parsed tool calls (:func:`vilasr_ros.protocol.parse_tool_calls`) with their coordinates in
    pixels of the resized image each one names by its 1-based ``index``.

    For a ``pixels`` family the lists are returned as they are (the ViLaSR path: nothing changes). An
    item whose index or coordinates are not usable is left as written, for the drawing step to reject
    with the error it gives today (an index that does not exist, coordinates that are not numbers).

    Args:
        family: The model's family.
        boxes: Items with ``bbox_2d`` ``[x1, y1, x2, y2]``.
        lines: Items with ``start_point_2d`` / ``end_point_2d`` ``[x, y]``.
        sizes: ``(width, height)`` of every image shown so far, in order.

    Returns:
        ``(boxes, lines)``: new dicts where coordinates were converted.
    """
    if family.coordinates == "pixels":
        return boxes, lines

    def size_of(item: dict) -> tuple[int, int] | None:
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, (int, float)) or index != int(index):
            return None
        return sizes[int(index) - 1] if 1 <= int(index) <= len(sizes) else None

    def convert(item: dict, keys: tuple[str, ...], n: int) -> dict:
        size = size_of(item)
        values = [_numbers(item.get(k), n) for k in keys]
        if size is None or any(v is None for v in values):
            return item
        return {**item, **{k: family.to_pixels(v, size) for k, v in zip(keys, values)}}

    return ([convert(b, ("bbox_2d",), 4) for b in boxes],
            [convert(ln, ("start_point_2d", "end_point_2d"), 2) for ln in lines])
