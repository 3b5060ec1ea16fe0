"""`ChainJob`: everything the chain's tasks share in one build run, as plain data (a flow parameter)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from foley_core.backends import BackendSpec, load_shared_backend
from foley_core.cachekeys import step_key
from foley_core.chain import ChainConfig, StepSettings
from foley_core.prompts import PromptSet, load_prompts
from foley_core.proposals.base import PROPOSALS_VERSION
from foley_core.video.sampling import FramePolicy


@lru_cache(maxsize=8)
def _prompts(folder: str | None, adapter: bool) -> PromptSet:
    # an adapter answers the simple prompt in one pass; the chain's templates do not apply to it
    return load_prompts(folder, steps=("simple", "repair")) if adapter else load_prompts(folder)


@dataclass(frozen=True)
class ChainJob:
    """The model, the templates and the chain settings of a run."""

    backend: BackendSpec = field(default_factory=BackendSpec)  # which model, where
    prompts_dir: str | None = None  # template folder (None: the shipped prompts)
    config: ChainConfig = field(default_factory=ChainConfig)  # limits, decoding, timing

    def prompts(self) -> PromptSet:
        return _prompts(self.prompts_dir, bool(self.backend.adapter))

    def settings(self) -> StepSettings:
        """Step settings with the process-wide batching model (loaded on first use)."""
        cfg = self.config
        return StepSettings(
            load_shared_backend(self.backend), self.prompts(), cfg.params, cfg.limits, cfg.constrained
        )

    # cache keys ---------------------------------------------------------------------------------

    def _model(self) -> dict:
        spec = self.backend
        return {
            "backend": spec.backend,
            "model": spec.model,
            "revision": spec.revision,
            "adapter": spec.adapter,
        }

    def _templates(self, step: str) -> dict[str, str]:
        prompts = self.prompts()
        # repair.txt is used by every model step when an answer needs repairing
        return {step: prompts.step_version(step), "repair": prompts.step_version("repair")}

    def sample_key(self, sha256: str, policy: FramePolicy) -> str:
        return step_key(
            "sample",
            sha256=sha256,
            settings={"policy": policy.__dict__, "max_side": self.config.frame_max_side},
        )

    def propose_key(self, sha256: str) -> str:
        return step_key(
            "propose",
            sha256=sha256,
            settings={"proposals": self.config.proposals.__dict__, "version": PROPOSALS_VERSION},
        )

    def model_step_key(self, step: str, sha256: str, upstream: list[str], item: int | None = None) -> str:
        return step_key(
            step,
            sha256=sha256,
            templates=self._templates(step),
            model=self._model(),
            settings=self.config.settings_key(),
            upstream=upstream,
            item=item,
        )

    def validate_key(self, sha256: str, synthesize_key: str) -> str:
        return step_key(
            "validate", sha256=sha256, settings={"timing": self.config.timing}, upstream=[synthesize_key]
        )
