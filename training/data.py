"""ViLaSR-data (ShareGPT / LLaMA-Factory JSON) → trl's conversational vision format.

The official cold-start and reflective files are LLaMA-Factory "sharegpt" items: ``conversations``
(``from``: ``system``/``human``/``gpt``, ``value`` with one ``<image>`` marker per image) or
``messages`` (``role``/``content``), an optional ``system``, and ``images`` (paths relative to the
data folder, in marker order). trl's format is ``{"messages": [{"role", "content": [{"type":
"image"}, {"type": "text", "text": ...}]}], "images": [...]}`` with the images in the order their
``{"type": "image"}`` parts appear — each image lands in the turn whose text held its marker.

Missing or truncated image files are the dataset's usual failure: :func:`check_images` lists every
one of them, and :func:`load_sharegpt` raises :class:`MissingImagesError` naming them all instead of
failing later inside a data loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vilasr_ros.errors import VilasrError

IMAGE_MARKER = "<image>"
ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class MissingImagesError(VilasrError, FileNotFoundError):
    """Images referenced by the data are missing or unreadable. ``missing``: the paths, as written."""

    def __init__(self, missing: list[str], root: Path):
        self.missing = missing
        shown = "\n  ".join(missing[:50]) + ("\n  ..." if len(missing) > 50 else "")
        super().__init__(f"{len(missing)} image(s) referenced under {root} are missing or truncated:\n  {shown}")


def _read(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of items")
    return data


def check_images(items: list[dict[str, Any]], root: Path) -> list[str]:
    """Every referenced image that does not exist or does not decode completely (truncated files)."""
    from PIL import Image

    missing: list[str] = []
    for rel in dict.fromkeys(p for item in items for p in item.get("images") or []):
        try:
            with Image.open(root / rel) as im:
                im.load()  # decodes the whole file: a truncated PNG/JPEG fails here
        except (OSError, SyntaxError, ValueError):
            missing.append(rel)
    return missing


def to_trl(item: dict[str, Any], root: Path) -> dict[str, Any]:
    """One ShareGPT/LLaMA-Factory item → ``{"messages", "images"}`` (absolute image paths).

    Raises:
        ValueError: Unknown role, or marker count ≠ image count.
    """
    turns = item.get("conversations") or item.get("messages") or []
    images = [str(root / p) for p in item.get("images") or []]
    messages: list[dict[str, Any]] = []
    if item.get("system"):
        messages.append({"role": "system", "content": [{"type": "text", "text": item["system"]}]})
    used = 0
    for turn in turns:
        role = ROLES.get(turn.get("from") or turn.get("role"))
        if role is None:
            raise ValueError(f"unknown role {turn.get('from') or turn.get('role')!r}")
        text = turn.get("value") if "value" in turn else turn.get("content", "")
        parts: list[dict[str, Any]] = []
        pieces = text.split(IMAGE_MARKER)
        for k, piece in enumerate(pieces):
            if k:
                parts.append({"type": "image"})
                used += 1
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": role, "content": parts})
    if used != len(images):
        raise ValueError(f"{used} {IMAGE_MARKER} markers for {len(images)} images")
    return {"messages": messages, "images": images}


def load_sharegpt(path: str | Path, image_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Read a ViLaSR-data file and convert every item (see module docstring).

    Args:
        path: ``.json`` list or ``.jsonl``.
        image_root: Folder the ``images`` paths are relative to (default: the file's folder).

    Raises:
        MissingImagesError: Some images are missing or truncated (all are named).
        ValueError: Malformed items (the item's position is given).
    """
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    items = _read(path)
    missing = check_images(items, root)
    if missing:
        raise MissingImagesError(missing, root)
    out = []
    for k, item in enumerate(items):
        try:
            out.append(to_trl(item, root))
        except ValueError as exc:
            raise ValueError(f"{path} item {k}: {exc}") from exc
    return out


# ----------------------------------------------------------------------------- other sources


