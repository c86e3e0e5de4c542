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
- ``memory, no hint``: all remembered keyframes, the 16 that together see the most map voxels (their
  depth and poses: :func:`vilasr_ros.retrieval.space_coverage`); with ``--embedder-model`` real
  SigLIP/CLIP weights, up to 8 of them ranked by the similarity of the object's name to each keyframe
  (its own embeddings);
- ``memory + region``: the same inside the room's polygon as a ``region`` (poses) — what "in the
  kitchen" gives;
- ``memory + since``: the same after ``since`` = now minus the time since the object's last sighting
  rounded up to 5 minutes (stamps) — what "in the last 15 minutes" gives.

Beside them, a bound that is not a strategy: ``ceiling`` — the 16 keyframes a selector that knows
which objects every keyframe shows whole (the renderer's segmentation, i.e. ground truth) but not the
question would pick (greedy maximum coverage of the question objects), over all remembered keyframes
(``no hint``) and over the ``since`` window. About the most a question-blind selection (poses,
depth, stamps) can reach (greedy coverage: near the best set, not provably it); the gap above it
needs the question — ranking by the embedder's text-image similarity.

Then the teacher on each strategy's 16 frames (``--no-teacher`` skips it): the drawing loop runs over
them with a scripted model that does what the ``teacher`` engine does — it boxes the object on the
selected frame that shows most of it (its segmentation box; the model's role, never the selection's)
and answers — and the robot's own grounding (:func:`vilasr_ros.grounding.ground_trace`: depth, poses)
turns that box into a map target. Reported per strategy: answered (a target was grounded: some frame
showed the object), accuracy (target within 0.5 m of the object's box: the distance from the point to
its oriented bounding box, as ``SimSource.target_error``) and the median / p90 target error of the
answered ones. With no frame showing the object the teacher cannot box it: that question is
unanswered, as a model shown the wrong frames would fail it.

Run: ``MUJOCO_GL=egl python benchmarks/long_horizon.py [--houses 3] [--first-house 0] [--minutes 20]
[--embedder-model DIR] [--no-teacher] [--rows FILE]`` (``--first-house 3``: houses the retrieval was
not tuned on; ``--rows``: every question's row as JSON).
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

from vilasr_ros import protocol  # noqa: E402
from vilasr_ros.buffer import BufferConfig, select_frames  # noqa: E402
from vilasr_ros.engines.replay import ReplayEngine  # noqa: E402
from vilasr_ros.frames import Frame  # noqa: E402
from vilasr_ros.grounding import ground_trace  # noqa: E402
from vilasr_ros.reasoner import Reasoner, ReasonerConfig  # noqa: E402
from vilasr_ros_sim.views import point_box_distance  # noqa: E402
from vilasr_ros.memory import MemoryConfig  # noqa: E402
from vilasr_ros.retrieval import AgentMemory, retrieve  # noqa: E402
from vilasr_ros_sim.house import generate_house, house_walk, keyframe_poses, visibility  # noqa: E402
from vilasr_ros_sim.render import RenderConfig, SceneRenderer  # noqa: E402

T0 = 1.7e9
STRATEGIES = ("buffer uniform", "buffer coverage", "memory, no hint", "memory + region", "memory + since")
CEILINGS = ("ceiling, no hint", "ceiling + since")


class _Rec:
    def __init__(self, stamp_s, T):
        self.stamp_s, self.T_world_camera = stamp_s, T


ACCURATE_M = 0.5
"""A target within this distance of the object's box answers "where is it" (m)."""


def teacher_target(poses: list, key: tuple[int, int], obj: dict, render, cfg) -> float | None:
    """The teacher's target error (m) on these keyframes (module docstring), or None when none of
    them shows the object whole (nothing to box: no answer).

    ``render(pose)`` gives a keyframe's rendered view (cached by the caller). Only keyframes in the
    object's room are rendered (the house's rooms are separate scenes: no other keyframe can show it);
    the others go to the loop as blank frames — the teacher never boxes them and grounding uses only
    the boxed frame's depth and pose."""
    from vilasr_ros_sim.house import visibility

    room, iid = key
    views = [render(p) if p.room == room else None for p in poses]
    shown = [(int((v.instance == iid).sum()), k) for k, v in enumerate(views) if v is not None
             and iid in visibility(v.instance)]
    if not shown:
        return None
    _, k = max(shown)
    ys, xs = np.nonzero(views[k].instance == iid)
    blank_rgb = np.zeros((cfg.height, cfg.width, 3), np.uint8)
    blank_depth = np.zeros((cfg.height, cfg.width), np.float32)
    frames = [Frame(v.rgb if v is not None else blank_rgb, v.depth_m if v is not None else blank_depth,
                    cfg.intrinsics(), p.T_map_camera, T0 + p.stamp_s) for v, p in zip(views, poses)]
    size = protocol.resized_size(cfg.width, cfg.height, protocol.prompts()["image_max_pixels"]["eval_default"])
    sx, sy = size[0] / cfg.width, size[1] / cfg.height
    box = [int(round(xs.min() * sx)), int(round(ys.min() * sy)), int(round((xs.max() + 1) * sx)),
           int(round((ys.max() + 1) * sy))]
    label = obj["category"]
    script = [f'<think> I will mark the {label}. </think> Action: Object Mapper\n```json\n'
              f'[{{"index": {k + 1}, "bbox_2d": {box}, "label": "{label}"}}]\n```',
              f"<think> The {label} is marked. </think> Action: Answer\n<answer> the {label} </answer>"]
    trace = Reasoner(ReplayEngine(script), ReasonerConfig()).run([f.rgb for f in frames], f"Where is the {label}?",
                                                                 "free-form")
    result = ground_trace(trace, frames, label)
    if not result.ok:
        return None
    return point_box_distance(np.asarray(result.position_world), obj["centre"], obj["size"], obj["yaw"])


def ceiling(shown: list[set], wanted: set, k: int = 16) -> set:
    """The question objects (``wanted``) that the best ``k`` of these keyframes show, chosen without the
    question: greedy maximum coverage of ``wanted`` over each keyframe's ground-truth ``shown`` set."""
    left = set(wanted)
    for _ in range(k):
        best = max(shown, key=lambda s: len(s & left), default=set())
        if not best & left:
            break
        left -= best
    return set(wanted) - left


def run_house(seed: int, minutes: float, embedder_model: str | None, tmp: Path, teacher: bool = True
              ) -> tuple[list[dict], dict]:
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
    if memory.embedding is not None:
        while memory.embedding.embedded < len(memory_kf):
            time.sleep(0.2)
    now = T0 + walk[-1].stamp_s
    duration = walk[-1].stamp_s
    rows = []
    regions = {k: np.asarray(v) for k, v in house.regions().items()}
    by_stamp = {p.stamp_s: p for p in recent}
    views: dict[float, object] = {}  # the teacher's renders, each keyframe once

    def render(p):
        if p.stamp_s not in views:
            views[p.stamp_s] = renderers[p.room].render(p.T_room_camera)
        return views[p.stamp_s]

    by_memory_stamp = {T0 + p.stamp_s: p for p in memory_kf}  # as stored
    boxes = {(k, o.instance_id): (o.size, o.yaw) for k, room in enumerate(house.rooms) for o in room.furniture()}
    asked = {(o["room"], o["instance_id"]) for o in house.unique_objects()}
    bound: dict[float | None, set] = {None: ceiling(list(stored.values()), asked)}  # since (None: all) -> covered
    for obj in house.unique_objects():
        key = (obj["room"], obj["instance_id"])
        seen = [p.stamp_s for p in memory_kf if key in shown[p.stamp_s]]
        if not seen:
            continue
        phase = ("early", "midway", "late")[min(2, int(3 * seen[-1] / duration))]  # when it was last seen
        row = {"house": seed, "object": obj["category"], "phase": phase}
        size, yaw = boxes[key]
        truth = {**obj, "size": size, "yaw": yaw}
        picks: dict[str, list] = {}
        for name, strategy in (("buffer uniform", "uniform"), ("buffer coverage", "coverage")):
            picked = select_frames([_Rec(p.stamp_s, p.T_map_camera) for p in recent], 16, strategy)
            row[name] = any(key in shown[r.stamp_s] for r in picked)
            picks[name] = [by_stamp[r.stamp_s] for r in picked]
        last = seen[-1]
        since = now - math.ceil((now - (T0 + last)) / 300.0) * 300.0
        if since not in bound:
            bound[since] = ceiling([v for t, v in stored.items() if t >= since], asked)
        row["ceiling, no hint"], row["ceiling + since"] = key in bound[None], key in bound[since]
        for name, kwargs in (("memory, no hint", {}),
                             ("memory + region", {"region": regions[house.names[obj["room"]]], "region_name": house.names[obj["room"]]}),
                             ("memory + since", {"since": since})):
            score = None
            if memory.embedder is not None:
                vector = memory.embedder.text(f"a photo of a {obj['category']}")
                score = lambda ids, v=vector: memory.store.similarity(memory.embedder.name, v, ids)  # noqa: E731
            found = retrieve(memory.store, 16, score=score, text=obj["category"], **kwargs)
            row[name] = any(key in stored[r.stamp_s] for r in found.records)
            picks[name] = [by_memory_stamp[r.stamp_s] for r in found.records]
        if teacher:
            for name, poses in picks.items():
                row[f"{name} error_m"] = teacher_target(sorted(poses, key=lambda p: p.stamp_s), key, truth, render, cfg)
        rows.append(row)
    for r in renderers:
        r.close()
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
    parser.add_argument("--first-house", type=int, default=0, help="seed of the first house")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--embedder-model", help="real SigLIP/CLIP weights for the semantic rows (not downloadable here)")
    parser.add_argument("--no-teacher", action="store_true", help="recall only: skip the teacher's answers and targets")
    parser.add_argument("--rows", type=Path, help="write every question's row (object, phase, hit and error per strategy) as JSON")
    args = parser.parse_args()
    if not args.embedder_model:
        print("semantic retrieval: not run (no --embedder-model with real weights); memory rows use depth, poses and stamps")
    else:
        print(f"semantic retrieval: {args.embedder_model} ranks up to 8 of each memory row's 16 frames by the "
              f"similarity of 'a photo of a <object>' to each keyframe (meaningful with real weights only)")
    all_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_house, args.first_house + args.houses):
            rows, stats = run_house(seed, args.minutes, args.embedder_model, Path(tmp), not args.no_teacher)
            print(json.dumps(stats))
            all_rows += rows
    if args.rows:
        args.rows.write_text(json.dumps(all_rows, indent=1))
    print(f"\nrecall@16 over {len(all_rows)} questions ({args.houses} house{'s' * (args.houses != 1)} from seed {args.first_house}, {args.minutes:g}-minute walks)")
    print("| strategy | all | early | midway | late |")
    print("|---|---|---|---|---|")
    for name in STRATEGIES + CEILINGS:
        cells = []
        for phase in (None, "early", "midway", "late"):
            sel = [r[name] for r in all_rows if phase is None or r["phase"] == phase]
            cells.append(f"{100 * sum(sel) / len(sel):.0f} % ({sum(sel)}/{len(sel)})" if sel else "—")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("(ceiling: not a strategy — 16 frames chosen knowing from ground truth what each shows whole, but not the question)")
    if args.no_teacher:
        return
    print(f"\nthe teacher on each strategy's 16 frames: answered (a target grounded), accurate (within "
          f"{ACCURATE_M} m of the object's box), target error of the answered ones")
    print("| strategy | answered | accurate | median error (m) | p90 error (m) |")
    print("|---|---|---|---|---|")
    for name in STRATEGIES:
        errors = [r[f"{name} error_m"] for r in all_rows]
        answered = [e for e in errors if e is not None]
        good = sum(e <= ACCURATE_M for e in answered)
        med = f"{np.median(answered):.2f}" if answered else "—"
        p90 = f"{np.percentile(answered, 90):.2f}" if answered else "—"
        print(f"| {name} | {100 * len(answered) / len(errors):.0f} % | {100 * good / len(errors):.0f} % ({good}/{len(errors)}) "
              f"| {med} | {p90} |")


if __name__ == "__main__":
    main()
