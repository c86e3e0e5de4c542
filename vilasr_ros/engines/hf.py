"""The ``transformers`` engine: Qwen2.5-VL (ViLaSR) in-process, CUDA when present, else CPU.

Weights come from a local folder or the local Hugging Face cache only (``local_files_only``):
this engine never downloads. The prompt text is tokenised as is (as the reference does with
``tokenizer.encode(prompt)``), each vision placeholder expanded to the image's patch-token count
(``image_grid_thw.prod() // merge_size**2``, as ``Qwen2_5_VLProcessor`` does). Positions are
Qwen2.5-VL's multimodal rotary positions (``get_rope_index``: 3D for image tokens, 1D for text).

Turn reuse (default on): the draw-to-reason loop re-sends the whole conversation every turn. The
engine keeps the KV cache of what it has already run (prompt and generated tokens), the processed
pixels and vision-tower features of every image it has seen, and for a new request prefills only
what follows the longest prefix shared with the cached sequence — token ids equal AND every image
in that prefix the same picture (content hash). In the loop that prefix is everything up to the new
user message, so turn k prefills the drawn image(s) and the caption only. Positions of the new
segment are sliced from ``get_rope_index`` over the whole sequence, so they equal a full
recompute's. When the shared prefix is shorter than the cached sequence (another conversation, an
edited history, re-tokenised output that differs from the generated ids) the cache is cut back to
it, and to nothing when nothing is shared; both are logged. ``turn_reuse=False`` prefills
everything and runs the vision tower on every image, every turn (the reference's behaviour).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
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


def expand_image_tokens(text: str, grids, merge_size: int) -> str:
    """Repeat each ``<|image_pad|>`` once per vision token of its image, as ``Qwen2_5_VLProcessor`` does.

    Shared by the engine and the training collators (``vilasr_ros_training.chat``), so training and
    inference tokenise the same text the same way.

    Args:
        text: Chat text with one ``<|image_pad|>`` per image.
        grids: ``image_grid_thw`` rows (t, h, w patches) of the images, in order.
        merge_size: The image processor's ``merge_size`` (2 for Qwen2.5-VL: 2x2 patches per token).

    Raises:
        EngineError: Placeholder count and image count differ.
    """
    pieces = text.split(IMAGE_PAD)
    if len(pieces) - 1 != len(grids):
        raise EngineError(f"text has {len(pieces) - 1} image placeholders for {len(grids)} images")
    out = [pieces[0]]
    for grid, piece in zip(grids, pieces[1:]):
        out.append(IMAGE_PAD * int(grid.prod().item() // merge_size**2) + piece)
    return "".join(out)


DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class TransformersConfig:
    """Settings of the ``transformers`` engine (see :class:`TransformersEngine`).

    Attributes:
        model: Local folder or Hugging Face id (resolved in the local cache; never downloaded).
        device: ``cuda``/``cuda:N``/``cpu``/``mps``; None: CUDA when available.
        dtype: ``bfloat16``/``float16``/``float32``; None: bf16 on CUDA, fp32 on CPU.
        attn_implementation: Passed to ``from_pretrained`` (None: ``sdpa``; ``flash_attention_2``).
        turn_reuse: Keep KV cache and vision features across turns (False: full recompute each turn).
    """

    model: str = "AntResearchNLP/ViLaSR"
    device: str | None = None
    dtype: str | None = None
    attn_implementation: str | None = None
    turn_reuse: bool = True

    def __post_init__(self):
        if isinstance(self.model, os.PathLike):
            object.__setattr__(self, "model", os.fspath(self.model))
        if not self.model:
            raise ValueError("model must name a folder or a Hugging Face id")
        if self.device is not None and not (self.device == "cpu" or self.device.startswith(("cuda", "mps", "xpu"))):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


class TransformersEngine(Engine):
    """Qwen2.5-VL through ``Qwen2_5_VLForConditionalGeneration``, with turn reuse (module docstring).

    Args:
        config: A :class:`TransformersConfig`, or its ``model`` (a folder or Hugging Face id).
        **options: :class:`TransformersConfig` fields (``device``, ``dtype``, ``attn_implementation``,
            ``turn_reuse``), over those of ``config``.

    Attributes:
        last_input_ids: Token ids of the last request's whole prompt.
        last_prefill_ids: The ids actually prefilled for it (its suffix after the reused prefix).
        last_generated_ids: The ids it generated.

    Raises:
        ModelNotFoundError: No weights at ``model``.
        MissingDependencyError: torch/transformers missing.
    """

    name = "transformers"
    config_class = TransformersConfig

    primary_option = "model"

    def __init__(self, config: TransformersConfig | str | os.PathLike | None = None, /, **options: Any):
        self.config = config = self.resolve_config(config, options)
        torch = require("torch", "transformers")
        transformers = require("transformers", "transformers")
        self.model_path = resolve_model_path(config.model)
        self.model_id = str(config.model)
        self.device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = config.dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        self.dtype = getattr(torch, dtype)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.image_processor = transformers.AutoImageProcessor.from_pretrained(
            self.model_path, local_files_only=True
        )
        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": True}
        if config.attn_implementation:
            kwargs["attn_implementation"] = config.attn_implementation
        from vilasr_ros.families import resolve_family

        self.family = resolve_family(None, self.model_path)  # config.json's model_type: the loading class
        self.model = getattr(transformers, self.family.model_class).from_pretrained(self.model_path, **kwargs)
        self.model.to(self.device).eval()
        self._setup(config.turn_reuse)
        logger.info("transformers engine: %s on %s (%s), turn reuse %s", self.model_path, self.device, dtype,
                    "on" if config.turn_reuse else "off")

    @classmethod
    def from_model(cls, model, tokenizer, image_processor, *, turn_reuse: bool = True,
                   name: str = "in-memory") -> "TransformersEngine":
        """Wrap a model already in memory (training rollouts: the policy being trained).

        Args:
            model: A ``Qwen2_5_VLForConditionalGeneration`` (unwrapped: for peft, ``get_base_model()``;
                LoRA layers stay active inside it). Its device and dtype are used as they are.
            tokenizer: Its tokenizer.
            image_processor: Its image processor.
            turn_reuse: As in the constructor.
            name: What ``describe()`` reports as the model.
        """
        engine = cls.__new__(cls)
        engine.model, engine.tokenizer, engine.image_processor = model, tokenizer, image_processor
        engine.model_path, engine.model_id = None, name
        param = next(model.parameters())
        engine.device, engine.dtype = str(param.device), param.dtype
        engine._setup(turn_reuse)
        from vilasr_ros.families import family_of_model_type, model_family

        model_type = getattr(getattr(model, "config", None), "model_type", None)
        engine.family = family_of_model_type(model_type) or model_family(None)
        return engine

    def _setup(self, turn_reuse: bool) -> None:
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.eos_ids.add(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.turn_reuse = turn_reuse
        self.last_input_ids: list[int] | None = None
        self.last_prefill_ids: list[int] | None = None
        self.last_generated_ids: list[int] | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the cached conversation (KV cache, token ids, image features)."""
        self._cache = None
        self._cached_ids: list[int] = []
        self._cached_images: list[str] = []
        self._pixels: dict[str, tuple[Any, Any]] = {}  # image hash -> (pixel_values, grid_thw)
        self._features: dict[str, Any] = {}  # image hash -> vision-tower output (tokens, hidden)
        self._hashes: dict[int, tuple[Any, str]] = {}

    # ------------------------------------------------------------------ inputs
    def _hash(self, image) -> str:
        known = self._hashes.get(id(image))
        if known is not None and known[0] is image:
            return known[1]
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(repr((image.size, image.mode)).encode())
        self._hashes[id(image)] = (image, digest.hexdigest())
        return self._hashes[id(image)][1]

    def _vision_inputs(self, images: list, keys: list[str]):
        """Pixel values and grid per image, processed once per picture while reuse is on."""
        todo = [k for k, key in enumerate(keys) if key not in self._pixels] if self.turn_reuse else list(range(len(images)))
        fresh = {}
        if todo:
            out = self.image_processor(images=[images[k] for k in todo], return_tensors="pt")
            sizes = out["image_grid_thw"].prod(-1).tolist()
            for k, pv, grid in zip(todo, out["pixel_values"].split(sizes), out["image_grid_thw"]):
                fresh[keys[k]] = (pv, grid)
            if self.turn_reuse:
                self._pixels.update(fresh)
        return [fresh.get(key) or self._pixels[key] for key in keys]

    def encode(self, request: GenerationRequest) -> dict[str, Any]:
        """Token ids and vision inputs for a request (what the model receives).

        Returns:
            ``input_ids`` (1, T), ``attention_mask``, ``mm_token_type_ids`` (1 on image tokens) and,
            with images, ``pixel_values`` and ``image_grid_thw`` — tensors on the engine's device.

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
            vision = self._vision_inputs(request.images, [self._hash(im) for im in request.images])
            prompt = expand_image_tokens(prompt, [grid for _, grid in vision], self.image_processor.merge_size)
            inputs["pixel_values"] = torch.cat([pv for pv, _ in vision]).to(self.device, self.dtype)
            inputs["image_grid_thw"] = torch.stack([grid for _, grid in vision]).to(self.device)
        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        inputs["input_ids"] = ids.to(self.device)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.image_token_id).int()
        return inputs

    def _image_spans(self, ids: list[int], grids) -> list[tuple[int, int]]:
        merge = self.image_processor.merge_size**2
        spans, pos = [], 0
        for grid in grids:
            start = ids.index(self.image_token_id, pos)
            end = start + int(grid.prod().item() // merge)
            spans.append((start, end))
            pos = end
        return spans

    def _reusable(self, ids: list[int], keys: list[str], spans: list[tuple[int, int]]) -> int:
        """Length of the cached prefix valid for this request (ids equal, images equal)."""
        if not self.turn_reuse or self._cache is None:
            return 0
        limit = min(len(self._cached_ids), len(ids) - 1)  # at least one token is prefilled (for logits)
        n = 0
        while n < limit and self._cached_ids[n] == ids[n]:
            n += 1
        for j, (start, end) in enumerate(spans):
            same = j < len(self._cached_images) and self._cached_images[j] == keys[j]
            if start < n and (not same or n < end):
                n = start  # never keep a different picture, never cut inside an image's tokens
                break
        return n

    # ------------------------------------------------------------------ generation
    def _pick(self, logits, sampling, generator):
        torch = require("torch", "transformers")
        if sampling.greedy:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < sampling.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs / probs.sum(), 1, generator=generator).item())

    def generate(self, request: GenerationRequest) -> GenerationResult:
        torch = require("torch", "transformers")
        transformers = require("transformers", "transformers")
        inputs = self.encode(request)
        ids = inputs["input_ids"][0].tolist()
        keys = [self._hash(im) for im in request.images]
        grids = inputs.get("image_grid_thw")
        spans = self._image_spans(ids, grids) if request.images else []
        sampling = request.sampling
        vlm = self.model.model
        try:
            with torch.inference_mode():
                if request.images:
                    positions, _ = vlm.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], grids)
                else:
                    positions = torch.arange(len(ids), device=self.device).view(1, 1, -1).expand(3, 1, -1)
                reuse = self._reusable(ids, keys, spans)
                if reuse < len(self._cached_ids):
                    logger.info("turn reuse: %s (cached %d tokens, request %d)",
                                f"cut back to the shared {reuse}-token prefix" if reuse else "full recompute",
                                len(self._cached_ids), len(ids))
                if reuse == 0 or self._cache is None:
                    self._cache = transformers.DynamicCache(config=self.model.config)
                elif reuse < self._cache.get_seq_length():
                    self._cache.crop(reuse - self._cache.get_seq_length())  # transformers 5: negative = drop that many
                new_ids = inputs["input_ids"][:, reuse:]
                embeds = vlm.get_input_embeddings()(new_ids)
                new_images = [j for j, (start, _) in enumerate(spans) if start >= reuse]
                deepstack = None
                if new_images:
                    features, deepstack = self._vision_features([keys[j] for j in new_images], inputs, new_images)
                    mask = (new_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
                    embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))
                    if deepstack is not None:  # Qwen3-VL: vision features added to the first decoder layers
                        deepstack = {"visual_pos_masks": new_ids == self.image_token_id,
                                     "deepstack_visual_embeds": [d.to(embeds.dtype) for d in deepstack]}
                self.last_input_ids, self.last_prefill_ids = ids, ids[reuse:]
                logits = self._forward(embeds, positions[:, :, reuse:], **(deepstack or {}))
                next_pos = int(positions[:, 0, -1].max().item()) + 1
                generator = None
                if not sampling.greedy:
                    generator = torch.Generator(device=self.device)
                    generator.manual_seed(sampling.seed if sampling.seed is not None else int(torch.seed() % 2**63))
                generated: list[int] = []
                for step in range(sampling.max_tokens):
                    token = self._pick(logits, sampling, generator)
                    generated.append(token)
                    if token in self.eos_ids or step == sampling.max_tokens - 1:
                        break
                    tok = torch.tensor([[token]], device=self.device)
                    pos = torch.full((3, 1, 1), next_pos + step, device=self.device, dtype=positions.dtype)
                    logits = self._forward(vlm.get_input_embeddings()(tok), pos)
        except (RuntimeError, ValueError) as exc:
            self.reset()
            raise EngineError(f"generation failed: {exc}") from exc
        # The cache now holds the prompt and every generated token but the last (never fed).
        self.last_generated_ids = generated
        self._cached_ids = ids + generated[:-1]
        self._cached_images = keys
        if not self.turn_reuse:
            self._cache, self._cached_ids = None, []
        stopped = bool(generated) and generated[-1] in self.eos_ids
        return GenerationResult(
            text=self.tokenizer.decode(generated, skip_special_tokens=True),
            finish_reason="stop" if stopped else "length",
            prompt_tokens=len(ids),
            completion_tokens=len(generated),
            cached_tokens=reuse,
        )

    def _vision_features(self, keys: list[str], inputs: dict[str, Any], positions: list[int]):
        """Vision-tower output for the images at ``positions`` (cached per picture while reuse is on).

        Returns:
            ``(features, deepstack)``: the merged vision tokens of those images in order, and for a
            model with DeepStack (Qwen3-VL) one tensor per fed decoder layer with the same rows (else
            None).
        """
        torch = require("torch", "transformers")
        missing = [p for p, key in zip(positions, keys) if not (self.turn_reuse and key in self._features)]
        if missing:
            grids = inputs["image_grid_thw"]
            sizes = grids.prod(-1).tolist()
            chunks = inputs["pixel_values"].split(sizes)
            out = self.model.model.get_image_features(torch.cat([chunks[p] for p in missing]), grids[missing])
            layers = getattr(out, "deepstack_features", None)  # per layer, a tuple of per-image tensors
            computed = {p: (out.pooler_output[k], None if layers is None else [layer[k] for layer in layers])
                        for k, p in enumerate(missing)}
            if self.turn_reuse:
                self._features.update({keys[positions.index(p)]: f for p, f in computed.items()})
        else:
            computed = {}
        parts = [computed[p] if p in computed else self._features[key] for p, key in zip(positions, keys)]
        features = torch.cat([f for f, _ in parts])
        if parts[0][1] is None:
            return features, None
        return features, [torch.cat([d[layer] for _, d in parts]) for layer in range(len(parts[0][1]))]

    def _forward(self, embeds, positions, **deepstack):
        out = self.model.model.language_model(inputs_embeds=embeds, position_ids=positions,
                                              past_key_values=self._cache, use_cache=True, **deepstack)
        return self.model.lm_head(out.last_hidden_state[0, -1])

    def close(self) -> None:
        self.model = None
        self.reset()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def count_tokens(self, text: str) -> int | None:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model_id, "device": self.device, "dtype": str(self.dtype),
                "turn_reuse": self.turn_reuse, "model_family": self.family.name}
