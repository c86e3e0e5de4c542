"""Multi-room houses and long walks through them, with ground truth of what each keyframe shows.

A :class:`House` is 3–8 generated rooms (:func:`vilasr_ros_sim.scene.generate_scene`, an apartment's
or an office's mix of furniture) laid out along a corridor in one ``map`` frame (REP-105, metres,
z up): room ``k``'s own frame is shifted by ``offsets[k]``, its door opens on the corridor. Each room
renders on its own (its walls are closed, so a camera inside sees only that room).

:func:`house_walk` is a robot's shift: for at least ``minutes`` of stream time it works in one part
of the house after another — the rooms split in three groups, each third of the shift visiting its
group's rooms again and again, the last third now and then (one visit in five) going back to a room
of the middle group — so some objects were last seen early, some midway and some late — inside a room it walks the free circle while panning a full turn
(0.3 m/s, 30°/s), between rooms it walks the corridor at 1 m/s (no frames there: the corridor has no
objects). Poses come at ``rate_hz``; :func:`keyframe_poses` keeps those the robot's keyframe rule
keeps. :func:`visibility` is the ground truth the long-horizon benchmark scores against: which
objects a rendered keyframe shows *whole* (at least ``MIN_SEEN_PX`` segmented pixels, none on the
image border).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vilasr_ros_sim.questions import MIN_SEEN_PX
from vilasr_ros_sim.scene import Scene, SceneConfig, generate_scene
from vilasr_ros_sim.trajectory import look_at_pose

KINDS = ("apartment", "office")
CORRIDOR_M = 1.5


@dataclass
class House:
    """Rooms in one map frame.

    Attributes:
        seed: Generation seed.
        kind: ``apartment`` or ``office``.
        rooms: Each room in its own frame (:class:`~vilasr_ros_sim.scene.Scene`).
        offsets: (x, y) of each room's frame in ``map`` (m).
        names: Region names (``room_0`` ...).
    """

    seed: int
    kind: str
    rooms: list[Scene]
    offsets: list[np.ndarray]
    names: list[str] = field(default_factory=list)

    def regions(self) -> dict[str, list[list[float]]]:
        """Each room's floor polygon in ``map`` (what a site's ``regions_file`` would hold)."""
        return {n: (r.polygon + o).round(4).tolist() for n, r, o in zip(self.names, self.rooms, self.offsets)}

    def objects(self) -> list[dict]:
        """Every furniture object: ``{"room", "instance_id", "category", "centre"}`` (centre in ``map``)."""
        out = []
        for k, (room, off) in enumerate(zip(self.rooms, self.offsets)):
            for o in room.furniture():
                c = o.centre.copy()
                c[:2] += off
                out.append({"room": k, "instance_id": o.instance_id, "category": o.category, "centre": c.round(4).tolist()})
        return out

    def unique_objects(self) -> list[dict]:
        """Objects whose category occurs once in their room ("the sofa in room_2" names one thing),
        with ``unique_in_house`` saying whether the name alone does."""
        objs = self.objects()
        in_room: dict[tuple, int] = {}
        in_house: dict[str, int] = {}
        for o in objs:
            in_room[(o["room"], o["category"])] = in_room.get((o["room"], o["category"]), 0) + 1
            in_house[o["category"]] = in_house.get(o["category"], 0) + 1
        return [{**o, "unique_in_house": in_house[o["category"]] == 1} for o in objs
                if in_room[(o["room"], o["category"])] == 1]


def generate_house(seed: int, rooms: int | None = None, kind: str | None = None) -> House:
    """3–8 rooms (``rooms`` to fix it) side by side along a corridor, rooms ``seed * 100 + k``."""
    rng = np.random.default_rng(seed)
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    n = int(rooms if rooms is not None else rng.integers(3, 9))
    if not 1 <= n <= 8:
        raise ValueError(f"a house has 1 to 8 rooms, got {n}")
    config = SceneConfig(room_size_m=(4.0, 6.5), objects=(8, 12) if kind == "apartment" else (10, 14))
    scenes, offsets, x = [], [], 0.0
    for k in range(n):
        scene = generate_scene(seed * 100 + k, config)
        lo, hi = scene.polygon.min(axis=0), scene.polygon.max(axis=0)
        offsets.append(np.array([x - lo[0], -lo[1]]))  # rooms in a row, their y from 0 (the corridor below)
        x += (hi[0] - lo[0]) + 0.3
        scenes.append(scene)
    return House(seed, kind, scenes, offsets, [f"room_{k}" for k in range(n)])


@dataclass(frozen=True)
class WalkPose:
    """One pose of a walk: stamp (s from the start), room index, ``T_map_camera`` and the room-frame pose."""

    stamp_s: float
    room: int
    T_map_camera: np.ndarray
    T_room_camera: np.ndarray


def _shift(T: np.ndarray, offset) -> np.ndarray:
    out = T.copy()
    out[:2, 3] += offset
    return out


def house_walk(house: House, minutes: float = 20.0, rate_hz: float = 30.0, seed: int = 0,
               camera_height_m: float = 1.1, pitch_deg: float = 12.0) -> list[WalkPose]:
    """A shift's walk through ``house`` (module docstring): at least ``minutes`` of stream time."""
    rng = np.random.default_rng(seed)
    pitch = math.radians(pitch_deg)
    poses: list[WalkPose] = []
    t, last = 0.0, None
    rooms = [int(k) for k in rng.permutation(len(house.rooms))]
    groups = [rooms[g::3] for g in range(3)]
    groups = [g for g in groups if g] or [rooms]
    end = minutes * 60.0
    while t < end:
        part = min(len(groups) - 1, int(len(groups) * t / end))
        back = groups[part - 1] if part == len(groups) - 1 and part >= 1 else []
        pool = back if back and rng.random() < 0.2 else groups[part]
        k = int(pool[int(rng.integers(len(pool)))])
        if last is not None and k == last and len(pool) > 1:  # a group of one room: it stays there
            continue
        room, off = house.rooms[k], house.offsets[k]
        if last is not None:  # the corridor from the last room's door to this one's: time passes
            t += float(np.linalg.norm((house.rooms[last].clear_centre + house.offsets[last]) - (room.clear_centre + off))) + 2 * CORRIDOR_M
        turns = float(rng.uniform(1.0, 1.6))
        start = float(rng.uniform(-math.pi, math.pi))
        duration = turns * 2 * math.pi / math.radians(30.0)
        radius = min(0.45, room.clear_radius_m - 0.35)
        for i in range(int(duration * rate_hz)):
            yaw = start + math.radians(30.0) * i / rate_hz
            xy = room.clear_centre - radius * np.array([math.cos(yaw), math.sin(yaw)])
            T_room = look_at_pose([xy[0], xy[1], camera_height_m], yaw, pitch)
            poses.append(WalkPose(t + i / rate_hz, k, _shift(T_room, off), T_room))
        t += duration
        last = k
    return poses


