"""What xgrammar costs the host at Video-LLaVA's vocabulary size, on the CPU: compiling the chain's
schemas, and the per-step mask work of 32 constrained rows.

    PYTHONPATH=. python3 bench/grammar_cost.py [--rows 32] [--durations 6] > cpu-grammar-cost.jsonl

The real tokenizer (Llama's 32,000 SentencePiece tokens) cannot be downloaded here, and the tiny
model's has about 600 tokens; xgrammar's work grows with the vocabulary. So a byte-level BPE of 32,000
tokens is trained offline (`tokenizers`, on this Python's standard-library sources and the tiny
model's corpus) and padded to Video-LLaVA's 32,064 logits: a vocabulary of the real size, not the real
one. One JSON line per figure:
- compile: each chain schema (`schema/decoding.py`, default limits) compiled cold, at `--durations`
  clip durations (a clip's duration is in its identify, synthesize and simple schemas, so real clips
  bring new ones), median and largest ms, and the compiled grammar's memory; and how much of its
  free rate a Python thread kept while a
  one-thread compiler ran beside it (whether a compile in a caller's thread stalls the decoder's);
- step: `--rows` rows answering the three per-clip steps in turn (valid answers of realistic length),
  each step's `batch_fill_next_token_bitmask` and `batch_accept_token`, as the continuous decoder
  calls them, with xgrammar's thread pool at "auto" and at 1 thread.
A GPU decode step of the 7B reads 13.4 GB of weights: about 4 ms on an H100. Host work under that
overlaps the step (the decoder fills the next mask while the GPU runs); over it, it sets the step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

VOCAB = 32_000  # Llama's tokenizer, Video-LLaVA's language model
LOGITS = 32_064  # Video-LLaVA-7B's vocab_size: the logits' width (padded)
TEXT = "a heavy wooden door swings shut and the latch clicks into place, echoing down the stone hall"


def train_tokenizer():
    """A 32,000-token byte-level BPE trained on local text, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from v2t_foley.foley_core.backends.tiny import _CORPUS

    sources = sorted(Path(json.__file__).parents[1].glob("*.py"))
    texts = [_CORPUS] * 50 + [path.read_text(errors="ignore") for path in sources]
    raw = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def schemas(duration: float) -> dict[str, dict]:
    from v2t_foley.foley_core.schema.decoding import (
        SchemaLimits,
        describe_schema,
        identify_schema,
        reason_schema,
        simple_schema,
        synthesize_schema,
    )

    limits = SchemaLimits()
    return {
        "identify": identify_schema(duration, limits),
        "describe": describe_schema(limits),
        "reason": reason_schema(limits),
        "synthesize": synthesize_schema(duration, 4, limits),
        "simple": simple_schema(duration, limits),
    }


def answers() -> dict[str, dict]:
    """Valid answers of a clip's three chain steps, each as long as a detailed real one."""
    return {
        "identify": {"events": [{"start": 0.5 + k, "end": 1.25 + k, "what": TEXT} for k in range(4)]},
        "reason": {
            "main_object": "wooden door",
            "action": "swings shut",
            "context": "stone hallway",
            "sounds": [TEXT, "latch click", "echo"],
        },
        "synthesize": {
            "foley": [{"event": k, "start": float(k), "end": k + 0.5, "description": TEXT} for k in range(3)],
            "fx": [],
            "ambience": [{"event": -1, "start": 0.0, "end": 10.0, "description": "quiet hall tone"}],
            "dialogue": [],
        },
    }


