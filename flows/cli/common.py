"""Shared pieces of the `foley` CLI: the app, stderr console, common options, error handling."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

from v2t_foley.foley_core.errors import FoleyError, InputError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Multi-track foley scripts from videos, with a video-LLM chain of thought.",
)
err = Console(stderr=True)
if not err.is_terminal:  # logs and CI: tables keep their rows on one line instead of wrapping at 80
    err.width = max(err.width, 160)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Hub id, local folder, served model name, or 'tiny-random' (offline test model) "
        "[default: LanguageBind/Video-LLaVA-7B-hf].",
    ),
]
BackendOpt = Annotated[str, typer.Option("--backend", help="transformers (in-process) or openai (a server).")]
BaseUrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
]
ConcurrencyOpt = Annotated[
    int,
    typer.Option(
        "--concurrency",
        help="openai backend: requests in flight at once (the server batches them continuously).",
    ),
]
DecoderOpt = Annotated[
    str,
    typer.Option(
        "--decoder",
        help="transformers: generate; static (static KV cache + CUDA graphs); continuous (requests take "
        "decode slots as they free). Greedy answers are the same tokens with each.",
    ),
]
AdapterOpt = Annotated[
    str | None, typer.Option("--adapter", help="LoRA adapter folder; uses the simple prompt.")
]
PromptsOpt = Annotated[
    Path | None, typer.Option("--prompts", help="Folder of prompt templates (default: shipped).")
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cuda, cuda:1, cpu (default: cuda if available).")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")]
ChunkSecondsOpt = Annotated[
    float,
    typer.Option(
        "--chunk-seconds",
        help="Videos longer than this run as chunks of about this length, split at shot cuts "
        "(each chunk: its own frames, windows and event budget); 0: never split.",
    ),
]
PartialOkOpt = Annotated[
    bool,
    typer.Option(
        "--partial-ok",
        help="A failed chunk of a long video leaves a noted gap instead of failing the video.",
    ),
]
TimingOpt = Annotated[
    str,
    typer.Option(
        "--timing",
        help="measured: cue times from measured cuts/motion/onsets/speech (default); model: the model's own.",
    ),
]


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )
    # transformers' own progress bars and warnings are noise on this CLI's stderr
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def quiet_transformers() -> None:
    """transformers' own progress bars would tear through this CLI's progress display."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def fail(error: BaseException) -> NoReturn:
    """Print the error the way a user can act on it and exit with the documented code."""
    if os.environ.get("FOLEY_DEBUG"):
        raise error
    code = 2 if isinstance(error, InputError) else 1
    label = "bad input" if code == 2 else "error"
    err.print(f"[bold red]{label}:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(run: Callable[[], None]) -> None:
    try:
        run()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except FoleyError as error:
        fail(error)
    except Exception as error:  # the last line of defence: a message, not a traceback
        fail(RuntimeError(f"{type(error).__name__}: {error} (set FOLEY_DEBUG=1 for the traceback)"))


def warn_if_tiny(model: str | None) -> None:
    from v2t_foley.foley_core.backends.tiny import is_tiny

    if model and is_tiny(model):
        err.print(
            f"[yellow]warning:[/] {model!r} is a tiny random-weight test model: it exercises every code "
            "path, but its descriptions are meaningless. Use the default model for real scripts.",
            highlight=False,
        )


def write_json(data: object, out: Path | None) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")


def quiet_prefect(verbose: bool) -> None:
    """Prefect's INFO logs would bury the progress bar; its telemetry cannot leave this machine anyway."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary server a local run starts can take more than Prefect's 20 s on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DO_NOT_TRACK", "1")
