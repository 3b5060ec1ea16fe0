"""The grammars a model keeps (backends/constrained.py): a process may serve a whole build, and nearly
every clip brings new schemas (its duration is in them), so what is kept is bounded: the most recent
`GRAMMARS_KEPT` compiled grammars, and nothing in xgrammar's own (unbounded) cache."""

from __future__ import annotations

from transformers import AutoTokenizer

from v2t_foley.foley_core.backends.constrained import GRAMMARS_KEPT, GrammarCache
from v2t_foley.foley_core.backends.tiny import tiny_model_path
from v2t_foley.foley_core.schema.decoding import SchemaLimits, identify_schema


def test_a_long_lived_model_keeps_a_bounded_number_of_grammars():
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    grammars = GrammarCache(tokenizer, vocab_size=len(tokenizer))
    # one schema per clip, each a new grammar (the clips' bounds differ): 20 more than are kept
    schemas = [
        identify_schema(1.0, SchemaLimits(max_events=1, max_text_chars=4 + k))
        for k in range(GRAMMARS_KEPT + 20)
    ]
    compiled = [grammars.compile(schema) for schema in schemas]
    assert grammars._compile.cache_info().currsize == GRAMMARS_KEPT
    assert grammars.compiler.get_cache_size_bytes() == 0
    assert grammars.compile(schemas[-1]) is compiled[-1]  # a recent clip's grammar is kept
    assert grammars.compile(schemas[0]) is not compiled[0]  # the oldest was let go (compiled again)
