"""Getting the JSON object out of free text the way models actually write it."""

from __future__ import annotations

import pytest

from v2t_foley.foley_core.chain.jsonparse import JSONExtractError, extract_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! Here is the JSON:\n{"a": 1}\nHope this helps.', {"a": 1}),
        ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('```\n{"a": {"b": "}"}}\n```', {"a": {"b": "}"}}),
        ('{"a": [1, 2,], "b": 3,}', {"a": [1, 2], "b": 3}),
        ('{"ok": True, "none": None}', {"ok": True, "none": None}),
        ('{"s": "a \\"quoted\\" {brace}"} trailing {"second": 2}', {"s": 'a "quoted" {brace}'}),
        ('[1, 2] then {"a": 1}', {"a": 1}),
        ('{broken} and then {"a": 1}', {"a": 1}),
    ],
)
def test_extracts_the_first_object(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I cannot see the video.", "no JSON object"),
        ('{"events": [{"start": 1.0, "end"', "never closed"),
        ('{"a": 1 "b": 2}', "invalid JSON"),
    ],
)
def test_says_why_there_is_no_json(text, reason):
    with pytest.raises(JSONExtractError, match=reason):
        extract_json(text)
