"""Cache keys of the chain's steps: made of content, never of paths.

A step's key hashes the video's sha256, the step's name, the versions of the templates it renders, the
model's identity, the settings that shape its answer, and the keys of the steps it builds on. So editing
one template changes that step's key and, through the upstream keys, every later step's key, and
nothing before it. The Prefect tasks use these keys verbatim as their cache keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any


def step_key(
    step: str,
    *,
    sha256: str,
    templates: dict[str, str] | None = None,
    model: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    upstream: Sequence[str] = (),
    item: int | None = None,
    span: dict[str, Any] | None = None,
) -> str:
    """`<step>-<hash>` for one step over one video (and one event, for per-event steps).

    `span`: the chunk of a long video the step ran on (its start and end); absent for a whole video,
    so a video short enough for one chunk keeps the keys it always had."""
    payload = {
        "step": step,
        "sha256": sha256,
        "templates": templates or {},
        "model": model or {},
        "settings": settings or {},
        "upstream": list(upstream),
        "item": item,
    }
    if span is not None:
        payload["span"] = span
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    suffix = f"-e{item}" if item is not None else ""
    return f"{step}{suffix}-{digest[:40]}"
