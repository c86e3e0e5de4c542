"""Keyframe memory on disk: hours of keyframes, found again by place, time and meaning (issue 26).

The RAM :class:`~vilasr_ros.buffer.FrameBuffer` stays the recent window; every keyframe it accepts can
also go to a :class:`KeyframeMemory` in ``memory_dir``: one SQLite file (``memory.sqlite``), colour as
JPEG, depth as the 16UC1 PNG of ``compressedDepth`` (lossless to the millimetre), the pose
``T_map_camera`` (4×4, metres, REP-105 ``map``), intrinsics, stamp and frame ids.

Why SQLite (Python's own ``sqlite3``): no server and no extra dependency; crash safety is its
write-ahead log (``journal_mode=WAL``: a transaction is in the file once committed, so a SIGKILL loses
at most the keyframe being written and the file opens afterwards); one writer with any number of
readers at the same time (the agent writes while ``vilasr memory query`` reads); SQL filters on
indexed stamp and position columns; one file to copy. LanceDB and milvus-lite keep vectors better but
add fragments to compact (LanceDB) or a server process (milvus); at 30k keyframes a brute-force scan
of the embeddings is milliseconds, so the semantic index can live in the same file.

Writing never blocks a camera callback: :class:`MemoryWriter` takes frames through a bounded queue
and a background thread; a full queue drops the frame and counts it. Retention (:class:`MemoryConfig`)
deletes the oldest keyframes past a total size or an age.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.errors import ConfigError, MemoryStoreError  # noqa: F401 - raised here, named here for users
from vilasr_ros.frames import CameraIntrinsics, Frame

logger = logging.getLogger(__name__)

DB_NAME = "memory.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS keyframes(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stamp REAL NOT NULL,
    x REAL, y REAL, z REAL,
    pose BLOB,
    frame_id TEXT NOT NULL,
    world_frame_id TEXT NOT NULL,
    world_up TEXT NOT NULL,
    source_id TEXT NOT NULL,
    intrinsics TEXT NOT NULL,
    colour BLOB NOT NULL,
    depth BLOB,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS keyframes_meta ON keyframes(stamp, id, x, y, z, pose);
CREATE INDEX IF NOT EXISTS keyframes_xy ON keyframes(x, y);
CREATE TABLE IF NOT EXISTS views(
    id INTEGER PRIMARY KEY REFERENCES keyframes(id) ON DELETE CASCADE,
    voxels BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS objects(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL,
    stamp REAL NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, z REAL NOT NULL,
    covariance TEXT,
    confidence REAL,
    frame_id TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_label ON objects(label, stamp);
CREATE TABLE IF NOT EXISTS embeddings(
    id INTEGER NOT NULL REFERENCES keyframes(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (id, model)
);
"""


