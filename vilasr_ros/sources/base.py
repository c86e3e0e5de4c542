"""The frame-source interface."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vilasr_ros.errors import VilasrError
from vilasr_ros.frames import Frame


class SourceError(VilasrError, OSError):
    """A source that cannot be opened or read (missing files, bad encodings, no device)."""


class FrameSource:
    """Iterable of frames; use as a context manager so devices and files are released.

    Each source is built from its typed config (:attr:`config_class`, a frozen dataclass validated
    when built): ``Source(config)``, ``Source(value_of_primary_option, **fields)`` or
    ``Source(**fields)``; the ``KIND:ARG`` spec strings of :func:`vilasr_ros.sources.open_source` are
    a front end that parses into it (ARG is the primary option).
    """

    #: The source's frozen settings dataclass.
    config_class: type | None = None
    #: The config field the spec's ARG (and a bare first positional argument) sets.
    primary_option: str | None = None
    source_id: str = ""
    #: Fastest rate (Hz) at which a recorded sequence should be replayed as a live camera so the
    #: motion between its frames stays physically plausible (None: no limit, e.g. a live camera).
    playback_rate_hz: float | None = None
    #: Frames skipped while reading (unreadable files or messages), each logged with its reason.
    skipped: list[str] = []

    @classmethod
    def resolve_config(cls, config: Any, options: dict[str, Any]) -> Any:
        """The source's config from its constructor's arguments (:func:`vilasr_ros.configs.resolve_config`)."""
        from vilasr_ros.configs import resolve_config

        assert cls.config_class is not None
        return resolve_config(cls.config_class, cls.primary_option, config, options)

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release files or devices."""

    def target_error(self, label: str, position_world) -> dict | None:
        """How far a grounded target is from the scene's ground truth, when the source knows it
        (a simulated scene does; a camera does not: None).

        Returns:
            ``{"object": category, "distance_m": distance to the object's oriented bounding box
            (0 inside it), "centre_m": distance to its centre}`` for the matching object nearest the
            position, or None.
        """
        return None

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
