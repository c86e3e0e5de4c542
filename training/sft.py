"""Stage 1 (cold start) and the SFT after stage 2: trl ``SFTTrainer`` on ViLaSR conversations.

Multi-turn, multi-image chats rendered and tokenised exactly as the runtime does
(:mod:`vilasr_ros_training.chat`), loss on the assistant tokens only, the vision tower and its
projector (Qwen2.5-VL ``model.visual``, which holds the patch merger) frozen, the language model
trained in full or through LoRA (peft). Paper defaults (the authors' LLaMA-Factory config
``train/cold_start/.../config_cold_start.yaml``): lr 1e-5, 3 epochs, cosine, warmup 0.1, bf16, image
max pixels 1003520, per-device batch 1, ZeRO-3.

Config keys (``config/training/sft.yaml``): ``model`` (folder or HF id in the local cache), ``data``
(list of sources, :func:`vilasr_ros_training.data.load_source`), ``max_pixels``, ``max_length``,
``freeze_vision``, ``lora`` (null or ``{r, alpha, dropout, target_modules?}``), ``resume`` (true or a
checkpoint folder), ``args`` (``SFTConfig`` fields).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from vilasr_ros.errors import require

logger = logging.getLogger(__name__)

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""LoRA on the language model's attention and MLP projections only (the vision side stays frozen)."""


def load_policy(model: str | Path, *, bf16: bool = False, freeze_vision: bool = True,
                attn_implementation: str | None = None, family=None):
    """Model, tokenizer and image processor from a local folder (or the local HF cache).

    Args:
        model: Folder or Hugging Face id (never downloaded).
        bf16: Load in bfloat16 (else float32).
        freeze_vision: ``requires_grad=False`` on ``model.visual`` (vision tower + merger/projector;
            the same attribute in Qwen2.5-VL and Qwen3-VL).
        family: The model family, a name or a profile (its ``model_class`` loads the weights); None:
            from the folder's ``config.json`` (:func:`vilasr_ros.families.resolve_family`).

    Raises:
        ModelNotFoundError: No weights there.
        ConfigError: An unknown family.
    """
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    from vilasr_ros.engines.hf import resolve_model_path
    from vilasr_ros.families import resolve_family

    path = resolve_model_path(model)
    family = resolve_family(family, path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    image_processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if bf16 else torch.float32, "local_files_only": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    policy = getattr(transformers, family.model_class).from_pretrained(path, **kwargs)
    if freeze_vision:
        policy.model.visual.requires_grad_(False)
    return policy, tokenizer, image_processor, path


def trainer_args(cls, args: dict[str, Any]):
    """``cls(**args)`` for a trl config class; an unknown key is a ValueError naming it."""
    try:
        return cls(**args)
    except TypeError as exc:
        raise ValueError(f"args: not a trl {cls.__name__} setting: {exc}") from exc


def policy_from_config(config, bf16: bool):
    """:func:`load_policy` with a stage's ``model``, ``freeze_vision``, ``attn_implementation``,
    ``model_family``."""
    return load_policy(config.model, bf16=bf16, freeze_vision=config.freeze_vision,
                       attn_implementation=config.attn_implementation, family=config.model_family)


def peft_config(lora: dict[str, Any] | None):
    """A peft ``LoraConfig`` from the config's ``lora`` block (None: full fine-tuning)."""
    if not lora:
        return None
    peft = require("peft", "train")
    return peft.LoraConfig(r=int(lora.get("r", 64)), lora_alpha=int(lora.get("alpha", 128)),
                           lora_dropout=float(lora.get("dropout", 0.05)),
                           target_modules=lora.get("target_modules", LORA_TARGETS), task_type="CAUSAL_LM")


def as_dataset(examples: list[dict[str, Any]]):
    """A ``datasets.Dataset`` with one ``example`` column (JSON of ``{"messages", "images"}``)."""
    datasets = require("datasets", "train")
    if not examples:
        raise ValueError("no training examples")
    return datasets.Dataset.from_dict({"example": [json.dumps(e, ensure_ascii=False) for e in examples]})


def save_for_runtime(trainer, tokenizer, image_processor, source: Path, out: Path) -> None:
    """Leave a folder the runtime loads (``--engine transformers --model OUT``): the weights, tokenizer,
    image processor and the source model's chat template.

    Full fine-tuning: ``trainer.save_model`` (gathers ZeRO-3 shards). LoRA: the adapter goes to
    ``OUT/adapter`` and the merged model to ``OUT`` (merging needs the whole model on one process:
    not under ZeRO-3 — there, merge the adapter afterwards with peft).
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "peft_config"):
        trainer.save_model(str(out / "adapter"))
        if trainer.accelerator.is_main_process:
            model.merge_and_unload().save_pretrained(out)
    else:
        trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(out)
        image_processor.save_pretrained(out)
        for name in ("chat_template.json", "chat_template.jinja"):
            if (source / name).exists():
                shutil.copy(source / name, out / name)


def train_sft(config, examples: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run SFT.

    Args:
        config: :class:`vilasr_ros_training.config.SFTStage` (or its mapping, checked the same way).
        examples: Use these instead of ``config.data`` (stage 2 hands over its selection).

    Returns:
        ``{"output_dir", "examples", "steps", "train_loss", "losses"}`` (``losses``: the logged
        training loss per logging step).

    Raises:
        ValueError: No data, bad config.
        MissingImagesError: ViLaSR-data with missing images (all named).
    """
    trl = require("trl", "train")
    from vilasr_ros_training.chat import VilasrCollator
    from vilasr_ros_training.config import stage_config
    from vilasr_ros_training.data import load_source

    from vilasr_ros.engines.hf import resolve_model_path
    from vilasr_ros_training.convert import ConversionStats

    config = stage_config("sft", config)
    family = config.family(resolve_model_path(config.model))
    conversion = ConversionStats()
    if examples is None:
        examples = [e for spec in config.data
                    for e in load_source(spec, family=family, stats=conversion)]
    if conversion.examples:
        logger.info("SFT: %s conversations converted to %s coordinates: %s", conversion.examples, family.name,
                    conversion.as_dict())
    sft_args = trainer_args(trl.SFTConfig, {"report_to": "tensorboard", **config.args, "remove_unused_columns": False,
                                            "dataset_kwargs": {"skip_prepare_dataset": True}})
    policy, tokenizer, image_processor, path = policy_from_config(config, bool(sft_args.bf16))
    collator = VilasrCollator(tokenizer, image_processor, config.max_pixels, config.max_length, config.sft_format,
                              family)
    trainer = trl.SFTTrainer(model=policy, args=sft_args, train_dataset=as_dataset(examples),
                             processing_class=tokenizer, data_collator=collator,
                             peft_config=peft_config(config.lora))
    logger.info("SFT: %d examples, %d trainable parameters", len(examples),
                sum(p.numel() for p in trainer.model.parameters() if p.requires_grad))
    result = trainer.train(resume_from_checkpoint=config.resume or None)
    out = Path(sft_args.output_dir)
    save_for_runtime(trainer, tokenizer, image_processor, path, out)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {"output_dir": str(out), "examples": len(examples), "steps": trainer.state.global_step,
               "train_loss": result.training_loss, "losses": losses, "model_family": family.name}
    if conversion.examples:
        summary["conversion"] = conversion.as_dict()
    (out / "vilasr_train_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
