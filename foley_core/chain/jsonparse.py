"""Find the JSON object in a model's free text.

Models without constrained decoding wrap JSON in prose, code fences, or trailing commentary, and
sometimes write Python literals or trailing commas. `extract_json` finds the first complete object,
tries it as is, then with those two slips mended, and says exactly why it failed otherwise.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


class JSONExtractError(ValueError):
    """No usable JSON object in the text; the message says why."""


def _balanced_objects(text: str) -> list[str]:
    """Every top-level {...} span, respecting strings and escapes."""
    spans, depth, start, in_string, escaped = [], 0, -1, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"' and depth > 0:
            in_string = True
        elif char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _mend(candidate: str) -> str:
    mended = _TRAILING_COMMA.sub(r"\1", candidate)
    return re.sub(r"\b(True|False|None)\b", lambda m: _PY_LITERALS[m.group(1)], mended)


def extract_json(text: str) -> dict[str, Any]:
    """The first JSON object in `text` that parses (as is, or with light mending)."""
    if not text or not text.strip():
        raise JSONExtractError("the answer is empty")
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    candidates = [span for source in sources for span in _balanced_objects(source)]
    if not candidates:
        if "{" in text:
            raise JSONExtractError("the JSON object is never closed (the answer was cut off?)")
        raise JSONExtractError("the answer holds no JSON object")
    first_error = ""
    for candidate in candidates:
        for attempt in (candidate, _mend(candidate)):
            try:
                # strict=False: raw control characters inside strings (a tab, say) are tolerated;
                # grammar engines let them through and the text is whitespace-normalised later.
                value = json.loads(attempt, strict=False)
            except json.JSONDecodeError as err:
                first_error = first_error or f"invalid JSON: {err.msg} at character {err.pos}"
                continue
            if isinstance(value, dict):
                return value
    raise JSONExtractError(first_error or "no JSON object in the answer")
