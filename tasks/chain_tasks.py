"""One Prefect task per chain step. Keys come from content (ChainJob's *_key methods); results are
persisted to the run's result storage, except frames and videos, which are recomputed."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from foley_core.chain import FramePlan, StepResult, load_clip, plan_frames, timed
from foley_core.chain.steps import identify, reason, synthesize, validate
from foley_core.manifest import ManifestEntry
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
def probe_task(entry: ManifestEntry, max_side: int | None) -> Video:
    """Fetch, hash and probe. Not cached: it is what computes the content hash the keys are made of."""
    return open_video(entry.video, max_side=max_side)


@task(name="sample", **CACHED)
def sample_task(video: Video, policy: FramePolicy, cache_key: str) -> FramePlan:
    """Which frames the model sees (indices and times; the pixels are decoded where needed)."""
    return plan_frames(video, policy)


@task(name="identify", **MODEL_STEP)
def identify_task(video: Video, plan: FramePlan, job: ChainJob, cache_key: str) -> StepResult[list[Event]]:
    return timed(lambda: identify(load_clip(video, plan), job.settings()))


@task(name="reason", **MODEL_STEP)
def reason_task(
    video: Video, plan: FramePlan, event: Event, job: ChainJob, cache_key: str
) -> StepResult[list[EventReasoning]]:
    return timed(lambda: reason(load_clip(video, plan), [event], job.settings()))


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
    draft: SynthesisAnswer, events: list[Event], duration: float, timing: str, cache_key: str
) -> StepResult[FoleyScript]:
    return timed(lambda: validate(draft, events, duration, timing))
