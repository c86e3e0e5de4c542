"""The training recipe on CPU with the tiny model: the text trained on is the text the runtime shows,
stage 1 learns, stage 2 keeps exactly what its criteria select, stage 3 trains on multi-turn drawing
rollouts; site recordings become items; the shipped smoke configs run from the command line."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("datasets")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from vilasr_ros import protocol  # noqa: E402
from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult  # noqa: E402
from vilasr_ros.errors import DatasetError  # noqa: E402
from vilasr_ros.trace import Trace  # noqa: E402
from conftest import RGBD  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = 12544  # image area cap of the smoke runs (16 vision tokens per frame)
# fp32: trl's configs default to bf16, and bf16 autocast on a CPU without native bf16 kernels (this
# one) runs a step of the tiny model 2-4x slower (the CPU smoke configs set bf16: false too); no
# gradient checkpointing (the recipe's memory saver recomputes each forward: a third slower here).
SFT_ARGS = {"report_to": "none", "save_strategy": "no", "use_cpu": True, "bf16": False,
            "gradient_checkpointing": False, "logging_steps": 1,
            "lr_scheduler_type": "constant", "seed": 0}


@pytest.fixture(scope="module")
def teacher_dir(sim_dataset, tmp_path_factory) -> Path:
    """Teacher trajectories (reflect 0.5) of the shared sim dataset, run once per test run."""
    from conftest import shared_dir
    from vilasr_ros_training.data import teacher_trajectories

    return shared_dir(tmp_path_factory, "teacher", lambda out: teacher_trajectories(sim_dataset, out, reflect=0.5, seed=0))


def _traces(folder: Path) -> list[tuple[Trace, list[Path]]]:
    out = []
    for path in sorted(folder.rglob("trace.json")):
        trace = Trace.load(path.parent)
        out.append((trace, Trace.image_paths(path.parent, len(trace.images))))
    return out


def test_training_text_and_tokens_equal_the_runtime(teacher_dir, tiny_model_dir):
    """SFT examples and GRPO rollouts render to Trace.chat_text byte for byte and tokenise to the ids
    the transformers engine feeds the model; loss lands on what the model wrote and nowhere else."""
    from vilasr_ros.engines.hf import TransformersEngine
    from vilasr_ros_training.chat import VilasrCollator, example_from_trace, load_images, training_text
    from vilasr_ros_training.grpo import rollout_tensors

    engine = TransformersEngine(tiny_model_dir)
    collator = VilasrCollator(engine.tokenizer, engine.image_processor, max_pixels=10**8, sft_format="runtime")
    lf_collator = VilasrCollator(engine.tokenizer, engine.image_processor, max_pixels=10**8)  # the default
    traces = _traces(teacher_dir / "traces")
    assert len(traces) >= 20
    # one conversation per shape (layout, turns, images): the 36 teacher traces have 10 shapes, and each
    # costs four encodings of up to 22 full-size images
    shapes = {(str(t.kind), len(t.turns), len(t.images)): (t, p) for t, p in reversed(traces)}
    assert len(shapes) >= 8
    multi_turn = 0
    for trace, paths in shapes.values():
        example = example_from_trace(trace, paths)
        assert training_text(example["messages"]) == trace.chat_text
        images = load_images(paths, 10**8)
        runtime_ids = engine.encode(GenerationRequest(prompt=trace.chat_text, images=images, messages=[]))
        runtime_ids = runtime_ids["input_ids"][0].tolist()
        batch = collator([{"example": json.dumps(example)}])
        assert batch["input_ids"][0].tolist() == runtime_ids
        labels = [t for t in batch["labels"][0].tolist() if t != -100]
        written = "".join(turn.text + protocol.EOS_TOKEN for turn in trace.turns)
        assert engine.tokenizer.decode(labels) == written
        assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(-1).sum())
        # LLaMA-Factory's layout (the authors' SFT): the same conversation, each <|im_end|> followed by
        # the line break it trains on too (test_official_data.py checks the tokens piece by piece)
        lf_labels = [t for t in lf_collator([{"example": json.dumps(example)}])["labels"][0].tolist() if t != -100]
        assert engine.tokenizer.decode(lf_labels) == "".join(t.text + protocol.EOS_TOKEN + "\n" for t in trace.turns)
        # The GRPO side of the same conversation.
        trace.pil_images = [im.convert("RGB") for im in trace.pil_images]
        parts = rollout_tensors(trace, engine.tokenizer, engine.image_processor)
        assert parts["prompt_ids"] + parts["completion_ids"] == runtime_ids
        kept = [t for t, m in zip(parts["completion_ids"], parts["env_mask"]) if m]
        assert engine.tokenizer.decode(kept) == "".join(turn.text for turn in trace.turns)  # no loss on <|im_end|>
        if len(trace.turns) > 1:
            multi_turn += 1
            image_pad = engine.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            assert image_pad in parts["completion_ids"]  # the drawn image is inside the completion...
            assert all(m == 0 for t, m in zip(parts["completion_ids"], parts["env_mask"]) if t == image_pad)
    assert multi_turn >= 6


def test_stage1_sft_halves_the_loss_on_16_items_and_saves_a_loadable_model(teacher_dir, tiny_model_dir, tmp_path):
    from vilasr_ros.engines.hf import TransformersEngine
    from vilasr_ros_training.data import load_traces
    from vilasr_ros_training.sft import train_sft

    examples = load_traces(teacher_dir / "traces")[:16]
    assert len(examples) == 16
    out = tmp_path / "sft"
    summary = train_sft({"model": str(tiny_model_dir), "max_pixels": SMALL,
                         "args": {**SFT_ARGS, "output_dir": str(out), "max_steps": 36,
                                  "per_device_train_batch_size": 2, "learning_rate": 3e-3}}, examples)
    losses = summary["losses"]
    assert len(losses) == 36 and all(math.isfinite(x) for x in losses)
    first, last = losses[0], sum(losses[-5:]) / 5  # fp32 on this machine: 6.38 -> 2.49
    print(f"SFT on 16 teacher trajectories: loss {first:.3f} -> {last:.3f} (mean of the last 5 of 36 steps)")
    assert last <= 0.5 * first
    engine = TransformersEngine(out)  # what stage 1 leaves is a model folder the runtime loads
    assert engine.describe()["model"] == str(out)


class SeedScripted(Engine):
    """Sample k (the sampling seed) replays script k, answering with the item's truth or a wrong value."""

    name = "seed-scripted"

    def __init__(self, scripts):
        self.scripts = scripts

    def generate(self, request: GenerationRequest) -> GenerationResult:
        turn = sum(1 for m in request.messages if m["role"] == "assistant")
        truth = request.metadata["item"]["answer"]
        text = self.scripts[request.sampling.seed][turn].replace("{truth}", truth)
        return GenerationResult(text=text, finish_reason="stop")


