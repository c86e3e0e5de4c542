"""The ``teacher`` engine: ViLaSR-format turns written from a simulated scene's ground truth.

For an item of a generated sim dataset (``vilasr sim generate``) the teacher knows every object's
mask box in every frame (``scene.json``) and the answer, and writes what a good ViLaSR trajectory
looks like (spec §3): an Object Mapper turn boxing the referenced objects on the frames where they
are best seen, a Path Tracer turn joining them on the drawn image when two share a frame, then the
answer. With ``reflect`` it first draws one box deliberately off the object and corrects it in the
next turn (the same label re-boxed differently — what the RL reflection reward and stage 2's filter
look for, spec §5). Mazes get the route traced cell to cell.

It is an :class:`~vilasr_ros.engines.base.Engine` configured with its dataset folder (``model``:
the folder of ``questions.json`` and the scenes' files). Evaluation and stage 2 pass the item they
ask as ``request.metadata["item"]``; ``vilasr ask --engine teacher --model DATASET_DIR`` finds the item
by its question text (and, when several scenes ask the same question, by comparing the first image
with each candidate's first frame).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult
from vilasr_ros.errors import ConfigError, EngineError
from vilasr_ros.families import model_family
from vilasr_ros_sim.maze import CELL_PX as MAZE_CELL_PX, MARGIN_PX as MAZE_MARGIN_PX
from vilasr_ros_sim.questions import MIN_SEEN_PX as MIN_PIXELS  # fewer mask pixels: too small to box


def _fully_visible(info: dict) -> bool:
    return not info["truncated"] and info["occluded_fraction"] <= 0.05


class _Scene:
    """The parts of ``scene.json`` the teacher reads, indexed by image position."""

    def __init__(self, scene_dir: Path, image_paths: list[str], model_sizes: list[tuple[int, int]]):
        meta = json.loads((scene_dir / "scene.json").read_text())
        by_color = {f["color"]: f for f in meta["frames"]}
        self.frames = []
        for path in image_paths:
            key = "/".join(Path(path).parts[-2:])
            if key not in by_color:
                raise EngineError(f"teacher: {path} is not a frame of {scene_dir}")
            self.frames.append(by_color[key])
        self.objects = {o["instance_id"]: o for o in meta["objects"]}
        w, h = meta["render"]["width"], meta["render"]["height"]
        self.scale = [(mw / w, mh / h) for mw, mh in model_sizes]

    def by_category(self, category: str) -> list[int]:
        return [i for i, o in self.objects.items() if o["category"] == category]

    def info(self, k: int, iid: int) -> dict | None:
        info = self.frames[k]["visible"].get(str(iid))
        return info if info is not None and info["pixels"] >= MIN_PIXELS else None

    def best(self, iid: int, frames: list[int] | None = None) -> int | None:
        """Image position where ``iid`` is best seen: wholly visible first, then most pixels."""
        cands = [(k, self.info(k, iid)) for k in (frames if frames is not None else range(len(self.frames)))]
        cands = [(k, i) for k, i in cands if i is not None]
        if not cands:
            return None
        return max(cands, key=lambda c: (_fully_visible(c[1]), c[1]["pixels"]))[0]

    def together(self, ids: list[int]) -> int | None:
        """Image position where all ``ids`` are visible, the least visible of them largest."""
        best, score = None, None
        for k in range(len(self.frames)):
            infos = [self.info(k, i) for i in ids]
            if any(i is None for i in infos):
                continue
            s = (all(_fully_visible(i) for i in infos), min(i["pixels"] for i in infos))
            if score is None or s > score:
                best, score = k, s
        return best

    def box(self, k: int, iid: int) -> list[int]:
        """Mask box of ``iid`` in image ``k``, in the model's (resized) pixels."""
        sx, sy = self.scale[k]
        x1, y1, x2, y2 = self.frames[k]["visible"][str(iid)]["box_px"]
        return [int(round(x1 * sx)), int(round(y1 * sy)), int(round(x2 * sx)), int(round(y2 * sy))]


