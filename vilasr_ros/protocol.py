"""The ViLaSR conversation protocol: prompts, image sizes, tool-call parsing (annotation state: :mod:`vilasr_ros.annotations`).

Everything here reproduces the authors' reference (AntResearchNLP/ViLaSR commit 61669c0,
``eval/infer.py`` and ``utils/edit_image.py``) as written down in the spec (``test/data/spec/VILASR_PROTOCOL.md``).
The exact strings live in ``resources/vilasr_prompts.json`` (a copy of the spec's file; a test keeps
them equal). Nothing in this module imports torch, transformers or rclpy.

Coordinates: every ``bbox_2d`` ``[x1, y1, x2, y2]`` and ``start_point_2d``/``end_point_2d`` ``[x, y]``
is in pixels of the *resized* image the model saw, origin top-left (spec §1).
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
from enum import Enum
from importlib import resources
from typing import Any

from vilasr_ros.errors import QueryError

IMAGE_FACTOR = 28
"""Qwen2.5-VL patch (14) × spatial merge (2): resized sides are multiples of this (spec §1)."""
MIN_PIXELS = 4 * 28 * 28
"""Smallest resized area, as the reference's ``qwen_vl_utils.fetch_image``."""

VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
EOS_TOKEN = "<|im_end|>"
MAX_COORDINATE_PX = 100_000
"""A coordinate beyond this (in absolute value) is hostile output, not a drawing (spec §4)."""
MAX_BLOCK_CHARS = 256 * 1024
"""A ```json block longer than this is skipped unread: 16384 tokens (the turn cap) are ~64 KB, so no
turn the reference could generate holds one; ``ast.literal_eval`` of megabytes takes minutes."""

BASELINE_SYSTEM_PROMPT = "You are a helpful assistant."
"""System message of the no-tools baseline (``prompt_layout="baseline"``): the Qwen chat templates'
default, with nothing about the drawing tools."""

PROBLEM_TYPES = ("multiple choice", "free-form", "regression", "numerical", "vci")



class PromptKind(str, Enum):
    """Layout of the first turn (spec §2): one image, a video's frames, or views of one scene."""

    SINGLE = "single"
    VIDEO = "video"
    MULTI_VIEW = "multi_view"

    def __str__(self) -> str:
        return self.value


def default_kind(n_images: int) -> PromptKind:
    """The layout a query gets when it names none: ``single`` for one image, else ``video`` (the
    reference's rule, ``eval/infer.py``)."""
    return PromptKind.SINGLE if n_images == 1 else PromptKind.VIDEO


