"""The chain of thought over one video: identify -> reason -> synthesize -> validate."""

from foley_core.chain.runner import ChainConfig, ChainResult, make_clip, run_chain
from foley_core.chain.steps import Clip, StepResult, StepSettings, identify, reason, synthesize, validate
from foley_core.chain.trace import ChainTrace, StepCall

__all__ = [
    "ChainConfig",
    "ChainResult",
    "ChainTrace",
    "Clip",
    "StepCall",
    "StepResult",
    "StepSettings",
    "identify",
    "make_clip",
    "reason",
    "run_chain",
    "synthesize",
    "validate",
]
