"""The conservative token estimate never undercounts real English cue text against the real CLIP BPE
(the vocabulary `open_clip` ships in its package), and prompts cut to fit stay within 77 tokens."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from v2t_foley.foley_core.export.tokens import ESTIMATE, TokenCounter, estimate_tokens, fit_text

CUES = [line for line in (Path(__file__).parent / "data" / "cue_texts.txt").read_text().splitlines() if line]


@pytest.fixture(scope="module")
def clip() -> TokenCounter:
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    return TokenCounter("clip", True, lambda text: len(tokenizer.encode(text)) + 2)


def test_the_estimate_never_undercounts_a_cue_text(clip):
    assert len(CUES) >= 60
    for text in CUES:
        assert estimate_tokens(text) >= clip.count(text), text


def test_the_estimate_never_undercounts_joined_prompts(clip):
    for a, b, c in itertools.islice(itertools.combinations(CUES, 3), 0, 4000, 37):
        text = f"{a} {b} {c}"
        assert estimate_tokens(text) >= clip.count(text), text


def test_the_estimate_is_not_absurdly_high(clip):
    estimated = sum(estimate_tokens(t) for t in CUES)
    exact = sum(clip.count(t) for t in CUES)
    assert exact <= estimated <= 1.6 * exact


def test_fit_text_stays_within_the_limit_with_the_estimate_and_the_real_tokenizer(clip):
    for counter in (ESTIMATE, clip):
        prompt = fit_text(CUES, counter)
        assert prompt and clip.count(prompt) <= 77 and counter.count(prompt) <= 77
        assert prompt.startswith(CUES[0])
    assert clip.count(fit_text([" ".join(CUES)], clip)) <= 77  # one over-long part is cut at a word


def test_text_without_spaces_is_cut_by_characters(clip):
    garbage = "x" * 400
    for counter in (ESTIMATE, clip):
        prompt = fit_text([garbage, "A door creaks open."], counter)
        assert prompt.startswith("xxx") and counter.count(prompt) <= 77