BOX = ('<think> {why} </think> Action: Object Mapper\n```json\n[{{"index": 1, "bbox_2d": {box}, '
       '"label": "chair"}}]\n```')
ANSWER = "<think> done </think> Action: Answer\n<answer> {answer} </answer>"
SCRIPTS = [
    [BOX.format(why="find it", box=[10, 10, 50, 50]), BOX.format(why="too small, redo", box=[8, 8, 70, 60]),
     ANSWER.format(answer="{truth}")],                                    # correct + reflective: kept
    [BOX.format(why="find it", box=[10, 10, 50, 50]), ANSWER.format(answer="{truth}")],  # not reflective
    [BOX.format(why="find it", box=[10, 10, 50, 50]), BOX.format(why="redo", box=[8, 8, 70, 60]),
     ANSWER.format(answer="999")],                                        # wrong
    [BOX.format(why="find it", box=[10, 10, 50, 50]), BOX.format(why="redo", box=[8, 8, 70, 60]),
     "The answer is <answer> {truth} </answer>"],                        # right answer, broken format
]


def test_stage2_keeps_exactly_the_correct_reflective_samples(sim_dataset, tiny_model_dir, tmp_path):
    from vilasr_ros_training.rrs import run_rrs

    out = tmp_path / "rrs"
    config = {"items": {"dataset": "sim", "path": str(sim_dataset), "limit": 3,
                        "types": ["object_counting", "object_rel_distance", "route_planning", "maze_route"]},
              "samples": 4, "max_pixels": SMALL, "out": str(out),
              "sft": {"model": str(tiny_model_dir), "max_pixels": SMALL,
                      "args": {**SFT_ARGS, "output_dir": str(tmp_path / "reflective"), "max_steps": 2,
                               "per_device_train_batch_size": 2, "learning_rate": 1e-4}}}
    summary = run_rrs(config, engine=SeedScripted(SCRIPTS))
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 12
    assert {(r["id"], r["sample"]) for r in records if r["kept"]} == {(r["id"], 0) for r in records}
    by_sample = {k: [r for r in records if r["sample"] == k] for k in range(4)}
    assert all(r["accuracy"] == 1 and r["reflection"] == 0 for r in by_sample[1])
    assert all(r["accuracy"] == 0 and r["reflection"] == 1 for r in by_sample[2])
    assert all(r["format"] == 0 and r["accuracy"] == 1 for r in by_sample[3])
    assert summary["kept"] == 3 and summary["yield"] == pytest.approx(0.25) and summary["items_with_kept"] == 3
    kept_dirs = sorted(p.name for p in (out / "kept").iterdir())
    assert kept_dirs == sorted(f"{r['id']}__0" for r in by_sample[0])
    assert summary["sft"]["examples"] == 3 and summary["sft"]["steps"] == 2
    # Resuming draws nothing twice.
    again = run_rrs({**config, "sft": None}, engine=SeedScripted(SCRIPTS))
    assert again["samples"] == 12 and len((out / "samples.jsonl").read_text().splitlines()) == 12


