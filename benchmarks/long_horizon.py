"""Long sessions: is the object the question is about among the 16 frames the model is shown?

For each house (:mod:`vilasr_ros_sim.house`: 3–8 rooms, a 20-minute walk that visits and revisits
them), the robot's keyframes are rendered (MuJoCo, 320×240) and stored in a real keyframe memory
(:class:`vilasr_ros.memory.KeyframeMemory`); the RAM buffer is what today's agent has at the end of
the walk (its last 256 keyframes). Questions: every object whose category is unique in its room ("the
sofa in room_2") and that some remembered keyframe shows whole, split by when it was seen (early, midway, late third
of the session) — by its *last* sighting: an object last seen early is one the robot has not passed
since). For each, the 16 frames each strategy selects at the end of the walk, and recall@16:
at least one of them shows the object whole (ground truth from the renderer's segmentation — used only
for scoring).

Strategies and the signals they use (never the sim's ground truth):

- ``buffer uniform`` / ``buffer coverage``: today's agent (stamps; poses);
- ``memory, no hint``: all remembered keyframes, viewpoint coverage (poses); with ``--embedder-model``
  real SigLIP/CLIP weights, also the object's name ranked by text-image similarity (its own embeddings);
- ``memory + region``: the room's polygon as a ``region`` (poses) — what "in the kitchen" gives;
- ``memory + since``: ``since`` = now minus the time since the object's last sighting rounded up to
  5 minutes (stamps) — what "in the last 15 minutes" gives.

Not measured here: the teacher engine's answer accuracy and target error on the selected frames (the
teacher answers items of a generated dataset; wiring a house's selection into one is left to do).

Run: ``MUJOCO_GL=egl python benchmarks/long_horizon.py [--houses 3] [--minutes 20] [--embedder-model DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vilasr_ros.buffer import BufferConfig, select_frames  # noqa: E402
from vilasr_ros.frames import Frame  # noqa: E402
from vilasr_ros.memory import MemoryConfig  # noqa: E402
from vilasr_ros.retrieval import AgentMemory, retrieve  # noqa: E402
from vilasr_ros_sim.house import generate_house, house_walk, keyframe_poses, visibility  # noqa: E402
from vilasr_ros_sim.render import RenderConfig, SceneRenderer  # noqa: E402

T0 = 1.7e9
STRATEGIES = ("buffer uniform", "buffer coverage", "memory, no hint", "memory + region", "memory + since")


class _Rec:
    def __init__(self, stamp_s, T):
        self.stamp_s, self.T_world_camera = stamp_s, T


def run_house(seed: int, minutes: float, embedder_model: str | None, tmp: Path) -> tuple[list[dict], dict]:
    house = generate_house(seed)
    walk = house_walk(house, minutes=minutes, seed=seed)
    buf_cfg, mem_cfg = BufferConfig(), MemoryConfig()
    buffer_kf = keyframe_poses(walk, buf_cfg.min_translation_m, buf_cfg.min_rotation_deg, buf_cfg.max_interval_s)
    memory_kf = keyframe_poses(buffer_kf, mem_cfg.min_translation_m, mem_cfg.min_rotation_deg, mem_cfg.max_interval_s)
    recent = buffer_kf[-buf_cfg.max_frames:]
    cfg = RenderConfig(width=320, height=240, shadows=False)
    renderers = [SceneRenderer(room, cfg) for room in house.rooms]
    memory = AgentMemory(tmp / f"house{seed}", embedder_model=embedder_model)
    shown: dict[float, set] = {}  # walk stamp -> {(room, instance)} shown whole
    stored: dict[float, set] = {}  # memory stamp (as stored) -> the same
    remembered = {id(p) for p in memory_kf}
    t_render = t_ingest = 0.0
    for p in sorted({id(p): p for p in memory_kf + recent}.values(), key=lambda p: p.stamp_s):
        t0 = time.perf_counter()
        view = renderers[p.room].render(p.T_room_camera)
        t1 = time.perf_counter()
        shown[p.stamp_s] = {(p.room, i) for i in visibility(view.instance)}
        if id(p) in remembered:
            memory.store.add(Frame(view.rgb, view.depth_m, cfg.intrinsics(), p.T_map_camera, T0 + p.stamp_s))
            stored[T0 + p.stamp_s] = shown[p.stamp_s]
        t_render += t1 - t0
        t_ingest += time.perf_counter() - t1
    for r in renderers:
        r.close()
    if memory.embedding is not None:
        while memory.embedding.embedded < len(memory_kf):
            time.sleep(0.2)
    now = T0 + walk[-1].stamp_s
    duration = walk[-1].stamp_s
    rows = []
    regions = {k: np.asarray(v) for k, v in house.regions().items()}
    for obj in house.unique_objects():
        key = (obj["room"], obj["instance_id"])
        seen = [p.stamp_s for p in memory_kf if key in shown[p.stamp_s]]
        if not seen:
            continue
        phase = ("early", "midway", "late")[min(2, int(3 * seen[-1] / duration))]  # when it was last seen
        row = {"house": seed, "object": obj["category"], "phase": phase}
        for name, strategy in (("buffer uniform", "uniform"), ("buffer coverage", "coverage")):
            picked = select_frames([_Rec(p.stamp_s, p.T_map_camera) for p in recent], 16, strategy)
            row[name] = any(key in shown[r.stamp_s] for r in picked)
        last = seen[-1]
        since = now - math.ceil((now - (T0 + last)) / 300.0) * 300.0
        for name, kwargs in (("memory, no hint", {}),
                             ("memory + region", {"region": regions[house.names[obj["room"]]], "region_name": house.names[obj["room"]]}),
                             ("memory + since", {"since": since})):
            score = None
            if memory.embedder is not None:
                vector = memory.embedder.text(f"a photo of a {obj['category']}")
                score = lambda ids, v=vector: memory.store.similarity(memory.embedder.name, v, ids)  # noqa: E731
            found = retrieve(memory.store, 16, score=score, text=obj["category"], **kwargs)
            row[name] = any(key in stored[r.stamp_s] for r in found.records)
        rows.append(row)
    info = memory.store.info()
    memory.close()
    stats = {"house": seed, "kind": house.kind, "rooms": len(house.rooms), "minutes": round(duration / 60, 1),
             "frames_30hz": len(walk), "buffer_keyframes": len(buffer_kf), "memory_keyframes": len(memory_kf),
             "memory_MB": round(info["bytes"] / 1e6, 1), "render_s": round(t_render, 1), "ingest_s": round(t_ingest, 1),
             "questions": len(rows)}
    return rows, stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--houses", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--embedder-model", help="real SigLIP/CLIP weights for the semantic rows (not downloadable here)")
    args = parser.parse_args()
    if not args.embedder_model:
        print("semantic retrieval: not run (no --embedder-model with real weights); 'memory, no hint' uses poses only")
    all_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.houses):
            rows, stats = run_house(seed, args.minutes, args.embedder_model, Path(tmp))
            print(json.dumps(stats))
            all_rows += rows
    print(f"\nrecall@16 over {len(all_rows)} questions ({args.houses} houses, {args.minutes:g}-minute walks)")
    print("| strategy | all | early | midway | late |")
    print("|---|---|---|---|---|")
    for name in STRATEGIES:
        cells = []
        for phase in (None, "early", "midway", "late"):
            sel = [r[name] for r in all_rows if phase is None or r["phase"] == phase]
            cells.append(f"{100 * sum(sel) / len(sel):.0f} % ({sum(sel)}/{len(sel)})" if sel else "—")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