class FinishReason(str, Enum):
    """Why a run ended. ``stop``/``length`` come from the model call; ``ToolError``, ``ToolGenError``,
    ``IndexError``, ``TooManyImages`` and ``max_tokens`` are the reference rollout's names (``vllm_rollout_spmd_video.py``); ``error``,
    ``cancelled`` and ``rejected`` are this package's (engine failure, cancel or deadline, refused
    before it ran); ``lockstep`` marks an RL trajectory its batch left with no call (an empty last
    turn, ``ReasonerConfig.batch_max_turns``). Members are strings: they compare equal to, and serialise as, their values."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_ERROR = "ToolError"
    TOOL_GEN_ERROR = "ToolGenError"
    INDEX_ERROR = "IndexError"
    TOO_MANY_IMAGES = "TooManyImages"
    MAX_TOKENS = "max_tokens"
    ERROR = "error"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    LOCKSTEP = "lockstep"

    def __str__(self) -> str:
        return self.value


FINISH_STOP = FinishReason.STOP
FINISH_LENGTH = FinishReason.LENGTH
FINISH_TOOL_ERROR = FinishReason.TOOL_ERROR
FINISH_TOOL_GEN_ERROR = FinishReason.TOOL_GEN_ERROR
FINISH_INDEX_ERROR = FinishReason.INDEX_ERROR
FINISH_TOO_MANY_IMAGES = FinishReason.TOO_MANY_IMAGES
FINISH_MAX_TOKENS = FinishReason.MAX_TOKENS
"""A trajectory that spent ``ReasonerConfig.max_response_tokens`` (the RL rollout's name for it)."""


@functools.lru_cache(maxsize=1)
def prompts() -> dict[str, Any]:
    """The exact ViLaSR strings and defaults (``vilasr_prompts.json``), loaded once."""
    text = resources.files("vilasr_ros.resources").joinpath("vilasr_prompts.json").read_text("utf-8")
    return json.loads(text)


def normalize_problem_type(problem_type: str) -> str:
    """Map user spellings (``multiple-choice``, ``Multiple Choice``) to the reference's keys.

    Raises:
        QueryError: Unknown problem type.
    """
    key = str(problem_type).strip().lower().replace("-", " ").replace("_", " ")
    key = "free-form" if key == "free form" else key
    if key not in PROBLEM_TYPES:
        raise QueryError(f"unknown problem type {problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}")
    return key


# ----------------------------------------------------------------------------- images


def resized_size(width: int, height: int, max_pixels: int, factor: int = IMAGE_FACTOR,
                 min_pixels: int = MIN_PIXELS) -> tuple[int, int]:
    """Size Qwen2.5-VL's ``smart_resize`` gives an image (spec §1), as the reference computes it.

    The formula of ``qwen_vl_utils.vision_process.smart_resize`` — what the reference's
    ``fetch_image`` applies in evaluation (``eval/infer.py``) and in the RL data loader — with factor
    28 and min_pixels 3136: each side rounded to a multiple of 28 *and at least 28*, then, when the
    area is over ``max_pixels`` (under ``min_pixels``), both sides scaled down (up) by the same factor
    and floored (ceiled) to multiples of 28. transformers' own ``smart_resize`` differs only for a side
    of 14 px or less (no clamp to 28 before the area test: 1×100 → 28×560 there, 28×112 here).

    Args:
        width: Sensor image width in pixels.
        height: Sensor image height in pixels.
        max_pixels: Area cap, e.g. 351232 (evaluation) or 200704 (RL training).
        factor: Side multiple (28: Qwen2.5-VL; another family's, :mod:`vilasr_ros.families`).
        min_pixels: Smallest area (3136: Qwen2.5-VL).

    Returns:
        ``(resized_width, resized_height)``, multiples of ``factor``.

    Raises:
        QueryError: Degenerate size, aspect ratio over 200, or a side that the formula takes to 0.

    >>> resized_size(640, 480, 351232), resized_size(100, 1, 351232)
    ((644, 476), (112, 28))
    """
    f = factor
    if width < 1 or height < 1:
        raise QueryError(f"image of size {width}x{height} cannot be shown to the model")
    if max(height, width) / min(height, width) > 200:
        raise QueryError(f"image of size {width}x{height}: absolute aspect ratio must be smaller than 200, "
                         f"got {max(height, width) / min(height, width)}")
    h_bar = max(f, round(height / f) * f)
    w_bar = max(f, round(width / f) * f)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / f) * f
        w_bar = math.floor(width / beta / f) * f
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    if h_bar < f or w_bar < f:  # qwen_vl_utils would hand the processor a zero-sized image
        raise QueryError(f"image of size {width}x{height} resizes to {w_bar}x{h_bar} under max_pixels {max_pixels}")
    return int(w_bar), int(h_bar)


def to_rgb(image):
    """An RGB copy of a PIL image as ``qwen_vl_utils.vision_process.to_rgb`` makes it: RGBA
    composited over white, every other mode through ``convert("RGB")`` (what the reference's
    ``fetch_image`` feeds the model in evaluation, RL and stage-2 sampling).

    >>> from PIL import Image
    >>> to_rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 0))).getpixel((0, 0))
    (255, 255, 255)
    """
    from PIL import Image

    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