def _centre(box: list[int]) -> list[int]:
    return [int(round((box[0] + box[2]) / 2)), int(round((box[1] + box[3]) / 2))]


@dataclass(frozen=True)
class TeacherConfig:
    """Settings of the ``teacher`` engine.

    Attributes:
        model: The generated sim dataset folder (``questions.json`` and the scenes' files): where the
            teacher reads the ground truth of every item it answers (required to answer).
        reflect: Probability in [0, 1] that a trajectory draws one box wrong and corrects it.
        seed: Randomness of that choice.
        model_family: The family whose coordinates the trajectories use (:mod:`vilasr_ros.families`;
            None: ViLaSR's ``qwen2_5_vl``, pixels of the resized image; ``qwen3_vl``: 0–1000).
    """

    model: str | None = None
    reflect: float = 0.0
    seed: int = 0
    model_family: str | None = None

    def __post_init__(self):
        if not 0.0 <= self.reflect <= 1.0:
            raise ValueError(f"reflect must be in [0, 1], got {self.reflect}")
        model_family(self.model_family)  # an unknown name: ConfigError listing the known ones
        if self.model is not None and not (Path(self.model) / "questions.json").is_file():
            raise ValueError(f"{self.model} is not a sim dataset folder (no questions.json); "
                             "make one with `vilasr sim generate --out DIR`")


