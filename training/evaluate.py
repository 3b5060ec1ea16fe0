"""Evaluate an adapter on the held-out videos: the adapter with the simple prompt, one pass, against
the base model with the full chain (whose scripts are in the store).

With a folder of `<id>.json` ground-truth scripts (`references`), both sides are scored against it:
JSON validity, event F1 per track (foley_core.metrics: sed_eval's onset-only event-based F1),
description similarity, and cost. Without one there is no ground truth: the chain's own scripts are
what the adapter was trained on, and the chain scored against itself would be F1 1.0 by construction,
so the report gives only JSON validity and cost, and says so.

Cost is measured the same way on both sides: new tokens and the sum of the trace's per-step seconds
(the runner's wall time per step), over the answers that were valid scripts. The chain's come from its
rows in the store (the machine and batch that built them); the adapter's from this run.
Writes `eval.json` and `eval.md` next to the adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.foley_core.chain.runner import ChainConfig
from v2t_foley.foley_core.chain.simple import load_simple_prompt, run_simple
from v2t_foley.foley_core.errors import FoleyError
from v2t_foley.foley_core.evaluation import load_references
from v2t_foley.foley_core.metrics import EmbeddingSimilarity, Similarity, score_corpus
from v2t_foley.foley_core.schema.rows import row_script
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.video import VideoError, open_video
from v2t_foley.training.basemodel import adapter_base_model
from v2t_foley.training.config import TrainConfig
from v2t_foley.training.data import examples_from_rows, row_key, split_examples

NO_REFERENCE = (
    "no reference scripts: validity and cost only. The chain's scripts are the adapter's training "
    "targets, not ground truth (the chain scored against itself is F1 1.0 by construction); give "
    "--reference <folder of <id>.json> for F1"
)


def _trace_cost(trace: dict[str, Any]) -> tuple[int, float]:
    """New tokens and the summed per-step seconds of one chain trace (either side: the same measure)."""
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
    # one run per row: a long video's chunk examples share their row, and run_simple chunks it again
    by_row: dict[tuple[str, str, str], Any] = {}
    for example in held_out:
        by_row.setdefault(example.key, example)
    held_out = list(by_row.values())[: config.max_eval_videos]
    truth = load_references(references) if references else None
    base_model = config.base_model or adapter_base_model(adapter)
    llm = TransformersVideoLLM(base_model, adapter=adapter, device=config.device, dtype=config.dtype)
    adapter_pairs, chain_pairs, costs = {}, {}, {"adapter": [], "chain": []}
    for example in held_out:
        row = rows[example.key]
        chain_script = row_script(row)
        reference = truth.get(row["id"]) if truth is not None else chain_script
        if reference is None:
            continue
        predicted = None
        try:
            result = run_simple(open_video(example.video), llm, prompts, ChainConfig(timing="model"))
            predicted = result.script
            costs["adapter"].append(_trace_cost(result.trace.model_dump()))
        except (FoleyError, VideoError):
            pass  # an invalid answer counts against JSON validity (and has no cost to compare)
        costs["chain"].append(_trace_cost(json.loads(row["trace"])))
        adapter_pairs[row["id"]] = (predicted, reference)
        chain_pairs[row["id"]] = (chain_script, reference)
    report: dict[str, Any] = {
        "adapter": adapter,
        "base_model": base_model,
        "videos": len(adapter_pairs),
        "reference": references,
        "scored": truth is not None,
        "cost": "new tokens and summed per-step seconds of each trace, over valid answers",
    }
    if truth is None:
        report["note"] = NO_REFERENCE
    for name, pairs in (("adapter_simple_prompt", adapter_pairs), ("base_full_chain", chain_pairs)):
        cost = costs["adapter" if name.startswith("adapter") else "chain"]
        valid = sum(pred is not None for pred, _ in pairs.values())
        side: dict[str, Any] = {"json_validity": round(valid / len(pairs), 4) if pairs else 1.0}
        if truth is not None:
            corpus = score_corpus(pairs, similarity=similarity)
            side["tracks"] = {
                track: {k: v for k, v in score.summary().items() if k in ("f1", "precision", "recall")}
                for track, score in corpus.tracks.items()
            }
            side["overall"] = corpus.overall.summary()
        side["tokens_per_video"] = round(sum(t for t, _ in cost) / max(len(cost), 1), 1)
        side["seconds_per_video"] = round(sum(s for _, s in cost) / max(len(cost), 1), 3)
        report[name] = side
    (output / "eval.json").write_text(json.dumps(report, indent=1))
    (output / "eval.md").write_text(markdown_report(report))
    return report


def markdown_report(report: dict[str, Any]) -> str:
    lines = [
        f"# Adapter evaluation: {report['videos']} held-out video(s)",
        "",
        f"Reference: {report['reference'] or 'none'}. Base model: `{report['base_model']}`.",
        "",
    ]
    if not report["scored"]:
        lines += [f"No F1: {report['note']}.", "", "| system | JSON valid | tokens/video | s/video |"]
        lines.append("|---|---|---|---|")
        for name in ("adapter_simple_prompt", "base_full_chain"):
            r = report[name]
            lines.append(
                f"| {name} | {r['json_validity']:.0%} | {r['tokens_per_video']} | {r['seconds_per_video']} |"
            )
        return "\n".join(lines) + "\n"
    lines += [
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
    lines += ["", f"Cost: {report['cost']}; the chain's from its rows in the store."]
    return "\n".join(lines) + "\n"


def default_similarity() -> Similarity:
    return EmbeddingSimilarity()