def resize_for_model(image, max_pixels: int, family=None):
    """Resize a PIL image the way the reference does before the model sees it (spec §1).

    ``qwen_vl_utils.fetch_image``: convert to RGB (alpha over white), then ``Image.resize`` to the
    ``smart_resize`` size with Pillow's default (bicubic) filter. An image already at its target
    size is returned as an RGB copy, untouched.

    Args:
        image: ``PIL.Image.Image`` of any mode.
        max_pixels: Area cap.
        family: A :class:`vilasr_ros.families.ModelFamily` whose resize rule applies (None:
            Qwen2.5-VL's, :func:`resized_size`).

    Returns:
        RGB ``PIL.Image.Image`` whose sides are multiples of 28 (the family's factor).
    """
    image = to_rgb(image)
    if family is None:
        size = resized_size(image.width, image.height, max_pixels)
    else:
        size = family.resized_size(image.width, image.height, max_pixels)
    if size == image.size:
        return image.copy()
    return image.resize(size)


# ----------------------------------------------------------------------------- first turn


RL_VIDEO_PREFIX = ("These are frames from a video, numbered from 1 to 16 in sequence. That is, the index of each image "
                   "is 1, 2, 3, ..., 16.\n\nAnswer the quesntion with appropriate tools:\n")
"""``construct_video_prompt`` (``verl/utils/dataset_multimodal.py`` L211-225): "16" whatever the frame count."""
LAYOUTS = ("eval", "rl", "baseline")


def build_question_text(
    question: str,
    problem_type: str,
    options: list[str] | None = None,
    *,
    n_frames: int = 1,
    kind: str = "single",
    layout: str = "eval",
) -> str:
    """The user text of the first turn, after the image(s) (spec §2).

    Args:
        question: The question as asked.
        problem_type: One of :data:`PROBLEM_TYPES` (user spellings accepted).
        options: Multiple-choice options such as ``["A. yes", "B. no"]``; used only for
            multiple choice, as the reference does.
        n_frames: Number of frames shown (video-style prompts name it).
        kind: ``"single"`` (one image), ``"video"`` (k frames of a walkthrough, VSI-Bench style) or
            ``"multi_view"`` (k views, SPAR/MMSI style: captions without the video preamble).
        layout: ``eval`` (``eval/infer.py``, what the released weights are evaluated with), ``baseline``
            (the same question, options and answer-type line without the ``### Question:`` wrapper that
            asks for tool use: the no-tools baseline), or ``rl``
            (the RL stage's data loader, AntResearchNLP/ViLaSR ``verl/utils/dataset_multimodal.py``:
            ``construct_video_prompt`` L211-257 for ``video``/``spatial_r1`` items — :data:`RL_VIDEO_PREFIX`,
            options stripped — and ``construct_maze_vqa_prompt`` L259-294 for ``maze``/``vqa`` items;
            both wrap the text in ``PROMPT_TEMPLATE`` (L95-100), the same ``### Question:`` template as
            evaluation; ``multi_view`` is laid out as ``video``).

    Returns:
        ``question_template.format(question=...)``.

    Raises:
        QueryError: Empty question or unknown type/kind.
    """
    p = prompts()
    ptype = normalize_problem_type(problem_type)
    if not isinstance(question, str) or not question.strip():
        raise QueryError("the question is empty")
    opts = ""
    if ptype == "multiple choice" and options is not None:  # 'options' in x: an empty list still adds "\n"
        opts = "\n" + "\n".join(str(o).strip() if layout == "rl" else str(o) for o in options)
    suffix = p["answer_type_suffix"][ptype]
    if layout == "rl":
        if kind not in tuple(PromptKind):
            raise QueryError(f"unknown prompt kind {kind!r}; use single, video or multi_view")
        if kind == "single":
            body = question + opts + p["single_image_question_suffix"] + suffix
        else:
            body = RL_VIDEO_PREFIX + question + opts + suffix
        return p["question_template"].format(question=body)
    if layout not in ("eval", "baseline"):
        raise QueryError(f"unknown prompt layout {layout!r}; use eval, rl or baseline")
    if kind == "single":
        body = question + opts + p["single_image_question_suffix"] + suffix
    elif kind == "video":
        body = p["video_question_prefix"].format(n=n_frames) + question + opts + suffix
    elif kind == "multi_view":
        body = question + opts + suffix
    else:
        raise QueryError(f"unknown prompt kind {kind!r}; use single, video or multi_view")
    return body if layout == "baseline" else p["question_template"].format(question=body)


