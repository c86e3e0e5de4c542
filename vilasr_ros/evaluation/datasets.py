"""Benchmark items → the first turn the authors' ``eval/infer.py`` builds for each dataset.

Every benchmark ships as a JSON list (or JSONL) of ViLaSR-eval items: ``question``, ``options``,
``answer``, ``problem_type``, ``original_question_type``, ``image_path`` (one path or a list,
relative to the image folder) and ``data_type``. Per dataset (reference ``eval_model``, commit
61669c0):

- ``vsi_bench``: all frames, each with its caption, then the video preamble + question + options
  (prompt kind ``video``); the reference runs 16 frames per item.
- ``maze``, ``spatialeval_real``: one image; question + options + "The index of the given image is 1."
  (kind ``single``); 20 turns for mazes.
- ``spar_bench``, ``mmsi_bench``: question + options with the benchmarks' own answer instructions
  removed, then a newline and, for ``position_matching``/``camera_motion_infer``, the sentence about
  0–1000 coordinates; ``data_type`` ``single_view`` → kind ``single``, ``multi_view`` → captions
  without the video preamble (kind ``multi_view``).
- ``sim``: a dataset from ``vilasr sim generate`` (scene items as ``vsi_bench``, maze items as
  ``maze``).

ViLaSR-eval (huggingface.co/datasets/AntResearchNLP/ViLaSR-eval) is one folder, ``benchmark/`` in the
reference README: ``vsi_bench.json``, ``maze.json``, ``SpatialEval_spatialreal.json``,
``spar_bench.json``, ``mmsi_bench.json`` beside the images, with ``image_path`` relative to that folder
(``eval/infer.sh``: ``--input-file $DATADIR/$NAME.json --image-folder $DATADIR``). ``--data`` may name
that folder; the reference's dataset names (``SpatialEval_spatialreal``, ``spar_bench_tiny``) are
accepted for ours (:func:`canonical_dataset`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros import protocol
from vilasr_ros.errors import DatasetError, QueryError

DATASETS = ("vsi_bench", "maze", "spatialeval_real", "spar_bench", "mmsi_bench", "sim")
# The file stem of each benchmark in ViLaSR-eval = the reference's --dataset name (eval/infer.sh script_paths).
REFERENCE_NAMES = {"vsi_bench": "vsi_bench", "maze": "maze", "spatialeval_real": "SpatialEval_spatialreal",
                   "spar_bench": "spar_bench", "mmsi_bench": "mmsi_bench"}
# Reference --dataset names (eval/infer.py, eval/evaluate.py) → ours.
ALIASES = {"SpatialEval_spatialreal": "spatialeval_real", "spar_bench_tiny": "spar_bench"}
DEFAULT_FRAMES = 16
SPAR_REMOVED = ("Your answer can only include one of options A, B, C or D.", "Answer using a single number and nothing else.")
SPAR_COORDINATE_NOTE = ("The values represent the bounding box coordinates normalized to a 0-1000 scale, with the "
                        "top-left corner as the origin of the image.")
SPAR_COORDINATE_TYPES = ("position_matching", "camera_motion_infer")


@dataclass
class EvalItem:
    """One benchmark item, ready for the reasoner.

    Attributes:
        id: ``item["id"]`` when present, else ``"item_<position>"`` (position in the data file).
        position: 0-based position in the data file.
        raw: The item as read (copied into the results line).
        image_paths: Absolute image paths in the order shown.
        question: The question text handed to :func:`vilasr_ros.protocol.build_question_text`.
        options: Options handed to it (None where the dataset folds them into ``question``).
        problem_type: Reference answer type.
        kind: ``single``, ``video`` or ``multi_view``.
        max_turns: Turn budget (10; 20 for mazes).
        missing: Image paths that do not exist or cannot be decoded (the item is then skipped).
        invalid: Why the item cannot be asked (a field of the wrong type); the item is skipped.
    """

    id: str
    position: int
    raw: dict[str, Any]
    image_paths: list[Path]
    question: str
    options: list[str] | None
    problem_type: str
    kind: str
    max_turns: int
    missing: list[str] = field(default_factory=list)
    invalid: str | None = None


def canonical_dataset(name: str) -> str:
    """Our name for a dataset given by ours or the reference's (``SpatialEval_spatialreal`` →
    ``spatialeval_real``, ``spar_bench_tiny`` → ``spar_bench``); anything else is returned as given."""
    return ALIASES.get(name, name)


def find_data_file(data: str | Path, dataset: str) -> Path:
    """The question file: ``data`` itself, ``DIR/questions.json`` (sim), ``DIR/<reference name>.json``
    (the ViLaSR-eval folder, e.g. ``benchmark/SpatialEval_spatialreal.json``), or the one JSON/JSONL in ``DIR``.

    Raises:
        DatasetError: Nothing or several candidates found.
    """
    path = Path(data)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DatasetError(f"--data {path} does not exist")
    if (path / "questions.json").is_file():
        return path / "questions.json"
    dataset = canonical_dataset(dataset)
    for name in dict.fromkeys((REFERENCE_NAMES.get(dataset, dataset), dataset)):
        for suffix in (".json", ".jsonl"):
            if (path / f"{name}{suffix}").is_file():
                return path / f"{name}{suffix}"
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and p.name != "dataset.json")
    if len(files) != 1:
        raise DatasetError(f"--data {path}: expected one .json/.jsonl question file for {dataset}, found "
                         f"{[p.name for p in files] or 'none'}; pass the file itself")
    return files[0]


def read_items(path: Path) -> list[dict[str, Any]]:
    """A JSON list or JSON Lines file of items.

    Raises:
        DatasetError: Not JSON, or not a list of objects.
    """
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise DatasetError(f"{path} must hold a list of item objects")
    return items


def _paths(raw: dict, root: Path) -> list[Path]:
    paths = raw.get("image_path")
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise DatasetError("'image_path' must be a path or a non-empty list of paths")
    return [root / p for p in paths]


def _check_images(paths: list[Path]) -> list[str]:
    """Paths that do not open *and decode* (:func:`vilasr_ros.images.image_problems`)."""
    from vilasr_ros.images import image_problems

    return list(image_problems(paths))


def _invalid(raw: dict[str, Any]) -> str | None:
    """Why an item's fields cannot be asked, or None."""
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        return f"'question' must be non-empty text, got {question!r}"[:200]
    options = raw.get("options")
    if options is not None and (not isinstance(options, list) or not all(isinstance(o, str) for o in options)):
        return f"'options' must be a list of strings, got {options!r}"[:200]
    if isinstance(raw.get("answer"), (dict, list)) or raw.get("answer") is None:
        return f"'answer' must be text or a number, got {raw.get('answer')!r}"[:200]
    return None


