"""The frame-source interface."""

from __future__ import annotations

from collections.abc import Iterator

from vilasr_ros.errors import VilasrError
from vilasr_ros.frames import Frame


class SourceError(VilasrError, OSError):
    """A source that cannot be opened or read (missing files, bad encodings, no device)."""


class FrameSource:
    """Iterable of frames; use as a context manager so devices and files are released."""

    source_id: str = ""

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release files or devices."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