def initial_messages(
    image_sizes: list[tuple[int, int]],
    question: str,
    problem_type: str,
    options: list[str] | None = None,
    kind: str | None = None,
    layout: str = "eval",
) -> list[dict[str, Any]]:
    """System and first user message in Hugging Face chat format (spec §2; ``layout`` as in
    :func:`build_question_text`: the RL stage's first turn differs only in the question text).

    Images appear as ``{"type": "image", "image_index": k}`` (k = 0-based position in the model's
    image list); :func:`render_chat` turns them into Qwen2.5-VL vision placeholders.

    Args:
        image_sizes: ``(width, height)`` of every *resized* input image, in order.
        question: The question.
        problem_type: Answer type.
        options: Multiple-choice options.
        kind: ``single``/``video``/``multi_view``; default ``single`` for one image, else ``video``.

    Returns:
        ``[system_message, user_message]``.

    Raises:
        QueryError: No images, or a bad question.
    """
    if not image_sizes:
        raise QueryError("at least one image is needed")
    kind = kind or default_kind(len(image_sizes))
    if kind == "single" and len(image_sizes) != 1:
        raise QueryError(f"kind 'single' takes one image, got {len(image_sizes)}")
    p = prompts()
    width, height = image_sizes[0]
    if layout == "baseline":  # no tools offered: the chat template's own default system message
        system = {"role": "system", "content": BASELINE_SYSTEM_PROMPT}
    else:
        system = {"role": "system", "content": p["system_prompt"].format(width=width, height=height)}
    text = build_question_text(question, problem_type, options, n_frames=len(image_sizes), kind=kind, layout=layout)
    if kind == "single":
        content = [{"type": "image", "image_index": 0}, {"type": "text", "text": text}]
    else:
        content = []
        for i in range(len(image_sizes)):
            caption = p["per_image_caption"].format(i=i + 1, w=width, h=height)
            content += [{"type": "image", "image_index": i}, {"type": "text", "text": caption}]
        content.append({"type": "text", "text": text})
    return [system, {"role": "user", "content": content}]


def continuation_message(
    new_images: list[tuple[int, tuple[int, int]]],
    *,
    final: bool,
    several: bool | None = None,
) -> dict[str, Any]:
    """The user message that shows freshly drawn images (spec §3, reference ``multi_turn_generate``).

    One image: ``[image, "\\n" + prompt + "\\n"]``. Several: each image followed by its caption,
    the last by the intermediate/final prompt, then ``"\\n\\n"`` — exactly the reference's
    ``intermediate_template`` once rendered by the Qwen2.5-VL chat template.

    Args:
        new_images: ``(image_index_0_based, (width, height))`` of each new image, in order.
        final: Use ``final_prompt`` (turn budget or image budget reached) for the last image.
        several: The turn drew several images (the reference's layout follows the images drawn, even
            when the image cap shows only one of them); None: ``len(new_images) > 1``.

    Returns:
        A user message.
    """
    p = prompts()
    last_template = p["final_prompt"] if final else p["intermediate_prompt"]
    if not (len(new_images) > 1 if several is None else several):
        k, (w, h) = new_images[0]
        text = last_template.format(current_image_idx=k + 1, width=w, height=h)
        return {
            "role": "user",
            "content": [{"type": "image", "image_index": k}, {"type": "text", "text": "\n" + text + "\n"}],
        }
    content: list[dict[str, Any]] = []
    for pos, (k, (w, h)) in enumerate(new_images):
        content.append({"type": "image", "image_index": k})
        if pos < len(new_images) - 1:
            text = p["per_image_caption"].format(i=k + 1, w=w, h=h)
        else:
            text = last_template.format(current_image_idx=k + 1, width=w, height=h)
        content.append({"type": "text", "text": text})
    content.append({"type": "text", "text": "\n\n"})
    return {"role": "user", "content": content}


