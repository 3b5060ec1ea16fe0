"""`build-dataset`: a manifest in, Parquet shards of (video, script) rows out, on disk or S3.

    foley build-dataset --demo                                     # offline, tiny model, generated clips
    foley build-dataset --manifest videos.csv --store ./store      # the real Video-LLaVA, locally
    prefect deployment run 'build-dataset/nightly' --param manifest=s3://b/m.csv --param store=s3://b/ds

It validates the manifest, drops videos already in the store for the same prompt version and model,
cuts the rest into shards and runs `process-shard` for each: as a subflow here, or, when a work pool is
named, as deployment runs of `process-shards/<work_pool>` (a run per shard, or `shard_runs` of them;
each takes its shards, then any no run has taken, in turn in one process, so that the model loads once
per run that a worker starts), so many GPU machines share one run. Then it
refreshes the dataset card and emits `foley.dataset.updated` with the number of new ok rows.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.events import emit_event

from v2t_foley.flows.artifacts import build_artifacts, progress_artifact
from v2t_foley.flows.core_logs import logged_flow
from v2t_foley.flows.events import DATASET_UPDATED, dataset_resource, last_training, readiness_labels
from v2t_foley.flows.process_shard import process_shard
from v2t_foley.flows.progress import report
from v2t_foley.flows.shard_claims import run_folder, shard_manifest
from v2t_foley.flows.shard_runs import run_on_pool
from v2t_foley.foley_core.backends import BackendSpec, frame_policy_for
from v2t_foley.foley_core.backends.base import DEFAULT_MODEL, GenerationParams
from v2t_foley.foley_core.backends.provenance import revision_key
from v2t_foley.foley_core.chain import ChainConfig
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.manifest import ManifestEntry, read_manifest, write_entries
from v2t_foley.foley_core.proposals.processes import measure_processes
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.store.card import check_license_id, set_license
from v2t_foley.foley_core.store.commit import is_done
from v2t_foley.foley_core.store.lease import Lease
from v2t_foley.tasks.job import ChainJob


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
    computed: dict[str, int]  # step -> items computed (subflow runs only)
    cached: dict[str, int]  # step -> items read from the step cache (subflow runs only)
    step_seconds: dict[str, float]  # step -> wall time of its task runs, all shards (subflow runs only)
    prompt_version: str  # of the prompt set used
    seconds: float  # wall time
    busy: str = ""  # who held the store, when this run left it alone ("" when it ran)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def check_build_options(
    *,
    shard_size: int,
    limit: int | None,
    wait_for_store_s: float,
    shard_runs: int = 0,
    work_pool: str | None = None,
) -> None:
    """The run's own numbers, refused before any work (a shard of no videos would never fill)."""
    if shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, got {shard_size}")
    if shard_runs < 0:
        raise InputError(f"--shard-runs must be 0 (a run per shard) or more, got {shard_runs}")
    if shard_runs and not work_pool:
        raise InputError("--shard-runs needs --work-pool (a local build runs every shard in this process)")
    if limit is not None and limit < 0:
        raise InputError(f"--limit must be 0 or more, got {limit}")
    if not wait_for_store_s >= 0:
        raise InputError(f"--wait-for-store must be 0 or more seconds, got {wait_for_store_s}")
    if not work_pool:  # this process measures the videos (a pool's workers read their own setting)
        measure_processes()


