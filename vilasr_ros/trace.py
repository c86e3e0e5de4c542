"""``Trace``: everything one run of the draw-to-reason loop did, savable and re-renderable.

On disk: ``DIR/trace.json`` plus ``DIR/images/image_<k>.png`` with k the 1-based index the model
uses for the image ("The index of the given image is k"); traces written before that naming
(0-based, the reference's ``save_samples_info``) still load. A trace is written into a temporary
sibling folder and renamed into place, so a reader never sees half a trace; text that cannot be
encoded (lone surrogates) is replaced, never fatal.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vilasr_ros.protocol import EOS_TOKEN, FINISH_LENGTH, render_chat
from vilasr_ros.sanitize import clean_json


@dataclass
class TraceImage:
    """One image of the model's image list.

    Attributes:
        index: 1-based index the model uses for it.
        size: ``(width, height)`` in pixels of the resized image.
        source_frame: Position of the input frame it comes from (0-based, in the order given to the
            loop); for a drawn image, the source frame of the image it was drawn on.
        drawn_from: 1-based index of the image it is a drawn copy of; None for inputs.
        turn: 0-based turn that created it; None for inputs.
        boxes: Boxes drawn on it (the merged state; empty for inputs).
        lines: Lines drawn on it.
    """

    index: int
    size: tuple[int, int]
    source_frame: int
    drawn_from: int | None = None
    turn: int | None = None
    boxes: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)


@dataclass
class Turn:
    """One model turn.

    Attributes:
        text: What the model wrote (without the end token).
        finish_reason: The engine's ``stop``/``length``.
        boxes: Boxes parsed from it.
        lines: Lines parsed from it.
        new_images: 1-based indices of the images it created.
        prompt_tokens: Tokens the engine prefilled for this turn (None if unknown).
        completion_tokens: Tokens generated.
        cached_tokens: Prompt tokens reused from a cache.
        engine_s: Seconds inside the engine.
        host_s: Seconds of host work after the engine returned (parse, merge, draw, prompt update).
        error: Why the loop stopped on this turn, if it did on a tool error (or why it was discarded).
        discarded: The turn's tool call failed to draw and the turn was dropped from the
            conversation (``ReasonerConfig.on_tool_error="retry"``); kept here as a record only.
    """

    text: str
    finish_reason: str
    boxes: list[dict] = field(default_factory=list)
    lines: list[dict] = field(default_factory=list)
    new_images: list[int] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    engine_s: float = 0.0
    host_s: float = 0.0
    error: str | None = None
    discarded: bool = False


@dataclass
class Trace:
    """The record of one query through the loop.

    Attributes:
        question: The question as asked.
        problem_type: Reference key of the answer type.
        options: Multiple-choice options.
        kind: ``single``, ``video`` or ``multi_view``.
        messages: Conversation as HF chat messages up to the last prompt (images as ``image_index``).
        turns: Every model turn.
        images: The model's image list (inputs then drawn images).
        answer: Content of ``<answer>`` in the last turn, or None.
        finish_reason: ``stop``, ``length``, ``ToolError`` or ``TooManyImages`` (spec §4).
        error: A message when the loop ended on an error.
        engine: What answered (``Engine.describe()``).
        settings: max_pixels, max_turns, max_images, sampling.
        total_s: Wall time of the whole loop.
        target: Grounded target (filled by grounding; None when none was asked or found).
        frames: The input frames when they came from a frame source (``Frame.record()``: index,
            stamp, frame ids, intrinsics, ``T_world_camera``), in the order given; empty otherwise.
        pil_images: The images themselves (not serialised in JSON; saved as PNG).
    """

    question: str
    problem_type: str
    options: list[str] | None
    kind: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    images: list[TraceImage] = field(default_factory=list)
    answer: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    total_s: float = 0.0
    target: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    pil_images: list = field(default_factory=list, repr=False)

    @property
    def chat_text(self) -> str:
        """The full Qwen2.5-VL chat text, as the reference's ``sequence`` (spec §8 ``final_sequence``).

        The conversation up to the last prompt rendered with the chat template, then the last turn,
        then ``<|im_end|>`` unless the last turn hit the token limit.
        """
        turns = self.kept_turns
        if not turns:
            return render_chat(self.messages, add_generation_prompt=True)
        text = render_chat(self.messages, add_generation_prompt=True) + turns[-1].text
        if self.finish_reason != FINISH_LENGTH:
            text += EOS_TOKEN
        return text

    @property
    def kept_turns(self) -> list[Turn]:
        """The turns that are part of the conversation (all but the discarded ones)."""
        return [t for t in self.turns if not t.discarded]

    @property
    def model_output(self) -> str:
        """The last kept turn's text (the reference's ``model_output``)."""
        turns = self.kept_turns
        return turns[-1].text if turns else ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("pil_images")
        data["chat_text"] = self.chat_text
        data["images"] = [dict(img, path=f"images/image_{img['index']}.png") for img in data["images"]]
        return clean_json(data)

    def save(self, directory: str | Path) -> Path:
        """Write ``trace.json`` and ``images/image_<k>.png`` (k = the model's 1-based image index),
        atomically: into a temporary sibling folder, then renamed over ``directory``.

        Returns:
            Path of ``trace.json``.

        Raises:
            OSError: The folder cannot be written (nothing is left behind at ``directory``).
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            (tmp / "images").mkdir(parents=True)
            for info, image in zip(self.images, self.pil_images):
                image.save(tmp / "images" / f"image_{info.index}.png", compress_level=1)  # lossless; 4x faster than 6
            text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
            with open(tmp / "trace.json", "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            if directory.exists():
                shutil.rmtree(directory)
            os.rename(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory / "trace.json"

    @staticmethod
    def image_paths(directory: str | Path, n_images: int | None = None) -> list[Path]:
        """Paths of a saved trace's images in the model's order (1-based names, or the older 0-based).

        Args:
            directory: The trace folder.
            n_images: How many (default: read ``trace.json``).
        """
        directory = Path(directory)
        if n_images is None:
            n_images = len(json.loads((directory / "trace.json").read_text(encoding="utf-8"))["images"])
        first = 0 if (directory / "images" / "image_0.png").is_file() else 1
        return [directory / "images" / f"image_{first + k}.png" for k in range(n_images)]

    @classmethod
    def load(cls, directory: str | Path) -> "Trace":
        """Read a saved trace (images opened lazily from ``images/``).

        Raises:
            OSError: Missing files. ValueError: ``trace.json`` is not a trace.
        """
        from PIL import Image

        directory = Path(directory)
        data = json.loads((directory / "trace.json").read_text(encoding="utf-8"))
        data.pop("chat_text", None)
        images = []
        for img in data.pop("images"):
            img.pop("path", None)
            img["size"] = tuple(img["size"])
            images.append(TraceImage(**img))
        try:
            turns = [Turn(**t) for t in data.pop("turns")]
            trace = cls(**data, turns=turns, images=images)
        except TypeError as exc:
            raise ValueError(f"{directory / 'trace.json'} is not a vilasr trace: {exc}") from exc
        trace.pil_images = [Image.open(p) for p in cls.image_paths(directory, len(images))]
        return trace
