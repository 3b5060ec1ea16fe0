"""Run the whole chain over one video: the plain-Python path (the CLI and the reference loop).

The Prefect flow runs the same step functions as separate cached tasks; this module is what it must
match, and what the benchmarks compare it against.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from foley_core.backends.base import GenerationParams, VideoLLM
from foley_core.chain.steps import Clip, StepSettings, identify, reason, synthesize, validate
from foley_core.chain.trace import ChainTrace
from foley_core.prompts import PromptSet, load_prompts
from foley_core.schema.decoding import SchemaLimits
from foley_core.schema.script import FoleyScript
from foley_core.video.video import Video


@dataclass(frozen=True)
class ChainConfig:
    """Everything that shapes the chain's answers besides the model and the templates."""

    limits: SchemaLimits = field(default_factory=SchemaLimits)  # answer size bounds
    params: GenerationParams = field(default_factory=GenerationParams)  # decoding parameters
    constrained: bool = True  # decode under JSON Schemas where the backend can
    timing: str = "model"  # "model": the model's times; "measured": measured event windows


@dataclass
class ChainResult:
    script: FoleyScript  # the validated script
    trace: ChainTrace  # everything that led to it


def make_clip(video: Video, llm: VideoLLM) -> Clip:
    """Sample the whole-clip frames the way the model wants them."""
    frames = video.sample(llm.frame_policy)
    return Clip(uri=video.uri, sha256=video.sha256, duration=video.info.duration, frames=frames)


def new_trace(clip: Clip, llm: VideoLLM, prompts: PromptSet, config: ChainConfig) -> ChainTrace:
    return ChainTrace(
        video_uri=clip.uri,
        sha256=clip.sha256,
        duration=clip.duration,
        prompt_version=prompts.version,
        step_versions={step: prompts.step_version(step) for step in prompts.templates},
        model=llm.describe(),
        generation=config.params.as_dict() | {"constrained": config.constrained},
        timing=config.timing,
        frame_times=list(clip.frames.times),
    )


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
    settings = StepSettings(llm, prompts, config.params, config.limits, config.constrained)
    clip = make_clip(video, llm)
    trace = new_trace(clip, llm, prompts, config)

    def timed(step: str, run: Callable[[], object]):
        if on_step:
            on_step(step)
        started = time.perf_counter()
        result = run()
        trace.step_seconds[step] = round(time.perf_counter() - started, 4)
        trace.calls.extend(result.calls)
        trace.notes.extend(result.notes)
        return result.value

    events = timed("identify", lambda: identify(clip, settings))
    trace.events = events
    reasoning = timed("reason", lambda: reason(clip, events, settings))
    trace.reasoning = reasoning
    draft = timed("synthesize", lambda: synthesize(clip, events, reasoning, settings))
    script = timed("validate", lambda: validate(draft, events, clip.duration, config.timing))
    return ChainResult(script=script, trace=trace)
