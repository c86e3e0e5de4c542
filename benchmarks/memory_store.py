"""Keyframe memory on disk (issue 26): ingest cost, disk per hour, retrieval latency against size.

1. **Ingest**: real 640×480 RGB-D frames (``test/data/rgbd``: Open3D's and TUM's samples) stored one
   by one; CPU ms per keyframe (process time: JPEG + depth PNG + the SQLite transaction), bytes per
   keyframe.
2. **Walking**: a camera walking 1.0 m/s and turning 30°/s now and then, 30 Hz for an hour of stream
   time, through the buffer's keyframe rule and then the memory's (:class:`MemoryConfig`): keyframes
   per hour, hence disk per hour and the writer's share of one core at 30 Hz VGA.
3. **Retrieval**: stores of 1k, 10k and 30k keyframes (real blob sizes; the images are the same
   encoded pair, which retrieval never decodes) on a walk through a 60 m × 40 m floor over hours;
   200 queries each (time windows, regions, ``near`` circles, a mix, none): p50/p95 of choosing 16 frames,
   and of choosing and decoding them.

Run: ``python benchmarks/memory_store.py [--sizes 1000 10000 30000] [--queries 200]``. Figures go to
stdout; the note of issue 26 quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vilasr_ros import memory as memory_mod  # noqa: E402
from vilasr_ros.buffer import BufferConfig, keyframe_due  # noqa: E402
from vilasr_ros.frames import Frame  # noqa: E402
from vilasr_ros.memory import KeyframeMemory, MemoryConfig  # noqa: E402
from vilasr_ros import retrieval  # noqa: E402
from vilasr_ros.retrieval import AgentMemory  # noqa: E402
from vilasr_ros.query import Query  # noqa: E402
from vilasr_ros.sources import open_source  # noqa: E402


def real_frames() -> list[Frame]:
    out = []
    for name in ("open3d_testdata_rgbd", "tum_rgbd_sample"):
        with open_source(f"rgbd_folder:{REPO / 'test/data/rgbd' / name}") as source:
            out += list(source)
    return out


def ingest(frames: list[Frame], repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        memory = KeyframeMemory(tmp)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for k in range(repeats):
            for f in frames:
                memory.add(f)
        n = repeats * len(frames)
        cpu_ms = (time.process_time() - cpu0) / n * 1000
        wall_ms = (time.perf_counter() - wall0) / n * 1000
        info = memory.info()
        memory.close()
    return {"keyframes": n, "cpu_ms_per_keyframe": round(cpu_ms, 1), "wall_ms_per_keyframe": round(wall_ms, 1),
            "bytes_per_keyframe": int(info["bytes"] / n), "image_bytes_per_keyframe": int(info["image_bytes"] / n)}


def walk_keyframes(hours: float = 1.0, rate_hz: float = 30.0) -> tuple[int, int, int]:
    """Frames, buffer keyframes and memory keyframes of a walk (1 m/s; a 90° turn at 30°/s every 20 s)."""
    buf_cfg, mem_cfg = BufferConfig(), MemoryConfig()
    n = int(hours * 3600 * rate_hz)
    x = y = yaw = 0.0
    last_buf = last_mem = None
    nb = nm = 0
    turning = 0.0
    for i in range(n):
        t = i / rate_hz
        if turning > 0:
            step = min(np.radians(30) / rate_hz, turning)
            yaw += step
            turning -= step
        else:
            x += np.cos(yaw) / rate_hz
            y += np.sin(yaw) / rate_hz
            if i % int(20 * rate_hz) == 0 and i:
                turning = np.radians(90)
        T = np.eye(4)
        T[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
        T[:3, 3] = [x, y, 1.2]
        frame = _Pose(t, T)
        if keyframe_due(t, T, last_buf, buf_cfg.min_translation_m, buf_cfg.min_rotation_deg, buf_cfg.max_interval_s):
            last_buf, nb = frame, nb + 1
            if keyframe_due(t, T, last_mem, mem_cfg.min_translation_m, mem_cfg.min_rotation_deg, mem_cfg.max_interval_s):
                last_mem, nm = frame, nm + 1
    return n, nb, nm


class _Pose:
    def __init__(self, stamp_s, T):
        self.stamp_s, self.T_world_camera = stamp_s, T


def build_store(path: Path, n: int, blobs: tuple[bytes, bytes], frame: Frame, seed: int = 0) -> None:
    """``n`` keyframes of a lawnmower walk over a 60 m × 40 m floor, 1 s apart, with one encoded image pair."""
    rng = np.random.default_rng(seed)
    original = memory_mod._encode
    memory_mod._encode = lambda f, q: blobs  # retrieval never decodes: skip the encoder while building
    try:
        memory = KeyframeMemory(path)
        import dataclasses

        for i in range(n):
            s = (i * 0.7) % (60 * 40 / 2)
            row, along = divmod(s, 60.0)
            xx = along if int(row) % 2 == 0 else 60.0 - along
            yy = 2.0 * (int(row) % 20)
            yaw = rng.uniform(-np.pi, np.pi)
            T = np.eye(4)
            T[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
            T[:3, 3] = [xx, yy, 1.2]
            memory.add(dataclasses.replace(frame, T_world_camera=T, stamp_s=1.7e9 + i))
        memory.close()
    finally:
        memory_mod._encode = original


def latency(path: Path, n: int, queries: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    regions = {f"r{k}": np.array([[x, y], [x + 10, y], [x + 10, y + 8], [x, y + 8]], float)
               for k, (x, y) in enumerate([(0, 0), (20, 10), (45, 30), (30, 0)])}
    memory = AgentMemory(path, readonly=True)
    memory.regions = regions
    select_ms, load_ms = [], []
    for q in range(queries):
        kind = q % 5
        fields = {}
        if kind in (0, 3):
            start = 1.7e9 + rng.uniform(0, n - 600)
            fields.update(since=start, until=start + rng.uniform(120, 1800))
        if kind == 1:
            fields["region"] = f"r{q % 4}"
        if kind in (2, 3):
            fields["near"] = {"x": float(rng.uniform(5, 55)), "y": float(rng.uniform(2, 38)), "radius_m": 4.0}
        query = Query(question="?", **fields)
        t0 = time.perf_counter()
        try:
            found = retrieval.retrieve(memory.store, 16, query.since, query.until,
                                        regions.get(query.region) if query.region else None, query.region,
                                        None if query.near is None else tuple(query.near.values()))
        except retrieval.MemoryStoreError:
            continue
        t1 = time.perf_counter()
        memory.store.frames([r.id for r in found.records])
        t2 = time.perf_counter()
        select_ms.append((t1 - t0) * 1000)
        load_ms.append((t2 - t0) * 1000)
    memory.close()
    return {"keyframes": n, "queries": len(select_ms),
            "select_p50_ms": round(float(np.percentile(select_ms, 50)), 1),
            "select_p95_ms": round(float(np.percentile(select_ms, 95)), 1),
            "select_and_decode_16_p95_ms": round(float(np.percentile(load_ms, 95)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 30000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", help="where to build the stores (default: a temporary folder)")
    args = parser.parse_args()

    frames = real_frames()
    ing = ingest(frames, 20)
    print("ingest (640x480 RGB-D, real samples):", json.dumps(ing))
    n, nb, nm = walk_keyframes()
    per_hour = nm * ing["bytes_per_keyframe"]
    cpu_share = nm / 3600 * ing["cpu_ms_per_keyframe"] / 1000
    print(json.dumps({"walk_frames_30hz_1h": n, "buffer_keyframes_per_h": nb, "memory_keyframes_per_h": nm,
                      "disk_GB_per_h": round(per_hour / 1e9, 2), "writer_share_of_one_core_at_30hz": round(cpu_share, 3)}))
    blobs = memory_mod._encode(frames[0], MemoryConfig().jpeg_quality)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"m{size}"
            t0 = time.perf_counter()
            build_store(path, size, blobs, frames[0])
            built = time.perf_counter() - t0
            row = latency(path, size, args.queries)
            row["build_s"] = round(built, 1)
            row["file_GB"] = round(sum(p.stat().st_size for p in path.iterdir()) / 1e9, 2)
            print("retrieval:", json.dumps(row))


if __name__ == "__main__":
    main()
