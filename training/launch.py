"""Several processes on one machine: `torchrun` runs `python -m v2t_foley.training` once per process (one per
GPU, or gloo processes on CPU), and the Trainer's DDP does the rest. What `foley train --num-processes N`
and the train-lora flow call; `accelerate launch -m v2t_foley.training --config cfg.yaml` works the same way
and adds DeepSpeed / FSDP (from accelerate's config).

The config goes to the processes as a YAML file, the result comes back from rank 0 as JSON; both live
in a temporary folder, outside the adapter folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

from v2t_foley.foley_core.errors import FoleyError, InputError
from v2t_foley.training.config import TrainConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_training(config: TrainConfig):
    """Train as `config` says: in this process, or with `num_processes` processes through torchrun
    (unless this process is already one of a launched group)."""
    from v2t_foley.training.trainer import train

    if config.num_processes > 1 and "WORLD_SIZE" not in os.environ:
        return launch(config, config.num_processes)
    return train(config)


def launch_command(
    num_processes: int, config_file: Path, result_file: Path, module: str = "v2t_foley.training"
):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a local rendezvous on a free port
        f"--nproc_per_node={num_processes}",
        "-m",
        module,
        "--config",
        str(config_file),
        "--result",
        str(result_file),
    ]


def launch(config: TrainConfig, num_processes: int, module: str = "v2t_foley.training"):
    """Run `python -m <module>` in `num_processes` processes; return rank 0's TrainResult."""
    from v2t_foley.training.trainer import TrainResult

    if num_processes < 1:
        raise InputError(f"num_processes must be at least 1, not {num_processes}")
    with tempfile.TemporaryDirectory(prefix="foley-launch-") as tmp:
        config_file, result_file = Path(tmp, "train.yaml"), Path(tmp, "result.json")
        child = replace(config, num_processes=1)  # the processes train; they launch nothing
        config_file.write_text(yaml.safe_dump(child.as_dict(), sort_keys=False))
        env = dict(os.environ)
        if (PROJECT_ROOT / "pyproject.toml").is_file():  # a checkout: its code, whatever is installed
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("OMP_NUM_THREADS", "1")
        command = launch_command(num_processes, config_file, result_file, module)
        done = subprocess.run(command, env=env, check=False)
        data = json.loads(result_file.read_text()) if result_file.exists() else {}
    if data.get("error"):  # refused input (exit 2), as one process would say it
        raise InputError(data["error"])
    if done.returncode != 0 or not data:
        raise FoleyError(f"distributed training ({num_processes} processes) failed: exit {done.returncode}")
    return TrainResult(**data)
