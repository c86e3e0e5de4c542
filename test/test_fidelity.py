"""The RL rollout and the evaluation loop at the reference's edges (issue 25).

Every expected value below is transcribed from the authors' code (AntResearchNLP/ViLaSR 61669c0), with
the file and lines it comes from; none is produced by the code under test.
"""

from __future__ import annotations

import pytest
from PIL import Image

from vilasr_ros import protocol
from vilasr_ros.engines.replay import ReplayEngine
from vilasr_ros.reasoner import Reasoner, ReasonerConfig
from vilasr_ros.scoring import score_answer

W, H = 644, 476
ANSWER = "<think> done </think> Action: Answer\n<answer> 3 </answer>"
# verl/utils/dataset_multimodal.py L95-100 (PROMPT_TEMPLATE) and L102-111 (TYPE_TEMPLATE: the second
# "numerical" entry wins)
BEGIN = "\n\nBegin your reasoning. After each tool use, critically evaluate the visualization and adjust if needed:\n"
NUMERICAL = "\nPlease answer the question using a single word or phrase (e.g., 42 or 3.14)."
MC = "\nAnswer with the option's letter from the given choices directly."
# vllm_rollout_spmd_video.py L560-561 / eval/infer.py (intermediate_prompt, final_prompt)
INTERMEDIATE = ("The index of the given image is {k} (width: 644, height: 476). Continue your reasoning. After each "
                "tool use, critically evaluate the visualization and adjust if needed:")
FINAL = ("The index of the given image is {k} (width: 644, height: 476). Then, you can not invoke the Object Mapper "
         "or Path Tracer tool. Please answer the initial question and structure your response as required:")


def _images(n: int) -> list:
    return [Image.new("RGB", (W, H), (40 * k % 255, 90, 120)) for k in range(n)]


def _box(index, label="chair", box=(10, 10, 200, 200)) -> str:
    return ("<think> mark </think> Action: Object Mapper\n```json\n"
            f"[{{'index': {index!r}, 'bbox_2d': {list(box)}, 'label': '{label}'}}]\n```")


def _user_texts(message) -> list[str]:
    return [part["text"] for part in message["content"] if part["type"] == "text"]


# ----------------------------------------------------------------------------- case 1: the RL first turn


def test_rl_first_turn_of_video_and_spatial_r1_items_is_construct_video_prompt():
    """dataset_multimodal.py L211-257 (construct_video_prompt): "16" whatever the count, the typo
    "quesntion", options stripped, one caption per image, then PROMPT_TEMPLATE with its header."""
    system, user = protocol.initial_messages([(W, H)] * 3, "How many chairs are in the room?", "numerical",
                                             kind="video", layout="rl")
    captions = [f"The index of the given image is {k} (width: 644, height: 476).\n" for k in (1, 2, 3)]
    expected = ("\n### Question:\nThese are frames from a video, numbered from 1 to 16 in sequence. That is, the index "
                "of each image is 1, 2, 3, ..., 16.\n\nAnswer the quesntion with appropriate tools:\n"
                "How many chairs are in the room?" + NUMERICAL + BEGIN)
    assert _user_texts(user) == captions + [expected]
    assert [part["type"] for part in user["content"]] == ["image", "text"] * 3 + ["text"]
    _, user = protocol.initial_messages([(W, H)] * 2, "Which is closer?", "multiple choice",
                                        options=[" A. the sofa ", "B. the lamp"], kind="video", layout="rl")
    assert _user_texts(user)[-1] == (
        "\n### Question:\nThese are frames from a video, numbered from 1 to 16 in sequence. That is, the index of "
        "each image is 1, 2, 3, ..., 16.\n\nAnswer the quesntion with appropriate tools:\nWhich is closer?"
        "\nA. the sofa\nB. the lamp" + MC + BEGIN)


