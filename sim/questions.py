"""Spatial questions with ground truth from a rendered scene (``scene.json``, see ``views``).

VSI-Bench's eight task types (Yang et al., "Thinking in Space", 2024; task names, question wording
and answer types as the benchmark asks them): object_counting, object_abs_distance,
object_size_estimation, room_size_estimation (numerical, scored with mean relative accuracy →
``problem_type`` ``regression``), object_rel_distance, object_rel_direction_{easy,medium,hard},
route_planning, obj_appearance_order (multiple choice, answer = option letter). Plus navigation
("Go to the sofa.", "Go to the chair closest to the table.") with the ground-truth target; targets
are furniture (no door or window) that at least one frame shows whole (``views.fully_visible``).

Conventions (the object table explains every answer):
- distances: between the closest points of two objects' bounding boxes (``scene.closest_distance``);
- directions: on the floor plane between bounding-box centres, standing at the positioning object,
  facing the orienting one; counter-clockwise angles are to the left (REP-103 z up);
- "seen in the video": at least ``MIN_SEEN_PX`` segmented pixels in some frame; first appearance is
  the first such frame;
- only categories with a single instance are named as "the X" (counting asks about the others);
- near-ties are not asked: each generator states the margin it keeps from a decision boundary.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from vilasr_ros_sim.scene import closest_distance
from vilasr_ros_sim.views import fully_visible

MIN_SEEN_PX = 400
VSI_TASKS = (
    "object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation",
    "object_rel_distance", "object_rel_direction_easy", "object_rel_direction_medium",
    "object_rel_direction_hard", "route_planning", "obj_appearance_order",
)
NAVIGATION_TASKS = ("navigation", "navigation_closest")
LETTERS = "ABCDEFGH"

Q_COUNT = "How many {cat}(s) are in this room?"
Q_ABS = "Measuring from the closest point of each object, what is the direct distance between the {a} and the {b} (in meters)?"
Q_SIZE = "What is the length of the longest dimension (length, width, or height) of the {cat}, measured in centimeters?"
Q_ROOM = "What is the size of this room (in square meters)? If multiple rooms are shown, estimate the size of the combined space."
Q_REL_DIST = "Measuring from the closest point of each object, which of these objects ({choices}) is the closest to the {cat}?"
Q_DIR = "If I am standing by the {p} and facing the {o}, "
Q_DIR_EASY = Q_DIR + "is the {q} to the left or the right of the {o}?"
Q_DIR_MEDIUM = Q_DIR + ("is the {q} to my left, right, or back? An object is to my back if I would have to turn at "
                        "least 135 degrees in order to face it.")
Q_DIR_HARD = Q_DIR + ("is the {q} to my front-left, front-right, back-left, or back-right? The directions refer to "
                      "the quadrants of a Cartesian plane (if I am standing at the origin and facing along the positive y-axis).")
Q_ROUTE = ("You are a robot beginning at the {start} facing the {facing}. You want to navigate to the {goal}. You will "
           "perform the following actions (Note: for each [please fill in], choose either 'turn back,' 'turn left,' or "
           "'turn right.'): {steps} You have reached the final destination.")
Q_ORDER = "What will be the first-time appearance order of the following categories in the video: {cats}?"
Q_NAV = "Go to the {cat}."
Q_NAV_CLOSEST = "Go to the {cat} closest to the {ref}."


def signed_angle(p, o, q) -> float:
    """Angle (rad, (−π, π]) from direction p→o to direction p→q on the floor; positive = to the left."""
    a = np.asarray(o, float)[:2] - np.asarray(p, float)[:2]
    b = np.asarray(q, float)[:2] - np.asarray(p, float)[:2]
    return math.atan2(a[0] * b[1] - a[1] * b[0], a[0] * b[0] + a[1] * b[1])


def direction_easy(theta: float) -> str | None:
    """left/right of the orienting object; None within 15° of straight ahead or behind."""
    d = math.degrees(abs(theta))
    if d < 15 or d > 165:
        return None
    return "left" if theta > 0 else "right"


def direction_medium(theta: float) -> str | None:
    """left/right/back (back: ≥ 135° turn); None within 10° of 135° or within 15° of ahead."""
    d = math.degrees(abs(theta))
    if d < 15 or abs(d - 135) < 10:
        return None
    if d >= 135:
        return "back"
    return "left" if theta > 0 else "right"


def direction_hard(theta: float) -> str | None:
    """Quadrant front-left/front-right/back-left/back-right; None within 10° of an axis."""
    d = math.degrees(theta)
    if min(abs(d - a) for a in (-180, -90, 0, 90, 180)) < 10:
        return None
    return ("front" if abs(d) < 90 else "back") + "-" + ("left" if d > 0 else "right")


def turn(delta: float) -> str | None:
    """Route turn for a heading change (rad): left 35°–145°, right, back beyond 155°; None otherwise."""
    d = math.degrees(delta)
    if 35 <= d <= 145:
        return "turn left"
    if -145 <= d <= -35:
        return "turn right"
    if abs(d) >= 155:
        return "turn back"
    return None


def appearance(meta: dict) -> dict[int, int]:
    """First frame index where each instance has at least ``MIN_SEEN_PX`` pixels."""
    first: dict[int, int] = {}
    for frame in meta["frames"]:
        for iid, info in frame["visible"].items():
            if info["pixels"] >= MIN_SEEN_PX and int(iid) not in first:
                first[int(iid)] = frame["index"]
    return first


class _Builder:
    def __init__(self, meta: dict, rng: np.random.Generator, image_paths: list[str], per_type: int):
        self.meta, self.rng, self.images, self.per_type = meta, rng, image_paths, per_type
        self.rows = {o["instance_id"]: o for o in meta["objects"]}
        self.first = appearance(meta)
        by_cat: dict[str, list[dict]] = {}
        for o in meta["objects"]:
            by_cat.setdefault(o["category"], []).append(o)
        self.by_cat = by_cat
        # Categories every instance of which is seen; "unique" ones can be named "the X".
        self.seen = sorted(c for c, objs in by_cat.items() if all(o["instance_id"] in self.first for o in objs))
        self.unique = [c for c in self.seen if len(by_cat[c]) == 1]
        self.items: list[dict] = []

    def one(self, cat: str) -> dict:
        return self.by_cat[cat][0]

    def add(self, task: str, question: str, answer: str, options: list[str] | None, gt: dict, **extra) -> None:
        mc = options is not None
        self.items.append({
            "question": question,
            "options": options or [],
            "answer": answer,
            "problem_type": "multiple choice" if mc else ("free-form" if task in NAVIGATION_TASKS else "regression"),
            "original_question_type": task,
            "image_path": list(self.images),
            "data_type": "video",
            "ground_truth": gt,
            **extra,
        })

    def mc(self, correct: str, distractors: list[str]) -> tuple[list[str], str]:
        choices = [correct] + [d for d in dict.fromkeys(distractors) if d != correct]
        order = self.rng.permutation(len(choices))
        shuffled = [choices[i] for i in order]
        return [f"{LETTERS[k]}. {c}" for k, c in enumerate(shuffled)], LETTERS[shuffled.index(correct)]

    def sample(self, pool: list, k: int) -> list:
        idx = self.rng.permutation(len(pool))[:k]
        return [pool[i] for i in idx]

    # --- the eight VSI-Bench tasks -------------------------------------------------------------
    def counting(self):
        cats = [c for c in self.seen if len(self.by_cat[c]) >= 2]
        for cat in self.sample(cats, self.per_type):
            n = len(self.by_cat[cat])
            self.add("object_counting", Q_COUNT.format(cat=cat), str(n), None,
                     {"category": cat, "instance_ids": [o["instance_id"] for o in self.by_cat[cat]], "value": n})

    def abs_distance(self):
        pairs = [(a, b) for a, b in itertools.combinations(self.unique, 2)
                 if closest_distance(self.one(a), self.one(b)) >= 0.1]
        for a, b in self.sample(pairs, self.per_type):
            d = closest_distance(self.one(a), self.one(b))
            self.add("object_abs_distance", Q_ABS.format(a=a, b=b), f"{d:.2f}", None,
                     {"instance_ids": [self.one(a)["instance_id"], self.one(b)["instance_id"]], "value": round(d, 4)})

    def size(self):
        cats = [c for c in self.unique if c not in ("door", "window")]
        for cat in self.sample(cats, self.per_type):
            longest = max(self.one(cat)["size"]) * 100.0
            self.add("object_size_estimation", Q_SIZE.format(cat=cat), str(int(round(longest))), None,
                     {"instance_ids": [self.one(cat)["instance_id"]], "value": round(longest, 2)})

    def room(self):
        area = self.meta["room_area_m2"]
        self.add("room_size_estimation", Q_ROOM, f"{area:.1f}", None, {"value": area})

    def rel_distance(self):
        made = 0
        for target in self.sample(self.unique, len(self.unique)):
            others = [c for c in self.unique if c != target]
            if len(others) < 4 or made >= self.per_type:
                continue
            choices = self.sample(others, 4)
            dist = {c: closest_distance(self.one(target), self.one(c)) for c in choices}
            ranked = sorted(choices, key=dist.get)
            if dist[ranked[1]] - dist[ranked[0]] < 0.15:  # near-tie: not asked
                continue
            options = [f"{LETTERS[k]}. {c}" for k, c in enumerate(choices)]
            letter = LETTERS[choices.index(ranked[0])]
            self.add("object_rel_distance", Q_REL_DIST.format(choices=", ".join(choices), cat=target), letter, options,
                     {"target": self.one(target)["instance_id"], "distances": {c: round(d, 4) for c, d in dist.items()}})
            made += 1

    def rel_direction(self):
        levels = (("easy", Q_DIR_EASY, direction_easy, ["left", "right"]),
                  ("medium", Q_DIR_MEDIUM, direction_medium, ["left", "right", "back"]),
                  ("hard", Q_DIR_HARD, direction_hard, ["front-left", "front-right", "back-left", "back-right"]))
        triples = [t for t in itertools.permutations(self.unique, 3)
                   if all(closest_distance(self.one(t[0]), self.one(x)) >= 0.3 for x in t[1:])]
        triples = self.sample(triples, len(triples))
        for level, template, classify, labels in levels:
            made = 0
            for p, o, q in triples:
                if made >= self.per_type:
                    break
                theta = signed_angle(self.one(p)["centre"], self.one(o)["centre"], self.one(q)["centre"])
                label = classify(theta)
                if label is None:
                    continue
                options = [f"{LETTERS[k]}. {c}" for k, c in enumerate(labels)]
                self.add(f"object_rel_direction_{level}", template.format(p=p, o=o, q=q), LETTERS[labels.index(label)],
                         options, {"instance_ids": [self.one(c)["instance_id"] for c in (p, o, q)],
                                   "angle_deg": round(math.degrees(theta), 3), "label": label})
                made += 1

    def route(self):
        floor = [c for c in self.unique if self.one(c)["support"] is None and c not in ("door", "window")]
        made = 0
        for length in (3, 4) * 20:
            if made >= self.per_type or len(floor) < length:
                break
            path = self.sample(floor, length)
            centres = [np.array(self.one(c)["centre"][:2]) for c in path]
            turns = []
            for k in range(1, length - 1):
                h0, h1 = centres[k] - centres[k - 1], centres[k + 1] - centres[k]
                turns.append(turn(math.atan2(h0[0] * h1[1] - h0[1] * h1[0], float(h0 @ h1))))
            if any(t is None for t in turns):
                continue
            steps, n = [f"1. Go forward until the {path[1]}."], 2
            for k, _ in enumerate(turns):
                steps += [f"{n}. [please fill in]", f"{n + 1}. Go forward until the {path[k + 2]}."]
                n += 2
            correct = ", ".join(t.title() for t in turns)
            combos = [", ".join(x.title() for x in c) for c in itertools.product(("turn left", "turn right", "turn back"), repeat=len(turns))]
            distractors = self.sample([c for c in combos if c != correct], 3)
            options, letter = self.mc(correct, distractors)
            self.add("route_planning", Q_ROUTE.format(start=path[0], facing=path[1], goal=path[-1], steps=" ".join(steps)),
                     letter, options, {"instance_ids": [self.one(c)["instance_id"] for c in path], "turns": turns})
            made += 1

    def appearance_order(self):
        made = 0
        for _ in range(10 * self.per_type):
            if made >= self.per_type or len(self.unique) < 4:
                break
            chosen = self.sample(self.unique, 4)
            firsts = [self.first[self.one(c)["instance_id"]] for c in chosen]
            if len(set(firsts)) < 4:  # two categories first seen in the same frame: no order
                continue
            ordered = [c for _, c in sorted(zip(firsts, chosen))]
            perms = [", ".join(p) for p in itertools.permutations(ordered) if list(p) != ordered]
            options, letter = self.mc(", ".join(ordered), self.sample(perms, 3))
            self.add("obj_appearance_order", Q_ORDER.format(cats=", ".join(chosen)), letter, options,
                     {"first_frame": dict(zip(chosen, firsts))})
            made += 1

    # --- navigation ------------------------------------------------------------------------------
    def navigation(self, standoff_m: float):
        from vilasr_ros.geometry import approach_pose

        camera = np.array(self.meta["clear_centre"] + [0.0])
        # A robot is only sent to what some frame shows whole (views.fully_visible), and not to structures.
        clear = {int(iid) for f in self.meta["frames"] for iid, info in f["visible"].items() if fully_visible(info)}
        goals = [c for c in self.seen if c not in ("door", "window")]
        targets = [c for c in self.unique if c in goals and self.one(c)["support"] is None and self.one(c)["instance_id"] in clear]
        for cat in self.sample(targets, self.per_type):
            self._nav("navigation", Q_NAV.format(cat=cat), cat, self.one(cat), camera, standoff_m, approach_pose)
        made = 0
        for cat in self.sample([c for c in goals if len(self.by_cat[c]) >= 2], len(goals)):
            for ref in self.sample(self.unique, len(self.unique)):
                if made >= self.per_type or ref == cat:
                    continue
                ranked = sorted(self.by_cat[cat], key=lambda o: closest_distance(o, self.one(ref)))
                d0, d1 = (closest_distance(o, self.one(ref)) for o in ranked[:2])
                if d1 - d0 < 0.3 or ranked[0]["instance_id"] not in clear:
                    continue
                self._nav("navigation_closest", Q_NAV_CLOSEST.format(cat=cat, ref=ref), cat, ranked[0], camera,
                          standoff_m, approach_pose, ref=self.one(ref)["instance_id"])
                made += 1
                break

    def _nav(self, task, question, cat, row, camera, standoff_m, approach_pose, **gt):
        pos, quat = approach_pose(np.array(row["centre"]), camera, standoff_m)
        self.add(task, question, cat, None, {"instance_ids": [row["instance_id"]], **gt},
                 target={"instance_id": row["instance_id"], "category": cat, "position": row["centre"],
                         "approach_position": [round(float(v), 4) for v in pos],
                         "approach_orientation": [round(float(v), 6) for v in quat], "frame_id": "map"})


def scene_questions(meta: dict, image_paths: list[str], rng: np.random.Generator, per_type: int = 1,
                    standoff_m: float = 0.8) -> list[dict]:
    """All question types for one rendered scene, at most ``per_type`` of each.

    Args:
        meta: The scene's ``scene.json`` content.
        image_paths: The frames (paths as written into ``image_path``), in video order.
        rng: Randomness for which objects are asked about and option order.
        per_type: Questions per task type (fewer when the scene does not allow them).
        standoff_m: Approach distance of navigation target poses.

    Returns:
        ViLaSR-eval items: ``question``, ``options``, ``answer``, ``problem_type``,
        ``original_question_type``, ``image_path``, ``data_type`` plus ``ground_truth`` (the values
        behind the answer) and, for navigation, ``target``.
    """
    b = _Builder(meta, rng, image_paths, per_type)
    b.counting()
    b.abs_distance()
    b.size()
    b.room()
    b.rel_distance()
    b.rel_direction()
    b.route()
    b.appearance_order()
    b.navigation(standoff_m)
    return b.items
