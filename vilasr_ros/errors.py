"""Error classes of the runtime core.

Small classes subclassing builtins so callers can catch either the domain error or the builtin
(the lerobot / rosbags habit). Every raise site chains the low-level cause with ``from``.
"""

from __future__ import annotations


class VilasrError(Exception):
    """Base class of every error this package raises on purpose."""


class ModelOutputError(VilasrError, ValueError):
    """The model wrote something the protocol cannot act on (bad tool call, bad index, ...)."""


class ToolCallEndsError(ModelOutputError):
    """A tool call on which the reference ends the sample instead of generating again: an item without
    ``index`` (``KeyError`` → ``ToolGenError``) or an ``index`` of 0 or less (``merge_bbox_movement``
    returns -1 → ``ToolError``). ``finish_reason`` is the reference's name for it."""

    def __init__(self, message: str, finish_reason: str):
        super().__init__(message)
        self.finish_reason = finish_reason


class ImageIndexError(ModelOutputError):
    """A tool call naming an image past the last one. Evaluation drops the turn and generates again
    (``eval/infer.py``: the ``IndexError`` escapes to ``process_single_response``'s handler); the RL
    rollout ends the trajectory (``vllm_rollout_spmd_video.py`` L240-251: ``finish_reason`` IndexError)."""


class QueryError(VilasrError, ValueError):
    """A question, problem type, option list or image list that cannot be asked (queries only)."""


class ConfigError(VilasrError, ValueError):
    """A setting that cannot be used: an unknown engine or option, a value of the wrong type or out of
    range, a bad source spec. The message says how to fix it."""


class DatasetError(VilasrError, ValueError):
    """A dataset, item, image file or results file that cannot be read as one (named in the message)."""


class ImageError(VilasrError, ValueError):
    """An image file or upload that is missing, not an image, truncated, or over the pixel budget
    (named in the message; :mod:`vilasr_ros.images`)."""


class MessageError(VilasrError, ValueError):
    """A sensor message (live or from a bag) that cannot be decoded or is implausible: unknown
    encoding, short data, content that does not match its declared format, a non-finite pose."""


class MemoryStoreError(VilasrError, ValueError):
    """A memory folder, region file or retrieval request that cannot be used (named in the message)."""


class EngineError(VilasrError, RuntimeError):
    """An engine failed while generating."""


class EngineUnavailableError(EngineError, ConnectionError):
    """A remote engine could not be reached (down, slow, refused) within the bounded retries."""


class ModelNotFoundError(EngineError, FileNotFoundError):
    """Model weights are neither at the given path nor in the local Hugging Face cache."""


class MissingDependencyError(VilasrError, ImportError):
    """An optional dependency (an ``extras_require`` group) is not installed."""


def require(module: str, extra: str):
    """Import an optional dependency at the point of use.

    Args:
        module: Importable module name, e.g. ``"vllm"``.
        extra: The ``pip install vilasr_ros[extra]`` group that provides it.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: The module is not installed (or fails to import).
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"'{module}' is required for this feature: pip install 'vilasr_ros[{extra}]' ({exc})"
        ) from exc