def test_rl_first_turn_of_maze_and_vqa_items_is_construct_maze_vqa_prompt():
    """dataset_multimodal.py L259-294 (construct_maze_vqa_prompt): the image, then PROMPT_TEMPLATE of
    question + options + "\\nThe index of the given image is 1." + the type's suffix."""
    _, user = protocol.initial_messages([(W, H)], "Which way leads out?", "multiple choice",
                                        options=["A. left ", " B. right"], kind="single", layout="rl")
    assert [part["type"] for part in user["content"]] == ["image", "text"]
    assert _user_texts(user) == ["\n### Question:\nWhich way leads out?\nA. left\nB. right"
                                 "\nThe index of the given image is 1." + MC + BEGIN]
    _, user = protocol.initial_messages([(W, H)], "What is on the table?", "free-form", kind="single", layout="rl")
    assert _user_texts(user) == ["\n### Question:\nWhat is on the table?\nThe index of the given image is 1." + BEGIN]


# ----------------------------------------------------------------------------- case 2: RL turn budget


def test_rl_one_image_turns_never_switch_to_the_final_prompt_by_turn_count():
    """spmd_video L573-581, L774: a one-image continuation reads ``num_llm_calls_available`` (the
    config's value - 1, never decremented), so it shows the intermediate prompt at every call; eval
    (infer.py L364-366, L477: decremented each call) shows the final prompt before the last call."""
    turns = [_box(1), _box(2), ANSWER]
    rl = Reasoner(ReplayEngine(turns), ReasonerConfig(max_turns=3, prompt_layout="rl")).run(_images(1), "q", "numerical")
    ev = Reasoner(ReplayEngine(turns), ReasonerConfig(max_turns=3)).run(_images(1), "q", "numerical")
    rl_users = [m for m in rl.messages if m["role"] == "user"][1:]
    ev_users = [m for m in ev.messages if m["role"] == "user"][1:]
    assert [_user_texts(m) for m in rl_users] == [["\n" + INTERMEDIATE.format(k=2) + "\n"],
                                                   ["\n" + INTERMEDIATE.format(k=3) + "\n"]]
    assert [_user_texts(m) for m in ev_users] == [["\n" + INTERMEDIATE.format(k=2) + "\n"],
                                                   ["\n" + FINAL.format(k=3) + "\n"]]


# ----------------------------------------------------------------------------- cases 3 and 4: image indices


@pytest.mark.parametrize("turn, finish", [
    (_box(0), "ToolError"),  # merge_bbox_list: index - 1 = -1 -> merge_bbox_movement returns -1 (infer.py L219-231)
    (_box(-2), "ToolError"),
    ("<think> m </think> Action: Object Mapper\n```json\n[{'bbox_2d': [1, 2, 30, 40], 'label': 'cup'}]\n```",
     "ToolGenError"),  # allindex[item["index"]]: KeyError -> finish_reason "ToolGenError" (infer.py L179-204)
])
@pytest.mark.parametrize("layout", ["eval", "rl"])
def test_an_index_of_zero_or_less_or_none_ends_the_sample_even_when_eval_retries(turn, finish, layout):
    trace = Reasoner(ReplayEngine([turn, ANSWER]), ReasonerConfig(on_tool_error="retry", prompt_layout=layout)).run(
        _images(2), "How many cups?", "numerical")
    assert trace.finish_reason == finish and len(trace.turns) == 1 and trace.answer is None
    assert score_answer(trace.model_output, "3", "numerical") == 0.0  # evaluate.py: no answer in the output


def test_an_index_past_the_last_image_is_generated_again_in_eval_and_ends_the_rl_rollout():
    """infer.py: the IndexError of ``mm_data['image'][image_index]`` escapes to process_single_response's
    handler, the response is dropped and generated again; spmd_video L240-251 catches it and finishes
    with ``IndexError``."""
    turns = [_box(7), ANSWER]
    ev = Reasoner(ReplayEngine(turns), ReasonerConfig(on_tool_error="retry")).run(_images(2), "q", "numerical")
    assert ev.finish_reason == "stop" and ev.answer == "3" and ev.turns[0].discarded
    rl = Reasoner(ReplayEngine(turns), ReasonerConfig(on_tool_error="retry", prompt_layout="rl")).run(
        _images(2), "q", "numerical")
    assert rl.finish_reason == "IndexError" and len(rl.turns) == 1 and rl.answer is None


