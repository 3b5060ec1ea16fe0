"""`foley`: the command line over foley_core and the flows.

    foley script clip.mp4                      # the real Video-LLaVA (downloads ~14 GB once)
    foley script clip.mp4 --model tiny-random  # the offline random test model: meaningless text
    foley smoke                                # the whole chain offline, on a generated clip

Exit codes: 0 ok, 2 bad input (the message says what and why), 1 anything else.
Progress and messages go to stderr; the script goes to stdout or --out.
"""

from v2t_foley.flows.cli import core, evaluate, export, factory, store, train  # noqa: F401  (each registers its commands)
from v2t_foley.flows.cli.common import app

__all__ = ["app"]
