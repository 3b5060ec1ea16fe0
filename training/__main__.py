"""One process of a (distributed) training run:

    torchrun --nproc_per_node 4 -m v2t_foley.training --config cfg.yaml
    accelerate launch --num_processes 4 -m v2t_foley.training --config cfg.yaml     # DDP, or DeepSpeed / FSDP

Every process trains; rank 0 writes the adapter folder and, with --result, the TrainResult as JSON.
`foley train --num-processes N` runs this through torchrun for you (so does
`python -m v2t_foley.training` with `num_processes: N` in the config, when no launcher started it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict

from v2t_foley.foley_core.errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m v2t_foley.training", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", required=True, help="YAML file of TrainConfig / TrainingArguments fields")
    parser.add_argument("--store", help="dataset store (overrides the config)")
    parser.add_argument("--output-dir", help="adapter folder (overrides the config)")
    parser.add_argument("--base-model", help="model the adapter is for (overrides the config)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps in all (overrides the config)")
    parser.add_argument("--result", help="write rank 0's TrainResult here (JSON)")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(message)s")
    from v2t_foley.training.config import TrainConfig
    from v2t_foley.training.launch import run_training

    try:
        config = TrainConfig.from_yaml(
            args.config,
            store=args.store,
            output_dir=args.output_dir,
            base_model=args.base_model,
            max_steps=args.max_steps,
        )
        if not config.store:
            raise InputError("give --store (or store: in --config)")
        result = asdict(run_training(config))  # launched by torchrun/accelerate: this process trains
    except InputError as err:
        result = {"error": str(err)}
        print(f"error: {err}", file=sys.stderr)
    if rank == 0 and args.result:
        with open(args.result, "w") as handle:
            json.dump(result, handle)
    return 2 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