def render_chat(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """Render messages with the Qwen2.5-VL chat template (no ``add_vision_id``).

    Same output as the template shipped with Qwen2.5-VL / ViLaSR (``chat_template.json``); a test
    checks it against ``apply_chat_template`` of a tokenizer carrying that template.

    Args:
        messages: HF chat messages; content is a string or a list of ``image``/``text`` parts.
        add_generation_prompt: Append ``<|im_start|>assistant\\n``.

    Returns:
        The chat text with one vision placeholder per image.
    """
    out = []
    if messages and messages[0]["role"] != "system":
        out.append("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    for message in messages:
        out.append(f"<|im_start|>{message['role']}\n")
        content = message["content"]
        if isinstance(content, str):
            out.append(content)
        else:
            for part in content:
                if part.get("type") == "image" or "image" in part or "image_url" in part:
                    out.append(VISION_PLACEHOLDER)
                elif "text" in part:
                    out.append(part["text"])
        out.append("<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


# ----------------------------------------------------------------------------- model output


def _fenced_blocks(text: str) -> list[str]:
    """Bodies of ```` ```json ```` blocks exactly as the reference's ``parse_json`` cuts them."""
    lines = text.splitlines()
    joined = "\n".join(lines)
    starts = []
    offset = 0
    for line in lines:
        starts.append(offset)
        offset += len(line) + 1
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != "```json":
            continue
        tail = joined[starts[i + 1] :] if i + 1 < len(lines) else ""
        end = tail.find("```")
        blocks.append(tail[:end] if end >= 0 else tail.split("</think>")[0].strip())
    return blocks


def _literal(block: str) -> Any:
    try:
        return ast.literal_eval(block)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError):
        return None


def parse_tool_calls(text: str) -> tuple[list[dict], list[dict]]:
    """Boxes and lines the model wrote in one turn (spec §3; reference ``parse_bbox_and_movement``).

    A block opens at a line that is exactly ```` ```json ```` after stripping and runs to the next
    ```` ``` ```` (or to ``</think>`` when none follows). Each block is read with
    ``ast.literal_eval`` (never ``eval``); blocks that do not parse, or are longer than
    :data:`MAX_BLOCK_CHARS`, are skipped. Items with
    ``bbox_2d`` and ``label`` are boxes; items with ``start_point_2d``, ``end_point_2d`` and
    ``label`` are lines; everything else is ignored. Unlike the reference this never raises: a
    block that is not a list/tuple, or items that are not dicts, are skipped.

    Args:
        text: One model turn.

    Returns:
        ``(boxes, lines)``: the dicts as the model wrote them, in order.

    >>> parse_tool_calls("Action: Object Mapper\\n```json\\n[{'index': 1, 'bbox_2d': [1, 2, 3, 4], 'label': 'cup'}]\\n```")
    ([{'index': 1, 'bbox_2d': [1, 2, 3, 4], 'label': 'cup'}], [])
    """
    boxes: list[dict] = []
    lines: list[dict] = []
    if not isinstance(text, str):
        return boxes, lines
    for block in _fenced_blocks(text):
        if len(block) > MAX_BLOCK_CHARS:
            continue
        value = _literal(block)
        if not isinstance(value, (list, tuple)):
            continue
        for item in value:
            if not isinstance(item, dict):
                continue
            if "bbox_2d" in item and "label" in item:
                boxes.append(item)
            elif "start_point_2d" in item and "end_point_2d" in item and "label" in item:
                lines.append(item)
    return boxes, lines


_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def has_answer(text: str) -> bool:
    """True when a turn holds both ``<answer>`` and ``</answer>`` (spec §4)."""
    return "<answer>" in text and "</answer>" in text


def extract_answer(text: str) -> str | None:
    """The stripped content of the last ``<answer>…</answer>`` in ``text``, or None."""
    found = _ANSWER_RE.findall(text or "")
    return found[-1].strip() if found else None