# ----------------------------------------------------------------------------- case 5: what the reference draws


def test_true_as_an_index_and_numeric_strings_as_line_points_are_drawn():
    """``True - 1 == 0`` is image 1 (merge_bbox_list); plot_movement draws ``int("12")`` (edit_image.py
    L117-121)."""
    line = ("<think> path </think> Action: Path Tracer\n```json\n[{'index': 1, 'start_point_2d': ['12', '30'], "
            "'end_point_2d': [200, '240'], 'label': 'route'}]\n```")
    trace = Reasoner(ReplayEngine([_box(True), line, ANSWER]), ReasonerConfig()).run(_images(1), "q", "numerical")
    assert trace.finish_reason == "stop" and [t.new_images for t in trace.turns[:2]] == [[2], [3]]
    assert trace.images[1].drawn_from == 1 and trace.images[2].drawn_from == 1
    assert trace.pil_images[2].getpixel((12, 30)) == (255, 0, 0)  # the red start point at int("12"), int("30")


# ----------------------------------------------------------------------------- cases 6 and 7: the image cap


def test_several_drawn_one_shown_under_the_cap_keeps_the_several_image_layout():
    """infer.py L433-458 / spmd_video L663-689: with several images drawn the pad is
    ``<|vision_start|><|image_pad|><|vision_end|>`` + the prompt, inside intermediate_template with
    ``prompt=""``: the user turn ends ``...:\\n\\n``; the cap (count + 1 >= MAX_IMAGES) takes the final
    prompt and drops the rest."""
    two = ("<think> both </think> Action: Object Mapper\n```json\n[{'index': 1, 'bbox_2d': [1, 1, 90, 90], "
           "'label': 'a'}, {'index': 2, 'bbox_2d': [5, 5, 50, 50], 'label': 'b'}]\n```")
    trace = Reasoner(ReplayEngine([two, ANSWER]), ReasonerConfig(max_images=3)).run(_images(2), "q", "numerical")
    text = trace.chat_text
    turn = text.split("<|im_start|>user\n")[2].split("<|im_end|>")[0]
    assert turn == "<|vision_start|><|image_pad|><|vision_end|>" + FINAL.format(k=3) + "\n\n"
    assert len(trace.pil_images) == 3


def test_past_the_image_cap_no_further_call_is_made():
    """infer.py L314-317 / spmd_video L508-511: only samples with at most MAX_IMAGES images are
    generated again; a one-image turn at the cap appends its image (MAX_IMAGES + 1) and the sample
    gets no more calls."""
    engine = ReplayEngine([_box(1), _box(2), _box(3), ANSWER])
    trace = Reasoner(engine, ReasonerConfig(max_images=3, max_turns=10)).run(_images(1), "q", "numerical")
    assert len(trace.turns) == 3 and len(trace.pil_images) == 4 and trace.finish_reason == "TooManyImages"
    users = [m for m in trace.messages if m["role"] == "user"][1:]
    assert [_user_texts(m) for m in users] == [["\n" + INTERMEDIATE.format(k=2) + "\n"],
                                               ["\n" + FINAL.format(k=3) + "\n"], ["\n" + FINAL.format(k=4) + "\n"]]


# ----------------------------------------------------------------------------- cases 11 and 12: scoring, resizing


def test_a_view_change_answer_without_tags_is_not_stripped():
    """evaluate.py L10-15 returns the text as it is when there is no <answer>: parse_instruction then
    reads the key "\\nmove_right" (another key), so that axis scores 0 and the mean is 4/5."""
    truth = "move_right:1,move_left:0"
    assert score_answer("\nmove_right:1,move_left:0", truth, "vci") == pytest.approx(0.8)
    assert score_answer("<answer>\nmove_right:1,move_left:0</answer>", truth, "vci") == 1.0  # tagged: stripped