class TeacherEngine(Engine):
    """Writes ground-truth trajectories for sim dataset items (see module docstring).

    Args:
        config: A :class:`TeacherConfig`, or its ``model`` (the dataset folder).
        **options: :class:`TeacherConfig` fields (``reflect``, ``seed``), over those of ``config``.

    Raises:
        EngineError: (from ``generate``) the item cannot be found or is not a sim item.
    """

    name = "teacher"
    config_class = TeacherConfig
    standalone_requires = ("model",)

    primary_option = "model"

    def __init__(self, config: TeacherConfig | str | Path | None = None, /, **options: Any):
        self.config = config = self.resolve_config(config, options)
        if not config.model:
            raise ConfigError("the teacher engine needs --model DATASET_DIR (its sim dataset folder; engine option model)")
        self.root = Path(config.model)
        self.reflect = float(config.reflect)
        self.seed = int(config.seed)
        self.family = model_family(config.model_family)  # the loop reads the teacher's coordinates in it
        self._items: list[dict] | None = None
        self.reset()

    def reset(self) -> None:
        self._steps: list[tuple] | None = None
        self._latest: dict[int, int] = {}

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": "ground truth", "reflect": self.reflect, "model_family": self.family.name}

    # ------------------------------------------------------------------ finding the item
    def _lookup(self, request: GenerationRequest) -> tuple[dict, Path]:
        meta = request.metadata or {}
        if "item" in meta:  # evaluation and stage 2 pass the item they ask; its files are under the root
            return meta["item"], self.root
        if self._items is None:
            try:
                self._items = json.loads((self.root / "questions.json").read_text())
            except (OSError, ValueError) as exc:
                raise EngineError(f"teacher: cannot read {self.root / 'questions.json'}: {exc}") from exc
        first = request.messages[1]["content"]
        text = "".join(p.get("text", "") for p in first) if isinstance(first, list) else str(first)
        n = len(request.images)
        cands = [it for it in self._items if it["question"] in text and len(it["image_path"]) == n]
        if not cands:
            raise EngineError(f"teacher: no item of {self.root} asks this question with {n} image(s)")
        if len({json.dumps(c["image_path"]) for c in cands}) > 1:
            from PIL import Image

            shown = np.asarray(request.images[0].convert("RGB"), float)
            def diff(item):
                img = Image.open(self.root / item["image_path"][0]).convert("RGB").resize(request.images[0].size)
                return float(np.abs(np.asarray(img, float) - shown).mean())
            cands = [min(cands, key=diff)]
        return cands[0], self.root

    # ------------------------------------------------------------------ planning
    def _plan(self, request: GenerationRequest) -> list[tuple]:
        item, root = self._lookup(request)
        task = item.get("original_question_type", "")
        sizes = [im.size for im in request.images]
        rng = np.random.default_rng([self.seed, sum(map(ord, str(item.get("id", item["question"]))))])
        reflect = rng.random() < self.reflect
        if task.startswith("maze_"):
            return self._maze_plan(item, sizes[0])
        if not item.get("scene"):
            raise EngineError(f"teacher: item {item.get('id')} has no scene (not a sim dataset item)")
        scene = _Scene(root / item["scene"], item["image_path"], sizes)
        gt = item.get("ground_truth") or {}
        answer = str(item["answer"])
        ids = list(gt.get("instance_ids", []))
        labels: dict[int, str] = {}
        pair_line = None
        if task == "object_counting":
            for j, iid in enumerate(ids):
                labels[iid] = f"{gt['category']} {j + 1}"
            why = f"I need to count every {gt['category']} in the room; I will mark each one where it is best seen."
            done = f"I marked {len(ids)} distinct {gt['category']}(s) across the frames."
        elif task == "object_rel_distance":
            ids = [gt["target"]] + [scene.by_category(c)[0] for c in gt["distances"]]
            closest = min(gt["distances"], key=gt["distances"].get)
            pair_line = (ids[0], scene.by_category(closest)[0])
            why = "I will locate the reference object and each candidate to compare their distances."
            done = f"Comparing the marked objects, the {closest} is the closest."
        elif task == "obj_appearance_order":
            firsts = gt["first_frame"]
            ids = [scene.by_category(c)[0] for c in firsts]
            why = "I will mark each category in the frame where it first appears."
            done = "Ordering the marks by frame gives the order: " + ", ".join(sorted(firsts, key=firsts.get)) + "."
        elif task == "room_size_estimation":
            why = "The room's floor is visible across the frames; I estimate its extent from the walls and furniture."
            return [("answer", f"{why} The floor area is about {answer} square meters.", answer)]
        else:
            if task == "navigation_closest":
                ids = ids + [gt["ref"]]
            if len(ids) >= 2:
                pair_line = (ids[0], ids[1])
            names = " and ".join(scene.objects[i]["category"] for i in ids)
            why = f"The question is about the {names}. I will locate {'them' if len(ids) > 1 else 'it'} in the frames."
            done = "With the objects located, I can answer."
        for iid in ids:
            labels.setdefault(iid, scene.objects[iid]["category"])

        # Where each object is boxed: a shared frame for the pair joined by a line, else its best frame.
        where: dict[int, int] = {}
        if pair_line is not None:
            k = scene.together(list(pair_line))
            if k is not None:
                where.update({pair_line[0]: k, pair_line[1]: k})
            else:
                pair_line = None
        if task == "obj_appearance_order":
            frames = [f["index"] for f in scene.frames]
            for iid, cat in zip(ids, gt["first_frame"]):
                k = frames.index(gt["first_frame"][cat]) if gt["first_frame"][cat] in frames else None
                where[iid] = k if k is not None and scene.info(k, iid) else scene.best(iid)
        for iid in ids:
            if iid not in where:
                where[iid] = scene.best(iid)
        boxes = [(where[i], scene.box(where[i], i), labels[i]) for i in ids if where[i] is not None]
        steps: list[tuple] = []
        if boxes and reflect:
            k, good, label = boxes[0]
            w, h = sizes[k]
            bw = good[2] - good[0]
            shift = bw + 10 if good[2] + bw + 10 < w else -(bw + 10)
            wrong = [max(0, min(w, good[0] + shift)), good[1], max(0, min(w, good[2] + shift)), good[3]]
            steps.append(("boxes", why, [(k, wrong, label)] + boxes[1:]))
            # Drawn images keep earlier strokes (spec §3), so the correction redraws frame k afresh.
            again = [(kk, b, lab) for kk, b, lab in boxes if kk == k]
            steps.append(("fresh boxes", f"The box labelled {label} on image {{img}} does not cover the {label}; "
                                         f"it is beside it. I will redraw image {k + 1} with the box on the object.", again))
        elif boxes:
            steps.append(("boxes", why, boxes))
        if pair_line is not None:
            k = where[pair_line[0]]
            a, b = scene.box(k, pair_line[0]), scene.box(k, pair_line[1])
            la, lb = labels[pair_line[0]], labels[pair_line[1]]
            steps.append(("lines", f"Both are marked on image {{img}}; I will join the {la} and the {lb} to see "
                                   "how they relate.", [(k, _centre(a), _centre(b), f"{la} to {lb}")]))
        steps.append(("answer", done, answer))
        return steps

    def _maze_plan(self, item: dict, size: tuple[int, int]) -> list[tuple]:
        maze = item["maze"]
        n = maze["n"]
        full = 2 * MAZE_MARGIN_PX + n * MAZE_CELL_PX
        sx, sy = size[0] / full, size[1] / full

        def centre(cell):
            r, c = cell
            return [int(round((MAZE_MARGIN_PX + (c + 0.5) * MAZE_CELL_PX) * sx)),
                    int(round((MAZE_MARGIN_PX + (r + 0.5) * MAZE_CELL_PX) * sy))]

        route = [tuple(c) for c in maze["route"]]
        corners = [route[0]]
        for prev, cur, nxt in zip(route, route[1:], route[2:]):
            if (cur[0] - prev[0], cur[1] - prev[1]) != (nxt[0] - cur[0], nxt[1] - cur[1]):
                corners.append(cur)
        corners.append(route[-1])
        lines = [(0, centre(a), centre(b), f"segment {j + 1}") for j, (a, b) in enumerate(zip(corners, corners[1:]))]
        return [
            ("lines", "I will trace the only open route from S to E, one straight segment at a time.", lines),
            ("answer", f"The traced route has {len(lines)} straight segments and {len(lines) - 1} changes of direction.",
             str(item["answer"])),
        ]

    # ------------------------------------------------------------------ writing turns
    def generate(self, request: GenerationRequest) -> GenerationResult:
        if self._steps is None:
            self._steps = self._plan(request)
            self._latest = {}
        if not self._steps:
            raise EngineError("teacher: the trajectory is already complete")
        kind, thought, payload = self._steps.pop(0)
        fresh = kind.startswith("fresh")
        kind = kind.split()[-1]
        if kind != "answer" and "{img}" in thought:  # the image the step's first entry refers to, as shown now
            thought = thought.replace("{img}", str(self._latest.get(payload[0][0], payload[0][0] + 1)))
        if kind == "answer":
            return GenerationResult(text=f"<think> {thought} </think> Action: Answer\n<answer> {payload} </answer>")
        items = []
        for entry in payload:
            k = entry[0]
            index = k + 1 if fresh else self._latest.get(k, k + 1)
            size = request.images[k].size  # plans are in its resized pixels; written in the family's convention
            if kind == "boxes":
                items.append({"index": index, "bbox_2d": self.family.from_pixels(entry[1], size), "label": entry[2]})
            else:
                items.append({"index": index, "start_point_2d": self.family.from_pixels(entry[1], size),
                              "end_point_2d": self.family.from_pixels(entry[2], size), "label": entry[3]})
        # The loop makes one new image per edited image, in order of first mention (spec §3).
        order = list(dict.fromkeys(e[0] for e in payload))
        for j, k in enumerate(order):
            self._latest[k] = len(request.images) + j + 1
        action = "Object Mapper" if kind == "boxes" else "Path Tracer"
        body = json.dumps(items)
        return GenerationResult(text=f"<think> {thought} </think> Action: {action}\n```json\n{body}\n```")
