"""The chain of thought over one video: identify -> reason -> synthesize -> validate."""

from v2t_foley.foley_core.chain.runner import (
    ChainConfig,
    ChainResult,
    FramePlan,
    load_clip,
    new_trace,
    plan_frames,
    record_step,
    run_chain,
)
from v2t_foley.foley_core.chain.steps import (
    Clip,
    StepResult,
    StepSettings,
    identify,
    merge_results,
    reason,
    synthesize,
    timed,
    validate,
)
from v2t_foley.foley_core.chain.trace import ChainTrace, StepCall

__all__ = [
    "ChainConfig",
    "ChainResult",
    "ChainTrace",
    "Clip",
    "FramePlan",
    "StepCall",
    "StepResult",
    "StepSettings",
    "identify",
    "load_clip",
    "merge_results",
    "new_trace",
    "plan_frames",
    "reason",
    "record_step",
    "run_chain",
    "synthesize",
    "timed",
    "validate",
]
