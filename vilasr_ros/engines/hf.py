"""The ``transformers`` engine: Qwen2.5-VL (ViLaSR) in-process, CUDA when present, else CPU.

Weights come from a local folder or the local Hugging Face cache only (``local_files_only``):
this engine never downloads. The prompt text is tokenised as is (as the reference does with
``tokenizer.encode(prompt)``), each vision placeholder expanded to the image's patch-token count
(``image_grid_thw.prod() // merge_size**2``, as ``Qwen2_5_VLProcessor`` does).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from vilasr_ros.engines.base import Engine, GenerationRequest, GenerationResult
from vilasr_ros.errors import EngineError, ModelNotFoundError, require

logger = logging.getLogger(__name__)

IMAGE_PAD = "<|image_pad|>"


def resolve_model_path(model: str | os.PathLike) -> Path:
    """A local folder, or the snapshot of a Hugging Face id in the local cache.

    Raises:
        ModelNotFoundError: Neither exists; the message says how to fetch the weights.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} exists but holds no config.json: not a model folder")
        return path
    if path.is_absolute() or str(model).startswith((".", "~")) or str(model).count("/") != 1:
        raise ModelNotFoundError(f"model folder not found: {path}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(model), local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"weights for {model!r} are not in the local Hugging Face cache "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}); fetch them once with "
            f"'hf download {model}' or pass --model /path/to/folder"
        ) from exc


class TransformersEngine(Engine):
    """Qwen2.5-VL through ``Qwen2_5_VLForConditionalGeneration``.

    Args:
        model: Local folder or Hugging Face id (default ``AntResearchNLP/ViLaSR``).
        device: ``cuda``/``cpu``; default CUDA when available.
        dtype: ``bfloat16``/``float32``; default bf16 on CUDA, fp32 on CPU.
        attn_implementation: Passed to ``from_pretrained`` (``sdpa`` default; ``flash_attention_2``).

    Raises:
        ModelNotFoundError: No weights at ``model``.
        MissingDependencyError: torch/transformers missing.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        device: str | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
    ):
        torch = require("torch", "transformers")
        transformers = require("transformers", "transformers")
        self.model_path = resolve_model_path(model)
        self.model_id = str(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        self.dtype = getattr(torch, dtype)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(
            self.model_path, local_files_only=True
        )
        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        self.model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(self.model_path, **kwargs)
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.eos_ids.add(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self.last_input_ids = None
        logger.info("transformers engine: %s on %s (%s)", self.model_path, self.device, dtype)

    def encode(self, request: GenerationRequest) -> dict[str, Any]:
        """Token ids and vision inputs for a request (what the model receives).

        Returns:
            ``input_ids`` (1, T), ``attention_mask`` and, with images, ``pixel_values`` and
            ``image_grid_thw`` — tensors on the engine's device.

        Raises:
            EngineError: Placeholder count and image count differ.
        """
        torch = require("torch", "transformers")
        prompt = request.prompt
        n_placeholders = prompt.count(IMAGE_PAD)
        if n_placeholders != len(request.images):
            raise EngineError(f"prompt has {n_placeholders} image placeholders for {len(request.images)} images")
        inputs: dict[str, Any] = {}
        if request.images:
            vision = self.image_processor(images=request.images, return_tensors="pt")
            merge = self.image_processor.merge_size**2
            pieces = prompt.split(IMAGE_PAD)
            expanded = [pieces[0]]
            for grid, piece in zip(vision["image_grid_thw"], pieces[1:]):
                expanded.append(IMAGE_PAD * int(grid.prod().item() // merge) + piece)
            prompt = "".join(expanded)
            inputs["pixel_values"] = vision["pixel_values"].to(self.device, self.dtype)
            inputs["image_grid_thw"] = vision["image_grid_thw"].to(self.device)
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        inputs["input_ids"] = ids.to(self.device)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        return inputs

    def generate(self, request: GenerationRequest) -> GenerationResult:
        torch = require("torch", "transformers")
        inputs = self.encode(request)
        sampling = request.sampling
        gen_kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "do_sample": not sampling.greedy}
        if not sampling.greedy:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        self.last_input_ids = inputs["input_ids"][0].tolist()
        try:
            with torch.inference_mode():
                output = self.model.generate(**inputs, **gen_kwargs)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"generation failed: {exc}") from exc
        new_tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
        stopped = bool(new_tokens) and new_tokens[-1] in self.eos_ids
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return GenerationResult(
            text=text,
            finish_reason="stop" if stopped else "length",
            prompt_tokens=len(self.last_input_ids),
            completion_tokens=len(new_tokens),
        )

    def close(self) -> None:
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model_id, "device": self.device, "dtype": str(self.dtype)}
