"""`train-lora`: a store in, a LoRA adapter out (local disk or S3), then `foley.adapter.trained`.

    foley train --config cfg.yaml                             # the same training, without Prefect
    prefect deployment run 'train-lora/on-new-data' --param store=s3://bucket/foley-dataset

The deployment `train-lora/on-new-data` (deployments/prefect.yaml) is triggered by
`foley.dataset.updated` events whose resource says the store has enough new rows since the last
training (build-dataset decides that with its `train_min_new_rows` parameter). After training,
`<store>/_training/last.json` records what the training read: the shards, their ok rows, and the
(id, prompt_version, model) keys of its examples, taken from the same read of the store that built the
training data. Rows that land while it trains are in none of those shards, so they count toward the
next trigger. A run that trained no step (a finished output folder) records nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import fsspec
from prefect import get_run_logger
from prefect.events import emit_event

from v2t_foley.flows.core_logs import logged_flow
from v2t_foley.flows.events import ADAPTER_TRAINED, dataset_resource, record_training
from v2t_foley.training.config import TrainConfig


@logged_flow(name="train-lora")
def train_lora(
    store: str,
    output: str | None = None,
    base_model: str | None = None,
    config_path: str | None = None,
    max_steps: int | None = None,
    evaluate: bool = True,
    num_processes: int | None = None,
) -> dict:
    """Train (or resume) an adapter on `store`'s ok rows; write it to `output` (default: the store's
    adapters/ folder); evaluate it on the held-out videos; emit foley.adapter.trained. `base_model`
    defaults to the config's, then to the model that wrote the store's rows. `num_processes` > 1
    trains data-parallel on this worker (torchrun, one process per GPU; the config's by default)."""
    from v2t_foley.training.launch import run_training

    logger = get_run_logger()
    config = TrainConfig.from_yaml(config_path) if config_path else TrainConfig()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    output = output or f"{store.rstrip('/')}/adapters/lora-{stamp}"
    remote = "://" in output and not output.startswith("file://")
    local = Path(tempfile.mkdtemp(prefix="foley-adapter-")) if remote else Path(output)
    config = replace(
        config,
        store=store,
        output_dir=str(local),
        base_model=base_model or config.base_model,
        max_steps=max_steps or config.max_steps,
        num_processes=num_processes or config.num_processes,
    )
    if config.num_processes > 1:
        logger.info("training with %d processes (torchrun)", config.num_processes)
    result = run_training(config)
    if result.steps_run == 0:
        logger.info("%s already trained %d steps; nothing recorded", output, result.steps)
        return {"adapter": output, "steps": result.steps, "result": asdict(result)}
    config = replace(config, base_model=result.base_model)
    logger.info(
        "trained %d steps on %d examples; loss %s -> %s",
        result.steps,
        result.train_examples,
        result.first_loss,
        result.last_loss,
    )
    if evaluate and result.eval_examples:
        from v2t_foley.training.evaluate import default_similarity, evaluate_adapter

        evaluate_adapter(config, str(local), similarity=default_similarity())
    if remote:
        fs, root = fsspec.core.url_to_fs(output)
        fs.put(str(local).rstrip("/") + "/", root, recursive=True)
    ok_rows = result.used["ok_rows"]  # counted when the data was read, not now: see the module doc
    record = {
        "adapter": output,
        "ok_rows": ok_rows,
        "markers": result.used["markers"],
        "examples": result.used["examples"],
        "keys": result.used["keys"],
        "curation": result.used.get("curation"),  # rows used per curation decision, and left out
        "seen": result.used["seen"],
        "base_model": result.base_model,
        "steps": result.steps,
        "eval_loss": result.eval_loss,
        "processes": result.processes,
        "trained_at": stamp,
        "data_version": result.data_version,
    }
    record_training(store, record)
    emit_event(
        event=ADAPTER_TRAINED,
        resource=dataset_resource(store),
        payload={"adapter": output, "store": store, "steps": result.steps, "ok_rows": ok_rows},
    )
    return record | {"result": asdict(result)}