def test_tiny_images_are_clamped_to_28_before_the_area_test():
    """qwen_vl_utils.vision_process.smart_resize: h_bar = max(28, round(h / 28) * 28) — 1x100 is 28x112
    (3136 px, not under min_pixels); a 640x480 frame is 644x476 as always."""
    assert protocol.resized_size(100, 1, 351232) == (112, 28)
    assert protocol.resized_size(10, 10, 351232) == (56, 56)  # 28x28 = 784 < 3136: scaled up, ceil to 28
    assert protocol.resized_size(640, 480, 351232) == (644, 476)


# ----------------------------------------------------------------------------- case 10: options as written


def test_options_are_listed_only_for_the_type_written_exactly_multiple_choice(tmp_path):
    """infer.py L600-604 (vsi_bench): ``if x['problem_type'] == 'multiple choice' and 'options' in x``
    lists the options; the suffix is ``TYPE_TEMPLATE[x['problem_type'].lower()]`` either way. An empty
    list still adds its "\\n"."""
    from vilasr_ros.evaluation.datasets import prepare_item

    base = {"id": "a", "question": "Which is left?", "answer": "A", "image_path": ["f.png"]}
    upper = prepare_item("vsi_bench", {**base, "problem_type": "Multiple Choice", "options": ["A. x", "B. y"]}, 0, tmp_path)
    exact = prepare_item("vsi_bench", {**base, "problem_type": "multiple choice", "options": ["A. x", "B. y"]}, 1, tmp_path)
    empty = prepare_item("vsi_bench", {**base, "problem_type": "multiple choice", "options": []}, 2, tmp_path)
    prefix = ("\n### Question:\nThese are frames from a video, numbered from 1 to 16 in sequence. That is, the index of "
              "each image is 1, 2, 3, ..., 16.\n\nAnswer the quesntion with appropriate tools:\nWhich is left?")

    def text(item):
        return protocol.build_question_text(item.question, item.problem_type, item.options, n_frames=16,
                                            kind=item.kind)

    assert text(upper) == prefix + MC + BEGIN
    assert text(exact) == prefix + "\nA. x\nB. y" + MC + BEGIN
    assert text(empty) == prefix + "\n" + MC + BEGIN


# ----------------------------------------------------------------------------- case 13: the RL format reward


def test_the_format_reward_counts_what_gcot_counts_as_a_box():
    """gcot.py L52-58: ``"bbox_2d" in item and "label" in item`` on a list or a string is a box (format 1);
    an item the membership test cannot take (an int) raises there: format 0 here (README)."""
    pytest.importorskip("vilasr_ros_training")
    from vilasr_ros_training.rewards import vilasr_reward

    def trajectory(block: str) -> str:
        return ("<|im_start|>system\n\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
                f"<think> a </think> Action: Object Mapper\n```json\n{block}\n```<|im_end|>\n<|im_start|>user\n"
                "img<|im_end|>\n<|im_start|>assistant\n<think> b </think> Action: Answer\n<answer> 3 </answer>")

    assert vilasr_reward(trajectory("[['bbox_2d', 'label']]"), "3", "numerical")["format"] == 1.0
    assert vilasr_reward(trajectory("['a bbox_2d with a label']"), "3", "numerical")["format"] == 1.0
    assert vilasr_reward(trajectory("[{'index': 1, 'bbox_2d': [1, 2, 3, 4], 'label': 'c'}]"), "3", "numerical")["format"] == 1.0
    assert vilasr_reward(trajectory("[5]"), "3", "numerical")["format"] == 0.0
    assert vilasr_reward(trajectory("[{'index': 1, 'foo': 2}]"), "3", "numerical")["format"] == 0.0  # not_bbox_movement


# ----------------------------------------------------------------------------- case 8: the RL response length


