"""Stage 3, GRPO: trl ``GRPOTrainer`` with multi-turn rollouts through the drawing loop.

Each rollout is one run of the runtime :class:`~vilasr_ros.reasoner.Reasoner` over the policy being
trained (:meth:`TransformersEngine.from_model`, turn reuse on): the model writes a turn, its boxes
and lines are drawn, the drawn image comes back as the next user turn, until it answers or the
budgets end it (10 model calls, 20 for mazes; 45 images). The trajectory's chat text is
:attr:`~vilasr_ros.trace.Trace.chat_text` — the text the robot's model sees — tokenised as the
runtime tokenises it (:func:`vilasr_ros_training.chat.encode`). trl gets:

- ``prompt_ids``: the system + first user turn (with the input frames) up to ``<|im_start|>assistant\\n``;
- ``completion_ids``: everything after, model turns and the user turns that carry drawn images;
- ``env_mask`` (trl's ``tool_mask``): 1 on what the model wrote (each turn and its ``<|im_end|>``),
  0 on the user turns — no loss there;
- all images of the trajectory (inputs and drawn) as ``pixel_values``/``image_grid_thw`` per sample,
  and ``mm_token_type_ids`` over prompt + completion, so the policy's log-probabilities are computed
  on exactly what it saw.

Hooks into trl 1.16 (private methods, hence the pin ``trl>=1.16,<1.17`` in setup.py): ``_generate``
(rollouts instead of single-turn generation) and ``_generate_and_score_completions`` /
``_get_per_token_logps_and_entropies`` (vision inputs for the drawn images, which trl's own multimodal
path only knows for dataset images). trl's tool-calling loop is not used: it renders tool results in
Qwen's ``<tool_response>`` layout, which ViLaSR never saw.

The reward is spec §5 (:func:`vilasr_ros_training.rewards.vilasr_reward_func` on the chat text).
Defaults from the authors' run (``train/rl/train_grpo.sh``): 8 rollouts per prompt, temperature 1.0,
lr 1e-6, images capped at 45, KL off (``beta: 0``). Rollouts run on the training process's policy
(transformers); trl's vLLM colocate/server generation is not wired to the multi-turn loop yet
(``use_vllm`` is refused with that message).

Config: :class:`vilasr_ros_training.config.GRPOStage` (``config/training/grpo.yaml``, each setting
there with its source in the authors' run). The loss mask leaves out ``<|im_end|>`` (:func:`rl_loss_mask`);
advantages divide by ``std + 1e-6`` as verl's (:func:`group_advantages`); a batch runs in lockstep as
the rollout's (``ReasonerConfig.batch_max_turns``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vilasr_ros import protocol
from vilasr_ros.errors import require
from vilasr_ros_training.config import ADVANTAGE_EPSILON

logger = logging.getLogger(__name__)


def rl_dataset(spec, data_dir: str | None = None):
    """ViLaSR-eval items (:class:`~vilasr_ros_training.config.ItemsSpec`) as a GRPO dataset: ``prompt``
    (the question, for trl's bookkeeping), ``item`` (JSON: what the rollout needs), ``ground_truth``,
    ``problem_type`` (reward columns)."""
    datasets = require("datasets", "train")
    from vilasr_ros_training.data import load_items

    items, root = load_items(spec, data_dir)
    rows = {"prompt": [], "item": [], "ground_truth": [], "problem_type": []}
    for it in items:
        rows["prompt"].append([{"role": "user", "content": it.question}])
        rows["item"].append(json.dumps({"id": it.id, "raw": it.raw, "root": str(root), "question": it.question,
                                        "options": it.options, "problem_type": it.problem_type, "kind": it.kind,
                                        "max_turns": it.max_turns,
                                        "image_paths": [str(p) for p in it.image_paths]}, ensure_ascii=False))
        rows["ground_truth"].append(str(it.raw.get("answer", "")))
        rows["problem_type"].append(it.problem_type)
    return datasets.Dataset.from_dict(rows)


def rl_loss_mask(ids: list[int], assistant_mask: list[int], tokenizer) -> list[int]:
    """The RL stage's loss mask: what the model wrote, without its ``<|im_end|>`` (nor the line break
    after it) — ``_get_multi_turn_mask`` of ``vllm_rollout_spmd_video.py`` L393-437 switches off at
    every ``<|im_end|>`` and on again after ``<|im_start|>assistant\n``."""
    im_end = tokenizer.convert_tokens_to_ids(protocol.EOS_TOKEN)
    out = list(assistant_mask)
    for k, token in enumerate(ids):
        if token == im_end:
            out[k] = 0
            if k + 1 < len(ids) and tokenizer.decode([ids[k + 1]]) == "\n":
                out[k + 1] = 0
    return out


def rollout_tensors(trace, tokenizer, image_processor, max_completion_tokens: int | None = None) -> dict[str, Any]:
    """One trajectory as trl's prompt/completion ids, env mask and vision inputs (module docstring).

    The whole chat text is encoded once; the prompt ends where the model's first turn begins (the
    first assistant token), i.e. right after the first ``<|im_start|>assistant\n``. The mask is
    :func:`rl_loss_mask` (no loss on ``<|im_end|>``). With ``max_completion_tokens`` (the RL stage's
    ``response_length``, 13312) the completion and its mask are cut there, as the rollout cuts
    ``response_ids`` (``vllm_rollout_spmd_video.py`` L897-901); a cut through an image's placeholder
    ends the completion before that image's ``<|vision_start|>`` and drops its pixels (the reference
    asserts that no image is cut, L889-892).
    """
    from vilasr_ros_training.chat import encode

    whole = encode(trace.chat_text, trace.pil_images, tokenizer, image_processor)
    ids = whole["input_ids"]
    mask = rl_loss_mask(ids, whole["assistant_mask"], tokenizer)
    p = whole["assistant_mask"].index(1) if 1 in whole["assistant_mask"] else len(ids)
    completion, env_mask = ids[p:], mask[p:]
    pixel_values, grid, n_images = whole.get("pixel_values"), whole.get("image_grid_thw"), len(trace.pil_images)
    if max_completion_tokens is not None and len(completion) > max_completion_tokens:
        completion, env_mask = completion[:max_completion_tokens], env_mask[:max_completion_tokens]
        if grid is not None:
            merge = int(getattr(image_processor, "merge_size", 2)) ** 2
            per_image = [int(t * h * w) for t, h, w in grid.tolist()]
            pads = (ids[:p] + completion).count(tokenizer.convert_tokens_to_ids("<|image_pad|>"))
            n_images, total = 0, 0
            while n_images < len(per_image) and total + per_image[n_images] // merge <= pads:
                total += per_image[n_images] // merge
                n_images += 1
            if total < pads:  # an image cut through: end before its <|vision_start|>
                start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
                starts = [k for k, tok in enumerate(ids[:p] + completion) if tok == start]
                completion, env_mask = completion[:starts[n_images] - p], env_mask[:starts[n_images] - p]
            pixel_values = pixel_values[:sum(per_image[:n_images])]
            grid = grid[:n_images]
            if n_images == 0:
                pixel_values = grid = None
    if not completion:  # the engine failed before writing anything: one masked end token
        completion, env_mask = [tokenizer.convert_tokens_to_ids(protocol.EOS_TOKEN)], [0]
    return {"prompt_ids": ids[:p], "completion_ids": completion, "env_mask": env_mask,
            "pixel_values": pixel_values, "image_grid_thw": grid, "num_images": n_images}


def group_advantages(rewards, num_generations: int, epsilon: float = ADVANTAGE_EPSILON):
    """GRPO outcome advantages: ``(r - mean) / (std + epsilon)`` over each group of ``num_generations``
    consecutive rewards, ``std`` unbiased (``torch.std``) — verl's ``compute_grpo_outcome_advantage``
    (``core_algos.py`` L158-172). NaN rewards (unscorable) are left out of their group's statistics and
    get advantage 0, as trl does.

    Args:
        rewards: Tensor of shape ``(groups * num_generations,)``.
        num_generations: Rollouts per prompt (> 1).
        epsilon: Added to the standard deviation (verl 1e-6; trl's own 1e-4).

    Returns:
        Tensor of the rewards' shape.
    """
    torch = require("torch", "train")
    from trl.trainer.utils import nanstd

    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    std = nanstd(grouped, dim=1).unsqueeze(1)
    return torch.nan_to_num((grouped - mean) / (std + epsilon), nan=0.0).view(-1)


def make_trainer_class():
    """``VilasrGRPOTrainer`` (built lazily: trl is an optional dependency)."""
    torch = require("torch", "train")
    trl = require("trl", "train")

    class VilasrGRPOTrainer(trl.GRPOTrainer):
        """``GRPOTrainer`` whose rollouts are ViLaSR draw-to-reason trajectories (module docstring).

        Args:
            image_processor: The policy's image processor.
            reasoner_config: Loop settings (max pixels, max images; sampling comes from ``args``).
            **kwargs: ``GRPOTrainer`` arguments (``processing_class`` = the tokenizer).

        Attributes:
            last_traces: The traces of the last generation batch (inspection, tests).
        """

        def __init__(self, *args, image_processor=None, reasoner_config=None, max_tokens_per_turn=None,
                     lockstep=True, advantage_epsilon=ADVANTAGE_EPSILON, **kwargs):
            super().__init__(*args, **kwargs)
            self.lockstep = lockstep
            self.advantage_epsilon = advantage_epsilon
            self._rewards_per_func = None
            if self.use_vllm:
                raise ValueError("use_vllm is not supported for ViLaSR's multi-turn rollouts yet; rollouts run on "
                                 "the policy with transformers (set use_vllm: false)")
            self.image_processor = image_processor
            self.reasoner_config = reasoner_config
            self.max_tokens_per_turn = max_tokens_per_turn or protocol.prompts()["sampling"]["max_tokens"]
            self.image_token_id = self.processing_class.convert_tokens_to_ids("<|image_pad|>")
            self._batch_items: list[dict] = []
            self._vision: dict[str, Any] | None = None
            self.last_traces: list = []

        # -- rollouts ---------------------------------------------------------------------------
        def _rollout(self, items: list[dict]) -> list:
            from dataclasses import replace

            from vilasr_ros.engines.base import SamplingConfig
            from vilasr_ros.images import open_rgb
            from vilasr_ros.engines.hf import TransformersEngine
            from vilasr_ros.reasoner import Reasoner

            model = self.accelerator.unwrap_model(self.model)
            if hasattr(model, "get_base_model"):
                model = model.get_base_model()  # LoRA layers stay active inside it
            engine = TransformersEngine.from_model(model, self.processing_class, self.image_processor,
                                                   name="policy")
            was_training = model.training
            model.eval()  # the engine keeps a KV cache (gradient checkpointing would switch it off)
            traces, loaded = [], {}
            batch_max_turns = max(item["max_turns"] for item in items) if self.lockstep and items else None
            try:
                for n, item in enumerate(items):
                    sampling = SamplingConfig(temperature=self.args.temperature, top_p=self.args.top_p or 1.0,
                                              max_tokens=self.max_tokens_per_turn,
                                              seed=self.args.seed + 100_003 * self.state.global_step + n
                                              + 7919 * self.accelerator.process_index)
                    cfg = replace(self.reasoner_config, max_turns=item["max_turns"], sampling=sampling,
                                  batch_max_turns=batch_max_turns)
                    key = tuple(item["image_paths"])  # a prompt comes num_generations times: read it once
                    if key not in loaded:
                        loaded[key] = [open_rgb(path) for path in key]
                    images = loaded[key]  # the loop never modifies its inputs (it draws on copies)
                    traces.append(Reasoner(engine, cfg).run(
                        images, item["question"], item["problem_type"], item["options"], kind=item["kind"],
                        metadata={"item": item["raw"], "root": item["root"]}))
            finally:
                model.train(was_training)
                engine.reset()
            return traces

        def _generate(self, prompts: list):
            traces = self._rollout(self._batch_items)
            self.last_traces = traces
            cap = getattr(self.reasoner_config, "max_response_tokens", None)
            parts = [rollout_tensors(t, self.processing_class, self.image_processor, cap) for t in traces]
            with_images = [p for p in parts if p["pixel_values"] is not None]
            device = self.accelerator.device
            self._vision = None
            if with_images:
                self._vision = {
                    "pixel_values": torch.cat([p["pixel_values"] for p in with_images]).to(device),
                    "image_grid_thw": torch.cat([p["image_grid_thw"] for p in with_images]).to(device),
                    "num_images": [p["num_images"] for p in parts],
                }
            mode = "train" if self.model.training else "eval"
            turns = [len(t.turns) for t in traces]
            self._metrics[mode]["rollout/turns_mean"].append(sum(turns) / len(turns))
            self._metrics[mode]["rollout/drawn_images_mean"].append(
                sum(sum(1 for im in t.images if im.drawn_from is not None) for t in traces) / len(traces))
            return ([p["prompt_ids"] for p in parts], [p["completion_ids"] for p in parts],
                    [p["env_mask"] for p in parts], [t.chat_text for t in traces], None, {}, None, [])

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            return self._rewards_per_func  # all processes' rewards, as trl normalises them

        def _generate_and_score_completions(self, inputs):
            self._batch_items = [json.loads(x["item"]) for x in inputs]
            self._rewards_per_func = None
            output = super()._generate_and_score_completions(inputs)
            if self._rewards_per_func is not None:
                self._verl_advantages(output, len(inputs))
            if self._vision is not None:
                output.update(self._vision)
                ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
                output["mm_token_type_ids"] = (ids == self.image_token_id).long()
            return output

        def _verl_advantages(self, output: dict, n_local: int) -> None:
            """Replace trl's advantages, ``/ (std + 1e-4)`` (a constant in ``GRPOTrainer``), by verl's
            ``/ (std + advantage_epsilon)`` (:func:`group_advantages`) — for trl's group scaling with
            summed rewards, the settings this stage uses; other settings keep trl's."""
            n = self.num_generations if self.model.training else self.num_generations_eval
            if self.scale_rewards != "group" or self.multi_objective_aggregation != "sum_then_normalize" or n < 2:
                return
            per_func = self._rewards_per_func
            rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
            rewards[torch.isnan(per_func).all(dim=1)] = torch.nan  # unscorable: advantage 0, as trl
            start = self.accelerator.process_index * n_local
            advantages = group_advantages(rewards, n, self.advantage_epsilon)[start:start + n_local]
            output["advantages"] = advantages.to(output["advantages"].device, output["advantages"].dtype)

        def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
            # Inside _generate_and_score_completions (old/ref log-probs) trl passes no vision inputs for
            # our rollouts: give it the batch's.
            if kwargs.get("pixel_values") is None and self._vision is not None:
                kwargs.update(self._vision)
                kwargs["mm_token_type_ids"] = (input_ids == self.image_token_id).long()
            return super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)

    return VilasrGRPOTrainer