@dataclass(frozen=True)
class MemoryConfig:
    """Keyframe memory settings.

    Attributes:
        max_bytes: Total size of the stored keyframes (bytes); the oldest go first past it.
        max_age_s: Keyframes older than this (seconds before the newest) are deleted; None: no limit.
        jpeg_quality: Colour JPEG quality (1-95).
        queue_size: Frames waiting for the writer thread; a full queue drops (counted).
        min_translation_m, min_rotation_deg, max_interval_s: The memory's own keyframe rule over the
            buffer's keyframes (:func:`vilasr_ros.buffer.keyframe_due`): sparser than the RAM
            buffer's (0.1 m, 10°, 1 s), so an hour of walking fits the disk budget (README,
            ``benchmarks/memory_store.py``).
    """

    max_bytes: int = 20 * 1024**3
    max_age_s: float | None = None
    jpeg_quality: int = 85
    queue_size: int = 64
    min_translation_m: float = 0.3
    min_rotation_deg: float = 15.0
    max_interval_s: float = 5.0

    def __post_init__(self):
        if self.max_bytes < 1:
            raise ConfigError(f"memory max_bytes must be >= 1, got {self.max_bytes}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ConfigError(f"memory max_age_s must be > 0 or None, got {self.max_age_s}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ConfigError(f"memory jpeg_quality must be in [1, 95], got {self.jpeg_quality}")
        if self.queue_size < 1:
            raise ConfigError(f"memory queue_size must be >= 1, got {self.queue_size}")
        if min(self.min_translation_m, self.min_rotation_deg, self.max_interval_s) < 0:
            raise ConfigError("memory keyframe thresholds must be >= 0")


@dataclass(frozen=True)
class KeyframeRecord:
    """A stored keyframe without its pixels (what retrieval filters and ranks).

    Attributes:
        id: Row id (increasing with insertion).
        stamp_s: Capture time (seconds).
        position: Camera position in the world frame (metres), or None without a pose.
        T_world_camera: 4×4 pose, or None.
    """

    id: int
    stamp_s: float
    position: tuple[float, float, float] | None
    T_world_camera: np.ndarray | None


VOXEL_M = 0.3
"""Edge of the map voxels a keyframe's depth is summarised by (m)."""
_BIAS = 1 << 20


def view_voxels(frame: Frame, max_depth_m: float = 6.0) -> np.ndarray | None:
    """The map voxels (:data:`VOXEL_M` edge) a keyframe's depth sees: a 20 × 15 grid of its pixels with
    a reading in 0.2–``max_depth_m`` m, back-projected with its intrinsics (pinhole) and pose, as
    sorted unique int64 keys (21 bits per axis). None without depth or pose."""
    depth, T = frame.depth_m, frame.T_world_camera
    if depth is None or T is None:
        return None
    h, w = depth.shape
    us = np.linspace(0, w - 1, 20).round().astype(int)
    vs = np.linspace(0, h - 1, 15).round().astype(int)
    uu, vv = np.meshgrid(us, vs)
    d = depth[vv, uu].astype(float)
    ok = np.isfinite(d) & (d > 0.2) & (d < max_depth_m)
    if not ok.any():
        return np.zeros(0, np.int64)
    K = frame.intrinsics
    cam = np.stack([(uu[ok] - K.cx) / K.fx * d[ok], (vv[ok] - K.cy) / K.fy * d[ok], d[ok]])
    world = (T[:3, :3] @ cam).T + T[:3, 3]
    q = np.floor(world / VOXEL_M).astype(np.int64) + _BIAS
    return np.unique((q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2])


def _encode(frame: Frame, quality: int) -> tuple[bytes, bytes | None]:
    from PIL import Image

    from vilasr_ros.messages import compress_depth

    buf = io.BytesIO()
    Image.fromarray(frame.rgb).save(buf, format="JPEG", quality=quality)
    depth = None if frame.depth_m is None else compress_depth(frame.depth_m)[1]
    return buf.getvalue(), depth


class KeyframeMemory:
    """The keyframe store of one ``memory_dir`` (module docstring). Thread-safe; one process writes.

    Args:
        memory_dir: Folder (created) holding ``memory.sqlite``.
        config: Retention and encoding settings.
        readonly: Open for reading only (``vilasr memory info/query`` beside a running agent).

    Raises:
        MemoryStoreError: The folder cannot be created, or the file is not a keyframe memory.
    """

    def __init__(self, memory_dir: str | Path, config: MemoryConfig | None = None, readonly: bool = False):
        self.dir = Path(memory_dir)
        self.config = config or MemoryConfig()
        self.readonly = readonly
        path = self.dir / DB_NAME
        try:
            if readonly:
                if not path.is_file():
                    raise MemoryStoreError(f"no keyframe memory in {self.dir} ({DB_NAME} not found)")
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            else:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable against a process crash
                self._db.execute("PRAGMA foreign_keys=ON")  # a deleted keyframe takes its embeddings and views along
                # The log's share of max_bytes: checkpointed at half of it, truncated back to it after.
                self._db.execute(f"PRAGMA wal_autocheckpoint={max(16, self._wal_budget() // 8192)}")
                self._db.execute(f"PRAGMA journal_size_limit={self._wal_budget()}")
                self._db.executescript(SCHEMA)
            self._db.execute("SELECT count(*) FROM keyframes").fetchone()
        except sqlite3.DatabaseError as exc:
            raise MemoryStoreError(f"{path}: not a keyframe memory ({exc})") from None
        except OSError as exc:
            raise MemoryStoreError(f"cannot open keyframe memory in {self.dir}: {exc}") from None
        self._page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writing
    def add(self, frame: Frame) -> int:
        """Store one keyframe (one transaction), then apply retention. Returns its id."""
        colour, depth = _encode(frame, self.config.jpeg_quality)
        T = frame.T_world_camera
        pos = (None, None, None) if T is None else tuple(float(v) for v in T[:3, 3])
        intr = frame.intrinsics
        intrinsics = json.dumps({"width": intr.width, "height": intr.height, "fx": intr.fx, "fy": intr.fy,
                                 "cx": intr.cx, "cy": intr.cy, "distortion_model": intr.distortion_model,
                                 "D": list(intr.D)})
        size = len(colour) + (len(depth) if depth else 0)
        voxels = view_voxels(frame)
        with self._lock:
            with self._db:
                cur = self._db.execute(
                    "INSERT INTO keyframes(stamp, x, y, z, pose, frame_id, world_frame_id, world_up, source_id,"
                    " intrinsics, colour, depth, bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (float(frame.stamp_s), *pos, None if T is None else np.asarray(T, "<f8").tobytes(),
                     frame.frame_id, frame.world_frame_id, frame.world_up, frame.source_id, intrinsics,
                     colour, depth, size))
                new_id = int(cur.lastrowid)
                if voxels is not None:  # a table of its own: reading it never walks the image pages
                    self._db.execute("INSERT INTO views(id, voxels) VALUES (?, ?)", (new_id, voxels.astype("<i8").tobytes()))
            self._retain()
        return new_id

    def _wal_budget(self) -> int:
        """Bytes of ``max_bytes`` kept for the write-ahead log (1/16 of it, 64 KiB to 1 MiB)."""
        return int(min(max(self.config.max_bytes // 16, 64 * 1024), 2**20))

    def _used_bytes(self) -> int:
        """Bytes the store may occupy: its pages in use (free pages are reused) plus the log's budget."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0] - self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * self._page_size + self._wal_budget()

    def _retain(self) -> None:
        """Delete the oldest keyframes past ``max_age_s`` and while the store is over ``max_bytes``."""
        cfg = self.config
        if cfg.max_age_s is not None:
            with self._db:
                newest = self._db.execute("SELECT max(stamp) FROM keyframes").fetchone()[0]
                if newest is not None:
                    self._db.execute("DELETE FROM keyframes WHERE stamp < ?", (newest - cfg.max_age_s,))
        for _ in range(8):  # each pass frees about what is over (row sizes scaled to pages in use)
            over = self._used_bytes() - cfg.max_bytes
            if over <= 0:
                return
            n, images = self._db.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM keyframes").fetchone()
            if n <= 1:
                return
            scale = self._used_bytes() / max(images, 1)
            cut, freed = None, 0.0
            for row_id, size in self._db.execute("SELECT id, bytes FROM keyframes ORDER BY id LIMIT ?", (n - 1,)):
                cut, freed = row_id, freed + size * scale
                if freed >= over + 0.02 * cfg.max_bytes:
                    break
            with self._db:
                self._db.execute("DELETE FROM keyframes WHERE id <= ?", (cut,))

    # ------------------------------------------------------------------ reading
    def info(self) -> dict[str, Any]:
        """``{"keyframes", "first_stamp", "last_stamp", "bytes", "image_bytes", "file_bytes"}``: stamps
        in seconds; ``bytes`` what the store occupies (what ``max_bytes`` bounds), ``image_bytes`` the
        compressed images in it, ``file_bytes`` its files on disk (free pages included)."""
        with self._lock:
            n, first, last, size = self._db.execute(
                "SELECT count(*), min(stamp), max(stamp), coalesce(sum(bytes), 0) FROM keyframes").fetchone()
            used = self._used_bytes()
        files = sum(p.stat().st_size for p in self.dir.glob(DB_NAME + "*") if p.is_file())
        return {"keyframes": n, "first_stamp": first, "last_stamp": last, "bytes": used, "image_bytes": size,
                "file_bytes": files}

    def records(self, since: float | None = None, until: float | None = None,
                bbox: tuple[float, float, float, float] | None = None) -> list[KeyframeRecord]:
        """Stored keyframes in time order, filtered by stamp (inclusive, seconds) and by a map-frame
        axis-aligned box ``(x_min, y_min, x_max, y_max)`` in metres (frames without a pose are left out
        by a box)."""
        return self.match(since, until, bbox)[0]

    def match(self, since: float | None = None, until: float | None = None,
              bbox: tuple[float, float, float, float] | None = None, at_most: int | None = None,
              keep: list[int] | tuple = ()) -> tuple[list[KeyframeRecord], int]:
        """:meth:`records`, thinned evenly in SQL (every n-th id, the ids in ``keep`` kept) to about
        ``at_most``; and how many matched before thinning."""
        where, args = "1=1", []
        if since is not None:
            where, args = where + " AND stamp >= ?", args + [since]
        if until is not None:
            where, args = where + " AND stamp <= ?", args + [until]
        if bbox is not None:
            where, args = where + " AND x BETWEEN ? AND ? AND y BETWEEN ? AND ?", args + [bbox[0], bbox[2], bbox[1], bbox[3]]
        n = None
        with self._lock:
            if at_most is not None:
                n = self._db.execute(f"SELECT count(*) FROM keyframes WHERE {where}", args).fetchone()[0]
                if n > at_most:
                    keep = [int(i) for i in keep][:900]
                    kept = f" OR id IN ({','.join('?' * len(keep))})" if keep else ""
                    where, args = where + f" AND (id % {-(-n // at_most)} = 0{kept})", args + keep
            rows = self._db.execute(f"SELECT id, stamp, x, y, z, pose FROM keyframes WHERE {where} ORDER BY stamp, id",
                                    args).fetchall()
        return [KeyframeRecord(r[0], r[1], None if r[2] is None else (r[2], r[3], r[4]),
                               None if r[5] is None else np.frombuffer(r[5], "<f8").reshape(4, 4).copy())
                for r in rows], len(rows) if n is None else n

    def voxels(self, ids: list[int]) -> dict[int, np.ndarray]:
        """The :func:`view_voxels` keys of keyframes ``ids`` that have them."""
        out: dict[int, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(ids), 900):
                chunk = ids[start:start + 900]
                for i, blob in self._db.execute(f"SELECT id, voxels FROM views WHERE id IN "
                                                f"({','.join('?' * len(chunk))})", chunk):
                    out[i] = np.frombuffer(blob, "<i8")
        return out

    def frames(self, ids: list[int]) -> list[Frame]:
        """The keyframes ``ids`` decoded (in the order given; ids no longer stored are skipped)."""
        from PIL import Image

        from vilasr_ros.messages import COMPRESSED, decode_depth

        out = []
        with self._lock:
            rows = {r[0]: r for r in self._db.execute(
                f"SELECT id, stamp, pose, frame_id, world_frame_id, world_up, source_id, intrinsics, colour, depth "
                f"FROM keyframes WHERE id IN ({','.join('?' * len(ids))})", list(ids))} if ids else {}
        for i in ids:
            if i not in rows:
                continue
            _, stamp, pose, frame_id, world, up, source, intr, colour, depth = rows[i]
            rgb = np.asarray(Image.open(io.BytesIO(colour)).convert("RGB"))
            depth_m = None
            if depth is not None:
                depth_m = decode_depth(_CompressedDepth(depth), COMPRESSED)
            out.append(Frame(rgb=rgb, depth_m=depth_m, intrinsics=CameraIntrinsics(**json.loads(intr)),
                             T_world_camera=None if pose is None else np.frombuffer(pose, "<f8").reshape(4, 4).copy(),
                             stamp_s=stamp, frame_id=frame_id, world_frame_id=world, source_id=source,
                             index=i, world_up=up))
        return out

    # ------------------------------------------------------------------ semantic index
    def unembedded(self, model: str, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` stored keyframes without an embedding of ``model``, oldest first: ``(id, JPEG)``."""
        with self._lock:
            return self._db.execute(
                "SELECT k.id, k.colour FROM keyframes k LEFT JOIN embeddings e ON e.id = k.id AND e.model = ? "
                "WHERE e.id IS NULL ORDER BY k.id LIMIT ?", (model, limit)).fetchall()

    def put_embeddings(self, model: str, ids: list[int], vectors: np.ndarray) -> None:
        """Store unit vectors (N, D) of keyframes ``ids`` (one still stored; deleted ones are skipped)."""
        rows = [(i, model, np.asarray(v, "<f4").tobytes()) for i, v in zip(ids, vectors)]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO embeddings(id, model, vector) SELECT ?, ?, ? "
                                 "WHERE EXISTS (SELECT 1 FROM keyframes WHERE id = ?)",
                                 [(*r, r[0]) for r in rows])

    def similarity(self, model: str, vector: np.ndarray, ids: list[int]) -> dict[int, float]:
        """Cosine similarity of ``vector`` to the embeddings of keyframes ``ids`` that have one."""
        out: dict[int, float] = {}
        with self._lock:
            for start in range(0, len(ids), 900):  # SQLite's bound-parameter limit
                chunk = ids[start:start + 900]
                rows = self._db.execute(f"SELECT id, vector FROM embeddings WHERE model = ? AND id IN "
                                        f"({','.join('?' * len(chunk))})", [model, *chunk]).fetchall()
                if rows:
                    mat = np.stack([np.frombuffer(v, "<f4") for _, v in rows])
                    for (i, _), s in zip(rows, mat @ np.asarray(vector, np.float32)):
                        out[i] = float(s)
        return out

    # ------------------------------------------------------------------ object memory
    def add_object(self, label: str, stamp_s: float, position: list[float], covariance, confidence: float | None,
                   frame_id: str, evidence_stamps: list[float]) -> int:
        """Store one sighting of an object: its fused position (m, ``frame_id``), 3×3 covariance (m²),
        grounding confidence, the time it was seen (s) and the stamps of the keyframes it was boxed in."""
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO objects(label, stamp, x, y, z, covariance, confidence, frame_id, evidence) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (label.strip().lower(), float(stamp_s), *[float(v) for v in position],
                 None if covariance is None else json.dumps(covariance), confidence, frame_id,
                 json.dumps([float(s) for s in evidence_stamps])))
            return int(cur.lastrowid)

    def objects(self, label: str | None = None, limit: int | None = None, evidence: bool = True) -> list[dict[str, Any]]:
        """Sightings, newest first (of ``label`` only when given; labels compare case-insensitively; at
        most ``limit``): ``{"label", "stamp", "position", "covariance", "confidence", "frame_id",
        "evidence"}`` with ``evidence`` the ids of the keyframes still stored that showed it (``[]``
        when ``evidence`` is False: nothing is looked up)."""
        sql, args = "SELECT label, stamp, x, y, z, covariance, confidence, frame_id, evidence FROM objects", []
        if label is not None:
            sql, args = sql + " WHERE label = ?", [label.strip().lower()]
        sql += " ORDER BY stamp DESC, id DESC" + ("" if limit is None else f" LIMIT {int(limit)}")
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            out = []
            for lab, stamp, x, y, z, cov, conf, frame, stamps in rows:
                ids = [r[0] for s in json.loads(stamps) for r in self._db.execute(
                    "SELECT id FROM keyframes WHERE stamp BETWEEN ? AND ?", (s - 1e-6, s + 1e-6))] if evidence else []
                out.append({"label": lab, "stamp": stamp, "position": [x, y, z],
                            "covariance": None if cov is None else json.loads(cov), "confidence": conf,
                            "frame_id": frame, "evidence": ids})
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _CompressedDepth:
    """What :func:`vilasr_ros.messages.decode_depth` reads of a ``compressedDepth`` CompressedImage."""

    def __init__(self, data: bytes):
        self.format = "16UC1; compressedDepth png"
        self.data = data


class EmbeddingWorker:
    """Embeds stored keyframes in the background (oldest first, a batch at a time), so ingest never
    waits for the model; after a restart it goes on with what is not embedded yet.

    Attributes:
        embedded: Keyframes embedded. failed: Batches whose embedding raised (logged; retried later).
    """

    def __init__(self, memory: KeyframeMemory, embedder, batch: int = 8, idle_s: float = 0.5):
        self.memory, self.embedder, self.batch, self.idle_s = memory, embedder, batch, idle_s
        self.embedded = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-embedder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from PIL import Image

        while not self._stop.is_set():
            try:
                todo = self.memory.unembedded(self.embedder.name, self.batch)
                if not todo:
                    self._stop.wait(self.idle_s)
                    continue
                rgbs = [np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")) for _, jpeg in todo]
                self.memory.put_embeddings(self.embedder.name, [i for i, _ in todo], self.embedder.images(rgbs))
                self.embedded += len(todo)
            except Exception:  # noqa: BLE001 - a model or disk fault must not end the worker
                self.failed += 1
                logger.exception("keyframe memory: embedding failed")
                self._stop.wait(5 * self.idle_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)


class MemoryWriter:
    """Persists frames on a background thread through a bounded queue (never blocks the caller).

    Attributes:
        written: Keyframes stored.
        dropped: Frames dropped because the queue was full.
        failed: Frames whose write raised (logged, counted; the writer goes on).
    """

    def __init__(self, memory: KeyframeMemory):
        self.memory = memory
        self._queue: queue.Queue = queue.Queue(maxsize=memory.config.queue_size)
        self.written = self.dropped = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="memory-writer", daemon=True)
        self._thread.start()

    def offer(self, frame: Frame) -> bool:
        """Queue a frame for writing; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(frame)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            try:
                self.memory.add(frame)
                self.written += 1
            except Exception:  # noqa: BLE001 - a bad frame or a full disk must not end the writer
                self.failed += 1
                logger.exception("keyframe memory: write failed")

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (up to ``timeout_s``), then stop the thread."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    return
        self._thread.join(max(0.0, deadline - time.monotonic()))