class Spinner:
    """A Python thread counting loop turns: its rate while something runs says whether that held the GIL."""

    def __init__(self) -> None:
        self.turns, self.stop = 0, False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self.stop:
            self.turns += 1

    def rate(self, seconds: float = 0.3) -> float:
        start, began = self.turns, time.perf_counter()
        time.sleep(seconds)
        return (self.turns - start) / (time.perf_counter() - began)

    def close(self) -> None:
        self.stop = True
        self.thread.join()


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
        "p50_ms": round(ordered[len(ordered) // 2] * 1e3, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--durations", type=int, default=6, help="clip durations compiled per schema")
    args = parser.parse_args()
    import xgrammar as xgr

    started = time.perf_counter()
    tokenizer = train_tokenizer()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=LOGITS)
    compiler = xgr.GrammarCompiler(info, max_threads=2)  # as backends/constrained.py's GrammarCache
    setup_s = time.perf_counter() - started

    def compile_schema(schema: dict) -> xgr.CompiledGrammar:
        return compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))

    durations = [9.5 + 0.07 * k for k in range(args.durations)]  # new clips, new bounds: cold compiles
    timings: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}  # a compiled grammar's memory: what a process keeps per grammar
    for duration in durations:
        for name, schema in schemas(duration).items():
            if name in timings and name in ("describe", "reason"):
                continue  # no duration in them: compiled once
            began = time.perf_counter()
            sizes[name] = compile_schema(schema).memory_size_bytes
            timings.setdefault(name, []).append(time.perf_counter() - began)
    for name, seconds in timings.items():
        line = {"figure": "compile", "schema": name, "compiles": len(seconds)}
        line["median_ms"] = round(statistics.median(seconds) * 1e3, 1)
        line["max_ms"] = round(max(seconds) * 1e3, 1)
        line["mb"] = round(sizes[name] / 1e6, 2)
        print(json.dumps(line))
    # A compile on one thread of its own beside a Python thread: on two cores neither waits for a core,
    # so the Python thread keeps its rate unless the compile holds the GIL.
    single = xgr.GrammarCompiler(info, max_threads=1)
    spinner = Spinner()
    free_rate = spinner.rate()
    turns, busy = spinner.turns, time.perf_counter()
    for duration in durations:
        single.compile_json_schema(
            json.dumps(schemas(duration + 0.01)["synthesize"]), any_whitespace=False, separators=(",", ":")
        )
    kept = (spinner.turns - turns) / (time.perf_counter() - busy) / free_rate
    spinner.close()
    print(json.dumps({"figure": "compile_beside_a_python_thread", "its_rate_kept": round(kept, 2)}))

    steps = list(answers())
    grammars = {name: compile_schema(schemas(10.0)[name]) for name in steps}
    tokens = {
        name: tokenizer(json.dumps(answer, separators=(",", ":")), add_special_tokens=False)["input_ids"]
        + [tokenizer.eos_token_id]
        for name, answer in answers().items()
    }
    for threads in ("auto", 1):
        matchers = [xgr.GrammarMatcher(grammars[steps[k % 3]]) for k in range(args.rows)]
        answer = [tokens[steps[k % 3]] for k in range(args.rows)]
        batch = xgr.BatchGrammarMatcher(max_threads=threads)
        bitmask = xgr.allocate_token_bitmask(args.rows, LOGITS)
        fills, accepts, live_rows = [], [], []
        for step in range(max(map(len, answer))):
            live = [k for k in range(args.rows) if step < len(answer[k])]
            began = time.perf_counter()
            batch.batch_fill_next_token_bitmask([matchers[k] for k in live], bitmask, indices=live)
            filled = time.perf_counter()
            accepted = xgr.BatchGrammarMatcher.batch_accept_token(
                [matchers[k] for k in live], [answer[k][step] for k in live]
            )
            fills.append(filled - began)
            accepts.append(time.perf_counter() - filled)
            live_rows.append(len(live))
            if not all(accepted):
                raise SystemExit(f"a valid answer was refused at step {step}: the benchmark is wrong")
        print(
            json.dumps(
                {
                    "figure": "step",
                    "rows": args.rows,
                    "threads": threads,
                    "steps": len(fills),
                    "mean_live_rows": round(statistics.fmean(live_rows), 1),
                    "answer_tokens": {name: len(ids) for name, ids in tokens.items()},
                    "fill": ms(fills),
                    "accept": ms(accepts),
                }
            )
        )
    setup = {"figure": "setup", "vocab": len(tokenizer), "logits": LOGITS}
    print(json.dumps(setup | {"train_and_tokenizer_info_s": round(setup_s, 1)}))


if __name__ == "__main__":
    main()