def train_grpo(config) -> tuple[dict[str, Any], Any]:
    """Run stage 3 from a config: :class:`vilasr_ros_training.config.GRPOStage` or its mapping
    (module docstring).

    Returns:
        ``(summary, trainer)``; summary: ``output_dir``, ``steps``, ``rewards`` (mean reward per
        logging step), ``turns`` (mean turns per rollout per logging step).
    """
    trl = require("trl", "train")
    from vilasr_ros.reasoner import ReasonerConfig
    from vilasr_ros_training.config import stage_config
    from vilasr_ros_training.rewards import vilasr_reward_func
    from vilasr_ros_training.sft import peft_config, policy_from_config, save_for_runtime, trainer_args

    config = stage_config("grpo", config)
    grpo_args = trainer_args(trl.GRPOConfig, {"num_generations": 8, "temperature": 1.0, "learning_rate": 1e-6,
                                              "beta": 0.0, "report_to": "tensorboard", **config.args,
                                              "remove_unused_columns": False})
    policy, tokenizer, image_processor, path = policy_from_config(config, bool(grpo_args.bf16))
    reasoner_config = ReasonerConfig(max_pixels=config.max_pixels, max_images=config.max_images,
                                     prompt_layout=config.prompt_layout, on_tool_error=config.on_tool_error,
                                     max_response_tokens=config.max_response_tokens)
    trainer = make_trainer_class()(
        model=policy, reward_funcs=[vilasr_reward_func], args=grpo_args, train_dataset=rl_dataset(config.items),
        processing_class=tokenizer, peft_config=peft_config(config.lora), image_processor=image_processor,
        reasoner_config=reasoner_config, max_tokens_per_turn=config.max_tokens_per_turn,
        lockstep=config.lockstep, advantage_epsilon=config.advantage_epsilon)
    trainer.train(resume_from_checkpoint=config.resume or None)
    out = Path(grpo_args.output_dir)
    save_for_runtime(trainer, tokenizer, image_processor, path, out)
    history = trainer.state.log_history
    summary = {"output_dir": str(out), "steps": trainer.state.global_step,
               "rewards": [h["reward"] for h in history if "reward" in h],
               "turns": [h["rollout/turns_mean"] for h in history if "rollout/turns_mean" in h]}
    (out / "vilasr_train_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary, trainer
