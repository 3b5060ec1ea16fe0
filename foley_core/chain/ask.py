"""Ask the model a batch of questions and get typed answers: parse, repair once, or fail clearly.

With constrained decoding the first answer already matches the schema. Without it (a backend that
cannot constrain, or constraints switched off), the JSON is extracted from free text; an unusable
answer gets exactly one repair question that quotes the error; a second failure is a ChainError.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from v2t_foley.foley_core.backends.base import Generation, GenerationParams, GenerationRequest, VideoLLM
from v2t_foley.foley_core.chain.jsonparse import JSONExtractError, extract_json
from v2t_foley.foley_core.chain.trace import StepCall
from v2t_foley.foley_core.errors import ChainError
from v2t_foley.foley_core.prompts import PromptSet
from v2t_foley.foley_core.video.reader import Frames

Answer = TypeVar("Answer", bound=BaseModel)
MAX_QUOTED_ANSWER = 2000  # characters of a broken answer quoted back in the repair prompt


@dataclass(frozen=True)
class Question:
    """One question of one step."""

    step: str  # chain step name
    item: int | None  # event index for per-event questions
    frames: Frames  # what the model sees
    prompt: str  # rendered prompt
    schema: dict[str, Any]  # JSON Schema of the answer
    answer_type: type[BaseModel]  # pydantic model the answer parses into


def parse_answer(generation: Generation, answer_type: type[Answer]) -> Answer:
    """The typed answer, or ValueError saying what is wrong with the text."""
    try:
        return answer_type.model_validate(extract_json(generation.text))
    except JSONExtractError as err:
        reason = str(err)
        if not generation.finished:
            reason += f" (the answer was cut off at {generation.new_tokens} tokens)"
        raise ValueError(reason) from None
    except ValidationError as err:
        problems = [f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in err.errors()[:3]]
        raise ValueError("; ".join(problems)) from None


def ask(
    llm: VideoLLM,
    questions: Sequence[Question],
    params: GenerationParams,
    prompts: PromptSet,
    *,
    constrained: bool = True,
) -> list[tuple[BaseModel, StepCall]]:
    """Answers and call records for `questions`, in order. Raises ChainError if one stays unusable."""
    use_schema = constrained and llm.supports_json_schema

    def request(question: Question, prompt: str) -> GenerationRequest:
        schema = question.schema if use_schema else None
        return GenerationRequest(frames=question.frames, prompt=prompt, json_schema=schema)

    started = time.perf_counter()
    first = llm.generate([request(q, q.prompt) for q in questions], params)
    share = (time.perf_counter() - started) / max(len(questions), 1)
    answers: list[BaseModel | None] = []
    calls: list[StepCall] = []
    broken: list[int] = []
    for k, (question, generation) in enumerate(zip(questions, first, strict=True)):
        call = StepCall(
            step=question.step,
            item=question.item,
            frame_times=list(question.frames.times),
            prompt=question.prompt,
            raw=generation.text,
            constrained=generation.constrained,
            new_tokens=generation.new_tokens,
            seconds=round(share, 4),
        )
        try:
            answer = parse_answer(generation, question.answer_type)
            call.answer = answer.model_dump()
        except ValueError as err:
            answer, call.error = None, str(err)
            broken.append(k)
        answers.append(answer)
        calls.append(call)
    if broken:
        _repair(llm, questions, broken, answers, calls, params, prompts, request)
    return [(answer, call) for answer, call in zip(answers, calls, strict=True)]  # type: ignore[misc]


def _repair(llm, questions, broken, answers, calls, params, prompts, request) -> None:
    repairs = []
    for k in broken:
        prompt = prompts.render(
            "repair",
            error=calls[k].error,
            answer=calls[k].raw[:MAX_QUOTED_ANSWER],
            schema=json.dumps(questions[k].schema, separators=(",", ":")),
        )
        calls[k].repair_prompt = prompt
        repairs.append(request(questions[k], prompt))
    started = time.perf_counter()
    second = llm.generate(repairs, params)
    share = (time.perf_counter() - started) / len(broken)
    for k, generation in zip(broken, second, strict=True):
        call = calls[k]
        call.repair_raw = generation.text
        call.new_tokens += generation.new_tokens
        call.seconds = round(call.seconds + share, 4)
        try:
            answer = parse_answer(generation, questions[k].answer_type)
        except ValueError as err:
            where = f" (event {call.item})" if call.item is not None else ""
            raise ChainError(
                call.step, f"unusable answer{where}: {call.error}; after one repair: {err}"
            ) from None
        answers[k] = answer
        call.answer = answer.model_dump()