def test_rl_completion_is_cut_at_the_response_length_without_cutting_an_image(tiny_model_dir):
    """spmd_video L897-901: ``response_ids`` and the mask are ``[prompt_len : prompt_len + response_length]``;
    L889-892 assert that every image's vision tokens stay inside that window."""
    pytest.importorskip("trl")
    from transformers import AutoImageProcessor, AutoTokenizer

    from vilasr_ros_training.grpo import rollout_tensors

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    proc = AutoImageProcessor.from_pretrained(tiny_model_dir)
    trace = Reasoner(ReplayEngine([_box(1, box=(1, 2, 20, 20)), ANSWER]), ReasonerConfig(max_pixels=28 * 28 * 16)).run(
        [Image.new("RGB", (112, 112))], "Where?", "numerical")
    whole = rollout_tensors(trace, tok, proc)
    n = len(whole["completion_ids"])
    cut = rollout_tensors(trace, tok, proc, max_completion_tokens=n - 3)  # through the answer's text
    assert cut["completion_ids"] == whole["completion_ids"][: n - 3] and cut["env_mask"] == whole["env_mask"][: n - 3]
    assert cut["num_images"] == 2 and cut["pixel_values"].shape == whole["pixel_values"].shape
    start = tok.convert_tokens_to_ids("<|vision_start|>")
    at = whole["completion_ids"].index(start)  # the drawn image's placeholder in the completion
    cut = rollout_tensors(trace, tok, proc, max_completion_tokens=at + 3)  # through that placeholder
    assert cut["completion_ids"] == whole["completion_ids"][:at] and cut["num_images"] == 1
    assert cut["image_grid_thw"].shape[0] == 1 and cut["pixel_values"].shape[0] == int(whole["image_grid_thw"][0].prod())


# ----------------------------------------------------------------------------- case 9: a tool call at the last call


def test_a_tool_call_at_the_last_call_ends_the_trajectory_on_that_turn():
    """spmd_video L603-609 (a batch without a maze): when every sample has spent its calls, the last
    responses are appended and the samples stop — no image is drawn for a tool call there and no user
    turn follows. (In a batch where a maze still runs, lockstep draws it and ends with an empty
    assistant turn: README, deliberate differences.)"""
    turns = [_box(1), _box(2)]
    trace = Reasoner(ReplayEngine(turns), ReasonerConfig(max_turns=2, prompt_layout="rl")).run(_images(1), "q", "numerical")
    assert len(trace.turns) == 2 and trace.turns[-1].new_images == [] and len(trace.pil_images) == 2
    assert trace.messages[-1]["role"] == "user" and trace.chat_text.endswith(_box(2) + "<|im_end|>")


# vllm_rollout_spmd_video.py L564-571 (intermediate_template) and L895-897 (eos_token appended)
TEMPLATE = "<|im_end|>\n<|im_start|>user\n{pad}\n{prompt}\n<|im_end|>\n<|im_start|>assistant\n"
PAD = "<|vision_start|><|image_pad|><|vision_end|>"


def test_lockstep_a_tool_call_at_the_last_call_is_drawn_and_then_nothing_is_generated():
    """spmd_video L573-581: ``while any(num_calls >= 0 ...)`` — a batch with a maze (20 calls) keeps
    looping after a non-maze sample's 10th call; L603-609 break only when every count is -1, so that
    sample's 10th response goes through ``process_single_response`` (drawn) and gets the user turn
    (L760-797, single image: the scalar ``num_llm_calls_available`` > 0 → intermediate prompt); L508-513
    give it no further prompt (its count is -1); L895-897 append ``eos_token``."""
    turns = [_box(1), _box(2), ANSWER]
    trace = Reasoner(ReplayEngine(turns), ReasonerConfig(max_turns=2, prompt_layout="rl", batch_max_turns=4)).run(
        _images(1), "q", "numerical")
    assert len(trace.pil_images) == 3 and trace.finish_reason == "lockstep" and trace.answer is None
    expected_tail = _box(2) + TEMPLATE.format(pad=PAD, prompt=INTERMEDIATE.format(k=3)) + "<|im_end|>"
    assert trace.chat_text.endswith(expected_tail)
    from vilasr_ros_training.rewards import vilasr_reward

    assert vilasr_reward(trace.chat_text, "3", "numerical")["accuracy"] == 0.0
    # Without a longer batch-mate: the reference's last-turn break (L603-609), nothing drawn.
    alone = Reasoner(ReplayEngine(turns), ReasonerConfig(max_turns=2, prompt_layout="rl", batch_max_turns=2)).run(
        _images(1), "q", "numerical")
    assert len(alone.pil_images) == 2 and alone.chat_text.endswith(_box(2) + "<|im_end|>")
    # An answer at the last call ends the sample either way (_is_finished, L611-622).
    answered = Reasoner(ReplayEngine([_box(1), ANSWER]), ReasonerConfig(
        max_turns=2, prompt_layout="rl", batch_max_turns=4)).run(_images(1), "q", "numerical")
    assert answered.finish_reason == "stop" and answered.answer == "3"


