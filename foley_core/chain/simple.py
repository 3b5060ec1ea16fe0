"""One pass instead of the chain: the prompt a LoRA adapter was trained on, answered with the script.

The adapter learned, from the chain's own scripts, to write the four tracks from one simple prompt;
this module asks it once and validates the answer like the chain's draft.
"""

from __future__ import annotations

import json

from v2t_foley.foley_core.backends.base import VideoLLM
from v2t_foley.foley_core.chain.ask import Question, ask
from v2t_foley.foley_core.chain.runner import ChainConfig, ChainResult
from v2t_foley.foley_core.chain.steps import Clip, StepResult, StepSettings
from v2t_foley.foley_core.prompts import PromptSet, load_prompts
from v2t_foley.foley_core.schema.decoding import SynthesisAnswer, simple_schema
from v2t_foley.foley_core.schema.script import TRACKS, FoleyScript
from v2t_foley.foley_core.video.video import Video


def load_simple_prompt(folder: str | None = None) -> PromptSet:
    return load_prompts(folder, steps=("simple", "repair"))


def simple_prompt(prompts: PromptSet, duration: float, frame_times: tuple[float, ...]) -> str:
    described = ", ".join(f"frame {k + 1} at {t:.2f} s" for k, t in enumerate(frame_times))
    return prompts.render(
        "simple", duration=f"{duration:.2f}", frame_times=described, n_frames=len(frame_times)
    )


def simple_target(script: FoleyScript | dict) -> str:
    """The answer an adapter learns: the script's tracks as compact JSON, cues without event links."""
    data = script.model_dump() if isinstance(script, FoleyScript) else script
    tracks = {
        name: [{"start": c["start"], "end": c["end"], "description": c["description"]} for c in data[name]]
        for name in TRACKS
    }
    return json.dumps(tracks, ensure_ascii=False, separators=(",", ":"))


def simple_step(clip: Clip, s: StepSettings) -> StepResult[SynthesisAnswer]:
    """The script's draft in one question (validated afterwards like the chain's)."""
    prompt = simple_prompt(s.prompts, clip.duration, clip.frames.times)
    schema = simple_schema(clip.duration, s.limits)
    question = Question("simple", None, clip.frames, prompt, schema, SynthesisAnswer)
    ((answer, call),) = ask(s.llm, [question], s.params, s.prompts, constrained=s.constrained)
    return StepResult(answer, [call])  # type: ignore[arg-type]


def run_simple(
    video: Video, llm: VideoLLM, prompts: PromptSet | None = None, config: ChainConfig | None = None
) -> ChainResult:
    """The script in one model call (for an adapter trained on the chain's output)."""
    from v2t_foley.foley_core.chain.runner import run_chain

    return run_chain(video, llm, prompts or load_simple_prompt(), config, one_pass=True)
