"""One image I/O for every loop: files, uploads and compressed messages, opened within a budget.

Pillow reads only an image's header on ``Image.open``; the pixels are decoded on ``load``. Every image
here is checked against a pixel budget (width × height, from the header) *before* it is decoded, so
a small file that inflates to gigabytes (a decompression bomb under Pillow's own limit) is refused
at the cost of reading its header. Colour images become RGB with alpha composited over white
(:func:`vilasr_ros.protocol.to_rgb`, the reference's ``fetch_image``).

One error policy: a file that is missing, truncated, not an image or over budget raises
:class:`~vilasr_ros.errors.ImageError` naming it; :func:`image_problems` collects every problem of a
list of files at once, so a dataset with ten broken images is reported in
one go.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from vilasr_ros.errors import ImageError

MAX_IMAGE_PIXELS = 40_000_000
"""Pixels of one image at most (width × height; 40 MP: a 4K frame is 8.3 MP). Budgets per request
(``vilasr serve``) are set by the caller."""


def open_image(source: str | os.PathLike | bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None):
    """Open and decode an image within a pixel budget; the header is checked before decoding.

    Args:
        source: A file path, or the encoded bytes (PNG, JPEG, ...).
        max_pixels: Width × height at most.
        name: How to name the image in errors (default: the path, or "image").

    Returns:
        A loaded ``PIL.Image`` in its own mode (``L``, ``I;16``, ``RGB``, ``RGBA``, ...).

    Raises:
        ImageError: Missing, unreadable, not an image, truncated, or over ``max_pixels``.
    """
    from PIL import Image

    label = name or (str(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "image")
    try:
        im = Image.open(io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError
        raise ImageError(f"{label} is not an image ({type(exc).__name__}: {exc})") from None
    with im:
        w, h = im.size
        if w < 1 or h < 1 or w * h > max_pixels:
            raise ImageError(f"{label} is {w}x{h} = {w * h} pixels; the budget is {max_pixels} (refused before decoding)")
        try:
            im.load()
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
            raise ImageError(f"{label} cannot be decoded ({type(exc).__name__}: {exc})") from None
        return im  # loaded: its pixels stay after the file is closed


def open_rgb(source: str | os.PathLike | bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None):
    """:func:`open_image`, then RGB with alpha over white (:func:`vilasr_ros.protocol.to_rgb`).

    Raises:
        ImageError: As :func:`open_image`.
    """
    from vilasr_ros.protocol import to_rgb

    return to_rgb(open_image(source, max_pixels=max_pixels, name=name))


def image_size(data: bytes, *, name: str = "image") -> tuple[int, int]:
    """(width, height) from an encoded image's header, without decoding its pixels.

    Raises:
        ImageError: Not an image.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for non-images
        raise ImageError(f"{name} is not an image ({type(exc).__name__})") from None


def image_problems(paths: list[Any], *, max_pixels: int = MAX_IMAGE_PIXELS) -> dict[str, str]:
    """Every image file that would not open: ``{path: why}`` (missing, not an image, truncated — the
    whole file is decoded, since ``verify()`` passes a truncated JPEG — or over the pixel budget), in
    order, each path once; empty when all open. Ask, evaluation, SFT, RRS and GRPO check with this.

    Args:
        paths: Image file paths.
        max_pixels: Pixel budget per image.
    """
    problems: dict[str, str] = {}
    for p in dict.fromkeys(str(p) for p in paths):
        if not Path(p).is_file():
            problems[p] = f"{p}: no such file"
            continue
        try:
            open_image(p, max_pixels=max_pixels)
        except ImageError as exc:
            problems[p] = str(exc)
    return problems
