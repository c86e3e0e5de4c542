"""The draw-to-reason loop (ViLaSR "interwoven thinking and visual drawing", arXiv 2506.09965 §3).

One implementation serves the ROS agent, offline evaluation and training rollouts. Turn by turn:
the engine writes ``<think>…</think> Action: …``; a tool turn's boxes/lines are merged per image,
drawn on a copy of the referenced image, and the new image(s) go back to the model with the
intermediate (or final) prompt; an answer, the token limit, a tool error or the budgets end it.
Control flow, budgets and finish reasons follow the reference's ``multi_turn_generate``
(spec §3–§4).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from vilasr_ros import protocol
from vilasr_ros.annotations import AnnotationState
from vilasr_ros.drawing import draw_annotations
from vilasr_ros.engines.base import Engine, GenerationRequest, SamplingConfig
from vilasr_ros.errors import ImageIndexError, ModelOutputError, QueryError, ToolCallEndsError
from vilasr_ros.families import DEFAULT_FAMILY, calls_to_pixels, model_family
from vilasr_ros.sanitize import clean_text
from vilasr_ros.trace import Trace, TraceImage, Turn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReasonerConfig:
    """Loop settings (defaults: the reference's evaluation settings, spec §1/§4/§6).

    Attributes:
        max_pixels: ``smart_resize`` area cap for input images (351232 eval, 200704 RL).
        max_turns: Model calls per query (10; 20 for mazes). The call before the last gets the
            final prompt.
        max_images: Image budget (45) after which the final prompt is shown.
        max_drawings_per_turn: A turn with more boxes + lines than this ends the loop with
            ``ToolError`` (a bound on hostile or runaway output; the reference has none, and its
            models write a handful).
        sampling: Decoding settings.
        on_tool_error: What a tool call whose drawing fails (an image index that does not exist,
            coordinates that are not numbers) does: ``stop`` ends the loop with ``ToolError`` (a
            robot asks again rather than spend turns); ``retry`` discards the turn (kept in the trace
            with ``discarded``) and generates again from the same prompt, the turn budget counting
            down — what the reference's evaluation does (``eval/infer.py`` L262-265: the drawing
            raises, ``process_single_response`` returns None, the response is dropped; L365-366:
            every call counts). A turn with no box or line at all ends with ``ToolError`` either way
            (``infer.py`` L203-204).
        prompt_layout: First-turn text: ``eval``, ``rl`` (the RL stage's data loader;
            :func:`vilasr_ros.protocol.build_question_text`) or ``baseline`` (no drawing tools: the
            same question without the tool instructions, one model call, its text the answer when it
            has no ``<answer>`` tags — the no-tools baseline papers report beside drawing).
        max_response_tokens: Budget of a whole trajectory after the first prompt — tokens the model
            wrote plus the user turns that show drawn images (their text and image tokens) — as the
            RL stage's rollout counts it (``vllm_rollout_spmd_video.py`` L600-604, L700-719,
            ``data.max_response_length`` 13312 in ``train_grpo.sh``): a turn that reaches it, or a
            next user turn that would, ends the loop with finish reason ``max_tokens`` (that turn
            is kept, no image follows). None: no budget. Text is counted with the engine's
            tokenizer (``Engine.count_tokens``; engines without one count the model's tokens only).
        model_family: The model's family (:mod:`vilasr_ros.families`): its resize rule, and the
            coordinate convention of its tool calls, converted to resized-image pixels as they are
            parsed (``turn.boxes``/``turn.lines``; the turn's text keeps what the model wrote).
            ``qwen2_5_vl`` (ViLaSR) changes nothing. None: the engine's own family when it knows
            it (the transformers engine reads ``config.json``), else ``qwen2_5_vl``.
    """

    max_pixels: int = protocol.prompts()["image_max_pixels"]["eval_default"]
    max_turns: int = protocol.prompts()["max_turns"]["default"]
    max_images: int = protocol.prompts()["max_images"]
    max_drawings_per_turn: int = 512
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    on_tool_error: str = "stop"
    prompt_layout: str = "eval"
    max_response_tokens: int | None = None
    batch_max_turns: int | None = None
    model_family: str | None = None

    def __post_init__(self):
        if self.model_family is not None:
            model_family(self.model_family)  # an unknown name: ConfigError listing the known ones
        if self.on_tool_error not in ("stop", "retry"):
            raise ValueError(f"on_tool_error must be 'stop' or 'retry', got {self.on_tool_error!r}")
        if self.prompt_layout not in protocol.LAYOUTS:
            raise ValueError(f"prompt_layout must be one of {protocol.LAYOUTS}, got {self.prompt_layout!r}")
        if self.max_response_tokens is not None and self.max_response_tokens < 1:
            raise ValueError(f"max_response_tokens must be >= 1 or None, got {self.max_response_tokens}")
        if self.max_pixels < protocol.MIN_PIXELS:
            raise ValueError(f"max_pixels must be >= {protocol.MIN_PIXELS}, got {self.max_pixels}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.batch_max_turns is not None and self.batch_max_turns < 1:
            raise ValueError(f"batch_max_turns must be >= 1 or None, got {self.batch_max_turns}")
        if self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if self.max_drawings_per_turn < 1:
            raise ValueError(f"max_drawings_per_turn must be >= 1, got {self.max_drawings_per_turn}")


def reasoner_config(**options: Any) -> ReasonerConfig:
    """A validated :class:`ReasonerConfig` from loose options (None = default): ``max_pixels``,
    ``max_turns``, ``max_images``, ``max_drawings_per_turn`` and the :class:`SamplingConfig` fields
    ``temperature``, ``top_p``, ``max_tokens``, ``seed``.

    Raises:
        QueryError: An unknown option, a wrong type or a value out of range.
    """
    from vilasr_ros.configs import build_config

    options = {k: v for k, v in options.items() if v is not None}
    sampling_keys = {"temperature", "top_p", "max_tokens", "seed"}
    sampling = build_config(SamplingConfig, {k: v for k, v in options.items() if k in sampling_keys}, "sampling")
    rest = {k: v for k, v in options.items() if k not in sampling_keys}
    return build_config(ReasonerConfig, {**rest, "sampling": sampling}, "the reasoning loop")


def to_pil(image) -> Any:
    """Accept a ``PIL.Image`` or an (H, W, 3) uint8 RGB array."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    try:
        import numpy as np

        array = np.asarray(image)
    except Exception as exc:  # noqa: BLE001 - any non-array input is a query error
        raise QueryError(f"not an image: {type(image).__name__}") from exc
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise QueryError(f"images must be (H, W, 3) uint8 RGB arrays, got {array.shape} {array.dtype}")
    return Image.fromarray(array, "RGB")


class Reasoner:
    """Runs the loop over an :class:`~vilasr_ros.engines.base.Engine`.

    Args:
        engine: The model.
        config: Loop settings.
    """

    def __init__(self, engine: Engine, config: ReasonerConfig | None = None):
        self.engine = engine
        self.config = config or ReasonerConfig()
        engine_family = getattr(engine, "family", None)
        self.family = model_family(self.config.model_family or engine_family)
        if engine_family is not None and engine_family.name != self.family.name:
            logger.warning("model family %s set for a %s model: its boxes will be read in the wrong coordinates",
                           self.family.name, engine_family.name)

    def run(
        self,
        images: list,
        question: str,
        problem_type: str = "free-form",
        options: list[str] | None = None,
        *,
        kind: str | None = None,
        cancel: threading.Event | None = None,
        on_turn: Callable[[Trace, Turn], None] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Trace:
        """Answer one question about one image or k frames.

        Args:
            images: Input images (``PIL.Image`` or (H, W, 3) uint8 RGB arrays), in order.
            question: The question.
            problem_type: ``multiple choice``/``free-form``/``regression``/``numerical``/``vci``.
            options: Multiple-choice options (``"A. ..."``).
            kind: ``single``/``video``/``multi_view`` prompt layout (default by image count).
            cancel: Set it to stop after the current turn (finish reason ``cancelled``).
            on_turn: Called after every turn (progress reporting; exceptions are logged, not raised).
            metadata: Passed to the engine with every request (:class:`GenerationRequest`).

        Returns:
            The :class:`~vilasr_ros.trace.Trace`. Model misbehaviour never raises: it ends the
            trace with ``ToolError``; engine failures end it with ``error`` set and
            ``finish_reason="error"``.

        Raises:
            QueryError: The question or images cannot be asked (nothing was sent to the engine).
        """
        start = time.perf_counter()
        cfg = self.config
        ptype = protocol.normalize_problem_type(problem_type)
        if not images:
            raise QueryError("at least one image is needed")
        pil = [protocol.resize_for_model(to_pil(img), cfg.max_pixels, self.family) for img in images]
        kind = kind or protocol.default_kind(len(pil))
        frame = self.family.coordinate_frame  # the size the prompts state: the model's coordinate frame
        messages = protocol.initial_messages([frame(im.size) for im in pil], question, ptype, options, kind, cfg.prompt_layout)
        trace = Trace(
            question=question,
            problem_type=ptype,
            options=list(options) if options else None,
            kind=kind,
            messages=messages,
            engine=self.engine.describe(),
            settings={
                "model_family": self.family.name,
                "tools": cfg.prompt_layout != "baseline",
                "max_pixels": cfg.max_pixels,
                "max_turns": cfg.max_turns,
                "max_images": cfg.max_images,
                "sampling": vars(cfg.sampling).copy(),
            },
        )
        trace.pil_images = pil
        trace.images = [TraceImage(index=i + 1, size=im.size, source_frame=i) for i, im in enumerate(pil)]
        state = AnnotationState(len(pil))
        self.engine.reset()
        query = {"question": question, "problem_type": ptype, "options": list(options) if options else None,
                 "kind": kind, "loop": {"max_pixels": cfg.max_pixels, "max_turns": cfg.max_turns,
                                        "max_images": cfg.max_images, "max_drawings_per_turn": cfg.max_drawings_per_turn,
                                        **{k: v for k, v in vars(cfg.sampling).items() if v is not None}}}
        if self.family.name != DEFAULT_FAMILY:  # a vilasr serve checks its model is of this family (ViLaSR's: unsaid)
            query["loop"]["model_family"] = self.family.name

        budget = {"spent": 0}
        for call in range(1, cfg.max_turns + 1):
            if cancel is not None and cancel.is_set():
                trace.finish_reason, trace.error = protocol.FinishReason.CANCELLED, "cancelled before turn %d" % call
                break
            request = GenerationRequest(
                prompt=protocol.render_chat(trace.messages, add_generation_prompt=True),
                images=list(trace.pil_images),
                messages=trace.messages,
                sampling=cfg.sampling,
                metadata=metadata,
                query=query,
            )
            t0 = time.perf_counter()
            try:
                result = self.engine.generate(request)
                text = clean_text(result.text if isinstance(result.text, str) else str(result.text))
                reason = result.finish_reason if result.finish_reason in (protocol.FINISH_STOP, protocol.FINISH_LENGTH) \
                    else protocol.FINISH_STOP
            except Exception as exc:  # noqa: BLE001 - any engine failure ends this query, never the caller
                trace.finish_reason, trace.error = protocol.FinishReason.ERROR, clean_text(f"{type(exc).__name__}: {exc}")
                logger.error("engine failed on turn %d: %s", call, trace.error)
                break
            t1 = time.perf_counter()
            turn = Turn(
                text=text,
                finish_reason=reason,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                cached_tokens=result.cached_tokens,
                engine_s=t1 - t0,
            )
            trace.turns.append(turn)
            done = self._after_turn(trace, turn, state, call, budget)
            turn.host_s = time.perf_counter() - t1
            if on_turn is not None:
                try:
                    on_turn(trace, turn)
                except Exception:  # noqa: BLE001 - a progress callback must not kill the loop
                    logger.exception("on_turn callback failed")
            if done:
                break

        try:
            self.engine.finish()
        except Exception:  # noqa: BLE001 - releasing a stream must not lose the trace
            logger.exception("engine.finish failed")
        if trace.finish_reason in (protocol.FINISH_STOP, None) and trace.turns:
            trace.answer = protocol.extract_answer(trace.model_output)
            if trace.answer is None and cfg.prompt_layout == "baseline":
                trace.answer = trace.model_output.strip() or None
        trace.total_s = time.perf_counter() - start
        return trace

    def _after_turn(self, trace: Trace, turn: Turn, state: AnnotationState, call: int,
                    budget: dict[str, int]) -> bool:
        """Apply one turn; return True when the loop ends (sets ``trace.finish_reason``)."""
        cfg = self.config
        text = turn.text
        if cfg.prompt_layout == "baseline":  # no tools: the first reply is the answer
            trace.finish_reason = turn.finish_reason
            return True
        lockstep = call == cfg.max_turns and (cfg.batch_max_turns or 0) > cfg.max_turns
        written, reason = self._turn_ends(turn, call, budget, lockstep)
        if reason is not None:
            trace.finish_reason = reason
            return True

        boxes, lines = calls_to_pixels(self.family, *protocol.parse_tool_calls(text),
                                       [im.size for im in trace.pil_images])
        turn.boxes, turn.lines = boxes, lines
        n_images = len(trace.pil_images)
        try:
            if not boxes and not lines:
                raise ModelOutputError("no box or line could be parsed from the tool call")
            if len(boxes) + len(lines) > cfg.max_drawings_per_turn:
                raise ModelOutputError(f"{len(boxes)} boxes and {len(lines)} lines in one turn; "
                                       f"at most {cfg.max_drawings_per_turn} are drawn")
            edits = state.plan(boxes, lines, n_images)
            if n_images >= cfg.max_images + 1:
                trace.finish_reason = protocol.FINISH_TOO_MANY_IMAGES
                turn.error = trace.error = f"more than {cfg.max_images} images"
                return True
            drawn = [
                draw_annotations(trace.pil_images[e.source_index], e.boxes, e.lines) for e in edits
            ]
        except ToolCallEndsError as exc:  # the reference ends the sample here, in evaluation and in RL alike
            trace.finish_reason = protocol.FinishReason(exc.finish_reason)
            turn.error = trace.error = f"tool call ended the run: {exc}"
            logger.info("turn %d ended the loop with %s: %s", call, exc.finish_reason, exc)
            return True
        except ImageIndexError as exc:
            if cfg.prompt_layout == "rl":  # the RL rollout catches the IndexError and finishes (spmd_video L240-251)
                trace.finish_reason = protocol.FINISH_INDEX_ERROR
                turn.error = trace.error = f"tool call ended the run: {exc}"
                return True
            return self._tool_error(trace, turn, call, exc, boxes, lines)
        except (ModelOutputError, TypeError, ValueError, OverflowError) as exc:
            return self._tool_error(trace, turn, call, exc, boxes, lines)
        if self._show(trace, turn, state, call, budget, edits, drawn, text, written):
            return True
        if lockstep:  # shown, and no call left for this sample while its batch goes on (ReasonerConfig)
            trace.turns.append(Turn(text="", finish_reason=protocol.FINISH_STOP, completion_tokens=0,
                                    error="lockstep: the batch went on, no call was left for this sample"))
            trace.finish_reason = protocol.FinishReason.LOCKSTEP
            return True
        return False

    def _turn_ends(self, turn: Turn, call: int, budget: dict[str, int], lockstep: bool):
        """``(tokens the turn wrote, finish reason if the loop ends on it before any drawing)``: the RL
        trajectory budget, the last call (unless lockstep draws it), a cut-off turn, an answer."""
        cfg = self.config
        written = 0
        if cfg.max_response_tokens is not None:  # the RL rollout's trajectory budget (ReasonerConfig)
            written = turn.completion_tokens if turn.completion_tokens is not None else (self.engine.count_tokens(turn.text) or 0)
            if budget["spent"] + written >= cfg.max_response_tokens and (call < cfg.max_turns or lockstep):
                return written, protocol.FINISH_MAX_TOKENS
        if call == cfg.max_turns and not lockstep:  # the last call: whatever it wrote ends the loop
            return written, turn.finish_reason
        if turn.finish_reason == protocol.FINISH_LENGTH:
            return written, protocol.FINISH_LENGTH
        if turn.finish_reason == protocol.FINISH_STOP and protocol.has_answer(turn.text):
            return written, protocol.FINISH_STOP
        return written, None

    def _tool_error(self, trace: Trace, turn: Turn, call: int, exc: Exception, boxes: list, lines: list) -> bool:
        """A tool call that cannot be drawn: discarded and generated again (``retry``), or the end (``stop``)."""
        cfg = self.config
        if cfg.on_tool_error == "retry" and (boxes or lines) and len(boxes) + len(lines) <= cfg.max_drawings_per_turn:
            turn.discarded = True
            turn.error = f"tool call discarded (generated again): {exc}"
            turn.boxes, turn.lines = [], []
            logger.info("turn %d discarded: %s", call, exc)
            return False
        trace.finish_reason = protocol.FINISH_TOOL_ERROR
        turn.error = trace.error = f"tool call rejected: {exc}"
        logger.info("turn %d ended the loop with ToolError: %s", call, exc)
        return True

    def _show(self, trace: Trace, turn: Turn, state: AnnotationState, call: int, budget: dict[str, int],
              edits: list, drawn: list, text: str, written: int) -> bool:
        """Append a tool turn's images and the user turn that shows them; True when the loop ends.

        The image budget switches to the final prompt and drops the rest (reference behaviour for
        several edits in one turn). The layout of the user turn follows the number of images drawn,
        not shown (``eval/infer.py`` L433, ``vllm_rollout_spmd_video.py`` L663: several drawn and one
        shown under the cap keeps the several-image layout). With ``prompt_layout="rl"`` a one-image
        turn switches to the final prompt only at the image cap, never by the turn count: the rollout
        reads its call budget from a scalar it never decrements (spmd_video L573, L581, L774).
        """
        cfg = self.config
        several = len(drawn) > 1
        budget_final = call >= cfg.max_turns - 1 and (several or cfg.prompt_layout != "rl")
        if cfg.max_response_tokens is not None and not self._fits(trace, state, edits, drawn, text, budget_final,
                                                                  written, budget, several):
            trace.finish_reason = protocol.FINISH_MAX_TOKENS
            return True
        shown: list[tuple[int, tuple[int, int]]] = []
        final = budget_final
        for edit, image in zip(edits, drawn):
            source = trace.images[edit.source_index]
            trace.pil_images.append(image)
            trace.images.append(
                TraceImage(
                    index=edit.new_index + 1,
                    size=image.size,
                    source_frame=source.source_frame,
                    drawn_from=edit.source_index + 1,
                    turn=len(trace.turns) - 1,
                    boxes=edit.boxes,
                    lines=edit.lines,
                )
            )
            state.commit(edit)
            shown.append((edit.new_index, self.family.coordinate_frame(image.size)))
            turn.new_images.append(edit.new_index + 1)
            if edit.new_index + 1 >= cfg.max_images:
                final = True
                break
        trace.messages = trace.messages + [
            {"role": "assistant", "content": text},
            protocol.continuation_message(shown, final=final, several=several),
        ]
        if len(trace.pil_images) > cfg.max_images:  # the reference generates no more for such a sample
            trace.finish_reason = protocol.FINISH_TOO_MANY_IMAGES  # (eval/infer.py L317, spmd_video L511)
            turn.error = trace.error = f"more than {cfg.max_images} images: no further turn"
            return True
        return False

    def _fits(self, trace: Trace, state, edits, drawn, text: str, final: bool, written: int, budget: dict[str, int],
              several: bool) -> bool:
        """Whether this turn and the user turn that would show its images stay within
        ``max_response_tokens`` (counted as the RL rollout does: the turn's tokens, the new user
        turn's text, 256 per image — ``vllm_rollout_spmd_video.py`` L700-703, L785-787); adds them to
        the budget when they do."""
        cfg = self.config
        shown = []
        for edit, image in zip(edits, drawn):
            shown.append((edit.new_index, self.family.coordinate_frame(image.size)))
            if edit.new_index + 1 >= cfg.max_images:
                final = True
                break
        before = protocol.render_chat(trace.messages, add_generation_prompt=True) + text
        after = protocol.render_chat(trace.messages + [{"role": "assistant", "content": text},
                                                       protocol.continuation_message(shown, final=final,
                                                                                     several=several)],
                                     add_generation_prompt=True)
        template = self.engine.count_tokens(after[len(before):]) or 0
        needed = written + template + 256 * len(shown)
        if budget["spent"] + needed >= cfg.max_response_tokens:
            return False
        budget["spent"] += needed
        return True
