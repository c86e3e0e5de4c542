"""``vilasr sim generate`` / ``vilasr sim view``: datasets of rendered scenes, mazes and questions.

Layout of ``DIR``:

- ``questions.json`` — a list of ViLaSR-eval items (``question``, ``options``, ``answer``,
  ``problem_type``, ``original_question_type``, ``image_path`` relative to ``DIR``, ``data_type``)
  plus ``id``, ``scene``, ``ground_truth`` and, for navigation, ``target`` (see ``questions``);
- ``scenes/scene_NNNN/`` — one rendered scene each (layout in ``views``);
- ``mazes/maze_NNNN.png`` — maze images;
- ``dataset.json`` — the command's settings (seed, counts, render and trajectory settings).

Everything is a function of ``--seed``: scene k uses seed ``SeedSequence([seed, k])``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from vilasr_ros_sim.maze import draw_maze, generate_maze, maze_questions
from vilasr_ros_sim.questions import scene_questions
from vilasr_ros_sim.render import RenderConfig
from vilasr_ros_sim.scene import SceneConfig, generate_scene
from vilasr_ros_sim.trajectory import TrajectoryConfig
from vilasr_ros_sim.views import write_scene_folder

log = logging.getLogger(__name__)


def scene_seed(seed: int, k: int) -> int:
    """Seed of scene ``k`` of a dataset generated with ``seed``."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def generate_dataset(out: str | Path, scenes: int, seed: int = 0, *, mazes: int | None = None, per_type: int = 1,
                     render: RenderConfig | None = None, trajectory: TrajectoryConfig | None = None,
                     scene_config: SceneConfig | None = None, progress: bool = False) -> list[dict]:
    """Generate ``scenes`` rooms (rendered along a walkthrough) and ``mazes`` mazes (default: one per
    scene) with their questions under ``out``; ``progress`` shows a bar (n/N, rate, ETA) on stderr.

    Returns:
        The question items (also written to ``out/questions.json``).

    Raises:
        ValueError: ``scenes`` or ``mazes`` negative, or ``out`` holds a different dataset.
    """
    if scenes < 0 or (mazes is not None and mazes < 0):
        raise ValueError("scenes and mazes must be >= 0")
    mazes = scenes if mazes is None else mazes
    render, trajectory = render or RenderConfig(), trajectory or TrajectoryConfig()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    items: list[dict] = []
    bar = tqdm(total=scenes + mazes, desc="sim scenes+mazes", unit="scene", disable=not progress, dynamic_ncols=True)
    for k in range(scenes):
        name = f"scene_{k:04d}"
        scene = generate_scene(scene_seed(seed, k), scene_config)
        meta = write_scene_folder(scene, root / "scenes" / name, render, trajectory)
        paths = [f"scenes/{name}/{f['color']}" for f in meta["frames"]]
        qs = scene_questions(meta, paths, np.random.default_rng([seed, k, 1]), per_type=per_type)
        for j, q in enumerate(qs):
            items.append({"id": f"sim{seed}_{name}_{j:02d}", "scene": f"scenes/{name}", **q})
        log.info("%s: %s room, %d objects, %d questions", name, scene.shape, len(scene.objects), len(qs))
        bar.update(1)
    (root / "mazes").mkdir(exist_ok=True)
    for k in range(mazes):
        rng = np.random.default_rng([seed, k, 2])
        maze = generate_maze(rng, int(rng.integers(5, 9)))
        rel = f"mazes/maze_{k:04d}.png"
        draw_maze(maze).save(root / rel)
        for j, q in enumerate(maze_questions(maze, rel, rng)):
            items.append({"id": f"sim{seed}_maze_{k:04d}_{j:02d}", "scene": None, **q})
        bar.update(1)
    bar.close()
    (root / "questions.json").write_text(json.dumps(items, indent=1) + "\n")
    settings = {"seed": seed, "scenes": scenes, "mazes": mazes, "per_type": per_type, "render": asdict(render),
                "trajectory": asdict(trajectory), "questions": len(items)}
    (root / "dataset.json").write_text(json.dumps(settings, indent=1) + "\n")
    return items


def contact_sheet(folder: str | Path, out: str | Path | None = None, scenes: int = 4, frames_per_scene: int = 6,
                  tile_width: int = 320) -> Path:
    """A PNG grid of frames with ground-truth boxes (mask boxes, category labels), one row per scene.

    Boxes are drawn with the runtime's drawing code (the same look as the model's Object Mapper).

    Returns:
        The PNG path (default ``DIR/contact_sheet.png``).

    Raises:
        FileNotFoundError: ``folder`` has no ``scenes/``.
    """
    from vilasr_ros.drawing import draw_annotations

    root = Path(folder)
    scene_dirs = sorted((root / "scenes").glob("scene_*"))[:scenes]
    if not scene_dirs:
        raise FileNotFoundError(f"{root}/scenes has no scene folders (run `vilasr sim generate` first)")
    rows = []
    for sd in scene_dirs:
        meta = json.loads((sd / "scene.json").read_text())
        cats = {o["instance_id"]: o["category"] for o in meta["objects"]}
        picks = np.linspace(0, len(meta["frames"]) - 1, min(frames_per_scene, len(meta["frames"]))).round().astype(int)
        tiles = []
        for i in picks:
            f = meta["frames"][i]
            img = Image.open(sd / f["color"]).convert("RGB")
            boxes = [{"bbox_2d": v["box_px"], "label": cats[int(iid)]} for iid, v in f["visible"].items() if v["pixels"] >= 400]
            img = draw_annotations(img, boxes, [])
            tiles.append(img.resize((tile_width, round(img.height * tile_width / img.width))))
        rows.append(tiles)
    th = rows[0][0].height
    sheet = Image.new("RGB", (tile_width * max(len(r) for r in rows), th * len(rows)), "white")
    for y, tiles in enumerate(rows):
        for x, tile in enumerate(tiles):
            sheet.paste(tile, (x * tile_width, y * th))
    path = Path(out) if out else root / "contact_sheet.png"
    sheet.save(path)
    return path
