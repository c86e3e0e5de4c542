"""The model's tool calls as per-image annotation state, with the reference's merge (spec §3).

Source: AntResearchNLP/ViLaSR ``utils/edit_image.py`` (``merge_bbox_list``, ``merge_movement_list``,
``merge_bbox_movement``) and the order in which ``eval/infer.py`` / ``vllm_rollout_spmd_video.py``
fail on a tool call (:meth:`AnnotationState.plan`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from vilasr_ros.errors import ImageIndexError, ModelOutputError, ToolCallEndsError
from vilasr_ros.protocol import FINISH_TOOL_ERROR, FINISH_TOOL_GEN_ERROR, MAX_COORDINATE_PX


def _number(value: Any, what: str, *, text: bool = False) -> float:
    """A coordinate as a number. ``text``: a line point may be a numeric string, as the reference
    draws it with ``int(point[0])`` (``utils/edit_image.py`` L117-121); box corners are divided
    first (L59-62), so a string there fails in the reference too."""
    if text and isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ModelOutputError(f"{what} is not a number: {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelOutputError(f"{what} is not a number: {value!r}")
    if not math.isfinite(value) or abs(value) > MAX_COORDINATE_PX:
        raise ModelOutputError(f"{what} is out of range: {value!r}")
    return value


def _check_item(item: dict, kind: str) -> None:
    label = item.get("label")
    if not isinstance(label, str):
        raise ModelOutputError(f"{kind} label must be a string, got {label!r}")
    if kind == "box":
        coords = item["bbox_2d"]
        if not isinstance(coords, (list, tuple)):
            raise ModelOutputError(f"bbox_2d of {label!r} is not a list: {coords!r}")
        if len(coords) == 4:  # the reference skips drawing other lengths, we do too
            for c in coords:
                _number(c, f"bbox_2d of {label!r}")
    else:
        for key in ("start_point_2d", "end_point_2d"):
            point = item[key]
            if not isinstance(point, (list, tuple)) or len(point) < 2:
                raise ModelOutputError(f"{key} of {label!r} is not an [x, y] point: {point!r}")
            for c in point[:2]:
                _number(c, f"{key} of {label!r}", text=True)


@dataclass
class Edit:
    """One new image made by a tool turn.

    Attributes:
        source_index: 0-based index of the image that was drawn on (a copy of it is the canvas).
        new_index: 0-based index the new image gets in the model's image list.
        boxes: The merged boxes drawn on it (dicts as the model wrote them).
        lines: The merged lines drawn on it.
    """

    source_index: int
    new_index: int
    boxes: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)


class AnnotationState:
    """Per-image boxes and lines with the reference's label-keyed merge (spec §3).

    Editing image i makes a new image whose state is i's state merged with the new items: a new
    item replaces the old one with the same label (keeping its position in the list), other old
    items stay, and the kind of item not mentioned (boxes or lines) is carried over from i.
    """

    def __init__(self, n_images: int):
        self.boxes: dict[int, list[dict]] = {i: [] for i in range(n_images)}
        self.lines: dict[int, list[dict]] = {i: [] for i in range(n_images)}

    @staticmethod
    def _merge(old: list[dict], new: list[dict]) -> list[dict]:
        by_label: dict[str, dict] = {}
        for item in new:
            by_label[item["label"]] = item
        merged = []
        for item in old:
            merged.append(by_label.pop(item["label"]) if item["label"] in by_label else item)
        merged.extend(by_label.values())
        return copy.deepcopy(merged)

    def plan(self, boxes: list[dict], lines: list[dict], n_images: int) -> list[Edit]:
        """Group a turn's items by target image and compute each new image's state.

        Nothing is changed until :meth:`commit`; a turn that fails validation leaves the state as it
        was.

        Args:
            boxes: Boxes from :func:`parse_tool_calls`.
            lines: Lines from :func:`parse_tool_calls`.
            n_images: Number of images the model has seen so far.

        Returns:
            One :class:`Edit` per edited image, in the reference's order (first mention among boxes,
            then among lines).

        Raises:
            ModelOutputError: An index that is not an existing image's, a bad label or coordinates.
        """
        # The reference's order of failure (eval/infer.py L175-233, vllm_rollout_spmd_video.py
        # L140-251): items are grouped by index first — an item without one raises KeyError, which
        # ends the sample (ToolGenError); then, group by group in order of first mention, an index of 0
        # or less ends it (merge_bbox_movement returns -1: ToolError), and an index past the last image
        # raises IndexError when the image is fetched. ``True`` is the index 1 there (True - 1 == 0).
        for item in [*boxes, *lines]:
            if "index" not in item:
                raise ToolCallEndsError(f"a tool item without 'index': {item!r}", FINISH_TOOL_GEN_ERROR)
        groups: dict[int, tuple[list[dict], list[dict]]] = {}
        for kind, items in (("box", boxes), ("line", lines)):
            for item in items:
                index = item["index"]
                if not isinstance(index, int):  # a float or a string: the reference's arithmetic or list
                    raise ModelOutputError(f"image index must be an integer, got {index!r}")  # lookup fails
                group = groups.setdefault(int(index) - 1, ([], []))
                group[0 if kind == "box" else 1].append(item)
        for source in groups:
            if source < 0:
                raise ToolCallEndsError(f"image index {source + 1} is not an image (indices start at 1)",
                                        FINISH_TOOL_ERROR)
            if source >= n_images:
                raise ImageIndexError(f"image index {source + 1} does not exist (images 1..{n_images})")
        for source, (group_boxes, group_lines) in groups.items():
            for item in group_boxes:
                _check_item(item, "box")
            for item in group_lines:
                _check_item(item, "line")
        edits = []
        for pos, (source, (new_boxes, new_lines)) in enumerate(groups.items()):
            edit = Edit(source_index=source, new_index=n_images + pos)
            old_boxes, old_lines = self.boxes.get(source, []), self.lines.get(source, [])
            edit.boxes = self._merge(old_boxes, new_boxes) if new_boxes else copy.deepcopy(old_boxes)
            edit.lines = self._merge(old_lines, new_lines) if new_lines else copy.deepcopy(old_lines)
            edits.append(edit)
        return edits

    def commit(self, edit: Edit) -> None:
        """Record the state of an image that was drawn and appended."""
        self.boxes[edit.new_index] = edit.boxes
        self.lines[edit.new_index] = edit.lines
