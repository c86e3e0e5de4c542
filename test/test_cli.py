"""The command line a new user meets: one-line errors with the fix (exit 2), never a traceback;
`--version`; the same engine choice for ask and agent; the HTML trace page a person looks at."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO
from vilasr_ros.cli import build_parser, choose, main


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors (through Parser.error: one line, exit 2)
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def _one_line_error(capsys, argv, match):
    code, _, err = _run(capsys, *argv)
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(match, err), err
    return err


@pytest.fixture()
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.new("RGB", (64, 48)).save(path)
    return str(path)


@pytest.mark.parametrize("argv, match", [
    (["ask", "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--reflect", "0.5", "--source", "sim:demo",
      "--question", "q"], r"--reflect does not apply to the openai engine"),
    (["ask", "--target", "sofa", "--images", str(REPO / "sim/demo_scene/color/00000.png"), "--question", "q"],
     r"--target needs --source"),
    (["ask", "--question", "q"], r"give exactly one of --images"),
    (["ask", "--engine", "teacher", "--source", "sim:demo", "--question", "q"], r"teacher engine needs --model"),
    (["ask", "--type", "essay", "--question", "q"], r"unknown --type 'essay'; use one of free-form, multiple-choice"),
    (["ask", "--type", "multiple-choice", "--source", "sim:demo", "--question", "q"], r"needs its options"),
    (["ask", "--source", "webcam:0", "--question", "q"], r"unknown kind 'webcam'; use one of rgbd_folder"),
    (["ask", "--images", "/nonexistent.png", "--question", "q"], r"--images: /nonexistent.png does not exist"),
    (["ask", "--frames", "0", "--source", "sim:demo", "--question", "q"], r"expected a number >= 1"),
    (["ask", "--engine", "replay", "--responses", "/nonexistent.json", "--source", "sim:demo", "--question", "q"],
     r"replay file not found"),
    (["ask", "--engine", "openai", "--source", "sim:demo", "--question", "q"], r"needs --base-url"),
    (["ask", "--engine", "transformers", "--model", "/no/such/model", "--source", "sim:demo", "--question", "q"],
     r"model folder not found: /no/such/model"),
    (["ask", "--base-url", "gpu:8000", "--source", "sim:demo", "--question", "q"], r"must start with http"),
    (["agent", "--query", "{not json", "--source", "sim:demo"], r"--query: query is not JSON.*example"),
    (["agent", "--query", '{"id": "x"}', "--source", "sim:demo"], r"--query: query needs a non-empty string 'question'"),
    (["agent", "--engine", "transformers", "--responses", "x.json"], r"--responses does not apply to the transformers engine"),
    (["eval", "run", "--dataset", "sim", "--data", "x", "--out", "y", "--shard", "3/2"], r"--shard"),
    (["train", "sft", "--config", "/nonexistent.yaml"], r"nonexistent.yaml"),
    (["ask", "--engine", "replay", "--model-family", "llava", "--source", "sim:demo", "--question", "q"],
     r"unknown model family 'llava'; known: qwen2_5_vl, qwen3_vl"),
])
def test_each_mistake_is_one_line_naming_the_fix(capsys, argv, match):
    _one_line_error(capsys, argv, match)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and re.match(r"vilasr \d+\.\d+\.\d+", capsys.readouterr().out)


def test_ask_and_agent_choose_engines_the_same_way(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    parser = build_parser()
    for command in (["ask", "--question", "q"], ["agent"]):
        args = parser.parse_args(command)
        assert args.engine == "auto"
        assert choose(args).name == "replay"  # no weights here: the scripted demo, said so
        assert "SCRIPTED" in choose(args).sentence
        url = parser.parse_args(command + ["--base-url", "http://127.0.0.1:9/v1"])
        assert choose(url).name == "openai"  # --base-url means a server, for both


def test_a_refused_connection_says_so_not_timeout(capsys, image):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = _run(capsys, "ask", "--base-url", f"http://127.0.0.1:{port}/v1", "--images", image, "--question",
                          "q", "--request-timeout", "20")
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("finish_reason"))
    assert "cannot reach" in line and "timeout" not in line, line


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_trace_page_shows_what_the_model_did_in_a_browser(tmp_path):
    out = tmp_path / "t"
    assert main(["ask", "--engine", "replay", "--source", "sim:demo", "--question", "Where is the sofa? Go to it.",
                 "--target", "sofa", "--out", str(out)]) == 0
    assert main(["view", str(out)]) == 0
    trace = json.loads((out / "trace.json").read_text())
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", (out / "trace.html").as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    images = re.findall(r'<figure data-image-index="(\d+)"><img alt="image (\d+)"[^>]*data-loaded="(\d)"[^>]*>'
                        r'<figcaption>image (\d+)', dom)
    indices = [int(i) for i, _, _, _ in images]
    assert len(images) == len(trace["images"]) + 1  # every image, plus the one the target was grounded from
    assert all(loaded == "1" for _, _, loaded, _ in images), "an image did not load"
    assert all(a == b == c for a, b, _, c in images)  # labelled with the model's own image number
    assert sorted(set(indices)) == [img["index"] for img in trace["images"]] == list(range(1, 19))
    assert "image 17, drawn on image 11 (input frame 10)" in dom
    answer = re.search(r"<p class=\"answer\" id=\"answer\">([^<]*)</p>", dom).group(1)
    assert answer == trace["answer"] and "sofa" in answer
    assert '<p class="error">' not in dom.split('<h2>Answer')[0]  # no image was flagged as failed


def test_ask_no_tools_is_one_plain_answer(capsys, tmp_path):
    """Issue 27 item 3: `vilasr ask --no-tools` asks once without the drawing tools and prints the reply."""
    import json as _json

    responses = tmp_path / "r.json"
    responses.write_text(_json.dumps(["The sofa is by the wall.", "never asked"]))
    code, out, err = _run(capsys, "ask", "--engine", "replay", "--responses", str(responses), "--source", "sim:demo",
                          "--frames", "4", "--no-tools", "--question", "Where is the sofa?", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "answer: The sofa is by the wall." in out and "turns: 1" in out
    trace = _json.loads(next((tmp_path / "run").rglob("trace.json")).read_text())
    assert trace["settings"]["tools"] is False and trace["messages"][0]["content"] == "You are a helpful assistant."
