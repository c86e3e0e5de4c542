"""The official ViLaSR-data layout through the shipped configs, and the authors' tokens, masks, prompts
and losses (issue 16). The reference code (LLaMA-Factory, verl/EasyR1) cannot run here; where a test
holds the reference's behaviour it names the file and lines it comes from."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from vilasr_ros import protocol
from vilasr_ros.engines.replay import ReplayEngine
from vilasr_ros.reasoner import Reasoner, ReasonerConfig
from vilasr_ros_training.config import load_config
from vilasr_ros_training.data import load_items, load_source

SYSTEM = protocol.prompts()["system_prompt"].format(width=644, height=476)
TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
        "system_tag": "system"}
NAMES = ("vqa", "maze", "GPT4Scene", "SR_91k")


def _image(path: Path, size, colour=(40, 80, 120)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _conversation(images: list[str], answer: str) -> dict:
    return {"conversations": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "<image>The index of the given image is 1.\nWhere is the chair?"},
        {"role": "assistant", "content": "<think> mark it </think> Action: Object Mapper\n```json\n"
                                         "[{\"index\": 1, \"bbox_2d\": [1, 2, 30, 40], \"label\": \"chair\"}]\n```"},
        {"role": "user", "content": "<image>\nThe index of the given image is 2 (width: 64, height: 48). Continue"},
        {"role": "assistant", "content": f"<think> there </think> Action: Answer\n<answer> {answer} </answer>"}],
        "images": images}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A ViLaSR-data tree as published (README "Data Preparation"): dataset_info.json, ShareGPT
    role/content files with <image> markers and image paths relative to the data root, the RL JSONL."""
    root = tmp_path_factory.mktemp("official") / "ViLaSR-data"
    info = {}
    for stage, folder in (("cold_start", "cold_start"), ("reflective", "reflective_rejection_sampling")):
        for name in NAMES:
            first = f"{folder}/{name}/a.png"
            _image(root / first, (1296, 968) if (name, stage) == ("vqa", "cold_start") else (96, 72))
            _image(root / f"{folder}/{name}/b.png", (64, 48), (200, 10, 10))
            items = [_conversation([first, f"{folder}/{name}/b.png"], "A"),
                     {"conversations": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}],
                      "images": []},  # roles do not alternate: LLaMA-Factory skips it
                     {"conversations": [{"role": "user", "content": "<image>no answer"}], "images": [first]}]
            (root / folder / f"{name}.json").write_text(json.dumps(items))
            info[f"{name}_{stage}"] = {"file_name": f"{folder}/{name}.json", "formatting": "sharegpt",
                                       "columns": {"messages": "conversations", "images": "images"}, "tags": TAGS}
    (root / "dataset_info.json").write_text(json.dumps(info, indent=1))
    frames = [f"rl/GPT4Scene-All/s1/{k}.png" for k in range(3)]
    for k, rel in enumerate(frames):
        _image(root / rel, (640, 480), (k * 60, 100, 100))
    _image(root / "rl/maze/m1.png", (300, 300))
    rl = [
        {"question": "Which is closer to the door?", "answer": "B", "image_path": frames, "question_type": "multiple choice",
         "data_type": "video", "options": [" A. the sofa ", "B. the lamp  "]},
        {"question": "How far apart are they (m)?", "answer": "2.5", "image_path": frames, "question_type": "regression",
         "data_type": "spatial_r1"},
        {"question": "Which way out?", "answer": "C", "image_path": ["rl/maze/m1.png"], "question_type": "multiple choice",
         "data_type": "maze", "options": ["A. up", "B. down", "C. left"]},
        {"question": "How many chairs?", "answer": "3", "image_path": ["rl/maze/m1.png"], "question_type": "numerical",
         "data_type": "vqa"},
    ]
    (root / "rl").mkdir(exist_ok=True)
    (root / "rl" / "vilasr_rl_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rl))
    return root


@pytest.mark.parametrize("config", ["sft.yaml", "reflective.yaml"])
def test_shipped_sft_configs_read_the_official_tree_with_only_the_data_root_changed(config, data_dir, caplog):
    cfg = load_config(REPO / "config" / "training" / config, [f"data_dir={data_dir}"], stage="sft")
    examples = [e for spec in cfg.data for e in load_source(spec)]
    assert len(examples) == 4  # one sound conversation per file; the two abnormal ones skipped, counted
    assert sum("skipped 2 of 3" in r.message for r in caplog.records) == 4
    for e in examples:
        assert [m["role"] for m in e["messages"]] == ["system", "user", "assistant", "user", "assistant"]
        assert all(Path(p).is_file() and Path(p).is_relative_to(data_dir) for p in e["images"])


def test_sft_tokens_and_labels_are_llamafactorys(data_dir, tiny_model_dir):
    """LLaMA-Factory qwen2_vl template (src/llamafactory/data/template.py: format_system/user/assistant,
    default_system), each string tokenised on its own (Template._convert_elements_to_ids), labels on
    the responses only (processor/supervised.py), image size by Qwen2VLPlugin._preprocess_image."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from vilasr_ros_training.chat import IGNORE_INDEX, VilasrCollator

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    proc = AutoImageProcessor.from_pretrained(tiny_model_dir)
    cfg = load_config(REPO / "config" / "training" / "sft.yaml", [f"data_dir={data_dir}"], stage="sft")
    [example] = load_source({"format": "llamafactory", "dataset": "vqa_cold_start"}, cfg.data_dir)
    collator = VilasrCollator(tok, proc, cfg.max_pixels, cfg.max_length, cfg.sft_format)
    enc = collator.encode_example(example)
    # 1296x968 at image_max_pixels 1003520: int() shrink to 1159x865, the processor rounds to 1148x868
    assert enc["image_grid_thw"].tolist() == [[1, 62, 82], [1, 4, 4]]  # 64x48 is raised to the processor's min_pixels

    pads = [62 * 82 // 4, 4 * 4 // 4]
    conv = _conversation([], "A")["conversations"]
    vision = ["<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" for n in pads]
    pieces = [  # (text, labelled)
        (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n", False),
        (f"<|im_start|>user\n{conv[1]['content'].replace('<image>', vision[0])}<|im_end|>\n<|im_start|>assistant\n", False),
        (f"{conv[2]['content']}<|im_end|>\n", True),
        (f"<|im_start|>user\n{conv[3]['content'].replace('<image>', vision[1])}<|im_end|>\n<|im_start|>assistant\n", False),
        (f"{conv[4]['content']}<|im_end|>\n", True),
    ]
    ids = [t for text, _ in pieces for t in tok.encode(text, add_special_tokens=False)]
    labels = [t if lab else IGNORE_INDEX for text, lab in pieces for t in tok.encode(text, add_special_tokens=False)]
    batch = collator([{"example": json.dumps(example)}])
    assert batch["input_ids"][0].tolist() == ids
    assert batch["labels"][0].tolist() == labels
    assert tok.decode([t for t in labels if t != IGNORE_INDEX]).endswith("</answer><|im_end|>\n")

    # cutoff_len: pair by pair (infer_seqlen, processor_utils.py L76-88, transcribed): the first pair
    # fits whole, the second gets what is left
    enc_piece = [tok.encode(t, add_special_tokens=False) for t, _ in pieces]
    first = sum(len(x) for x in enc_piece[:3])
    source2, target2 = enc_piece[3], enc_piece[4]
    room = len(source2) + len(target2) - 3

    def infer_seqlen(source_len, target_len, cutoff_len):
        if target_len * 2 < cutoff_len:
            max_target_len = cutoff_len
        elif source_len * 2 < cutoff_len:
            max_target_len = cutoff_len - source_len
        else:
            max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
        new_target_len = min(max_target_len, target_len)
        return min(max(cutoff_len - new_target_len, 0), source_len), new_target_len

    ns, nt = infer_seqlen(len(source2), len(target2), room)
    assert ns + nt == room and ns > 4 * 4 // 4 + 3  # the image tokens near the start of the source survive
    short = VilasrCollator(tok, proc, cfg.max_pixels, first + room, "llamafactory").encode_example(example)
    assert short["input_ids"] == ids[:first] + source2[:ns] + target2[:nt]
    assert short["assistant_mask"] == [int(x != IGNORE_INDEX) for x in labels[:first]] + [0] * ns + [1] * nt
    with pytest.raises(ValueError, match="lose image tokens"):  # a cut through an image: never silently
        VilasrCollator(tok, proc, cfg.max_pixels, 40, "llamafactory").encode_example(example)


def _reference_rl_user_text(item: dict, size) -> tuple[list[str], str]:
    """verl/utils/dataset_multimodal.py L211-294 (construct_video_prompt / construct_maze_vqa_prompt) with
    PROMPT_TEMPLATE (L95-100, its "### Question:" header included), transcribed: the captions (video) and
    the final text part of the first user message."""
    type_template = {"multiple choice": "\nAnswer with the option's letter from the given choices directly.",
                     "free-form": "", "regression": "\nPlease answer the question using a single word or phrase (e.g., 42 or 3.14).",
                     "numerical": "\nPlease answer the question using a single word or phrase (e.g., 42 or 3.14)."}
    template = ("\n### Question:\n{question}\n\nBegin your reasoning. After each tool use, critically evaluate the "
                "visualization and adjust if needed:\n")
    if item["data_type"] in ("video", "spatial_r1"):
        prompt = ("These are frames from a video, numbered from 1 to 16 in sequence. That is, the index of each image is "
                  "1, 2, 3, ..., 16.\n\nAnswer the quesntion with appropriate tools:\n" + item["question"])
        if item["question_type"] == "multiple choice" and "options" in item:
            prompt = prompt + "\n" + "\n".join(op.strip() for op in item["options"])
        prompt += type_template[item["question_type"].lower()]
        captions = [f"The index of the given image is {k + 1} (width: {size[0]}, height: {size[1]}).\n"
                    for k in range(len(item["image_path"]))]
        return captions, template.format(question=prompt)
    prompt = item["question"]
    if item["question_type"] == "multiple choice" and "options" in item:
        prompt = prompt + "\n" + "\n".join(op.strip() for op in item["options"])
    prompt = prompt + "\nThe index of the given image is 1." + type_template[item["question_type"].lower()]
    return [], template.format(question=prompt)


def test_rl_items_and_first_turn_are_the_rl_loaders(data_dir):
    cfg = load_config(REPO / "config" / "training" / "grpo.yaml", [f"data_dir={data_dir}"], stage="grpo")
    items, _ = load_items(cfg.items)
    assert [(it.kind, it.problem_type, it.max_turns) for it in items] == [
        ("video", "multiple choice", 10), ("video", "regression", 10), ("single", "multiple choice", 20),
        ("single", "numerical", 10)]
    config = ReasonerConfig(max_pixels=cfg.max_pixels, prompt_layout=cfg.prompt_layout)
    for it in items:
        images = [Image.open(p) for p in it.image_paths]
        trace = Reasoner(ReplayEngine(["<answer> A </answer>"]), config).run(images, it.question, it.problem_type,
                                                                            it.options, kind=it.kind)
        size = trace.images[0].size
        captions, text = _reference_rl_user_text(it.raw, size)
        parts = trace.messages[1]["content"]
        assert [p["text"] for p in parts if p["type"] == "text"] == captions + [text], it.raw["data_type"]
        assert trace.messages[0]["content"] == protocol.prompts()["system_prompt"].format(width=size[0], height=size[1])
        assert size[0] * size[1] <= 200704  # fetch_image max_pixels 200704 (config_grpo.yaml data.max_pixels)


def _reference_multi_turn_mask(tokens: list[int], tok) -> list[int]:
    """vllm_rollout_spmd_video.py L393-437 _get_multi_turn_mask, transcribed (newline_id is the
    tokenizer's "\\n", 198 in Qwen's vocabulary)."""
    im_start, im_end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    assistant = tok.encode("assistant", add_special_tokens=False)
    newline = tok.encode("\n", add_special_tokens=False)
    header = [im_start] + assistant + newline
    mask, pos, inside = [0] * len(tokens), 0, True
    while pos < len(tokens):
        if tokens[pos] == im_end:
            inside, pos = False, pos + 1
            continue
        if tokens[pos:pos + len(header)] == header:
            inside, pos = True, pos + len(header)
            continue
        if inside and tokens[pos] != tok.pad_token_id:
            mask[pos] = 1
        pos += 1
    return mask


def test_grpo_loss_mask_leaves_out_im_end_as_the_rollout_does(tiny_model_dir):
    from transformers import AutoImageProcessor, AutoTokenizer

    from vilasr_ros_training.grpo import rollout_tensors

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    proc = AutoImageProcessor.from_pretrained(tiny_model_dir)
    tool = ("<think> mark </think> Action: Object Mapper\n```json\n[{\"index\": 1, \"bbox_2d\": [1, 2, 20, 20], "
            "\"label\": \"cup\"}]\n```")
    trace = Reasoner(ReplayEngine([tool, "<think> ok </think> Action: Answer\n<answer> A </answer>"]),
                     ReasonerConfig(max_pixels=28 * 28 * 16)).run([Image.new("RGB", (112, 112))], "Where?", "free-form")
    parts = rollout_tensors(trace, tok, proc)
    completion, env_mask = parts["completion_ids"], parts["env_mask"]
    assert env_mask == _reference_multi_turn_mask(completion, tok)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert completion.count(im_end) == 3 and all(m == 0 for t, m in zip(completion, env_mask) if t == im_end)


def test_trl_two_sided_clip_is_verls_dual_clip():
    """verl/trainer/core_algos.py L331-347 (clip 0.2 / 0.3, dual 3.0) against trl's GRPO loss with
    epsilon 0.2, epsilon_high 0.3, delta 3.0 (trl/trainer/grpo_trainer.py _compute_loss): same loss."""
    import torch

    torch.manual_seed(0)
    log_ratio = torch.randn(4000) * 1.5
    adv = torch.randn(4000)
    ratio = torch.exp(log_ratio)
    clipped = torch.exp(torch.clamp(log_ratio, np.log(0.8), np.log(1.3)))
    higher = torch.max(-adv * ratio, -adv * clipped)
    verl = torch.where(adv < 0, torch.min(higher, -adv * 3.0), higher)
    coef_2 = torch.clamp(ratio, 0.8, 1.3)
    trl = -torch.min(torch.clamp(ratio, max=3.0) * adv, coef_2 * adv)
    assert torch.allclose(verl, trl)
    cfg = load_config(REPO / "config" / "training" / "grpo.yaml", stage="grpo").args
    assert (cfg["epsilon"], cfg["epsilon_high"], cfg["delta"], cfg["loss_type"], cfg["beta"]) == (0.2, 0.3, 3.0, "grpo", 0.0)


class CountingReplay(ReplayEngine):
    def count_tokens(self, text):
        return len(text.split())


def test_a_trajectory_stops_at_its_response_budget():
    """vllm_rollout_spmd_video.py L600-604 / L785-797: a turn or a next user turn past
    data.max_response_length ends the rollout with finish reason max_tokens, no image added."""
    tool = ("<think> a b c d </think> Action: Object Mapper\n```json\n[{\"index\": 1, \"bbox_2d\": [1, 2, 20, 20], "
            "\"label\": \"cup\"}]\n```")
    image = [Image.new("RGB", (112, 112))]
    free = Reasoner(CountingReplay([tool, "<answer> A </answer>"]), ReasonerConfig()).run(image, "Where?", "free-form")
    assert free.finish_reason == "stop" and len(free.pil_images) == 2
    tight = Reasoner(CountingReplay([tool, "<answer> A </answer>"]), ReasonerConfig(max_response_tokens=200)).run(
        image, "Where?", "free-form")
    assert tight.finish_reason == "max_tokens" and len(tight.turns) == 1 and len(tight.pil_images) == 1  # 256 per image
    roomy = Reasoner(CountingReplay([tool, "<answer> A </answer>"]), ReasonerConfig(max_response_tokens=400)).run(
        image, "Where?", "free-form")
    assert roomy.finish_reason == "stop" and len(roomy.pil_images) == 2


@pytest.fixture(scope="module")
def benchmark_dir(tmp_path_factory) -> Path:
    """ViLaSR-eval as the reference README places it (``./benchmark/``): one JSON per benchmark named as
    ``eval/infer.sh``'s script_paths, ``image_path`` lists relative to that folder (``--image-folder $DATADIR``)."""
    root = tmp_path_factory.mktemp("eval") / "benchmark"
    frames = [f"vsi_bench/arkitscenes/41069025/{k}.jpg" for k in range(20)]
    for k, rel in enumerate(frames):
        _image(root / rel, (160, 120), (k * 10, 90, 90))
    for rel in ("maze/level3/m1.png", "SpatialEval_spatialreal/r1.jpg", "spar_bench/images/a.jpg",
                "spar_bench/images/b.jpg", "mmsi_bench/q1_0.jpg", "mmsi_bench/q1_1.jpg"):
        _image(root / rel, (128, 96))
    opts = ["A. left", "B. right", "C. behind", "D. above"]
    mc = {"options": opts, "answer": "A", "problem_type": "multiple choice"}
    files = {
        "vsi_bench": [{**mc, "question": "Is the chair left of the sofa?", "original_question_type": "object_rel_direction_easy",
                       "image_path": frames, "data_type": "video"},
                      {"question": "How many chairs are in the room?", "options": None, "answer": "3",
                       "problem_type": "regression", "original_question_type": "object_counting", "image_path": frames,
                       "data_type": "video"}],
        "maze": [{**mc, "question": "Which way out?", "original_question_type": "maze_nav", "image_path": ["maze/level3/m1.png"],
                  "data_type": "image", "grid_size": 5}],
        "SpatialEval_spatialreal": [{**mc, "question": "Where is the cup?", "original_question_type": "spatialreal",
                                     "image_path": ["SpatialEval_spatialreal/r1.jpg"], "data_type": "image"}],
        "spar_bench": [{**mc, "question": "Which is nearer? Your answer can only include one of options A, B, C or D.",
                        "original_question_type": "position_matching", "image_path": ["spar_bench/images/a.jpg"],
                        "data_type": "single_view"},
                       {"question": "Distance between them?", "answer": "1.5", "problem_type": "regression",
                        "original_question_type": "distance_infer_center_oo_mv",
                        "image_path": ["spar_bench/images/a.jpg", "spar_bench/images/b.jpg"], "data_type": "multi_view"}],
        "mmsi_bench": [{**mc, "question": "Which camera moved left?", "original_question_type": "Motion-Camera",
                        "image_path": ["mmsi_bench/q1_0.jpg", "mmsi_bench/q1_1.jpg"], "data_type": "multi_view"}],
    }
    for name, items in files.items():
        (root / f"{name}.json").write_text(json.dumps(items))
    return root


# reference name (eval/infer.sh) → (items, first-turn kind of each, turn budget of the first)
BENCHMARKS = {"vsi_bench": (2, ["video", "video"], 10), "maze": (1, ["single"], 20),
              "SpatialEval_spatialreal": (1, ["single"], 10), "spar_bench": (2, ["single", "multi_view"], 10),
              "mmsi_bench": (1, ["multi_view"], 10)}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_vilasr_eval_benchmark_runs_and_scores_from_the_benchmark_folder_by_its_reference_name(
        name, benchmark_dir, tmp_path, capsys):
    from vilasr_ros.cli import main
    from vilasr_ros.evaluation.datasets import load_dataset

    n, kinds, turns = BENCHMARKS[name]
    items, root = load_dataset(name, benchmark_dir)  # the folder, as infer.sh's DATADIR
    assert root == benchmark_dir and [it.kind for it in items] == kinds and items[0].max_turns == turns
    assert not any(it.missing or it.invalid for it in items)
    assert all(p.is_file() and p.is_relative_to(benchmark_dir) for it in items for p in it.image_paths)
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps(["<think> looked </think> Action: Answer\n<answer> A </answer>"] * n))
    out = tmp_path / "run"
    assert main(["eval", "run", "--dataset", name, "--data", str(benchmark_dir), "--engine", "replay",
                 "--responses", str(replay), "--out", str(out), "-q"]) == 0
    assert sorted(r["id"] for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())) == \
        [f"item_{k}" for k in range(n)]
    assert main(["eval", "score", "--results", str(out), "--dataset", name, "--out", str(out / "s.jsonl")]) == 0
    summary = json.loads((out / "s.summary.json").read_text())
    expected = [1.0 if it.problem_type == "multiple choice" else 0.0 for it in items]  # "A" vs 3 / 1.5: MRA 0
    assert summary["items"] == n and summary["overall"] == pytest.approx(float(np.mean(expected)))
    # stage 2/3 items take the same folder under data_dir, by the same name
    stage_items, stage_root = load_items({"dataset": name, "path": "benchmark"}, data_dir=benchmark_dir.parent)
    assert [it.id for it in stage_items] == [it.id for it in items] and stage_root == benchmark_dir


