"""The chain as a graph, declared once: its steps, what each needs, how each is keyed and cached.

    [propose] -> sample -> identify -> reason (one item per event) -> synthesize -> validate
    sample -> simple -> validate                                   (a LoRA adapter: one pass)

A video longer than `ChainConfig.chunk_seconds` runs as chunks (foley_core.chain.chunks): `propose`
measures the whole video in one streaming pass (per video); `split_works` (chain/chunkworks.py) then
cuts it at shot cuts into chunk works, each a video of its own to the later steps (its own frames,
windows, event budget; keyed by content and the chunk's span), and `merge_works` builds the video's
script and trace from its chunks. A video that fits in one chunk is its own single work, with the keys
and results it always had.

Two executors run it: `run_chain` (the plain loop: `foley script`, tests, benchmarks) and the
`process-shard` flow (one Prefect task per step over a whole shard, the model's steps one task as a
pipeline). Both call `run_step` or `run_steps` (chain/executor.py), which run steps over many videos:
each video (and each event, for per-event steps) is looked up in the step cache under its own content
key and computed only when missing; a video whose step fails is marked failed and drops out, the
others go on. So both executors produce the same scripts and traces, and a retried or resumed shard
recomputes only what is missing.

A step's key hashes the video's content, the step, the templates it renders, the model's identity
(with its resolved revisions), the settings that shape the answer and the keys of the steps it builds
on (foley_core.cachekeys): editing one template recomputes that step and the later ones only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from v2t_foley.foley_core.backends.base import VideoLLM
from v2t_foley.foley_core.cachekeys import step_key
from v2t_foley.foley_core.chain.runner import (
    ChainConfig,
    FramePlan,
    load_clip,
    new_trace,
    plan_frames,
    proposed,
    record_step,
    window_sampler,
)
from v2t_foley.foley_core.chain.simple import simple_step
from v2t_foley.foley_core.chain.steps import (
    StepResult,
    StepSettings,
    identify,
    identify_windows,
    reason,
    synthesize,
    timed,
    validate,
)
from v2t_foley.foley_core.chain.trace import ChainTrace
from v2t_foley.foley_core.prompts import PromptSet
from v2t_foley.foley_core.proposals import ProposalSet, candidate_windows
from v2t_foley.foley_core.proposals.base import PROPOSALS_VERSION
from v2t_foley.foley_core.proposals.propose import Measure, propose
from v2t_foley.foley_core.schema.decoding import SynthesisAnswer
from v2t_foley.foley_core.schema.events import Event, EventReasoning
from v2t_foley.foley_core.schema.script import FoleyScript
from v2t_foley.foley_core.video.sampling import FramePolicy
from v2t_foley.foley_core.video.video import Video

MISSING = object()


class StepCache:
    """Where step results live by key. The base class remembers nothing (the plain loop)."""

    def get(self, step: Step, key: str) -> Any:
        return MISSING

    def put(self, step: Step, key: str, result: StepResult) -> None:
        return None


@dataclass(frozen=True)
class ChainContext:
    """What the steps need besides the video: the same for every video of a run."""

    model: Callable[[], VideoLLM]  # the model, loaded on first use (the flow loads it in its GPU slot)
    identity: dict[str, Any]  # the model as traces record it and keys use it (resolved revisions)
    policy: FramePolicy  # how the model wants its frames
    prompts: PromptSet  # the templates
    config: ChainConfig  # limits, decoding, timing
    one_pass: bool = False  # an adapter answers the simple prompt instead of the chain
    # how a video is measured: `propose` in the step's thread, or a pool of processes (the flow's
    # workers, proposals/processes.py); the same code and settings either way, so not part of any key
    # (torch's thread count may move a float's last bits, as another CPU may)
    measure: Measure = propose

    @property
    def measured(self) -> bool:
        return self.config.timing == "measured" and not self.one_pass

    def settings(self) -> StepSettings:
        cfg = self.config
        return StepSettings(self.model(), self.prompts, cfg.params, cfg.limits, cfg.constrained)


@dataclass
class Work:
    """One video on its way through the graph."""

    id: str  # the row id (the manifest's), or the URI in the plain loop
    uri: str  # the video as given (recorded in the trace)
    video: Video
    keys: dict[str, list[str]] = field(default_factory=dict)  # step -> its key(s), one per item
    results: dict[str, StepResult] = field(default_factory=dict)  # step -> result (merged over items)
    plan: FramePlan | None = None
    trace: ChainTrace | None = None
    error: BaseException | None = None  # why this video dropped out
    chunk: tuple[float, float] | None = None  # a chunk of `parent`: its span in the parent's seconds
    index: int = 0  # the chunk's number
    parent: Work | None = None  # the whole video's work, for a chunk
    chunks: list[Work] | None = None  # a long video's chunk works (after `split_works`)

    def value(self, step: str) -> Any:
        return self.results[step].value if step in self.results else None


@dataclass(frozen=True)
class Step:
    """One node of the graph."""

    name: str
    needs: tuple[str, ...]  # steps whose keys this step's key builds on
    uses_model: bool  # asks the video-LLM (runs in the GPU slot, keyed by the model's identity)
    per_event: bool  # one item per event of `identify` (cached and computed one by one)
    compute: Callable[[ChainContext, Work, Any], StepResult]  # one video (and item)
    keep: Callable[[ChainContext, Work, StepResult], None]  # what the result changes in the work
    settings: Callable[[ChainContext], dict[str, Any]]  # what besides templates and model shapes it
    value_type: Any = Any  # type of one item's value: how the step cache reads it back (JSON, no pickle)


def _clip(work: Work):
    return load_clip(work.video, work.plan)


def _sample(ctx: ChainContext, work: Work, _: Any) -> StepResult:
    return timed(lambda: StepResult(plan_frames(work.video, ctx.policy)))


def _keep_sample(ctx: ChainContext, work: Work, result: StepResult) -> None:
    work.plan = result.value
    info = work.video.info
    work.trace = new_trace(
        work.uri, work.video.sha256, info.duration, work.plan, ctx.identity, ctx.prompts, ctx.config
    )
    if "propose" in work.results:  # measured before the trace existed (per video)
        proposals = work.results["propose"]
        if work.chunk is None:
            record_step(work.trace, "propose", proposals)
        work.trace.proposals = proposals.value.model_dump()


def _propose(ctx: ChainContext, work: Work, _: Any) -> StepResult:
    return timed(lambda: proposed(work.video, ctx.config.proposals, ctx.measure))


def _keep_proposals(ctx: ChainContext, work: Work, result: StepResult) -> None:
    return None  # the trace records them when it is made (`_keep_sample`)


def _identify(ctx: ChainContext, work: Work, _: Any) -> StepResult:
    settings, clip = ctx.settings(), _clip(work)
    proposals = work.value("propose")
    if proposals is None:
        return timed(lambda: identify(clip, settings))
    windows = candidate_windows(proposals, ctx.config.proposals, max_windows=ctx.config.limits.max_events)
    frames_for = window_sampler(work.video, ctx.policy)
    return timed(lambda: identify_windows(clip, windows, settings, frames_for))


def _reason(ctx: ChainContext, work: Work, event: Event) -> StepResult:
    settings, clip = ctx.settings(), _clip(work)
    frames_for = None
    if event.timing == "measured":  # the event's own window, not the whole clip
        sampler = window_sampler(work.video, ctx.policy)
        frames_for = lambda e: sampler(e.start, e.end)  # noqa: E731
    return timed(lambda: reason(clip, [event], settings, frames_for))


def _synthesize(ctx: ChainContext, work: Work, _: Any) -> StepResult:
    events, reasoning = work.value("identify"), work.value("reason")
    return timed(lambda: synthesize(_clip(work), events, reasoning, ctx.settings()))


def _simple(ctx: ChainContext, work: Work, _: Any) -> StepResult:
    return timed(lambda: simple_step(_clip(work), ctx.settings()))


def _validate(ctx: ChainContext, work: Work, _: Any) -> StepResult:
    draft = work.value("simple") if ctx.one_pass else work.value("synthesize")
    events = work.value("identify") or []
    proposals = work.value("propose")
    shots = proposals.shots() if proposals else None
    speech = proposals.speech_spans() if proposals else None
    duration, timing = work.video.info.duration, ctx.config.timing
    return timed(lambda: validate(draft, events, duration, timing, shots, speech))


def _recorded(name: str) -> Callable[[ChainContext, Work, StepResult], None]:
    def keep(ctx: ChainContext, work: Work, result: StepResult) -> None:
        record_step(work.trace, name, result)

    return keep


def _model_settings(ctx: ChainContext) -> dict[str, Any]:
    return ctx.config.settings_key()


def _timing_settings(ctx: ChainContext) -> dict[str, Any]:
    return {"timing": ctx.config.timing}


def _model_step(name: str, needs: tuple[str, ...], compute, value_type: Any, per_event: bool = False) -> Step:
    return Step(name, needs, True, per_event, compute, _recorded(name), _model_settings, value_type)


SAMPLE = Step(
    "sample",
    needs=(),
    uses_model=False,
    per_event=False,
    compute=_sample,
    keep=_keep_sample,
    settings=lambda ctx: {"policy": ctx.policy.__dict__, "max_side": ctx.config.frame_max_side},
    value_type=FramePlan,
)
PROPOSE = Step(
    "propose",
    needs=(),
    uses_model=False,
    per_event=False,
    compute=_propose,
    keep=_keep_proposals,
    settings=lambda ctx: {"proposals": ctx.config.proposals.__dict__, "version": PROPOSALS_VERSION},
    value_type=ProposalSet,
)
IDENTIFY = _model_step("identify", ("sample",), _identify, list[Event])
IDENTIFY_MEASURED = _model_step("identify", ("sample", "propose"), _identify, list[Event])
REASON = _model_step("reason", ("identify",), _reason, list[EventReasoning], per_event=True)
SYNTHESIZE = _model_step("synthesize", ("identify", "reason"), _synthesize, SynthesisAnswer)
SIMPLE = _model_step("simple", ("sample",), _simple, SynthesisAnswer)


def _validate_step(needs: tuple[str, ...]) -> Step:
    return Step(
        "validate", needs, False, False, _validate, _recorded("validate"), _timing_settings, FoleyScript
    )


VALIDATE = _validate_step(("synthesize",))
VALIDATE_MEASURED = _validate_step(("synthesize", "propose"))
VALIDATE_ONE_PASS = _validate_step(("simple",))


def graph(ctx: ChainContext) -> list[Step]:
    """The steps of this run, in an order that respects `needs`."""
    return video_steps(ctx) + chunk_steps(ctx)


def video_steps(ctx: ChainContext) -> list[Step]:
    """Steps that run once per whole video, before it is split into chunks."""
    return [PROPOSE] if ctx.measured else []


def chunk_steps(ctx: ChainContext) -> list[Step]:
    """Steps that run per chunk (per video when it is one chunk)."""
    if ctx.one_pass:
        return [SAMPLE, SIMPLE, VALIDATE_ONE_PASS]
    if ctx.measured:
        return [SAMPLE, IDENTIFY_MEASURED, REASON, SYNTHESIZE, VALIDATE_MEASURED]
    return [SAMPLE, IDENTIFY, REASON, SYNTHESIZE, VALIDATE]


def keys_of(step: Step, ctx: ChainContext, work: Work, items: Sequence[Any]) -> list[str]:
    """The step's content key for each item (one key when the step is not per event)."""
    templates = (
        {step.name: ctx.prompts.step_version(step.name), "repair": ctx.prompts.step_version("repair")}
        if step.uses_model
        else None
    )
    upstream = [key for need in step.needs for key in work.keys[need]]
    return [
        step_key(
            step.name,
            sha256=work.video.sha256,
            templates=templates,
            model=_model_key(ctx.identity) if step.uses_model else None,
            settings=step.settings(ctx),
            upstream=upstream,
            item=item.index if step.per_event else None,
            span=_span_key(ctx, work),
        )
        for item in items
    ]


def _span_key(ctx: ChainContext, work: Work) -> dict[str, Any] | None:
    if work.chunk is None:
        return None
    start, end = work.chunk
    return {"start": round(start, 6), "end": round(end, 6), "chunk_seconds": ctx.config.chunk_seconds}


def _model_key(identity: dict[str, Any]) -> dict[str, Any]:
    keys = ("backend", "model_id", "revision", "adapter", "adapter_revision")
    key = {k: identity.get(k) for k in keys}
    if identity.get("decoder"):  # only a fast decoder is named: keys made with `generate` stay valid
        key["decoder"] = identity["decoder"]
    return key