def test_stage3_grpo_trains_on_multi_turn_drawing_rollouts(sim_dataset, tiny_model_dir, tmp_path):
    """A tiny model taught the tool-call format by stage 1 (on replayed two-turn trajectories) then
    runs two GRPO steps whose rollouts draw and come back for a second turn."""
    from PIL import Image

    from vilasr_ros.engines.replay import ReplayEngine
    from vilasr_ros.reasoner import Reasoner, ReasonerConfig
    from vilasr_ros_training.chat import example_from_trace
    from vilasr_ros_training.data import load_items
    from vilasr_ros_training.grpo import train_grpo
    from vilasr_ros_training.sft import train_sft

    spec = {"dataset": "sim", "path": str(sim_dataset), "types": ["maze_route", "maze_turns"]}
    items, _ = load_items(spec)
    script = [BOX.format(why="a", box=[10, 10, 40, 40]), ANSWER.format(answer="A")]
    examples = []
    for item in items:
        trace = Reasoner(ReplayEngine(script), ReasonerConfig(max_pixels=SMALL)).run(
            [Image.open(p).convert("RGB") for p in item.image_paths], item.question, item.problem_type,
            item.options, kind=item.kind)
        trace.save(tmp_path / "script" / item.id)
        paths = Trace.image_paths(tmp_path / "script" / item.id, len(trace.images))
        examples.append(example_from_trace(trace, paths))
    train_sft({"model": str(tiny_model_dir), "max_pixels": SMALL,
               "args": {**SFT_ARGS, "output_dir": str(tmp_path / "format"), "max_steps": 80,
                        "per_device_train_batch_size": 2, "learning_rate": 3e-3}}, examples * 4)

    summary, trainer = train_grpo({
        "model": str(tmp_path / "format"), "items": spec, "max_pixels": SMALL, "max_tokens_per_turn": 64,
        "args": {"output_dir": str(tmp_path / "grpo"), "max_steps": 2, "num_generations": 2,
                 "per_device_train_batch_size": 2, "temperature": 0.5, "learning_rate": 1e-5,
                 "logging_steps": 1, "report_to": "none", "save_strategy": "no", "use_cpu": True, "bf16": False,
                 "gradient_checkpointing": False, "seed": 0}})
    assert summary["steps"] == 2 and len(summary["rewards"]) == 2
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    print(f"GRPO rollouts: mean turns per step {summary['turns']}")
    assert max(summary["turns"]) >= 1.5
    multi = [t for t in trainer.last_traces if len(t.turns) >= 2 and t.turns[0].new_images]
    assert multi or max(summary["turns"]) >= 2, "no rollout drew and came back for a second turn"
    for trace in multi:
        assert any(im.drawn_from is not None for im in trace.images)
        assert protocol.render_chat(trace.messages[:2]) in trace.chat_text
    assert (tmp_path / "grpo" / "config.json").exists()


