"""The GPU benchmark's run: its settings from the environment, its JSON lines, its time budget, and its
guard around each part (bench/gpu_foley.py and bench/gpu_factory.py). Bench plumbing only."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable

import torch

TINY = os.environ.get("SCALE") == "tiny"
_CLIPS = os.environ.get("FACTORY_CLIPS", "32" if not TINY else "2")
if not _CLIPS.isdigit() or int(_CLIPS) < 1:
    print(
        f"gpu_foley: FACTORY_CLIPS must be a whole number of clips, at least 1, not {_CLIPS!r}",
        file=sys.stderr,
    )
    sys.exit(2)
FACTORY_CLIPS = int(_CLIPS)  # clips of the factory section
BUDGET_S = float(os.environ.get("BUDGET_S", "420" if not TINY else "50"))
# ONLY=part,part: the parts to run, for a short device call spent on the figures a full one missed. A
# part runs when its name and one of these begin alike: "generate_continuous_b32" runs both decodes of
# that batch, "generate_continuous_b32_free" that one alone
ONLY = tuple(name for name in os.environ.get("ONLY", "").split(",") if name)
STARTED = time.perf_counter()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def log(**fields) -> None:
    print(json.dumps(fields), flush=True)


def in_budget(step: str, needs_s: float = 0.0) -> bool:
    """False (and a log line) when `step` is not in ONLY, or would start past the run's budget, or end
    past it when it needs `needs_s` seconds."""
    spent = time.perf_counter() - STARTED
    if ONLY and not any(step.startswith(name) or name.startswith(step) for name in ONLY):
        log(step=step, skipped=True, why="not in ONLY")
        return False
    if spent + needs_s > BUDGET_S:
        log(step=step, skipped=True, spent_s=round(spent, 1), budget_s=BUDGET_S)
        return False
    return True


def guarded(step: str, run: Callable[[], object]) -> bool:
    """Run one measurement; a failure becomes that step's line (the error and the traceback's last
    lines) and the run goes on. A lent device gives minutes, once: one broken part must cost only its
    own figures, not every part after it."""
    try:
        run()
        return True
    except Exception as error:
        where = traceback.format_exc().strip().splitlines()[-8:]
        log(step=step, error=f"{type(error).__name__}: {error}"[:400], where=where)
        if DEVICE == "cuda":
            with contextlib.suppress(Exception):  # a broken CUDA context fails here too; the log says why
                torch.cuda.empty_cache()
        return False


# whether the continuous decoder reads video prefixes from the prefix store: set to False when a
# decode through the store fails and the same decode with copies succeeds, so that every later
# continuous figure is still measured, with copies; that retry is made once a run
STORE = [True]
COPIES_TRIED = [False]
# the ways of the store's attention, by `ContinuousDecoder.attention_way()`
WAYS = {True: "fused kernels", False: "small ops", None: "copies"}


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()
