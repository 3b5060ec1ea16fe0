"""Which base model to use when none is given: the one that wrote a store's rows, or the one an adapter
was trained on. A store or adapter made with one model (say the offline `tiny-random`) must not be
silently paired with the Hub default, which would download Video-LLaVA, or fail offline.

Light on purpose (no torch, no peft): the CLI calls it before anything heavy is imported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from v2t_foley.foley_core.backends.tiny import TINY_NAMES
from v2t_foley.foley_core.errors import InputError

# The tiny models load from `<cache>/models/<name>-v<build>`, so a model's `_name_or_path` (and what
# peft writes as an adapter's base model) is that folder: machine-specific, gone with the cache.
_TINY_FOLDER = re.compile(rf"^({'|'.join(re.escape(n) for n in TINY_NAMES)})-v\d+$")


def spec_name(name: str) -> str:
    """The model name to load: a tiny model's cache folder maps back to its reserved name."""
    match = _TINY_FOLDER.match(Path(name).name)
    return match.group(1) if match else name


def rows_model(rows: Iterable[dict[str, Any]], store: str) -> str:
    """The one model that wrote `rows` (a store's training rows); refuse to guess between several."""
    models = sorted({row["model_id"] for row in rows})
    if len(models) == 1:
        return models[0]
    if not models:
        raise InputError(f"{store}: no ok rows to take the base model from; give --model")
    raise InputError(
        f"{store}: the training rows come from {len(models)} models ({', '.join(models)}); "
        "choose the base model with --model"
    )


def adapter_base_model(adapter: str) -> str:
    """The base model recorded in `<adapter>/adapter_config.json`, as peft's AutoPeftModel reads it."""
    path = Path(adapter) / "adapter_config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{adapter}: not a LoRA adapter folder (no adapter_config.json); give the folder "
            "`foley train` wrote"
        ) from None
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read the adapter config ({err}); give --model") from None
    name = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not name:
        raise InputError(f"{path}: names no base model (base_model_name_or_path); give --model")
    return spec_name(name)