def keyframe_poses(poses: list[WalkPose], min_translation_m: float, min_rotation_deg: float,
                   max_interval_s: float) -> list[WalkPose]:
    """The poses a keyframe rule keeps (:func:`vilasr_ros.buffer.keyframe_due`)."""
    from vilasr_ros.buffer import keyframe_due

    out, last = [], None
    for p in poses:
        probe = _Probe(p.stamp_s, p.T_map_camera)
        if keyframe_due(p.stamp_s, p.T_map_camera, last, min_translation_m, min_rotation_deg, max_interval_s):
            out.append(p)
            last = probe
    return out


class _Probe:
    def __init__(self, stamp_s, T):
        self.stamp_s, self.T_world_camera = stamp_s, T


def visibility(instance: np.ndarray) -> set[int]:
    """Instance ids shown whole in a segmentation image: at least ``MIN_SEEN_PX`` pixels at 640×480
    (scaled to the image's area), none on the image border."""
    min_px = MIN_SEEN_PX * instance.size / (640 * 480)
    ids, counts = np.unique(instance, return_counts=True)
    border = set(np.unique(np.concatenate([instance[0], instance[-1], instance[:, 0], instance[:, -1]])).tolist())
    return {int(i) for i, c in zip(ids, counts) if i > 0 and c >= min_px and int(i) not in border}
