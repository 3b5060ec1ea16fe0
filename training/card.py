"""The adapter's model card: base model, data version, training settings and (after evaluation) metrics."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml


def _curation_line(counts: dict[str, Any] | None) -> str:
    """Rows used per curation decision, and left out (`foley curate`; TrainConfig.curation)."""
    if not counts:
        return "not recorded"
    return (
        f"`{counts['mode']}`: used {counts['used']} rows ({counts['approved']} approved, "
        f"{counts['needs-fix']} needs-fix, {counts['undecided']} undecided; {counts['edited']} with an "
        f"edited script); left out {counts['left_out_rejected']} rejected, "
        f"{counts['left_out_not_approved']} not approved"
    )


def _loss(result) -> str:
    loss = getattr(result, "eval_loss", None)
    return "- (no held-out videos)" if loss is None else str(loss)


def write_model_card(output: Path, config, result, metrics: dict[str, Any] | None = None) -> Path:
    header = {
        "base_model": config.base_model,
        "library_name": "peft",
        "tags": ["lora", "foley", "video-to-audio", "v2t-foley"],
    }
    data = result.data_version
    lora = f"r={config.lora_r}, alpha={config.lora_alpha}, dropout={config.lora_dropout}"
    lora += f", `{config.target_modules}`"
    body = f"""# v2t-foley foley-script adapter

A LoRA adapter for `{config.base_model}` that writes the four-track foley script (`foley`, `fx`,
`ambience`, `dialogue`) from one simple prompt, trained on the scripts v2t-foley's chain of thought wrote.

| | |
|---|---|
| base model | `{config.base_model}` |
| data | `{data["store"]}`: {data["rows"]} rows, {data["examples"]} examples |
| chain prompt version | `{data["prompt_version"]}` |
| curation | {_curation_line(data.get("curation"))} |
| simple prompt version | `{data["simple_prompt_version"]}` |
| train / eval videos | {result.train_examples} / {result.eval_examples} (by video; `splits.json`) |
| optimizer steps | {result.steps} |
| loss, first -> last step of the last run | {result.first_loss} -> {result.last_loss} |
| evaluation loss (held-out split, after the last step) | {_loss(result)} |
| schedule | {config.lr_scheduler_type}, peak {config.learning_rate}, {config.warmup_steps} warm-up steps |
| processes | {getattr(result, "processes", 1)} |
| LoRA | {lora} |

Use it: `foley script clip.mp4 --model {config.base_model} --adapter {output}`.

## Training configuration

```json
{json.dumps(config.as_dict(), indent=1)}
```
"""
    losses = getattr(result, "eval_losses", None) or []
    if losses:
        rows = "\n".join(f"| {r['step']} | {r['eval_loss']} |" for r in losses)
        body += f"\n## Evaluation loss\n\n| step | eval loss |\n|---|---|\n{rows}\n"
    if metrics:
        body += f"\n## Evaluation\n\n```json\n{json.dumps(metrics, indent=1)}\n```\n"
    path = output / "README.md"
    path.write_text("---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + body)
    (output / "train_result.json").write_text(json.dumps(asdict(result), indent=1))
    return path