def test_site_bag_and_questions_become_items(tmp_path):
    from vilasr_ros.evaluation.datasets import load_dataset
    from vilasr_ros.sources import open_source
    from vilasr_ros.sources.bag import write_bag
    from vilasr_ros_training.site import convert_site

    with open_source(f"rgbd_folder:{RGBD / 'open3d_testdata_rgbd'}") as source:
        frames = [replace(f, stamp_s=100.0 + 0.5 * k) for k, f in enumerate(source)]  # 0.5 s apart
    assert len(frames) >= 3
    bag = tmp_path / "bags" / "walk"
    write_bag(frames, bag)
    questions = tmp_path / "questions.jsonl"
    lines = [{"id": "q1", "bag": "bags/walk", "window": [0.0, 0.6], "question": "How many chairs?",
              "answer": "2", "type": "regression", "task": "object_counting"},
             {"id": "q2", "bag": "bags/walk", "window": [0.4, 100.0], "question": "Is the desk left of the bed?",
              "answer": "A", "type": "multiple choice", "options": ["A. yes", "B. no"]}]
    questions.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    items = convert_site(questions, tmp_path / "site", frames=16)
    assert [it["id"] for it in items] == ["q1", "q2"]
    assert items[0]["stamps_s"] == [0.0, 0.5]
    assert len(items[1]["image_path"]) == len(frames) - 1 and items[1]["stamps_s"][0] == 0.5
    loaded, _ = load_dataset("vsi_bench", tmp_path / "site" / "questions.json")
    assert [it.missing for it in loaded] == [[], []] and loaded[1].options == ["A. yes", "B. no"]
    from PIL import Image
    with Image.open(loaded[0].image_paths[1]) as im:
        assert im.size == frames[1].size

    lines.append({"id": "q3", "bag": "bags/walk", "window": [50.0, 60.0], "question": "?", "answer": "1"})
    questions.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.raises(DatasetError, match=r"questions.jsonl:3: no frames in window"):
        convert_site(questions, tmp_path / "site2")


