"""``vilasr eval``: reading benchmark shapes, running resumably, scoring as the authors, reporting."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import VECTORS
from vilasr_ros import protocol
from vilasr_ros.cli import main
from vilasr_ros.engines import SamplingConfig, create_engine
from vilasr_ros.evaluation.datasets import load_dataset
from vilasr_ros.evaluation.report import write_report
from vilasr_ros.evaluation.runner import read_results, run_eval
from vilasr_ros.evaluation.scores import load_results, score_records, summarize
from vilasr_ros.reasoner import ReasonerConfig

pytestmark = pytest.mark.sim


def _image(path, color=(120, 80, 40), size=(160, 120)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_eval_vectors_score_as_the_reference_through_the_cli(tmp_path, capsys):
    cases = json.loads((VECTORS / "score_vectors.json").read_text())["eval"]
    results = tmp_path / "results.jsonl"
    with open(results, "w") as f:
        for k, c in enumerate(cases):
            f.write(json.dumps({"id": f"v{k}", "model_output": c["model_output"], "answer": c["answer"],
                                "problem_type": c["problem_type"]}) + "\n")
    assert main(["eval", "score", "--results", str(results), "--dataset", "maze", "--out", str(tmp_path / "s.jsonl")]) == 0
    scored = {r["id"]: r["score"] for r in map(json.loads, (tmp_path / "s.jsonl").read_text().splitlines())}
    wrong = [(c, scored[f"v{k}"]) for k, c in enumerate(cases) if scored[f"v{k}"] != c["expected_score"]]
    assert not wrong and len(scored) == len(cases)
    summary = json.loads((tmp_path / "s.summary.json").read_text())
    assert summary["overall"] == pytest.approx(np.mean([c["expected_score"] for c in cases]))
    assert "overall (mean over items)" in capsys.readouterr().out


def test_benchmark_shapes_build_the_references_first_turn(tmp_path):
    frames = [f"vid/{i:03d}.png" for i in range(20)]
    for p in frames:
        _image(tmp_path / p)
    _image(tmp_path / "maze.png", size=(308, 308))
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    opts = ["A. left", "B. right"]
    (tmp_path / "vsi.json").write_text(json.dumps([
        {"question": "Is the chair left of the sofa?", "options": opts, "answer": "A", "problem_type": "multiple choice",
         "original_question_type": "object_rel_direction_easy", "image_path": frames, "data_type": "video"},
        {"question": "How many chairs?", "options": None, "answer": "3", "problem_type": "regression",
         "original_question_type": "object_counting", "image_path": frames[:4], "data_type": "video"}]))
    items, _ = load_dataset("vsi_bench", tmp_path / "vsi.json")
    assert [len(it.image_paths) for it in items] == [16, 4]  # 20 frames sampled down to 16, uniformly
    assert items[0].image_paths[0].name == "000.png" and items[0].image_paths[-1].name == "019.png"
    msgs = protocol.initial_messages([(168, 112)] * 16, items[0].question, items[0].problem_type, items[0].options, items[0].kind)
    text = msgs[1]["content"][-1]["text"]
    assert text.startswith("\n### Question:\nThese are frames from a video, numbered from 1 to 16 in sequence.")
    assert "Is the chair left of the sofa?\nA. left\nB. right\nAnswer with the option's letter" in text
    assert msgs[1]["content"][3]["text"] == "The index of the given image is 2 (width: 168, height: 112).\n"

    (tmp_path / "maze.jsonl").write_text(json.dumps(
        {"question": "Which way?", "options": opts, "answer": "B", "problem_type": "multiple choice",
         "image_path": "maze.png", "data_type": "image"}) + "\n")
    (maze,), _ = load_dataset("maze", tmp_path / "maze.jsonl")
    assert (maze.kind, maze.max_turns, len(maze.image_paths)) == ("single", 20, 1)
    text = protocol.build_question_text(maze.question, maze.problem_type, maze.options, kind=maze.kind)
    assert "Which way?\nA. left\nB. right\nThe index of the given image is 1.\nAnswer with" in text

    (tmp_path / "spar.json").write_text(json.dumps([
        {"question": "Which is nearer? Your answer can only include one of options A, B, C or D.", "options": opts,
         "answer": "A", "problem_type": "multiple choice", "original_question_type": "position_matching",
         "image_path": ["a.jpg"], "data_type": "single_view"},
        {"question": "Distance?", "answer": "1.5", "problem_type": "regression",
         "original_question_type": "distance_infer_center_oo_mv", "image_path": ["a.jpg", "b.jpg"], "data_type": "multi_view"}]))
    single, multi = load_dataset("spar_bench", tmp_path / "spar.json")[0]
    assert single.kind == "single" and single.options is None
    assert single.question == ("Which is nearer? \nA. left\nB. right\nThe values represent the bounding box coordinates "
                               "normalized to a 0-1000 scale, with the top-left corner as the origin of the image.")
    assert multi.kind == "multi_view" and multi.question == "Distance?\n" and len(multi.image_paths) == 2
    body = protocol.build_question_text(multi.question, multi.problem_type, None, n_frames=2, kind="multi_view")
    assert body == "\n### Question:\nDistance?\n\nPlease answer the question using a single word or phrase (e.g., 42 or 3.14).\n\nBegin your reasoning. After each tool use, critically evaluate the visualization and adjust if needed:\n"


def test_missing_image_is_reported_and_skipped_never_scored(tmp_path, capsys):
    _image(tmp_path / "ok.png")
    items = [{"id": "good", "question": "Left?", "options": ["A. yes", "B. no"], "answer": "A",
              "problem_type": "multiple choice", "image_path": "ok.png"},
             {"id": "lost", "question": "Right?", "options": ["A. yes", "B. no"], "answer": "B",
              "problem_type": "multiple choice", "image_path": "gone.png"}]
    (tmp_path / "q.json").write_text(json.dumps(items))
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps(["<think> ok </think> Action: Answer\n<answer> A </answer>"]))
    out = tmp_path / "run"
    assert main(["eval", "run", "--dataset", "spatialeval_real", "--data", str(tmp_path / "q.json"), "--engine",
                 "replay", "--responses", str(replay), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SKIPPED lost" in printed and "gone.png" in printed
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [s["id"] for s in skipped] == ["lost"] and skipped[0]["missing"][0].endswith("gone.png")
    assert [r["id"] for r in read_results(out / "results.jsonl")] == ["good"]
    assert main(["eval", "score", "--results", str(out), "--dataset", "spatialeval_real", "--out", str(out / "s.jsonl")]) == 0
    assert json.loads((out / "s.summary.json").read_text())["items"] == 1


def test_teacher_scores_100_percent_and_navigation_lands_within_5cm(sim_dataset, tmp_path):
    from vilasr_ros_training.rewards import vilasr_reward

    engine = create_engine("teacher", model=str(sim_dataset), reflect=0.5, seed=3)
    summary = run_eval("sim", sim_dataset, engine, tmp_path / "run")
    records = score_records(read_results(summary.results_path), "sim")
    assert summary.ran == len(records) == len(json.loads((sim_dataset / "questions.json").read_text()))
    assert {r["finish_reason"] for r in records} == {"stop"}
    assert [r["id"] for r in records if r["score"] != 1.0] == []
    types = {r["original_question_type"] for r in records}
    assert {"object_counting", "route_planning", "obj_appearance_order", "maze_route", "navigation"} <= types
    stats = summarize(records, "sim")
    nav = stats["position_error_m"]
    assert nav["n"] == nav["asked"] >= 5 and nav["median"] <= 0.05
    # Trajectories are what training wants: reward format 1; the reflective ones re-box a label.
    for r in records:
        trace = json.loads((tmp_path / "run" / r["trace_dir"] / "trace.json").read_text())
        reward = vilasr_reward(trace["chat_text"], r["answer"], r["problem_type"])
        assert reward["format"] == 1.0, r["id"]
        assert reward["accuracy"] == 1.0 or r["problem_type"] == "free-form", r["id"]  # the RL reward has no free-form
        assert reward["reflection"] == float(r["reflection"]), r["id"]
    assert 0 < sum(r["reflection"] for r in records) < len(records)


def test_replay_and_tiny_model_engines_run_the_same_harness(sim_dataset, tmp_path, tiny_model_dir):
    items = json.loads((sim_dataset / "questions.json").read_text())
    pick = [next(i for i in items if i["original_question_type"] == t) for t in ("navigation", "maze_turns")]
    data = tmp_path / "two.json"
    data.write_text(json.dumps(pick))
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps([
        "<think> find </think> Action: Object Mapper\n```json\n[{'index': 1, 'bbox_2d': [200, 150, 400, 400], 'label': '%s'}]\n```"
        % pick[0]["target"]["category"], "<think> ok </think> Action: Answer\n<answer> 3 </answer>"]))
    run_eval("sim", data, create_engine("replay", responses=replay), tmp_path / "replay", image_folder=sim_dataset)
    replayed = {r["id"]: r for r in read_results(tmp_path / "replay" / "results.jsonl")}
    nav = replayed[pick[0]["id"]]
    assert nav["turns"] == 2 and nav["grounding"]["ok"] and nav["position_error_m"] is not None

    cfg = ReasonerConfig(max_pixels=28 * 28 * 16, sampling=SamplingConfig(temperature=0.0, max_tokens=8))
    engine = create_engine("transformers", model=str(tiny_model_dir))
    run_eval("sim", data, engine, tmp_path / "tiny", config=cfg, image_folder=sim_dataset, max_turns_override=2)
    tiny = score_records(load_results(tmp_path / "tiny"), "sim")
    assert [r["id"] for r in tiny] == [p["id"] for p in pick]
    for r in tiny:  # a random model: whatever it wrote ended cleanly and was scored
        assert r["finish_reason"] in ("stop", "length", "ToolError") and 0.0 <= r["score"] <= 1.0
        assert r["conversations"][-1]["role"] == "assistant" and len(r["conversations"][-1]["content"]) > 0


def test_a_killed_run_resumes_without_repeating_or_losing_items(sim_dataset, tmp_path):
    out = tmp_path / "run"
    total = len(json.loads((sim_dataset / "questions.json").read_text()))
    cmd = [sys.executable, "-m", "vilasr_ros.cli", "eval", "run", "--dataset", "sim", "--data", str(sim_dataset),
           "--engine", "teacher", "--model", str(sim_dataset), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "results.jsonl").exists() and (out / "results.jsonl").read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_results(out / "results.jsonl")
    assert 3 <= len(first) < total, "the run was not interrupted midway"
    with open(out / "results.jsonl", "a") as f:  # a line cut short by the kill
        f.write('{"id": "sim7_scene_00')
    summary = run_eval("sim", sim_dataset, create_engine("teacher", model=str(sim_dataset)), out)
    ids = [r["id"] for r in read_results(out / "results.jsonl")]
    assert summary.resumed == len(first) and summary.ran == total - len(first)
    assert len(ids) == len(set(ids)) == total
    assert ids[: len(first)] == [r["id"] for r in first]
    assert set(ids) == {i["id"] for i in json.loads((sim_dataset / "questions.json").read_text())}


def test_report_page_compares_runs_with_plots_and_gallery(sim_dataset, tmp_path):
    items = json.loads((sim_dataset / "questions.json").read_text())
    data = tmp_path / "subset.json"
    data.write_text(json.dumps([i for i in items if i["scene"] in (None, "scenes/scene_0000")]))
    for name, reflect in (("plain", 0.0), ("reflective", 1.0)):
        run_eval("sim", data, create_engine("teacher", model=str(sim_dataset), reflect=reflect), tmp_path / name,
                 image_folder=sim_dataset)
    page = write_report([tmp_path / "plain", tmp_path / "reflective"], tmp_path / "report", gallery=2)
    text = page.read_text()
    for png in ("scores_by_type.png", "finish_reasons.png", "turns_drawings_reflection.png", "navigation_error_cdf.png"):
        assert f"]({png})" in text
        with Image.open(tmp_path / "report" / png) as im:
            assert im.size[0] > 300
    rows = {line.split("|")[1].strip(): line.split("|") for line in text.splitlines() if line.startswith("| plain") or line.startswith("| reflective")}
    assert float(rows["plain"][8]) == 0.0 and float(rows["reflective"][8]) > 50.0  # reflection (%)
    assert [c.strip() for c in rows["plain"][4:6]] == ["qwen2_5_vl", "tools"]  # family and mode
    gallery = [line for line in text.splitlines() if line.startswith("![last drawn image](gallery/")]
    assert len(gallery) == 4 and all((tmp_path / "report" / g[len("![last drawn image]("):-1]).exists() for g in gallery)
    # multiple-choice items in the gallery show their options, so "ground truth: C" can be checked
    mc = [i for i in items if i["problem_type"] == "multiple choice" and i["scene"] in (None, "scenes/scene_0000")]
    shown = [i for i in mc if f"· {i['id']} ·" in text]
    assert all(i["options"][0] in text for i in shown) and ("**options:**" in text) == bool(shown)


def test_the_no_tools_baseline_and_the_drawing_loop_side_by_side_in_one_report(sim_dataset, tmp_path):
    """Issue 27 item 3: the same items and model with and without the drawing tools; the no-tools run
    asks once with the plain prompt (no tool instructions) and scores the reply text as the answer."""
    from dataclasses import replace

    from vilasr_ros.reasoner import ReasonerConfig

    items = json.loads((sim_dataset / "questions.json").read_text())
    mc = [i for i in items if i["problem_type"] == "multiple choice"][:4]
    data = tmp_path / "mc.json"
    data.write_text(json.dumps(mc))
    truth = mc[0]["answer"]
    draw = ('<think> mark it </think> Action: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [10, 10, 60, 60], '
            '"label": "x"}]\n```')
    script = [draw, f"<think> done </think> Action: Answer\n<answer> {truth} </answer>"]
    base = ReasonerConfig(on_tool_error="retry")
    run_eval("sim", data, create_engine("replay", responses=script), tmp_path / "tools", image_folder=sim_dataset,
             config=base)
    run_eval("sim", data, create_engine("replay", responses=[f"{truth}", "never asked"]), tmp_path / "no_tools",
             image_folder=sim_dataset, config=replace(base, prompt_layout="baseline"))
    traces = sorted((tmp_path / "no_tools").rglob("trace.json"))
    assert traces
    for path in traces:
        trace = json.loads(path.read_text())
        assert len(trace["turns"]) == 1 and trace["answer"] == truth
        assert trace["messages"][0]["content"] == "You are a helpful assistant."
        assert "### Question:" not in json.dumps(trace["messages"][1]) and "Object Mapper" not in json.dumps(trace["messages"])
    text = write_report([tmp_path / "tools", tmp_path / "no_tools"], tmp_path / "report", gallery=0).read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")] for line in text.splitlines()
            if line.startswith("| tools") or line.startswith("| no_tools")}
    assert rows["tools"][5] == "tools" and rows["no_tools"][5] == "no tools"
    assert float(rows["tools"][9]) == 2.0 and float(rows["no_tools"][9]) == 1.0  # mean turns


def test_eval_run_with_and_without_tools_through_a_served_qwen3_vl_gives_both_rows(sim_dataset, tmp_path, capsys):
    """Issue 27 must-hold 4: ``vilasr eval run`` against an OpenAI-compatible server (scripted) for a
    served Qwen3-VL (``--model-family qwen3_vl``), with the tools and with ``--no-tools``; the report
    names the family and mode of each row. The tool run's 0–1000 box lands on the pixels it names."""
    from misbehaving_server import MisbehavingServer

    items = json.loads((sim_dataset / "questions.json").read_text())
    mc = [i for i in items if i["problem_type"] == "multiple choice" and i["scene"]][:3]
    data = tmp_path / "mc.json"
    data.write_text(json.dumps(mc))
    truth = mc[0]["answer"]
    draw = ('<think> mark it </think> Action: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [250, 100, 750, 900], '
            '"label": "x"}]\n```')
    tools = MisbehavingServer(script=[draw, f"<think> done </think> Action: Answer\n<answer> {truth} </answer>"])
    plain = MisbehavingServer(script=[f"{truth}."])
    try:
        for server, name, extra in ((tools, "tools", []), (plain, "no_tools", ["--no-tools"])):
            assert main(["eval", "run", "--dataset", "sim", "--data", str(data), "--image-folder", str(sim_dataset),
                         "--out", str(tmp_path / name), "--engine", "openai", "--base-url", server.url, "--model",
                         "Qwen/Qwen3-VL-8B-Instruct", "--model-family", "qwen3_vl", "--batch-size", "1", "--frames", "4", "-q",
                         *extra]) == 0  # one conversation at a time: the script server keeps one position
        assert tools.requests == 2 * len(mc) and plain.requests == len(mc)
    finally:
        tools.close()
        plain.close()
    for path in sorted((tmp_path / "tools").rglob("trace.json")):
        trace = json.loads(path.read_text())
        assert trace["settings"]["model_family"] == "qwen3_vl" and "(1000, 1000)" in trace["messages"][0]["content"]
        w, h = trace["images"][0]["size"]
        assert w % 32 == 0 and h % 32 == 0
        [box] = trace["images"][-1]["boxes"]
        assert box["bbox_2d"] == pytest.approx([0.25 * w, 0.1 * h, 0.75 * w, 0.9 * h])
    for path in sorted((tmp_path / "no_tools").rglob("trace.json")):
        trace = json.loads(path.read_text())
        assert len(trace["turns"]) == 1 and trace["answer"] == f"{truth}." and not trace["settings"]["tools"]
    capsys.readouterr()
    assert main(["eval", "report", str(tmp_path / "tools"), str(tmp_path / "no_tools"), "--out",
                 str(tmp_path / "report"), "--gallery", "0"]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")] for line in text.splitlines()
            if line.startswith("| tools") or line.startswith("| no_tools")}
    assert rows["tools"][3].startswith("openai Qwen/Qwen3-VL-8B-Instruct")
    assert (rows["tools"][4], rows["tools"][5]) == ("qwen3_vl", "tools")
    assert (rows["no_tools"][4], rows["no_tools"][5]) == ("qwen3_vl", "no tools")
