"""Token counts for the text encoders of text-video-to-audio models, and prompts cut to fit them.

HunyuanVideo-Foley (CLAP, a RoBERTa BPE), MMAudio and ThinkSound (CLIP BPE) keep 77 tokens of a prompt,
the start and end tokens included. A counter uses the target model's own tokenizer when it can be loaded
offline (`open_clip`'s shipped CLIP vocabulary; a CLAP tokenizer already in the Hugging Face cache), and
otherwise `estimate_tokens`, a conservative estimate: it may overcount, never undercount, English cue
text (tests/test_export_tokens.py checks it against the real CLIP BPE).
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONTEXT_TOKENS = 77  # CLIP's and CLAP's text context, start and end tokens included
SPECIAL_TOKENS = 2  # <start>, <end>

# The pieces a CLIP-style pre-tokenizer splits text into: contractions, letter runs, single digits,
# runs of other symbols. BPE then splits each piece further, never merges two.
_PIECE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)
_VOWELS = frozenset("aeiouy")
_COMMON3_WORDS = (
    "the and for are but not you all any can had her "
    "was one our out day get has him his how man new "
    "now old see two way who boy did its let put say "
    "she too use big low off few far run car dog cat "
    "cup sip hit pop hum tap air sky sea sun red "
    "end set lid mug pan pot box bag key saw cut top "
    "bed leg arm eye ear toy bus van gun fan fly ice "
    "oil wet dry hot"
)
_COMMON3 = frozenset(_COMMON3_WORDS.split())


def estimate_tokens(text: str) -> int:
    """An upper bound of the BPE tokens of English `text` (start and end tokens included).

    Per piece: a word of up to 2 letters or a common 3-letter word is 1 token, another 3-letter word 2,
    a word without a vowel (an acronym) one per letter, a longer word ceil((n + 2) / 4) (onomatopoeia
    such as `hiss`, `clop`, `thwacks` split more than ordinary words); every digit and every other
    symbol counts 1, a contraction 1.
    """
    total = SPECIAL_TOKENS
    for piece in _PIECE.findall(text.lower()):
        if piece.startswith("'"):
            total += 1
        elif piece[0].isalpha():
            total += _word_tokens(piece)
        else:
            total += len(piece)
    return total


def _word_tokens(word: str) -> int:
    n = len(word)
    if not word.isascii():
        return len(word.encode("utf-8"))  # byte-level BPE: never more tokens than bytes
    if n <= 2:
        return 1
    if not _VOWELS & set(word):
        return n
    if n == 3:
        return 1 if word in _COMMON3 else 2
    return math.ceil((n + 2) / 4)


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens for one text encoder: exactly with its tokenizer, or by the conservative estimate."""

    name: str  # what counts: "open_clip CLIP BPE", "estimate", ...
    exact: bool  # the model's own tokenizer (True) or the estimate (False)
    count: Callable[[str], int]  # tokens of a text, start and end tokens included
    limit: int = CONTEXT_TOKENS

    def fits(self, text: str) -> bool:
        return self.count(text) <= self.limit

    def describe(self) -> str:
        how = "exact" if self.exact else "conservative estimate, may overcount"
        return f"{self.name} ({how}), {self.limit} tokens"


ESTIMATE = TokenCounter("estimate", False, estimate_tokens)


@functools.cache
def counter_for(encoder: str) -> TokenCounter:
    """The counter for `encoder` ("clip" or "clap"): the real tokenizer when it loads offline, else the
    estimate. Never downloads."""
    loader = {"clip": _open_clip_counter, "clap": _clap_counter}.get(encoder)
    if loader is None:
        raise ValueError(f"unknown text encoder {encoder!r}")
    try:
        counter = loader()
    except Exception as error:  # not installed, not cached, or broken: the estimate is always there
        log.info("%s tokenizer unavailable offline (%s); using the estimate", encoder, error)
        return ESTIMATE
    return counter


def _open_clip_counter() -> TokenCounter:
    from open_clip.tokenizer import SimpleTokenizer  # ships its BPE vocabulary inside the package

    tokenizer = SimpleTokenizer()
    return TokenCounter("CLIP BPE (open_clip)", True, lambda text: len(tokenizer.encode(text)) + 2)


def _clap_counter() -> TokenCounter:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained("laion/larger_clap_general", local_files_only=True)
    return TokenCounter(
        "CLAP RoBERTa BPE (laion/larger_clap_general)", True, lambda t: len(tokenizer(t).input_ids)
    )


def fit_text(parts: Iterable[str], counter: TokenCounter, limit: int | None = None, sep: str = " ") -> str:
    """Join `parts` (most important first, order kept) while the result fits: a part that does not fit is
    left out (cut at a word boundary when it is the first part) and shorter later parts may still go in."""
    limit = counter.limit if limit is None else limit
    kept: list[str] = []
    for part in parts:
        part = " ".join(part.split())
        if not part:
            continue
        candidate = sep.join([*kept, part])
        if counter.count(candidate) <= limit:
            kept.append(part)
            continue
        if not kept:
            cut = cut_words(part, counter, limit)
            if cut:
                kept.append(cut)
    return sep.join(kept)


def cut_words(text: str, counter: TokenCounter, limit: int | None = None) -> str:
    """The longest prefix of whole words of `text` that fits (binary search over the word count)."""
    limit = counter.limit if limit is None else limit
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter.count(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0 and words:  # not even the first word fits (text without spaces): cut it by characters
        word = words[0]
        lo, hi = 0, len(word)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if counter.count(word[:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        return word[:lo]
    return " ".join(words[:lo]).rstrip(",;:")
