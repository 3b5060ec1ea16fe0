"""`build-dataset`: a manifest in, Parquet shards of (video, script) rows out, on disk or S3.

    foley build-dataset --demo                                     # offline, tiny model, generated clips
    foley build-dataset --manifest videos.csv --store ./store      # the real Video-LLaVA, locally
    prefect deployment run 'build-dataset/nightly' --param manifest=s3://b/m.csv --param store=s3://b/ds

It validates the manifest, drops videos already in the store for the same prompt version and model,
cuts the rest into shards and runs `process-shard` for each: as a subflow here, or as deployment runs
of `process-shard/<work_pool>` when a work pool is named, so many GPU machines share one run. Then it
refreshes the dataset card and emits `foley.dataset.updated` with the number of new ok rows.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.events import emit_event

from flows.events import DATASET_UPDATED, dataset_resource, last_training, training_labels
from flows.process_shard import process_shard
from flows.progress import report
from foley_core.backends import BackendSpec, frame_policy_for
from foley_core.backends.base import DEFAULT_MODEL, GenerationParams
from foley_core.chain import ChainConfig
from foley_core.manifest import ManifestEntry, read_manifest
from foley_core.store import DatasetStore, render_card
from tasks.job import ChainJob


@dataclass
class BuildSummary:
    run_id: str  # names this run's shards
    store: str  # where the data is
    manifest_rows: int  # entries in the manifest
    skipped: int  # already in the store for this prompt version and model
    shards: int  # shards written by this run
    new_rows: int  # rows written by this run
    new_ok_rows: int  # of which ok
    new_failed_rows: int  # of which failed
    computed: dict[str, int]  # step -> chain tasks that ran (subflow runs only)
    cached: dict[str, int]  # step -> chain tasks answered from the cache (subflow runs only)
    prompt_version: str  # of the prompt set used
    seconds: float  # wall time


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


@flow(name="build-dataset")
def build_dataset(
    manifest: str,
    store: str,
    model: str = DEFAULT_MODEL,
    backend: str = "transformers",
    base_url: str | None = None,
    revision: str | None = None,
    adapter: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    prompts_dir: str | None = None,
    shard_size: int = 64,
    limit: int | None = None,
    result_storage: str | None = None,
    work_pool: str | None = None,
    timing: str = "measured",
    constrained: bool = True,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    retry_failed: bool = False,
    train_min_new_rows: int = 1000,
) -> BuildSummary:
    """Build or extend the dataset at `store` from the videos in `manifest`."""
    started = time.perf_counter()
    logger = get_run_logger()
    entries = read_manifest(manifest)
    spec = BackendSpec(
        backend=backend,
        model=model,
        revision=revision,
        adapter=adapter,
        base_url=base_url,
        device=device,
        batch_size=batch_size,
    )
    config = ChainConfig(
        params=GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature),
        constrained=constrained,
        timing=timing,
    )
    job = ChainJob(backend=spec, prompts_dir=prompts_dir, config=config)
    prompts = job.prompts()  # a broken template fails the run here, before any video
    frame_policy_for(spec)  # an unknown model fails here too (reads its config, loads no weights)
    dataset = DatasetStore(store)
    done = dataset.done_keys(include_failed=not retry_failed)
    todo = [e for e in entries if (e.id, prompts.version, spec.model_key) not in done]
    skipped = len(entries) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    shards = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
    run_id = new_run_id()
    logger.info(
        "%d videos in the manifest, %d already done, %d to process in %d shard(s) (run %s)",
        len(entries),
        skipped,
        len(todo),
        len(shards),
        run_id,
    )
    report("planned", total=len(todo), skipped=skipped)
    if shards:
        dataset.write_card(render_card(dataset))  # the card lists complete shards only, from the start

    computed: dict[str, int] = {}
    cached: dict[str, int] = {}
    if work_pool and shards:
        _run_on_pool(work_pool, shards, store, job, run_id, result_storage)
    else:
        for index, shard in enumerate(shards):
            done_shard = process_shard(shard, store, job, run_id, index, result_storage)
            for total, part in ((computed, done_shard.computed), (cached, done_shard.cached)):
                for step, n in part.items():
                    total[step] = total.get(step, 0) + n

    if shards:
        dataset.write_card(render_card(dataset))
    mine = [m for m in dataset.markers() if m.run_id == run_id] if shards else []
    summary = BuildSummary(
        run_id=run_id,
        store=store,
        manifest_rows=len(entries),
        skipped=skipped,
        shards=len(mine),
        new_rows=sum(m.rows for m in mine),
        new_ok_rows=sum(m.ok for m in mine),
        new_failed_rows=sum(m.failed for m in mine),
        computed=computed,
        cached=cached,
        prompt_version=prompts.version,
        seconds=round(time.perf_counter() - started, 3),
    )
    if mine:  # only a changed dataset is news
        ok_rows = sum(m.ok for m in dataset.markers())
        labels = training_labels(ok_rows, last_training(store).get("ok_rows", 0), train_min_new_rows)
        emit_event(
            event=DATASET_UPDATED,
            resource=dataset_resource(store, **labels),
            payload={
                "store": store,
                "run_id": run_id,
                "new_ok_rows": summary.new_ok_rows,
                "new_rows": summary.new_rows,
                "prompt_version": prompts.version,
                "model": spec.model_key,
            },
        )
    logger.info(
        "run %s: %d new rows (%d ok, %d failed) in %d shard(s); %d skipped",
        run_id,
        summary.new_rows,
        summary.new_ok_rows,
        summary.new_failed_rows,
        summary.shards,
        skipped,
    )
    return summary


def _run_on_pool(
    work_pool: str,
    shards: list[list[ManifestEntry]],
    store: str,
    job: ChainJob,
    run_id: str,
    result_storage: str | None,
) -> None:
    """Start one `process-shard/<work_pool>` deployment run per shard and wait for all of them."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    runs = [
        run_deployment(
            name=f"process-shard/{work_pool}",
            parameters={
                "entries": shard,
                "store": store,
                "job": job,
                "run_id": run_id,
                "index": index,
                "result_storage_uri": result_storage,
            },
            timeout=0,
        )
        for index, shard in enumerate(shards)
    ]
    pending = {run.id for run in runs}
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(2)
            for run_id_ in list(pending):
                state = client.read_flow_run(run_id_).state
                if state is not None and state.is_final():
                    pending.discard(run_id_)
                    if not state.is_completed():
                        logger.error("shard run %s ended %s: %s", run_id_, state.name, state.message)