def test_an_unknown_dataset_name_lists_ours_and_the_references(benchmark_dir, capsys):
    from vilasr_ros.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "run", "--dataset", "spar", "--data", str(benchmark_dir), "--engine", "replay", "--out", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "spar" in err and "spatialeval_real" in err and len(err.strip().splitlines()) <= 2


def test_released_boxes_convert_to_the_qwen3_grid_within_a_pixel(data_dir, tmp_path):
    """Issue 27 item 4: the cold-start boxes are Qwen2.5-VL pixels of each image at the size the
    authors' SFT gave it (LLaMA-Factory's shrink, then the processor's 28-rounding); on a Qwen3-VL
    base they become 0–1000 of that size, the stated sizes become the grid, nothing else changes,
    and taking them back costs at most side/2000 px (under 1 px for sides up to 2000)."""
    from vilasr_ros.families import model_family
    from vilasr_ros_training.convert import ConversionStats, convert_example, source_size

    cfg = load_config(REPO / "config" / "training" / "sft.yaml", [f"data_dir={data_dir}"], stage="sft")
    [original] = load_source({"format": "llamafactory", "dataset": "vqa_cold_start"}, cfg.data_dir)
    stats = ConversionStats()
    [converted] = load_source({"format": "llamafactory", "dataset": "vqa_cold_start"}, cfg.data_dir,
                              family="qwen3_vl", stats=stats)
    assert source_size(original["images"][0]) == ((1148, 868), (1296, 968))
    texts = [[p.get("text") for p in m["content"]] for m in converted["messages"]]
    before = [[p.get("text") for p in m["content"]] for m in original["messages"]]
    box = [round(1 / 1148 * 1000), round(2 / 868 * 1000), round(30 / 1148 * 1000), round(40 / 868 * 1000)]
    assert texts[2] == [before[2][0].replace("[1, 2, 30, 40]", f"[{', '.join(map(str, box))}]")]
    assert texts[0] == [before[0][0].replace("is (644, 476)", "is (1000, 1000)")]
    assert texts[3][1] == before[3][1].replace("(width: 64, height: 48)", "(width: 1000, height: 1000)")
    assert texts[1] == before[1] and texts[4] == before[4] and converted["images"] == original["images"]
    assert (stats.examples, stats.boxes, stats.skipped) == (1, 1, 0)
    assert 0 < stats.max_error_px <= 1148 / 2000 and stats.max_error_original_px <= 1296 / 2000
    # the same example for ViLaSR's own family: untouched
    assert convert_example(original, "qwen2_5_vl") is original

    # Many boxes and lines on images of several sizes and aspect ratios, through the whole path.
    rng = np.random.default_rng(0)
    family = model_family("qwen3_vl")
    sweep = ConversionStats()
    for size in [(1296, 968), (640, 480), (1920, 1080), (480, 640), (1000, 300), (333, 777), (2048, 2048)]:
        path = _image(tmp_path / f"{size[0]}x{size[1]}.png", size)
        (w, h), _ = source_size(str(path))
        calls = []
        for _ in range(40):
            x1, x2 = sorted(rng.integers(0, w + 1, 2).tolist())
            y1, y2 = sorted(rng.integers(0, h + 1, 2).tolist())
            calls.append({"index": 1, "bbox_2d": [x1, y1, x2, y2], "label": "a"})
            calls.append({"index": 1, "start_point_2d": [x1, y2], "end_point_2d": [x2, y1], "label": "b"})
        text = f"<think> t </think> Action: Object Mapper\n```json\n{json.dumps(calls)}\n```"
        example = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
                                {"role": "assistant", "content": [{"type": "text", "text": text}]}],
                   "images": [str(path)]}
        out = convert_example(example, family, sweep)
        boxes, lines = protocol.parse_tool_calls(out["messages"][1]["content"][0]["text"])
        for mine, theirs in zip(boxes, calls[::2]):
            back = family.to_pixels(mine["bbox_2d"], (w, h))
            assert max(abs(a - b) for a, b in zip(back, theirs["bbox_2d"])) <= max(w, h) / 2000 + 1e-9
        assert len(lines) == 40 and all(0 <= v <= 1000 for ln in lines for v in ln["start_point_2d"] + ln["end_point_2d"])
    print(f"converted {sweep.boxes} boxes and {sweep.points} points on 7 image sizes: max round-trip error "
          f"{sweep.max_error_px:.3f} px of the model's size, {sweep.max_error_original_px:.3f} px of the file")
    assert (sweep.boxes, sweep.points, sweep.skipped) == (280, 560, 0)
    assert sweep.max_error_px <= 1.0


