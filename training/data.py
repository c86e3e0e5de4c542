"""ViLaSR-data (LLaMA-Factory ShareGPT JSON, the RL JSONL) → trl's conversational vision format.

The official ViLaSR-data folder (``data_dir``; the authors' LLaMA-Factory ``dataset_dir``) holds
``dataset_info.json`` naming each dataset (``vqa_cold_start`` → ``cold_start/vqa.json``, ...), the
ShareGPT files, their images, and ``rl/vilasr_rl_data.jsonl``. A training config names datasets as
LLaMA-Factory does (``{format: llamafactory, dataset: vqa_cold_start}``) or a file directly
(``{format: vilasr, path: cold_start/vqa.json}``); relative paths are taken from ``data_dir``.

Conversion follows LLaMA-Factory (``src/llamafactory/data/converter.py``, ``SharegptDatasetConverter``
and ``_find_medias``): the columns and tags ``dataset_info.json`` names (defaults ``conversations`` /
``from`` / ``value`` / ``human`` / ``gpt``); a leading system message becomes the system prompt;
a conversation whose roles do not alternate user/assistant or that does not end with the assistant is
skipped and counted ("Skipping this abnormal example"); an image path is ``data_dir/path`` when that
file exists, else the path as written. trl's format is ``{"messages": [{"role", "content": [{"type":
"image"}, {"type": "text", "text": ...}]}], "images": [...]}`` with the images in the order of the
``<image>`` markers — each image lands in the turn whose text held its marker.

Missing or truncated image files are the dataset's usual failure: :func:`check_images` lists every
one of them, and the loaders raise :class:`MissingImagesError` naming them all instead of failing
later inside a data loader.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vilasr_ros.errors import VilasrError
from vilasr_ros.images import image_problems

logger = logging.getLogger(__name__)

IMAGE_MARKER = "<image>"


class MissingImagesError(VilasrError, FileNotFoundError):
    """Images referenced by the data are missing or unreadable. ``missing``: the paths, as written."""

    def __init__(self, missing: list[str], root: Path):
        self.missing = missing
        shown = "\n  ".join(missing[:50]) + ("\n  ..." if len(missing) > 50 else "")
        super().__init__(f"{len(missing)} image(s) referenced under {root} are missing or truncated:\n  {shown}")


@dataclass(frozen=True)
class ShareGPTFormat:
    """A dataset's columns and tags (``dataset_info.json``; defaults of LLaMA-Factory's
    ``DatasetAttr`` for ``formatting: sharegpt``, ``src/llamafactory/data/parser.py``)."""

    messages: str = "conversations"
    images: str = "images"
    system: str | None = None
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"

    @classmethod
    def from_info(cls, entry: dict[str, Any]) -> "ShareGPTFormat":
        columns, tags = entry.get("columns") or {}, entry.get("tags") or {}
        fields = {k: v for k, v in {**columns, **tags}.items() if k in cls.__dataclass_fields__}
        return cls(**fields)


def _read(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of items")
    return data


def media_path(path: str, media_dir: Path | None) -> str:
    """``media_dir/path`` when that file exists, else ``path`` as written (LLaMA-Factory
    ``DatasetConverter._find_medias``, ``media_dir`` defaulting to ``dataset_dir``)."""
    if media_dir is not None:
        joined = media_dir / path
        if joined.is_file():
            return str(joined)
    return str(path)


def check_images(paths: list[str]) -> list[str]:
    """Every image that does not exist or does not decode completely (truncated files), each once
    (:func:`vilasr_ros.images.image_problems`, the one check every loop uses)."""
    return list(image_problems(paths))


def to_trl(item: dict[str, Any], media_dir: Path | None, fmt: ShareGPTFormat | None = None) -> dict[str, Any] | None:
    """One ShareGPT item → ``{"messages", "images"}`` (image paths resolved), or None when
    LLaMA-Factory would skip it (roles that do not alternate, or no final assistant turn).

    Raises:
        ValueError: Unknown role tag, or marker count ≠ image count.
    """
    fmt = fmt or ShareGPTFormat()
    turns = list(item.get(fmt.messages) or [])
    roles = {fmt.user_tag: "user", fmt.assistant_tag: "assistant", fmt.observation_tag: "user",
             fmt.function_tag: "assistant"}
    system = None
    if turns and turns[0].get(fmt.role_tag) == fmt.system_tag:
        system, turns = turns[0].get(fmt.content_tag, ""), turns[1:]
    elif fmt.system and item.get(fmt.system):
        system = item[fmt.system]
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    accept = ((fmt.user_tag, fmt.observation_tag), (fmt.assistant_tag, fmt.function_tag))
    for k, turn in enumerate(turns):
        tag = turn.get(fmt.role_tag)
        if tag not in roles:
            raise ValueError(f"unknown role {tag!r}")
        if tag not in accept[k % 2]:
            return None
    if len(turns) % 2 != 0 or not turns:
        return None
    images = [media_path(p, media_dir) for p in item.get(fmt.images) or []]
    used = 0
    for turn in turns:
        text = turn.get(fmt.content_tag, "")
        parts: list[dict[str, Any]] = []
        for k, piece in enumerate(text.split(IMAGE_MARKER)):
            if k:
                parts.append({"type": "image"})
                used += 1
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": roles[turn[fmt.role_tag]], "content": parts})
    if used != len(images):
        raise ValueError(f"{used} {IMAGE_MARKER} markers for {len(images)} images")
    return {"messages": messages, "images": images}


def load_sharegpt(path: str | Path, media_dir: str | Path | None = None, fmt: ShareGPTFormat | None = None
                  ) -> list[dict[str, Any]]:
    """Read a ShareGPT file and convert every item (see module docstring); skipped items are
    counted in a warning.

    Args:
        path: ``.json`` list or ``.jsonl``.
        media_dir: Folder the ``images`` paths are tried against first (default: the file's folder).
        fmt: Columns and tags (default: LLaMA-Factory's defaults, which read ``from``/``value`` and
            also accept ``role``/``content`` files through :func:`guess_format`).

    Raises:
        MissingImagesError: Some images are missing or truncated (all are named).
        ValueError: Malformed items (the item's position is given).
    """
    path = Path(path)
    root = Path(media_dir) if media_dir else path.parent
    items = _read(path)
    fmt = fmt or guess_format(items)
    out, skipped = [], 0
    for k, item in enumerate(items):
        try:
            example = to_trl(item, root, fmt)
        except ValueError as exc:
            raise ValueError(f"{path} item {k}: {exc}") from exc
        if example is None:
            skipped += 1
            continue
        out.append(example)
    if skipped:
        logger.warning("%s: skipped %d of %d conversations whose roles do not alternate user/assistant or that "
                       "do not end with the assistant (as LLaMA-Factory does)", path, skipped, len(items))
    written = {media_path(w, root): w for item in items for w in item.get(fmt.images) or []}
    missing = check_images([p for e in out for p in e["images"]])
    if missing:
        raise MissingImagesError([written.get(m, m) for m in missing], root)
    return out


def guess_format(items: list[dict[str, Any]]) -> ShareGPTFormat:
    """The columns and tags of a file read without ``dataset_info.json``: LLaMA-Factory's defaults
    (``conversations``, ``from``/``value``, ``human``/``gpt``) or, when the first turn has a ``role``,
    the ``role``/``content``/``user``/``assistant`` tags ViLaSR-data's ``dataset_info.json`` declares;
    the column is ``messages`` when an item has that and no ``conversations``."""
    first = items[0] if items else {}
    column = "messages" if "messages" in first and "conversations" not in first else "conversations"
    turns = first.get(column) or []
    if turns and isinstance(turns[0], dict) and "role" in turns[0]:
        return ShareGPTFormat(messages=column, system="system", role_tag="role", content_tag="content",
                              user_tag="user", assistant_tag="assistant")
    return ShareGPTFormat(messages=column, system="system")


def dataset_info(data_dir: str | Path) -> dict[str, Any]:
    """``data_dir/dataset_info.json``.

    Raises:
        FileNotFoundError: Not a ViLaSR-data / LLaMA-Factory data folder.
    """
    path = Path(data_dir) / "dataset_info.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: data_dir must be the ViLaSR-data folder (the one holding "
                                "dataset_info.json, cold_start/, reflective_rejection_sampling/, rl/)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_llamafactory(name: str, data_dir: str | Path) -> list[dict[str, Any]]:
    """A dataset named in ``dataset_info.json`` (``vqa_cold_start``), as LLaMA-Factory loads it
    with ``dataset_dir: data_dir`` (file ``data_dir/file_name``, images against ``data_dir``).

    Raises:
        ValueError: Unknown name (the known ones are listed) or not ``formatting: sharegpt``.
        MissingImagesError: Missing images.
    """
    info = dataset_info(data_dir)
    if name not in info:
        raise ValueError(f"dataset {name!r} is not in {Path(data_dir) / 'dataset_info.json'} "
                         f"(it has: {', '.join(sorted(info))})")
    entry = info[name]
    if entry.get("formatting", "alpaca") != "sharegpt":
        raise ValueError(f"dataset {name!r}: only formatting 'sharegpt' is supported, got {entry.get('formatting')!r}")
    return load_sharegpt(Path(data_dir) / entry["file_name"], data_dir, ShareGPTFormat.from_info(entry))


# ----------------------------------------------------------------------------- other sources


def load_traces(folder: str | Path, family: str | None = None) -> list[dict[str, Any]]:
    """Every saved trace under ``folder`` (``*/trace.json``, sorted) that ended with an answer, as examples.

    Traces cut by the token limit or ended by a tool error are left out (not a training target).

    Args:
        folder: Searched recursively.
        family: The model family being trained (None: any). A trace recorded with another family
            (``settings.model_family``; none recorded: ``qwen2_5_vl``) writes its boxes in another
            convention.

    Raises:
        DatasetError: A trace of another family (named, with both families).
    """
    from vilasr_ros.errors import DatasetError
    from vilasr_ros.families import DEFAULT_FAMILY
    from vilasr_ros.trace import Trace
    from vilasr_ros_training.chat import example_from_trace

    out = []
    for path in sorted(Path(folder).rglob("trace.json")):
        trace = Trace.load(path.parent)
        if trace.finish_reason != "stop" or not trace.answer:
            continue
        recorded = (trace.settings or {}).get("model_family") or DEFAULT_FAMILY
        if family is not None and recorded != family:
            raise DatasetError(f"{path}: a {recorded} trace cannot train a {family} model (its tool calls use "
                               f"{recorded}'s coordinates); sample the traces with the {family} model")
        paths = Trace.image_paths(path.parent, len(trace.images))
        out.append(example_from_trace(trace, paths))
    return out


def teacher_trajectories(sim_dir: str | Path, out: str | Path, *, reflect: float = 0.0, seed: int = 0,
                         family: str | None = None) -> list[dict[str, Any]]:
    """Teacher trajectories of a ``vilasr sim generate`` dataset, as examples.

    Runs the ``teacher`` engine over every item with ``vilasr eval run``'s runner (resumable; traces
    under ``OUT/traces/<id>``), then reads the traces back (:func:`load_traces`).

    Args:
        sim_dir: The sim dataset folder (``questions.json``).
        out: Where the run and its traces go.
        reflect: Probability of a deliberately wrong box followed by its correction.
        seed: Teacher seed.
        family: The model family whose prompts and coordinates the trajectories use (None: ViLaSR's
            ``qwen2_5_vl``).
    """
    from vilasr_ros.evaluation.runner import run_eval
    from vilasr_ros_training.teacher import TeacherEngine

    engine = TeacherEngine(str(sim_dir), reflect=reflect, seed=seed, model_family=family)
    run_eval("sim", sim_dir, engine, out, save_traces=True)
    return load_traces(Path(out) / "traces", engine.family.name)


def load_source(spec, data_dir: str | Path | None = None, *, family=None, stats=None) -> list[dict[str, Any]]:
    """Examples from one ``data:`` entry of a training config
    (:class:`vilasr_ros_training.config.DataSpec`, or its mapping with ``data_dir``).

    ``llamafactory``: a dataset of ``data_dir/dataset_info.json`` (:func:`load_llamafactory`);
    ``vilasr``: one ShareGPT file (images against ``image_root``, else ``data_dir``, else the file's
    folder); ``sim_teacher``: teacher trajectories (:func:`teacher_trajectories`); ``traces``: saved
    traces (e.g. stage 2's output, :func:`load_traces`). ``limit`` keeps the first N examples.

    With ``family`` (the model being trained, :mod:`vilasr_ros.families`), the released data
    (``llamafactory``, ``vilasr``: Qwen2.5-VL pixels) is converted to its coordinate convention
    (:func:`vilasr_ros_training.convert.convert_example`, counted in ``stats``, a
    :class:`~vilasr_ros_training.convert.ConversionStats`), teacher trajectories are written in it,
    and traces must have been recorded with it.

    Raises:
        ValueError: Unknown format or missing keys (one line).
        MissingImagesError: ViLaSR-data with missing images.
    """
    from vilasr_ros_training.config import DataSpec, as_spec

    from vilasr_ros.families import model_family

    spec = as_spec(DataSpec, spec, data_dir, "data entry")
    name = model_family(family).name if family is not None else None
    if spec.format == "llamafactory":
        if spec.data_dir is None:
            raise ValueError(f"data entry {spec.dataset}: format llamafactory needs the config's data_dir")
        examples = load_llamafactory(spec.dataset, spec.data_dir)
    elif spec.format == "vilasr":
        examples = load_sharegpt(Path(spec.path), spec.image_root or spec.data_dir)
    elif spec.format == "sim_teacher":
        out = spec.out or str(Path(spec.path) / "teacher")
        examples = teacher_trajectories(spec.path, out, reflect=spec.reflect, seed=spec.seed, family=name)
    else:
        examples = load_traces(spec.path, name)
    examples = examples[: spec.limit] if spec.limit else examples
    if name is not None and spec.format in ("llamafactory", "vilasr"):
        from vilasr_ros_training.convert import convert_example

        examples = [convert_example(e, name, stats) for e in examples]
    return examples


RL_KINDS = {"video": "video", "spatial_r1": "video", "maze": "single", "vqa": "single"}
"""``data_type`` → prompt layout (``verl/utils/dataset_multimodal.py`` L309-314: video/spatial_r1 → ``construct_video_prompt``, maze/vqa → ``construct_maze_vqa_prompt``)."""


def load_rl_items(path: str | Path, data_dir: str | Path | None = None) -> list:
    """The RL stage's items (``rl/vilasr_rl_data.jsonl``, read as ``dataset_multimodal.py`` reads
    it): ``question``, ``answer``, ``image_path`` (a list), ``question_type`` (the reward's and the
    prompt's answer type), ``data_type`` (``video``/``spatial_r1`` → frames layout, ``maze``/``vqa``
    → one image), ``options`` for multiple choice. Image paths are tried under ``data_dir`` first,
    then as written. Items with a ``data_type`` outside those four are invalid (the reference raises).

    Returns:
        :class:`~vilasr_ros.evaluation.datasets.EvalItem` list (``raw`` keeps the item; budget 10
        model calls, ``worker.rollout.num_llm_calls_available`` in ``train_grpo.sh``; mazes 20).
    """
    from vilasr_ros.evaluation.datasets import EvalItem

    path = Path(path)
    root = Path(data_dir) if data_dir is not None else path.parent
    items = []
    for k, raw in enumerate(_read(path)):
        paths = raw.get("image_path") or []
        paths = [paths] if isinstance(paths, str) else list(paths)
        images = [Path(media_path(str(p), root)) for p in paths]
        kind = RL_KINDS.get(str(raw.get("data_type")))
        invalid = None
        if kind is None:
            invalid = f"data_type must be one of {sorted(RL_KINDS)}, got {raw.get('data_type')!r}"
        elif not isinstance(raw.get("question"), str) or "question_type" not in raw:
            invalid = "an RL item needs 'question' and 'question_type'"
        elif kind == "single" and len(images) != 1:
            invalid = f"data_type {raw['data_type']!r} takes one image, got {len(images)}"
        options = raw.get("options") if raw.get("question_type") == "multiple choice" else None
        item = EvalItem(str(raw.get("id", f"rl_{k}")), k, raw, images, str(raw.get("question", "")),
                        list(options) if isinstance(options, list) else None, str(raw.get("question_type", "")),
                        kind or "video",
                        20 if raw.get("data_type") == "maze" else 10, [], invalid)
        item.missing.extend(check_images([str(p) for p in images]))
        items.append(item)
    return items


def load_items(spec, data_dir: str | Path | None = None) -> tuple[list, Path]:
    """ViLaSR-eval items for stages 2 and 3 (questions with answers, no trajectories).

    ``spec``: :class:`vilasr_ros_training.config.ItemsSpec` (or its mapping, with ``data_dir``):
    :func:`vilasr_ros.evaluation.datasets.load_dataset` for ``sim`` and the benchmarks,
    :func:`load_rl_items` for ``vilasr_rl``. Items with missing images or invalid fields are left out
    with a warning naming them.

    Returns:
        ``(items, image_root)``.

    Raises:
        DatasetError: Bad file or items. ValueError: a bad spec, nothing left.
    """
    import logging

    from vilasr_ros.evaluation.datasets import load_dataset
    from vilasr_ros_training.config import ItemsSpec, as_spec

    spec = as_spec(ItemsSpec, spec, data_dir, "items")
    if spec.dataset == "vilasr_rl":
        path = Path(spec.path)
        items = load_rl_items(path, spec.data_dir)
        root = Path(spec.data_dir) if spec.data_dir is not None else path.parent
    else:
        items, root = load_dataset(spec.dataset, Path(spec.path), spec.image_folder, spec.frames)
    missing = [it.id for it in items if it.missing or it.invalid]
    if missing:
        logging.getLogger(__name__).warning("leaving out %d items with missing images or invalid fields: %s",
                                            len(missing), ", ".join(missing[:20]))
    items = [it for it in items if not (it.missing or it.invalid)]
    if spec.types:
        items = [it for it in items if it.raw.get("original_question_type") in spec.types]
    items = items[: spec.limit or None]
    if not items:
        raise ValueError(f"no usable items in {spec.path}")
    return items, root
