"""`ChainJob`: everything the chain's tasks share in one build run, as plain data (a flow parameter)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

from v2t_foley.foley_core.backends import BackendSpec, VideoLLM, load_shared_backend
from v2t_foley.foley_core.backends.provenance import resolve_revisions
from v2t_foley.foley_core.cachekeys import step_key
from v2t_foley.foley_core.chain import ChainConfig, StepSettings
from v2t_foley.foley_core.prompts import PromptSet, load_prompts
from v2t_foley.foley_core.proposals.base import PROPOSALS_VERSION
from v2t_foley.foley_core.video.sampling import FramePolicy


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
    # (model, adapter) revisions as resolved for one shard (`pinned`); None: resolve when asked
    revisions: tuple[str, str] | None = None
    # where local videos may live (None: anywhere this worker can read); manifests are untrusted
    allow_roots: tuple[str, ...] | None = None

    def prompts(self) -> PromptSet:
        return _prompts(self.prompts_dir, bool(self.backend.adapter))

    def preload(self) -> VideoLLM:
        """The process's shared model, loaded now if it is not held (concurrent callers wait for the one
        load); held at other revisions than this job pinned, it is replaced."""
        return load_shared_backend(self.backend, self.revisions)

    def settings(self) -> StepSettings:
        """Step settings with the process-wide batching model (loaded on first use)."""
        cfg = self.config
        return StepSettings(self.preload(), self.prompts(), cfg.params, cfg.limits, cfg.constrained)

    def pinned(self, llm: VideoLLM | None = None) -> ChainJob:
        """This job with the model's and adapter's revisions fixed, so a shard uses one value: those of
        the loaded `llm`, or as resolved now."""
        revisions = (llm.revision, llm.adapter_revision) if llm else resolve_revisions(self.backend)
        return replace(self, revisions=revisions)

    def resolved_revisions(self) -> tuple[str, str]:
        return self.revisions if self.revisions is not None else resolve_revisions(self.backend)

    def identity(self) -> dict[str, str | None]:
        """The model as a trace records it (what `VideoLLM.describe` gives in the plain loop)."""
        spec = self.backend
        revision, adapter_revision = self.resolved_revisions()
        return {
            "backend": spec.backend,
            "model_id": spec.model,
            "revision": revision,
            "adapter": spec.adapter,
            "adapter_revision": adapter_revision,
        }

    # cache keys ---------------------------------------------------------------------------------

    def _model(self) -> dict:
        # the resolved revisions, not the requested ones: a moved Hub branch, a changed model folder or
        # an adapter retrained into the same folder must not reuse the old weights' answers
        spec = self.backend
        revision, adapter_revision = self.resolved_revisions()
        return {
            "backend": spec.backend,
            "model": spec.model,
            "revision": revision,
            "adapter": spec.adapter,
            "adapter_revision": adapter_revision,
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
