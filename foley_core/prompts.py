"""Prompt templates: loaded from a folder, validated on load, rendered per chain step, versioned.

Templates are plain text with `$name` / `${name}` variables (Python's string.Template), so JSON examples
with braces need no escaping. Loading checks each template against the variables its step provides:
an unknown variable, or a missing required one, is a TemplateError naming the file and the variable.

The prompt-set version is a hash of every template's text; each step also has its own version, so
editing one template changes the cache keys of that step (and, through the upstream key, of the steps
after it) and of nothing before it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from v2t_foley.foley_core.errors import TemplateError

# Variables each step's renderer provides, and the ones a template of that step must use.
STEP_VARIABLES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "identify": (
        frozenset({"duration", "frame_times", "n_frames", "max_events"}),
        frozenset({"frame_times"}),
    ),
    "reason": (
        frozenset(
            {"duration", "frame_times", "n_frames", "event_start", "event_end", "event_summary", "max_sounds"}
        ),
        frozenset({"event_start", "event_end", "event_summary"}),
    ),
    "synthesize": (
        frozenset({"duration", "frame_times", "n_frames", "events_json", "max_cues"}),
        frozenset({"events_json"}),
    ),
    "repair": (
        frozenset({"error", "answer", "schema"}),
        frozenset({"error", "answer"}),
    ),
    # measured timing: what happens inside one measured window (replaces identify)
    "describe": (
        frozenset({"duration", "frame_times", "n_frames", "window_start", "window_end", "cue_kind"}),
        frozenset({"window_start", "window_end"}),
    ),
    # The one-pass prompt a LoRA adapter learns to answer with the chain's script (training/).
    "simple": (
        frozenset({"duration", "frame_times", "n_frames"}),
        frozenset(),
    ),
}
CHAIN_STEPS = ("identify", "describe", "reason", "synthesize", "repair")


def default_prompt_dir() -> Path:
    """The templates shipped in the `prompts` package."""
    return Path(str(resources.files("v2t_foley.prompts")))


@dataclass(frozen=True)
class PromptTemplate:
    step: str  # chain step this template serves
    text: str  # template text with $variables
    source: str  # file it came from, for error messages

    @property
    def version(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def variables(self) -> set[str]:
        found = set()
        for match in Template.pattern.finditer(self.text):
            name = match.group("named") or match.group("braced")
            if name:
                found.add(name)
            elif match.group("invalid") is not None:
                line = self.text[: match.start()].count("\n") + 1
                raise TemplateError(f"{self.source}:{line}: a lone '$'; write '$$' for a literal dollar sign")
        return found

    def render(self, **values: object) -> str:
        missing = self.variables() - values.keys()
        if missing:
            raise TemplateError(f"{self.source}: no value given for ${', $'.join(sorted(missing))}")
        return Template(self.text).substitute({k: str(v) for k, v in values.items()})


@dataclass(frozen=True)
class PromptSet:
    """The templates of every chain step, from one folder."""

    templates: dict[str, PromptTemplate]  # step -> template
    folder: str  # where they were loaded from

    @property
    def version(self) -> str:
        """Hash of every template's step and text: stored in every row and trace."""
        digest = hashlib.sha256()
        for step in sorted(self.templates):
            digest.update(f"{step}\0{self.templates[step].text}\0".encode())
        return digest.hexdigest()[:12]

    def step_version(self, step: str) -> str:
        return self.templates[step].version

    def render(self, step: str, **values: object) -> str:
        return self.templates[step].render(**values)


def load_template(path: Path, step: str) -> PromptTemplate:
    if step not in STEP_VARIABLES:
        raise TemplateError(f"{path}: unknown step {step!r}; known steps: {', '.join(STEP_VARIABLES)}")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise TemplateError(f"{path}: template missing; every prompt folder needs {step}.txt") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TemplateError(f"{path}: cannot read template: {err}") from None
    template = PromptTemplate(step=step, text=text, source=str(path))
    allowed, required = STEP_VARIABLES[step]
    used = template.variables()
    unknown = used - allowed
    if unknown:
        raise TemplateError(
            f"{path}: unknown variable ${', $'.join(sorted(unknown))}; "
            f"the {step} step provides ${', $'.join(sorted(allowed))}"
        )
    missing = required - used
    if missing:
        raise TemplateError(
            f"{path}: never uses ${', $'.join(sorted(missing))}; the {step} step cannot work without it"
        )
    return template


def load_prompts(folder: str | Path | None = None, steps: tuple[str, ...] = CHAIN_STEPS) -> PromptSet:
    """Load and validate the templates of `steps` from `folder` (default: the shipped set)."""
    root = Path(folder) if folder else default_prompt_dir()
    if not root.is_dir():
        raise TemplateError(f"{root}: prompt folder not found")
    templates = {step: load_template(root / f"{step}.txt", step) for step in steps}
    return PromptSet(templates=templates, folder=str(root))
