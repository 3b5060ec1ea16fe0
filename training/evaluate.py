"""Evaluate an adapter on the held-out videos: the adapter with the simple prompt, one pass, against
the base model with the full chain (whose scripts are in the store).

The reference is a folder of `<id>.json` ground-truth scripts when one is given; otherwise the chain's
own scripts (the teacher), so the report says how closely the one-pass adapter reproduces the chain,
at what cost. Writes `eval.json` and `eval.md` next to the adapter.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.foley_core.chain.runner import ChainConfig
from v2t_foley.foley_core.chain.simple import load_simple_prompt, run_simple
from v2t_foley.foley_core.errors import FoleyError
from v2t_foley.foley_core.evaluation import load_references
from v2t_foley.foley_core.metrics import EmbeddingSimilarity, Similarity, score_corpus
from v2t_foley.foley_core.schema.script import FoleyScript
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.video import VideoError, open_video
from v2t_foley.training.basemodel import adapter_base_model
from v2t_foley.training.config import TrainConfig
from v2t_foley.training.data import examples_from_rows, row_key, split_examples


def _chain_cost(row: dict[str, Any]) -> tuple[int, float]:
    trace = json.loads(row["trace"])
    return sum(c["new_tokens"] for c in trace["calls"]), sum(trace["step_seconds"].values())


def evaluate_adapter(
    config: TrainConfig,
    adapter: str,
    references: str | None = None,
    similarity: Similarity | None = None,
) -> dict[str, Any]:
    output = Path(adapter)
    # keyed like the store's done-keys: one video can have a chain row and an adapter's row
    rows = {row_key(r): r for r in DatasetStore(config.store).read_rows() if r["status"] == "ok"}
    prompts = load_simple_prompt(config.prompts_dir)
    examples = examples_from_rows(
        rows.values(),
        prompts,
        prompt_version=config.prompt_version,
        include_adapter_rows=config.include_adapter_rows,
    )
    held_out = split_examples(examples, config.eval_fraction, config.seed, output / "splits.json")["eval"]
    held_out = held_out[: config.max_eval_videos]
    truth = load_references(references) if references else None
    base_model = config.base_model or adapter_base_model(adapter)
    llm = TransformersVideoLLM(base_model, adapter=adapter, device=config.device, dtype=config.dtype)
    adapter_pairs, chain_pairs, costs = {}, {}, {"adapter": [], "chain": []}
    for example in held_out:
        row = rows[example.key]
        chain_script = FoleyScript.model_validate_json(row["script"])
        reference = truth.get(example.id) if truth else chain_script
        if reference is None:
            continue
        predicted, tokens = None, 0
        started = time.perf_counter()
        try:
            result = run_simple(open_video(example.video), llm, prompts, ChainConfig(timing="model"))
            predicted = result.script
            tokens = sum(c.new_tokens for c in result.trace.calls)
        except (FoleyError, VideoError):
            pass  # an invalid answer counts against JSON validity
        costs["adapter"].append((tokens, time.perf_counter() - started))
        costs["chain"].append(_chain_cost(row))
        adapter_pairs[example.id] = (predicted, reference)
        chain_pairs[example.id] = (chain_script, reference)
    report: dict[str, Any] = {
        "adapter": adapter,
        "base_model": base_model,
        "videos": len(adapter_pairs),
        "reference": references or "the chain's own scripts",
    }
    for name, pairs in (("adapter_simple_prompt", adapter_pairs), ("base_full_chain", chain_pairs)):
        corpus = score_corpus(pairs, similarity=similarity)
        cost = costs["adapter" if name.startswith("adapter") else "chain"]
        report[name] = {
            "json_validity": round(corpus.json_validity, 4),
            "tracks": {
                track: {k: v for k, v in score.summary().items() if k in ("f1", "precision", "recall")}
                for track, score in corpus.tracks.items()
            },
            "overall": corpus.overall.summary(),
            "tokens_per_video": round(sum(t for t, _ in cost) / max(len(cost), 1), 1),
            "seconds_per_video": round(sum(s for _, s in cost) / max(len(cost), 1), 3),
        }
    (output / "eval.json").write_text(json.dumps(report, indent=1))
    (output / "eval.md").write_text(markdown_report(report))
    return report


def markdown_report(report: dict[str, Any]) -> str:
    lines = [
        f"# Adapter evaluation: {report['videos']} held-out video(s)",
        "",
        f"Reference: {report['reference']}. Base model: `{report['base_model']}`.",
        "",
        "| system | JSON valid | F1 overall | foley | fx | ambience | dialogue | similarity | tokens/video "
        "| s/video |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("adapter_simple_prompt", "base_full_chain"):
        r = report[name]
        tracks = [f"{r['tracks'][t]['f1']:.3f}" for t in ("foley", "fx", "ambience", "dialogue")]
        similarity = r["overall"]["description_similarity"]
        lines.append(
            f"| {name} | {r['json_validity']:.0%} | {r['overall']['f1']:.3f} | {' | '.join(tracks)} | "
            f"{'-' if similarity is None else f'{similarity:.3f}'} | {r['tokens_per_video']} "
            f"| {r['seconds_per_video']} |"
        )
    return "\n".join(lines) + "\n"


def default_similarity() -> Similarity:
    return EmbeddingSimilarity()
