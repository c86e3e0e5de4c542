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