def test_lockstep_several_images_at_the_last_call_get_the_final_prompt():
    """spmd_video L672-690: a turn that drew several images picks its last prompt from the sample's
    own count (``num_llm_calls_available_list[index] > 0``), -1 after its last call → final prompt;
    the others carry ``The index of the given image is k (width, height).\\n``."""
    two = ("<think> m </think> Action: Object Mapper\n```json\n[{'index': 1, 'bbox_2d': [10, 10, 200, 200], "
           "'label': 'a'}, {'index': 2, 'bbox_2d': [10, 10, 200, 200], 'label': 'b'}]\n```")
    trace = Reasoner(ReplayEngine([_box(1), two]), ReasonerConfig(max_turns=2, prompt_layout="rl", batch_max_turns=4)).run(
        _images(2), "q", "numerical")
    pad = (PAD + "The index of the given image is 4 (width: 644, height: 476).\n"
           + PAD + FINAL.format(k=5))
    assert trace.finish_reason == "lockstep"
    assert trace.chat_text.endswith(two + TEMPLATE.format(pad=pad, prompt="") + "<|im_end|>")


# ----------------------------------------------------------------------------- case 14: advantage epsilon


def _verl_grpo_advantages(scores: list[float], n: int, eps: float = 1e-6) -> list[float]:
    """verl/trainer/core_algos.py L158-172, transcribed (index = the group of n consecutive samples)."""
    import torch

    index = [i // n for i in range(len(scores))]
    id2score: dict = {}
    for i, s in enumerate(scores):
        id2score.setdefault(index[i], []).append(s)
    mean = {k: torch.mean(torch.tensor(v)) for k, v in id2score.items()}
    std = {k: torch.std(torch.tensor(v)) for k, v in id2score.items()}
    return [float((scores[i] - mean[index[i]]) / (std[index[i]] + eps)) for i in range(len(scores))]


def test_grpo_advantages_divide_by_std_plus_verls_epsilon():
    import torch

    from vilasr_ros_training.grpo import group_advantages

    scores = [0.0, 2e-5, 0.0, -2e-5,  # a group whose rewards are nearly equal
              0.0, 1.0, 0.5, 0.25]
    got = group_advantages(torch.tensor(scores), 4).tolist()
    assert got == pytest.approx(_verl_grpo_advantages(scores, 4), rel=1e-5)
    trl_like = group_advantages(torch.tensor(scores), 4, epsilon=1e-4).tolist()
    assert abs(trl_like[1] - got[1]) > 0.5 * abs(got[1])  # where trl's 1e-4 differs


def test_the_trainer_hands_trl_verls_advantages_for_its_own_slice():
    """The hook replaces trl's advantages for this process's rows (trl slices rewards of all processes
    by ``process_index * len(prompts)``, grpo_trainer.py, trl 1.16)."""
    import types

    import torch

    from vilasr_ros_training.grpo import make_trainer_class

    scores = [0.0, 1.0, 1.0, 1.0, 0.0, 1e-5, 0.0, 0.0]
    fake = types.SimpleNamespace(num_generations=4, num_generations_eval=4, model=types.SimpleNamespace(training=True),
                                 scale_rewards="group", multi_objective_aggregation="sum_then_normalize",
                                 _rewards_per_func=torch.tensor(scores).unsqueeze(1), reward_weights=torch.ones(1),
                                 accelerator=types.SimpleNamespace(process_index=1), advantage_epsilon=1e-6)
    output = {"advantages": torch.zeros(4)}
    make_trainer_class()._verl_advantages(fake, output, 4)
    assert output["advantages"].tolist() == pytest.approx(_verl_grpo_advantages(scores, 4)[4:], rel=1e-4)
