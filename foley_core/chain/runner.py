"""Run the whole chain over one video: the plain-Python path (the CLI and the reference loop).

The Prefect flow runs the same step functions as separate cached tasks; this module is what it must
match, and what the benchmarks compare it against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from foley_core.backends.base import GenerationParams, VideoLLM
from foley_core.chain.steps import (
    Clip,
    StepResult,
    StepSettings,
    identify,
    identify_windows,
    reason,
    synthesize,
    timed,
    validate,
)
from foley_core.chain.trace import ChainTrace
from foley_core.errors import InputError
from foley_core.prompts import PromptSet, load_prompts
from foley_core.proposals import ProposalSettings, candidate_windows, propose
from foley_core.schema.decoding import SchemaLimits
from foley_core.schema.script import FoleyScript
from foley_core.video.reader import Frames
from foley_core.video.sampling import FramePolicy, policy_indices
from foley_core.video.video import Video


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

    frame_max_side: int | None = 512  # frames are decoded at most this large; the processor resizes
    proposals: ProposalSettings = field(default_factory=ProposalSettings)  # measurement thresholds

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
) -> ChainResult:
    """identify -> reason -> synthesize -> validate over one opened video."""
    prompts = prompts or load_prompts()
    config = config or ChainConfig()
    video.max_side = config.frame_max_side
    settings = StepSettings(llm, prompts, config.params, config.limits, config.constrained)
    plan = plan_frames(video, llm.frame_policy)
    clip = load_clip(video, plan)
    trace = new_trace(video.uri, video.sha256, video.info.duration, plan, llm.describe(), prompts, config)

    def step(name: str, run: Callable[[], StepResult]):
        if on_step:
            on_step(name)
        result = timed(run)
        record_step(trace, name, result)
        return result.value

    if config.timing == "measured":
        proposals = step("propose", lambda: _proposed(video, config.proposals))
        trace.proposals = proposals.model_dump()
        windows = candidate_windows(proposals, config.proposals, max_windows=config.limits.max_events)
        window_frames = window_sampler(video, llm.frame_policy)
        events = step("identify", lambda: identify_windows(clip, windows, settings, window_frames))
        event_frames = lambda event: window_frames(event.start, event.end)  # noqa: E731
        reasoning = step("reason", lambda: reason(clip, events, settings, frames_for=event_frames))
        shots, speech = proposals.shots(), proposals.speech_spans()
    else:
        events = step("identify", lambda: identify(clip, settings))
        reasoning = step("reason", lambda: reason(clip, events, settings))
        shots = speech = None
    draft = step("synthesize", lambda: synthesize(clip, events, reasoning, settings))
    script = step("validate", lambda: validate(draft, events, clip.duration, config.timing, shots, speech))
    return ChainResult(script=script, trace=trace)


def _proposed(video: Video, settings: ProposalSettings) -> StepResult:
    """The measurements, with what could not be measured (damaged audio) as the step's notes."""
    proposals = propose(video, settings)
    return StepResult(proposals, notes=list(proposals.notes))


def window_sampler(video: Video, policy: FramePolicy) -> Callable[[float, float], Frames]:
    """Frames of a window, as the model's policy asks, over [start, end)."""

    def frames(start: float, end: float) -> Frames:
        return video.sample(policy, start, max(end, start + 1e-3))

    return frames
