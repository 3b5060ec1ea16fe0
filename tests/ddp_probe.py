"""One process of the two-process CPU test (`torchrun -m tests.ddp_probe --config ...`): trains
through `python -m v2t_foley.training`'s entry point, recording which examples this rank loaded and which
files it wrote (Python opens for writing, renames, torch.save and peft's safetensors writes), into
`$FOLEY_DDP_PROBE/rank-R.json`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    probe = Path(os.environ["FOLEY_DDP_PROBE"])
    rank = int(os.environ["RANK"])
    writes: list[str] = []

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[1], str) and any(c in args[1] for c in "wax+"):
            writes.append(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else "?")
        elif event in ("os.rename", "os.replace"):
            writes.append(os.fsdecode(args[1]))

    sys.addaudithook(audit)
    import peft.peft_model

    real_save = peft.peft_model.safe_save_file

    def save(tensors, filename, *args, **kwargs):  # safetensors writes in Rust: no audit event
        writes.append(str(filename))
        return real_save(tensors, filename, *args, **kwargs)

    peft.peft_model.safe_save_file = save
    import torch

    real_torch_save = torch.save

    def torch_save(obj, f, *args, **kwargs):  # the zip writer opens its file in C++
        if isinstance(f, (str, os.PathLike)):
            writes.append(os.fspath(f))
        return real_torch_save(obj, f, *args, **kwargs)

    torch.save = torch_save
    from v2t_foley.training import trainer

    seen: list[str] = []

    class Recording(trainer.ExampleDataset):
        def __getitem__(self, index: int):
            example = super().__getitem__(index)
            seen.append(example.id)
            return example

    trainer.ExampleDataset = Recording
    from v2t_foley.training.__main__ import main as run

    code = run(sys.argv[1:])
    record = {"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "seen": seen, "writes": writes}
    (probe / f"rank-{rank}.json").write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    sys.exit(main())