@logged_flow(name="build-dataset")
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
    concurrency: int = 16,
    decoder: str = "generate",
    prompts_dir: str | None = None,
    shard_size: int = 64,
    limit: int | None = None,
    result_storage: str | None = None,
    work_pool: str | None = None,
    timing: str = "measured",
    chunk_seconds: float | None = 30.0,
    partial_ok: bool = False,
    constrained: bool = True,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    retry_failed: bool = False,
    train_min_new_rows: int = 1000,
    wait_for_store_s: float = 0.0,
    allow_roots: list[str] | None = None,
    shard_start_timeout_s: float = 3600.0,
    license_id: str | None = None,
    shard_runs: int = 0,
) -> BuildSummary:
    """Build or extend the dataset at `store` from the videos in `manifest`.

    One build runs on a store at a time: a run that finds another holding the store's build lease
    waits up to `wait_for_store_s`, then leaves the store alone and says who holds it (the rows stay
    one per key either way: every shard is committed under the store's commit lease). `license_id`:
    the scripts' license for the card (a Hub license id), kept for later runs.
    `shard_runs`: on a work pool, the process-shards deployment runs the shards are dealt to (each
    takes its shards, then any shard no run has taken, in turn in one process: one model load and
    compile per run that a worker starts); 0, a run per shard, of which those never started are
    cancelled at the end (flows/shard_runs.py).
    """
    started = time.perf_counter()
    logger = get_run_logger()
    check_build_options(
        shard_size=shard_size,
        limit=limit,
        wait_for_store_s=wait_for_store_s,
        shard_runs=shard_runs,
        work_pool=work_pool,
    )
    if license_id:
        check_license_id(license_id)
    dataset = DatasetStore(store)
    dataset.check_writable()
    entries = read_manifest(manifest)
    spec = BackendSpec(
        backend=backend,
        model=model,
        revision=revision,
        adapter=adapter,
        base_url=base_url,
        device=device,
        batch_size=batch_size,
        concurrency=concurrency,
        decoder=decoder,
    )
    config = ChainConfig(
        params=GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature),
        constrained=constrained,
        timing=timing,
        chunk_seconds=chunk_seconds or None,  # 0: never split
        partial_ok=partial_ok,
    )
    job = ChainJob(
        backend=spec,
        prompts_dir=prompts_dir,
        config=config,
        allow_roots=tuple(allow_roots) if allow_roots else None,
    )
    prompts = job.prompts()  # a broken template fails the run here, before any video
    frame_policy_for(spec)  # an unknown model fails here too (reads its config, loads no weights)
    run_id = new_run_id()
    lease = dataset.lease("build", f"build-dataset run {run_id}")
    if not lease.acquire(wait_for_store_s):
        holder = lease.holder()
        who = holder.describe() if holder else "another run"
        logger.warning("store %s is busy with %s; this run writes nothing (retry later)", store, who)
        report("busy", holder=who)
        return BuildSummary(
            run_id=run_id,
            store=store,
            manifest_rows=len(entries),
            skipped=0,
            shards=0,
            new_rows=0,
            new_ok_rows=0,
            new_failed_rows=0,
            computed={},
            cached={},
            step_seconds={},
            prompt_version=prompts.version,
            seconds=0.0,
            busy=who,
        )
    try:
        if license_id and set_license(dataset, license_id):
            logger.info("card: license %s", license_id)
        return _build(
            dataset,
            entries,
            job,
            run_id,
            started,
            limit,
            shard_size,
            retry_failed,
            result_storage,
            work_pool,
            train_min_new_rows,
            shard_start_timeout_s,
            lease,
            shard_runs,
        )
    finally:
        lease.release()


def _build(
    dataset: DatasetStore,
    entries: list[ManifestEntry],
    job: ChainJob,
    run_id: str,
    started: float,
    limit: int | None,
    shard_size: int,
    retry_failed: bool,
    result_storage: str | None,
    work_pool: str | None,
    train_min_new_rows: int,
    shard_start_timeout_s: float,
    lease: Lease,
    shard_runs: int,
) -> BuildSummary:
    """The run, holding the store's build lease."""
    logger = get_run_logger()
    store, spec, prompts = dataset.uri, job.backend, job.prompts()
    revision = revision_key(spec)
    shown = dataset.done()
    todo = [
        e
        for e in entries
        if not is_done(shown.get((e.id, prompts.version, spec.model_key)), revision, retry_failed)
    ]
    skipped = len(entries) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    shards = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
    logger.info(
        "%d videos in the manifest, %d already done, %d to process in %d shard(s) (run %s)",
        len(entries),
        skipped,
        len(todo),
        len(shards),
        run_id,
    )
    report("planned", total=len(todo), skipped=skipped)
    # each shard run gets its entries as a small file in the store, not as flow-run parameters
    shard_files = [
        write_entries(shard, shard_manifest(dataset, run_id, index)) for index, shard in enumerate(shards)
    ]
    progress_id = progress_artifact(0, len(shards), f"{len(todo)} videos in {len(shards)} shard(s)")
    computed: dict[str, int] = {}
    cached: dict[str, int] = {}
    step_seconds: dict[str, float] = {}
    try:
        if work_pool and shards:
            run_on_pool(
                work_pool,
                len(shards),
                dataset,
                job,
                run_id,
                result_storage,
                retry_failed,
                shard_start_timeout_s,
                lease,
                shard_runs,
            )
        for index, shard_file in enumerate(shard_files if not work_pool else []):
            lease.check()
            done_shard = process_shard(shard_file, store, job, run_id, index, result_storage, retry_failed)
            for total, part in (
                (computed, done_shard.computed),
                (cached, done_shard.cached),
                (step_seconds, done_shard.step_seconds),
            ):
                for step, n in part.items():
                    total[step] = total.get(step, 0) + n
            progress_artifact(index + 1, len(shards), f"shard {index + 1}/{len(shards)} done", progress_id)
    finally:
        if shard_files:
            dataset.fs.rm(dataset.path(run_folder(run_id)), recursive=True)

    markers = dataset.markers()
    mine = [m for m in markers if m.run_id == run_id]  # what this run added and the store still shows
    summary = BuildSummary(
        run_id=run_id,
        store=store,
        manifest_rows=len(entries),
        skipped=skipped,
        shards=len(mine),
        new_rows=sum(m.added_ok + m.added_failed for m in mine),
        new_ok_rows=sum(m.added_ok for m in mine),
        new_failed_rows=sum(m.added_failed for m in mine),
        computed=computed,
        cached=cached,
        step_seconds={k: round(v, 3) for k, v in step_seconds.items()},
        prompt_version=prompts.version,
        seconds=round(time.perf_counter() - started, 3),
    )
    if summary.new_rows:  # only a changed dataset is news
        labels = readiness_labels(markers, last_training(store), train_min_new_rows)
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
    build_artifacts(summary, mine, progress_id)
    return summary