@pytest.mark.parametrize("name,stage", [("sft", "sft"), ("reflective", "sft"), ("rrs", "rrs"), ("grpo", "grpo")])
def test_the_qwen3_vl_configs_are_the_recipe_with_only_model_family_and_outputs_changed(name, stage, data_dir, tmp_path):
    import dataclasses

    overrides = [f"data_dir={data_dir}"] if stage != "rrs" else []
    mine = load_config(REPO / "config" / "training" / "qwen3_vl" / f"{name}.yaml", overrides, stage=stage)
    base = load_config(REPO / "config" / "training" / f"{name}.yaml", overrides, stage=stage)
    changed = {f.name for f in dataclasses.fields(mine) if getattr(mine, f.name) != getattr(base, f.name)}
    assert mine.model_family == "qwen3_vl"
    assert changed <= {"model", "model_family", "args", "engine", "out", "sft"}
    assert {k for k in set(mine.args) | set(base.args) if mine.args.get(k) != base.args.get(k)} <= {"output_dir"}
    if stage == "rrs":
        assert mine.sft.model_family == "qwen3_vl" and mine.sft.max_length == base.sft.max_length
    # a broken chain is one line naming the file
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nmodel: x\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ValueError, match="extends itself"):
        load_config(tmp_path / "a.yaml", stage="sft")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ValueError, match=r"c.yaml: extends 'nowhere.yaml'"):
        load_config(tmp_path / "c.yaml", stage="sft")