def prepare_item(dataset: str, raw: dict[str, Any], position: int, root: Path, frames: int = DEFAULT_FRAMES) -> EvalItem:
    """Build one item's first-turn inputs for ``dataset`` (see module docstring).

    Args:
        dataset: One of :data:`DATASETS`.
        raw: The item.
        position: Its position in the data file.
        root: Folder that ``image_path`` is relative to.
        frames: Video items with more frames are sampled uniformly down to this many.

    Raises:
        DatasetError: Unknown dataset, or an item without question/answer/problem_type/image_path.
    """
    dataset = canonical_dataset(dataset)
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)} "
                         f"(or the reference's {', '.join(ALIASES)})")
    item_id = str(raw["id"]) if raw.get("id") is not None else f"item_{position}"
    for key in ("question", "answer", "problem_type", "image_path"):
        if key not in raw:
            raise DatasetError(f"item {position} has no {key!r}")
    invalid = _invalid(raw)
    try:
        ptype = protocol.normalize_problem_type(raw["problem_type"])
        paths = _paths(raw, root)
    except (QueryError, DatasetError) as exc:
        ptype, paths, invalid = "free-form", [], invalid or str(exc)
    if invalid:
        return EvalItem(item_id, position, raw, paths, "", None, ptype, "single", 1, [], invalid)
    qtype = str(raw.get("original_question_type") or "")
    # infer.py L602, L636, L663: options are listed only for the type written exactly "multiple choice"
    # (the answer-type suffix is looked up lower-cased, so "Multiple Choice" gets it without the options).
    listed = raw.get("problem_type") == "multiple choice" and isinstance(raw.get("options"), list)
    question, options = str(raw["question"]), (list(raw["options"]) if listed else None)
    max_turns = protocol.prompts()["max_turns"]["default"]
    is_maze = dataset == "maze" or qtype.startswith("maze")
    if is_maze:
        max_turns = protocol.prompts()["max_turns"]["maze"]
    if dataset in ("maze", "spatialeval_real") or (dataset == "sim" and raw.get("data_type") == "image"):
        kind, paths = "single", paths[:1]
    elif dataset in ("vsi_bench", "sim"):
        kind = "video"
        if len(paths) > frames:
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, frames).round().astype(int)]
    else:  # spar_bench, mmsi_bench
        if options is not None:
            question = question + "\n" + "\n".join(options)
        for sentence in SPAR_REMOVED:
            question = question.replace(sentence, "")
        question = question + "\n" + (SPAR_COORDINATE_NOTE if qtype in SPAR_COORDINATE_TYPES else "")
        options = None
        data_type = raw.get("data_type")
        if data_type == "single_view":
            kind, paths = "single", paths[:1]
        elif data_type == "multi_view":
            kind = "multi_view"
        else:
            raise DatasetError(f"item {position}: data_type must be single_view or multi_view, got {data_type!r}")
    return EvalItem(item_id, position, raw, paths, question, options, ptype, kind, max_turns, _check_images(paths))


def load_dataset(dataset: str, data: str | Path, image_folder: str | Path | None = None,
                 frames: int = DEFAULT_FRAMES) -> tuple[list[EvalItem], Path]:
    """Read and prepare every item.

    Returns:
        ``(items, image_root)``; items whose images are missing carry ``missing`` (reported and
        skipped by the runner, never scored).

    Raises:
        DatasetError: The file cannot be found or read, or an item is malformed.
    """
    dataset = canonical_dataset(dataset)
    path = find_data_file(data, dataset)
    root = Path(image_folder) if image_folder else path.parent
    items = [prepare_item(dataset, raw, i, root, frames) for i, raw in enumerate(read_items(path))]
    if items and all(it.invalid for it in items):
        raise DatasetError(f"{path}: no item can be asked (item 0: {items[0].invalid})")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: item ids are not unique")
    return items, root
