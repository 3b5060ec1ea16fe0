"""The chain's shared parts (config, frame plan, trace) and `run_chain`, the plain-loop executor of the
chain graph (foley_core.chain.graph) over one video: what `foley script`, tests and benchmarks use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from v2t_foley.foley_core.backends.base import GenerationParams, VideoLLM
from v2t_foley.foley_core.chain.steps import (
    Clip,
    StepResult,
)
from v2t_foley.foley_core.chain.trace import ChainTrace
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.prompts import PromptSet, load_prompts
from v2t_foley.foley_core.proposals import ProposalSettings, propose
from v2t_foley.foley_core.proposals.propose import Measure
from v2t_foley.foley_core.schema.decoding import SchemaLimits
from v2t_foley.foley_core.schema.script import FoleyScript
from v2t_foley.foley_core.video.reader import Frames
from v2t_foley.foley_core.video.sampling import FramePolicy, policy_indices
from v2t_foley.foley_core.video.video import Video


@dataclass(frozen=True)
class ChainConfig:
    """Everything that shapes the chain's answers besides the model and the templates."""

    limits: SchemaLimits = field(default_factory=SchemaLimits)  # answer size bounds
    params: GenerationParams = field(default_factory=GenerationParams)  # decoding parameters
    constrained: bool = True  # decode under JSON Schemas where the backend can
    timing: str = "measured"  # "measured": cue times from measured windows; "model": the model's own times

    def __post_init__(self) -> None:
        if self.timing not in ("measured", "model"):
            raise InputError(f"timing must be 'measured' or 'model', not {self.timing!r}")
        if self.chunk_seconds is not None and not self.chunk_seconds > 0:
            raise InputError(f"chunk_seconds must be positive, not {self.chunk_seconds!r}")

    frame_max_side: int | None = 512  # frames are decoded at most this large; the processor resizes
    proposals: ProposalSettings = field(default_factory=ProposalSettings)  # measurement thresholds
    # a longer video runs as chunks of about this many seconds, split at shot cuts (None: never split);
    # it enters the keys of a chunked video's steps (with each chunk's span), never a short video's
    chunk_seconds: float | None = 30.0
    # a chunk that fails leaves a gap in the script (noted) instead of failing the video
    partial_ok: bool = False

    def settings_key(self) -> dict:
        """What of this config shapes a model step's answer (for cache keys)."""
        return {
            "limits": self.limits.__dict__,
            "params": self.params.as_dict(),
            "constrained": self.constrained,
            "frame_max_side": self.frame_max_side,
            "timing": self.timing,
            "proposals": self.proposals.__dict__ if self.timing == "measured" else None,
        }


@dataclass(frozen=True)
class FramePlan:
    """Which frames the whole-clip questions show: indices and true times, no pixels."""

    indices: tuple[int, ...]  # presentation indices
    times: tuple[float, ...]  # seconds, one per index


def plan_frames(video: Video, policy: FramePolicy) -> FramePlan:
    indices = policy_indices(video.frame_times, policy)
    times = tuple(round(float(video.frame_times[i]), 6) for i in indices)
    return FramePlan(indices=tuple(indices), times=times)


def load_clip(video: Video, plan: FramePlan) -> Clip:
    """Decode the planned frames (once per process: Video.frames remembers them)."""
    frames = video.frames(plan.indices)
    return Clip(uri=video.uri, sha256=video.sha256, duration=video.info.duration, frames=frames)


@dataclass
class ChainResult:
    script: FoleyScript  # the validated script
    trace: ChainTrace  # everything that led to it


def new_trace(
    clip_uri: str,
    sha256: str,
    duration: float,
    plan: FramePlan,
    model: dict,
    prompts: PromptSet,
    config: ChainConfig,
) -> ChainTrace:
    return ChainTrace(
        video_uri=clip_uri,
        sha256=sha256,
        duration=duration,
        prompt_version=prompts.version,
        step_versions={step: prompts.step_version(step) for step in prompts.templates},
        model=model,
        generation=config.params.as_dict() | {"constrained": config.constrained},
        timing=config.timing,
        frame_times=list(plan.times),
    )


def record_step(trace: ChainTrace, step: str, result: StepResult) -> None:
    """Add one step's calls, notes and wall time to the trace (and its value where it belongs)."""
    trace.step_seconds[step] = result.seconds
    trace.calls.extend(result.calls)
    trace.notes.extend(result.notes)
    if step == "identify":
        trace.events = result.value
    elif step == "reason":
        trace.reasoning = result.value


def run_chain(
    video: Video,
    llm: VideoLLM,
    prompts: PromptSet | None = None,
    config: ChainConfig | None = None,
    on_step: Callable[[str], None] | None = None,
    *,
    one_pass: bool = False,
) -> ChainResult:
    """The chain graph (foley_core.chain.graph) over one opened video, in this process, uncached.

    `one_pass`: the simple prompt instead of the chain (an adapter trained on the chain's scripts).
    """
    from v2t_foley.foley_core.chain.executor import run_graph
    from v2t_foley.foley_core.chain.graph import ChainContext, Work

    prompts = prompts or load_prompts()
    config = config or ChainConfig()
    video.max_side = config.frame_max_side
    ctx = ChainContext(lambda: llm, llm.describe(), llm.frame_policy, prompts, config, one_pass)
    work = Work(id=video.uri, uri=video.uri, video=video)
    run_graph([work], ctx, on_step=on_step)
    if work.error is not None:
        raise work.error
    return ChainResult(script=work.value("validate"), trace=work.trace)


def proposed(video: Video, settings: ProposalSettings, measure: Measure = propose) -> StepResult:
    """The measurements (by `measure`: `propose` here, or in a process), with what could not be measured
    (damaged audio) as the step's notes."""
    proposals = measure(video, settings)
    return StepResult(proposals, notes=list(proposals.notes))


def window_sampler(video: Video, policy: FramePolicy) -> Callable[[float, float], Frames]:
    """Frames of a window, as the model's policy asks, over [start, end)."""

    def frames(start: float, end: float) -> Frames:
        return video.sample(policy, start, max(end, start + 1e-3))

    return frames