def test_smoke_configs_run_from_the_command_line(sim_dataset, tiny_model_dir, tmp_path, capsys):
    """The CPU smoke commands README shows (shipped YAML, paths overridden)."""
    from vilasr_ros.cli import main

    smoke = REPO / "config" / "training" / "smoke"
    rc = main(["train", "rrs", "--config", str(smoke / "rrs.yaml"), "--set", f"items.path={sim_dataset}",
               "--set", f"engine.model={sim_dataset}", "--set", "items.limit=2", "--set", f"out={tmp_path / 'rrs'}", "--set", f"sft.model={tiny_model_dir}",
               "--set", f"sft.args.output_dir={tmp_path / 'refl'}", "--set", "sft.args.report_to=none"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "yield" in printed and (tmp_path / "refl" / "config.json").exists()
    rc = main(["train", "grpo", "--config", str(smoke / "grpo.yaml"), "--set", f"model={tiny_model_dir}",
               "--set", f"items.path={sim_dataset}", "--set", f"args.output_dir={tmp_path / 'grpo'}",
               "--set", "args.max_steps=1", "--set", "args.report_to=none"])
    assert rc == 0 and (tmp_path / "grpo" / "vilasr_train_summary.json").exists()
    assert main(["train", "sft", "--config", str(smoke / "sft.yaml"), "--set", "args.bogus_option=1",
                 "--set", "data=[]"]) == 2  # a bad config is an error message, not a traceback


def test_sft_lora_resumes_from_its_checkpoint_and_leaves_a_merged_model(teacher_dir, tiny_model_dir, tmp_path):
    from vilasr_ros.engines.hf import TransformersEngine
    from vilasr_ros_training.data import load_traces
    from vilasr_ros_training.sft import train_sft

    examples = load_traces(teacher_dir / "traces")[:2]
    out = tmp_path / "lora"
    config = {"model": str(tiny_model_dir), "max_pixels": SMALL, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
              "args": {**SFT_ARGS, "output_dir": str(out), "max_steps": 2, "per_device_train_batch_size": 1,
                       "learning_rate": 1e-3, "save_strategy": "steps", "save_steps": 2}}
    first = train_sft(config, examples)
    assert first["steps"] == 2 and (out / "checkpoint-2").is_dir()
    resumed = train_sft({**config, "resume": True, "args": {**config["args"], "max_steps": 4}}, examples)
    assert resumed["steps"] == 4 and (out / "checkpoint-4").is_dir()
    assert len(resumed["losses"]) == 4 and resumed["losses"][:2] == first["losses"]  # history from the checkpoint
    assert (out / "adapter" / "adapter_config.json").exists()
    engine = TransformersEngine(out)  # the merged model loads as plain Qwen2.5-VL weights
    assert not any("lora" in name for name, _ in engine.model.named_parameters())


def test_rrs_resumes_around_a_torn_last_line(tmp_path):
    """A run killed while writing samples.jsonl: the torn line is cut off (that sample is drawn again)
    and the next sample starts a line of its own; a garbled line in the middle is skipped and kept."""
    from vilasr_ros_training.rrs import done_samples

    path = tmp_path / "samples.jsonl"
    path.write_text('{"id": "a", "sample": 0}\nnot json\n{"id": "a", "sample": 1}\n{"id": "b", "sam')
    assert done_samples(path) == {("a", 0), ("a", 1)}
    assert path.read_text() == '{"id": "a", "sample": 0}\nnot json\n{"id": "a", "sample": 1}\n'


def test_a_qwen3_vl_base_trains_through_all_three_stages_in_its_own_coordinates(
        sim_dataset, teacher_dir, tiny_qwen3_dir, tmp_path, capsys):
    """Issue 27 item 4 on the tiny Qwen3-VL: teacher trajectories written on the 0–1000 grid draw the
    same pixels as ViLaSR's, their chat text and tokens are the runtime's, and the smoke SFT, RRS
    and GRPO commands run on it; traces of another family are refused, not trained on."""
    from vilasr_ros.cli import main
    from vilasr_ros.engines.hf import TransformersEngine
    from vilasr_ros_training.chat import VilasrCollator, example_from_trace, load_images, training_text
    from vilasr_ros.evaluation.runner import run_eval
    from vilasr_ros_training.data import load_traces
    from vilasr_ros_training.grpo import rollout_tensors
    from vilasr_ros_training.teacher import TeacherEngine

    out = tmp_path / "teacher3"  # a third of the items (as teacher_trajectories runs them all)
    run_eval("sim", sim_dataset, TeacherEngine(str(sim_dataset), reflect=0.5, seed=0, model_family="qwen3_vl"), out,
             shard=(0, 3))
    ours = {t.question + str(t.kind) + str(len(t.images)): t for t, _ in _traces(out / "traces")}
    vilasr = {t.question + str(t.kind) + str(len(t.images)): t for t, _ in _traces(teacher_dir / "traces")}
    assert len(ours) >= 10 and set(ours) <= set(vilasr)
    compared = 0
    for key, trace in ours.items():
        assert trace.settings["model_family"] == "qwen3_vl" and "(1000, 1000)" in trace.messages[0]["content"]
        for mine, theirs in zip(trace.images, vilasr[key].images):
            for a, b in zip(mine.boxes, theirs.boxes):  # pixels of different resized images: compare on the sensor
                sa = [v / s for v, s in zip(a["bbox_2d"], mine.size * 2)]
                sb = [v / s for v, s in zip(b["bbox_2d"], theirs.size * 2)]
                assert max(abs(x - y) * 640 for x, y in zip(sa, sb)) <= 2.0  # 640 px frames, 1 px each way
                compared += 1
    assert compared >= 10

    engine = TransformersEngine(tiny_qwen3_dir)
    collator = VilasrCollator(engine.tokenizer, engine.image_processor, max_pixels=10**8, sft_format="runtime",
                              family="qwen3_vl")  # the saved images as they are (the run's own resize)
    trace, paths = next((t, p) for t, p in _traces(out / "traces") if len(t.turns) > 1)
    example = example_from_trace(trace, paths)
    assert training_text(example["messages"]) == trace.chat_text
    batch = collator([{"example": json.dumps(example)}])
    images = load_images(paths, 10**8, family="qwen3_vl")
    assert all(w % 32 == 0 and h % 32 == 0 for w, h in (im.size for im in images))
    runtime = engine.encode(GenerationRequest(prompt=trace.chat_text, images=images, messages=[]))
    assert batch["input_ids"][0].tolist() == runtime["input_ids"][0].tolist()
    trace.pil_images = [im.convert("RGB") for im in trace.pil_images]
    parts = rollout_tensors(trace, engine.tokenizer, engine.image_processor)
    assert parts["prompt_ids"] + parts["completion_ids"] == runtime["input_ids"][0].tolist()

    with pytest.raises(DatasetError, match="qwen2_5_vl trace cannot train a qwen3_vl model"):
        load_traces(teacher_dir / "traces", "qwen3_vl")

    smoke = REPO / "config" / "training" / "smoke"
    quiet = ["--set", "args.report_to=none", "--set", "args.max_steps=3"]
    rc = main(["train", "sft", "--config", str(smoke / "sft.yaml"), "--set", f"model={tiny_qwen3_dir}",
               "--set", f"data=[{{format: traces, path: {out / 'traces'}, limit: 4}}]",
               "--set", f"args.output_dir={tmp_path / 'sft3'}", *quiet])
    assert rc == 0, capsys.readouterr()
    assert json.loads((tmp_path / "sft3" / "vilasr_train_summary.json").read_text())["model_family"] == "qwen3_vl"
    assert TransformersEngine(tmp_path / "sft3").family.name == "qwen3_vl"
    rc = main(["train", "rrs", "--config", str(smoke / "rrs.yaml"), "--set", f"items.path={sim_dataset}",
               "--set", f"engine.model={sim_dataset}", "--set", "engine.model_family=qwen3_vl", "--set", "items.limit=2",
               "--set", f"out={tmp_path / 'rrs'}", "--set", f"sft.model={tiny_qwen3_dir}", "--quiet",
               "--set", f"sft.args.output_dir={tmp_path / 'refl3'}", "--set", "sft.args.report_to=none",
               "--set", "sft.args.max_steps=2"])
    assert rc == 0, capsys.readouterr().out
    assert TransformersEngine(tmp_path / "refl3").family.name == "qwen3_vl"
    rc = main(["train", "grpo", "--config", str(smoke / "grpo.yaml"), "--set", f"model={tmp_path / 'sft3'}",
               "--set", f"items.path={sim_dataset}", "--set", f"args.output_dir={tmp_path / 'grpo3'}",
               "--set", "args.max_steps=1", "--set", "args.report_to=none"])
    assert rc == 0 and (tmp_path / "grpo3" / "vilasr_train_summary.json").exists()
    assert TransformersEngine(tmp_path / "grpo3").family.name == "qwen3_vl"
