"""A folder of traces with a retention policy: total size and age bounded, oldest removed first.

A robot asking every few seconds writes several MB a query (every input frame and drawn image as
lossless PNG); without a bound the disk fills in hours. :class:`TraceStore` keeps an index of the
trace folders under its root (sizes summed once at start, then updated as it writes), and after each
write removes the oldest folders until the total is under ``max_total_bytes`` and none is older than
``max_age_s``. Only folders that hold a ``trace.json`` are ever removed — a store pointed at the
wrong folder deletes nothing else. Each trace is written atomically (:meth:`Trace.save`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from vilasr_ros.sanitize import safe_name
from vilasr_ros.trace import Trace

logger = logging.getLogger(__name__)


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it vanished meanwhile)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class TraceStore:
    """Traces under ``root``, bounded by total size and age.

    Args:
        root: The folder (created).
        max_total_bytes: Bound on the bytes of all traces together.
        max_age_s: Traces older than this are removed (None: only the size bound applies).
        clock: Wall-clock time source (trace age is by folder modification time).

    Raises:
        ValueError: A bound that is not positive.
    """

    def __init__(self, root: str | Path, *, max_total_bytes: int = 2 * 2**30, max_age_s: float | None = 7 * 86400.0,
                 clock=time.time):
        if max_total_bytes <= 0 or (max_age_s is not None and max_age_s <= 0):
            raise ValueError("max_total_bytes and max_age_s must be > 0")
        self.root = Path(root)
        self.max_total_bytes = int(max_total_bytes)
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._index: dict[str, tuple[float, int]] = {}  # name -> (mtime, bytes)
        self.removed = 0
        self._scanned = False

    def _scan(self) -> None:
        if self._scanned:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in self.root.iterdir():
            if entry.is_dir() and (entry / "trace.json").is_file():
                self._index[entry.name] = (entry.stat().st_mtime, folder_bytes(entry))
            elif entry.is_dir() and entry.name.startswith(".") and ".tmp-" in entry.name:
                shutil.rmtree(entry, ignore_errors=True)  # a write interrupted by a crash
        self._scanned = True

    @property
    def total_bytes(self) -> int:
        with self._lock:
            self._scan()
            return sum(size for _, size in self._index.values())

    def __len__(self) -> int:
        with self._lock:
            self._scan()
            return len(self._index)

    def path(self, name: str) -> Path:
        """Where a trace called ``name`` goes (``name`` made path-safe: it cannot leave ``root``)."""
        return self.root / safe_name(name, 96)

    def save(self, trace: Trace, name: str) -> Path | None:
        """Write ``trace`` as ``root/name`` and apply the retention policy.

        Returns:
            The trace folder, or None when it could not be written (logged with the reason; the
            caller keeps running — a full disk must not stop a robot answering).
        """
        directory = self.path(name)
        try:
            trace.save(directory)
        except Exception as exc:  # noqa: BLE001 - disk full, permissions, anything: logged, not raised
            logger.error("cannot save trace %s: %s: %s", directory, type(exc).__name__, exc)
            return None
        with self._lock:
            self._scan()
            self._index[directory.name] = (self._clock(), folder_bytes(directory))
            self._enforce()
        return directory

    def _enforce(self) -> None:
        now = self._clock()
        order = sorted(self._index.items(), key=lambda kv: kv[1][0])
        total = sum(size for _, (_, size) in order)
        for name, (mtime, size) in order:
            too_old = self.max_age_s is not None and now - mtime > self.max_age_s
            if total <= self.max_total_bytes and not too_old:
                break
            if len(self._index) == 1 and not too_old:
                break  # never delete the trace just written for the size bound
            path = self.root / name
            if (path / "trace.json").is_file():
                shutil.rmtree(path, ignore_errors=True)
            self._index.pop(name, None)
            total -= size
            self.removed += 1
            logger.debug("trace retention: removed %s (%d bytes)", name, size)

    def enforce(self) -> None:
        """Apply the retention policy now (also done after every :meth:`save`)."""
        with self._lock:
            self._scan()
            self._enforce()
