"""One Prefect task per chain step. Keys come from content (ChainJob's *_key methods); results are
persisted to the run's result storage, except frames and videos, which are recomputed."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from foley_core.chain import FramePlan, StepResult, load_clip, plan_frames, timed
from foley_core.chain.runner import window_sampler
from foley_core.chain.simple import simple_step
from foley_core.chain.steps import identify, identify_windows, reason, synthesize, validate
from foley_core.manifest import ManifestEntry
from foley_core.proposals import ProposalSet, ProposalSettings, candidate_windows, propose
from foley_core.schema.decoding import SynthesisAnswer
from foley_core.schema.events import Event, EventReasoning
from foley_core.schema.script import FoleyScript
from foley_core.video import Video, open_video
from foley_core.video.sampling import FramePolicy
from tasks.job import ChainJob
from tasks.retries import retry_transient


def _given_key(context, parameters) -> str:
    return parameters["cache_key"]


CACHED = {"cache_key_fn": _given_key, "persist_result": True}
MODEL_STEP = {**CACHED, "retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": retry_transient}


@task(
    name="probe",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
)
def probe_task(
    entry: ManifestEntry, max_side: int | None, allow_roots: tuple[str, ...] | None = None
) -> Video:
    """Fetch, hash and probe. Not cached: it is what computes the content hash the keys are made of."""
    return open_video(entry.video, max_side=max_side, allow_roots=allow_roots)


@task(name="sample", **CACHED)
def sample_task(video: Video, policy: FramePolicy, cache_key: str) -> FramePlan:
    """Which frames the model sees (indices and times; the pixels are decoded where needed)."""
    return plan_frames(video, policy)


@task(name="propose", **CACHED)
def propose_task(video: Video, settings: ProposalSettings, cache_key: str) -> ProposalSet:
    """Measure cuts, motion, audio onsets and speech (timing "measured")."""
    return propose(video, settings)


@task(name="identify", **MODEL_STEP)
def identify_task(
    video: Video, plan: FramePlan, job: ChainJob, cache_key: str, proposals: ProposalSet | None = None
) -> StepResult[list[Event]]:
    """The clip's events: asked of the model, or (with proposals) measured and described per window."""
    clip, settings = load_clip(video, plan), job.settings()
    if proposals is None:
        return timed(lambda: identify(clip, settings))
    config = job.config
    windows = candidate_windows(proposals, config.proposals, max_windows=config.limits.max_events)
    frames_for = window_sampler(video, settings.llm.frame_policy)
    return timed(lambda: identify_windows(clip, windows, settings, frames_for))


@task(name="reason", **MODEL_STEP)
def reason_task(
    video: Video, plan: FramePlan, event: Event, job: ChainJob, cache_key: str
) -> StepResult[list[EventReasoning]]:
    clip, settings = load_clip(video, plan), job.settings()
    frames_for = None
    if event.timing == "measured":  # the event's own window, not the whole clip
        sampler = window_sampler(video, settings.llm.frame_policy)
        frames_for = lambda e: sampler(e.start, e.end)  # noqa: E731
    return timed(lambda: reason(clip, [event], settings, frames_for))


@task(name="synthesize", **MODEL_STEP)
def synthesize_task(
    video: Video,
    plan: FramePlan,
    events: list[Event],
    reasoning: list[EventReasoning],
    job: ChainJob,
    cache_key: str,
) -> StepResult[SynthesisAnswer]:
    return timed(lambda: synthesize(load_clip(video, plan), events, reasoning, job.settings()))


@task(name="validate", **CACHED)
def validate_task(
    draft: SynthesisAnswer,
    events: list[Event],
    duration: float,
    timing: str,
    cache_key: str,
    proposals: ProposalSet | None = None,
) -> StepResult[FoleyScript]:
    shots = proposals.shots() if proposals else None
    speech = proposals.speech_spans() if proposals else None
    return timed(lambda: validate(draft, events, duration, timing, shots, speech))


@task(name="simple", **MODEL_STEP)
def simple_task(video: Video, plan: FramePlan, job: ChainJob, cache_key: str) -> StepResult[SynthesisAnswer]:
    """One pass with the simple prompt (a LoRA adapter trained on the chain's scripts)."""
    clip, settings = load_clip(video, plan), job.settings()
    return timed(lambda: simple_step(clip, settings))
