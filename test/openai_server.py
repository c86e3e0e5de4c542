"""A minimal OpenAI-compatible chat-completions server for the tiny model, on 127.0.0.1 only.

Stands in for ``vllm serve`` in tests: ``transformers serve`` (5.x) cannot load Qwen2.5-VL here
because its processor insists on torchvision's video processor, which CPU-only hosts lack. This
server renders incoming messages with the model's own chat template (``apply_chat_template``,
the Jinja path a real server takes), decodes the base64 images and generates with transformers.

Run: ``python test/openai_server.py MODEL_DIR PORT [--delay-s S]``.
"""

from __future__ import annotations

import argparse
import base64
import io
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from vilasr_ros.engines.base import GenerationRequest, SamplingConfig
from vilasr_ros.engines.hf import TransformersEngine


def build_app(model_dir: str, delay_s: float = 0.0) -> FastAPI:
    app = FastAPI()
    engine = TransformersEngine(model_dir)
    state: dict = {"prompts": []}

    @app.get("/health")
    def health():
        return {"ok": True}

    @app.get("/debug/prompts")
    def prompts():
        return {"prompts": state["prompts"]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        time.sleep(delay_s)
        images, messages = [], []
        for message in body["messages"]:
            content = message["content"]
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part["type"] == "image_url":
                        data = part["image_url"]["url"].split(",", 1)[1]
                        images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
                        parts.append({"type": "image"})
                    else:
                        parts.append({"type": "text", "text": part["text"]})
                content = parts
            messages.append({"role": message["role"], "content": content})
        prompt = engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        state["prompts"].append(prompt)
        sampling = SamplingConfig(
            temperature=body.get("temperature", 0.0), top_p=body.get("top_p", 1.0), max_tokens=body["max_tokens"]
        )
        result = engine.generate(GenerationRequest(prompt=prompt, images=images, messages=[], sampling=sampling))
        return JSONResponse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason}
                ],
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "total_tokens": result.prompt_tokens + result.completion_tokens,
                },
            }
        )

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("port", type=int)
    parser.add_argument("--delay-s", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(build_app(args.model_dir, args.delay_s), host="127.0.0.1", port=args.port, log_level="warning")