def load_traces(folder: str | Path) -> list[dict[str, Any]]:
    """Every saved trace under ``folder`` (``*/trace.json``, sorted) that ended with an answer, as examples.

    Traces cut by the token limit or ended by a tool error are left out (not a training target).
    """
    from vilasr_ros.trace import Trace
    from vilasr_ros_training.chat import example_from_trace

    out = []
    for path in sorted(Path(folder).rglob("trace.json")):
        trace = Trace.load(path.parent)
        if trace.finish_reason != "stop" or not trace.answer:
            continue
        paths = Trace.image_paths(path.parent, len(trace.images))
        out.append(example_from_trace(trace, paths))
    return out


def teacher_trajectories(sim_dir: str | Path, out: str | Path, *, reflect: float = 0.0, seed: int = 0
                         ) -> list[dict[str, Any]]:
    """Teacher trajectories of a ``vilasr sim generate`` dataset, as examples.

    Runs the ``teacher`` engine over every item with ``vilasr eval run``'s runner (resumable; traces
    under ``OUT/traces/<id>``), then reads the traces back (:func:`load_traces`).

    Args:
        sim_dir: The sim dataset folder (``questions.json``).
        out: Where the run and its traces go.
        reflect: Probability of a deliberately wrong box followed by its correction.
        seed: Teacher seed.
    """
    from vilasr_ros.evaluation.runner import run_eval
    from vilasr_ros_training.teacher import TeacherEngine

    run_eval("sim", sim_dir, TeacherEngine(reflect=reflect, seed=seed), out, save_traces=True)
    return load_traces(Path(out) / "traces")


SOURCES = ("vilasr", "sim_teacher", "traces")


def load_source(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Examples from one ``data:`` entry of a training config.

    ``{"format": "vilasr", "path": FILE, "image_root": DIR?}`` — ViLaSR-data (:func:`load_sharegpt`);
    ``{"format": "sim_teacher", "path": SIM_DIR, "out": DIR, "reflect": P?, "seed": S?}`` — teacher
    trajectories (:func:`teacher_trajectories`); ``{"format": "traces", "path": DIR}`` — saved traces
    (e.g. stage 2's output, :func:`load_traces`). ``limit: N`` keeps the first N examples.

    Raises:
        ValueError: Unknown format or missing keys.
        MissingImagesError: ViLaSR-data with missing images.
    """
    fmt = spec.get("format")
    if fmt not in SOURCES:
        raise ValueError(f"data format must be one of {SOURCES}, got {fmt!r}")
    if "path" not in spec:
        raise ValueError(f"data entry {spec} has no 'path'")
    if fmt == "vilasr":
        examples = load_sharegpt(spec["path"], spec.get("image_root"))
    elif fmt == "sim_teacher":
        out = spec.get("out") or str(Path(spec["path"]) / "teacher")
        examples = teacher_trajectories(spec["path"], out, reflect=float(spec.get("reflect", 0.0)),
                                        seed=int(spec.get("seed", 0)))
    else:
        examples = load_traces(spec["path"])
    return examples[: spec["limit"]] if spec.get("limit") else examples


def load_items(spec: dict[str, Any]) -> tuple[list, Path]:
    """ViLaSR-eval items for stages 2 and 3 (questions with answers, no trajectories).

    ``spec``: ``{"dataset": sim|vsi_bench|..., "path": FILE_OR_DIR, "image_folder"?, "frames"?,
    "types"?: [original_question_type, ...], "limit"?}`` (:func:`vilasr_ros.evaluation.datasets.load_dataset`).
    Items with missing images are left out with a warning naming them.

    Returns:
        ``(items, image_root)``.

    Raises:
        QueryError: Bad file or items. ValueError: nothing left.
    """
    import logging

    from vilasr_ros.evaluation.datasets import load_dataset

    items, root = load_dataset(spec.get("dataset", "sim"), spec["path"], spec.get("image_folder"),
                               int(spec.get("frames", 16)))
    missing = [it.id for it in items if it.missing]
    if missing:
        logging.getLogger(__name__).warning("leaving out %d items with missing images: %s", len(missing),
                                            ", ".join(missing[:20]))
    items = [it for it in items if not it.missing]
    if spec.get("types"):
        items = [it for it in items if it.raw.get("original_question_type") in spec["types"]]
    items = items[: spec.get("limit") or None]
    if not items:
        raise ValueError(f"no usable items in {spec['path']}")
    return items, root
