"""Engines on a real (tiny, random) Qwen2.5-VL: the transformers path and an OpenAI-compatible server."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vilasr_ros import protocol
from vilasr_ros.engines import SamplingConfig, create_engine
from vilasr_ros.engines.base import Engine, GenerationResult
from vilasr_ros.errors import ConfigError, EngineUnavailableError, ModelNotFoundError
from vilasr_ros.reasoner import Reasoner, ReasonerConfig

FORCED_TOOL_TURN = (
    "<think> Box the left half. </think> Action: Object Mapper\n```json\n"
    "[{'index': 1, 'bbox_2d': [10, 20, 200, 300], 'label': 'left half'}]\n```"
)
GREEDY = SamplingConfig(temperature=0.0, max_tokens=6)


class ScriptedThen(Engine):
    """Scripted first turn (forces a tool call), then the real engine; records every prompt."""

    name = "scripted-then"

    def __init__(self, inner, first_text):
        self.inner, self.first_text, self.calls = inner, first_text, []

    def reset(self):
        self.calls = []
        self.inner.reset()

    def generate(self, request):
        self.calls.append(request)
        if len(self.calls) == 1:
            return GenerationResult(self.first_text)
        result = self.inner.generate(request)
        self.decoded = collapse_image_pads(self.inner.tokenizer.decode(self.inner.last_input_ids))
        return result


def collapse_image_pads(text):
    while "<|image_pad|><|image_pad|>" in text:
        text = text.replace("<|image_pad|><|image_pad|>", "<|image_pad|>")
    return text


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for _ in range(n)]


def test_chat_renderer_matches_the_models_jinja_template(tiny_engine):
    messages = protocol.initial_messages([(168, 112)] * 2, "How many?", "numerical", kind="video")
    messages += [{"role": "assistant", "content": "x"}, protocol.continuation_message([(2, (168, 112))], final=False)]
    hf = [
        {"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else [
            {"type": "image"} if p["type"] == "image" else p for p in m["content"]]}
        for m in messages
    ]
    assert protocol.render_chat(messages) == tiny_engine.tokenizer.apply_chat_template(
        hf, tokenize=False, add_generation_prompt=True
    )


def test_transformers_engine_multi_turn_with_drawn_image(tiny_engine):
    engine = ScriptedThen(tiny_engine, FORCED_TOOL_TURN)
    reasoner = Reasoner(engine, ReasonerConfig(max_pixels=200704, max_turns=3, sampling=GREEDY))
    trace = reasoner.run(frames(1), "Where is the red cup?", "free-form")
    assert len(engine.calls) >= 2
    assert len(trace.pil_images) == 2  # the drawn image went back to the model
    second = engine.calls[1]
    assert len(second.images) == 2 and second.images[1] is trace.pil_images[1]
    # The tokens the model received decode to the trace's chat text at that turn.
    assert engine.decoded == second.prompt
    assert trace.chat_text.startswith(second.prompt)
    assert trace.turns[1].prompt_tokens > 2 * trace.turns[1].completion_tokens
    assert trace.turns[1].finish_reason in ("stop", "length")


def test_transformers_engine_greedy_is_deterministic(tiny_engine):
    reasoner = Reasoner(ScriptedThen(tiny_engine, FORCED_TOOL_TURN), ReasonerConfig(max_turns=2, sampling=GREEDY))
    a = reasoner.run(frames(2), "Count chairs", "numerical")
    b = reasoner.run(frames(2), "Count chairs", "numerical")
    assert a.chat_text == b.chat_text and len(a.turns) == 2


def test_missing_weights_name_the_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        create_engine("transformers", model=str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="hf download"):
        create_engine("transformers", model="someone/not-cached-model")


def test_unknown_engine_and_missing_options():
    with pytest.raises(ConfigError, match="unknown engine"):
        create_engine("gpt")
    assert create_engine("replay").describe()["responses"] == "shipped demo script"  # no file: the demo, said so
    with pytest.raises(ConfigError, match="replay file not found"):
        create_engine("replay", responses="/nonexistent.json")
    with pytest.raises(ConfigError, match="--base-url"):
        create_engine("openai")
    with pytest.raises(ConfigError, match="has no option reflect"):
        create_engine("openai", base_url="http://127.0.0.1:9/v1", reflect=0.5)
    with pytest.raises(ConfigError, match="timeout_s must be a number"):
        create_engine("openai", base_url="http://127.0.0.1:9/v1", timeout_s="soon")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def openai_server(tiny_model_dir):
    port = _free_port()
    server = Path(__file__).with_name("openai_server.py")
    proc = subprocess.Popen([sys.executable, str(server), str(tiny_model_dir), str(port)])
    import requests

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("test server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def test_openai_engine_multi_image_multi_turn(openai_server, tiny_model_dir):
    import requests

    engine = create_engine("openai", model=str(tiny_model_dir), base_url=openai_server + "/v1", timeout_s=60)
    scripted = ScriptedThen(engine, FORCED_TOOL_TURN.replace("'index': 1", "'index': 2"))
    scripted.inner.tokenizer = None  # not used: no decode for the remote engine
    scripted.generate = lambda request, s=scripted: (
        s.calls.append(request) or (GenerationResult(s.first_text) if len(s.calls) == 1 else s.inner.generate(request))
    )
    reasoner = Reasoner(scripted, ReasonerConfig(max_pixels=200704, max_turns=3, sampling=GREEDY))
    trace = reasoner.run(frames(3), "Which frame shows the door?", "free-form")
    assert len(trace.pil_images) == 4 and trace.images[3].drawn_from == 2
    assert len(scripted.calls) >= 2 and trace.turns[1].prompt_tokens
    # What the server rendered from our messages is exactly the reference-format chat text.
    rendered = requests.get(openai_server + "/debug/prompts", timeout=5).json()["prompts"]
    assert rendered[0] == scripted.calls[1].prompt


def test_openai_engine_down_server_raises_unavailable_after_retries():
    engine = create_engine("openai", model="m", base_url=f"http://127.0.0.1:{_free_port()}/v1", timeout_s=10, max_retries=2)
    start = time.monotonic()
    with pytest.raises(EngineUnavailableError, match="cannot reach .* after 3 attempt"):  # refused, not "timeout"
        engine.generate(_request())
    assert time.monotonic() - start < 10


def test_openai_engine_slow_server_times_out():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        engine = create_engine("openai", model="m", base_url=f"http://127.0.0.1:{port}/v1", timeout_s=0.5, max_retries=1)
        start = time.monotonic()
        with pytest.raises(EngineUnavailableError, match="0.5 s deadline"):
            engine.generate(_request())
        assert time.monotonic() - start < 0.5 * 1.1


def test_reasoner_reports_a_dead_server_in_the_trace():
    engine = create_engine("openai", model="m", base_url=f"http://127.0.0.1:{_free_port()}/v1", timeout_s=0.5, max_retries=0)
    trace = Reasoner(engine).run(frames(1), "q", "free-form")
    assert trace.finish_reason == "error" and "EngineUnavailableError" in trace.error


def _request():
    from vilasr_ros.engines.base import GenerationRequest

    image = frames(1)[0]
    messages = protocol.initial_messages([image.size], "q", "free-form")
    return GenerationRequest(prompt=protocol.render_chat(messages), images=[image], messages=messages, sampling=GREEDY)


def test_the_vllm_engine_reads_the_family_of_its_model_folder(tiny_qwen3_dir, monkeypatch):
    """vLLM is not installed here (GPU only): a stand-in module records what the engine hands
    ``vllm.LLM`` and ``generate``; the loop then reads the served Qwen3-VL's 0–1000 box on its pixels."""
    import sys
    import types

    from PIL import Image

    from vilasr_ros.engines.vllm_engine import VLLMEngine
    from vilasr_ros.reasoner import Reasoner, ReasonerConfig

    seen = {"inputs": []}
    replies = iter(['<think> a </think> Action: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [100, 200, 500, 800], '
                    '"label": "x"}]\n```', "<think> b </think> Action: Answer\n<answer> 3 </answer>"])

    class LLM:
        def __init__(self, model, **kwargs):
            seen["model"] = model

        def generate(self, inputs, params, use_tqdm=False):
            seen["inputs"] += inputs
            out = types.SimpleNamespace(text=next(replies), finish_reason="stop", token_ids=[1, 2])
            return [types.SimpleNamespace(outputs=[out], prompt_token_ids=[0] * 10) for _ in inputs]

    fake = types.SimpleNamespace(LLM=LLM, SamplingParams=lambda **kw: kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    engine = VLLMEngine(str(tiny_qwen3_dir))
    assert engine.family.name == "qwen3_vl" and engine.describe()["model_family"] == "qwen3_vl"
    trace = Reasoner(engine, ReasonerConfig()).run([Image.new("RGB", (640, 480), (90, 90, 90))], "How many?", "numerical")
    assert trace.answer == "3" and seen["model"] == str(tiny_qwen3_dir)
    first = seen["inputs"][0]
    assert first["prompt"].count("<|image_pad|>") == len(first["multi_modal_data"]["image"]) == 1
    assert first["multi_modal_data"]["image"][0].size == (640, 480)  # multiples of 32
    [box] = trace.images[-1].boxes
    assert box["bbox_2d"] == pytest.approx([64.0, 96.0, 320.0, 384.0])
