"""The build-dataset flow on Prefect's test harness (a real temporary server): rows for good and bad
videos, skipping, the step cache, and template edits re-running only the later steps."""

from __future__ import annotations

import json
import shutil

import datasets
import pytest

from tests.conftest import make_manifest_videos
from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.foley_core.manifest import read_manifest
from v2t_foley.foley_core.prompts import default_prompt_dir
from v2t_foley.foley_core.schema import validate_script
from v2t_foley.foley_core.schema.rows import row_events, row_script
from v2t_foley.foley_core.store import DatasetStore

BAD = ("missing", "empty", "not_a_video", "corrupt")
CHAIN_STEPS = {"sample", "propose", "identify", "reason", "synthesize", "validate"}
# the shard's task runs: one per step, the model's steps one pipeline together
STEP_TASKS = {"sample", "propose", "identify+reason+synthesize", "validate"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, bad_videos, prefect_harness):
    """One first run over 3 good videos, 4 bad files and a blank manifest row."""
    root = tmp_path_factory.mktemp("factory")
    manifest, durations = make_manifest_videos(root / "videos", {k: bad_videos[k] for k in BAD})
    store = str(root / "store")
    summary = build_dataset(manifest=manifest, store=store, model="tiny-random", shard_size=3)
    return root, manifest, store, durations, summary


def rows_by_id(store: str) -> dict[str, dict]:
    loaded = datasets.load_dataset(store)  # through the dataset card
    return {row["id"]: row for split in loaded.values() for row in split}


def test_every_video_gets_its_row(built):
    _root, _manifest, store, durations, summary = built
    assert (summary.new_rows, summary.new_ok_rows, summary.new_failed_rows) == (8, 3, 5)
    assert summary.shards == 3
    rows = rows_by_id(store)
    assert set(rows) == set(durations) | {f"bad-{k}" for k in BAD} | {"bad-blank"}
    for row_id, duration in durations.items():
        row = rows[row_id]
        assert row["status"] == "ok" and row["error"] == ""
        validate_script(row_script(row), duration)
        assert row["duration"] == pytest.approx(duration) and len(row["sha256"]) == 64
        trace = json.loads(row["trace"])
        steps = [c["step"] for c in trace["calls"]]
        assert steps[0] == "describe" and steps[-1] == "synthesize"  # measured timing: one per window
        assert steps.count("describe") == steps.count("reason") == len(trace["events"])
        assert len(row_events(row)) == len(trace["events"])
        assert json.loads(row["metadata"])["take"] in ("0", "1", "2")
        assert row["model_id"] == "tiny-random" and row["prompt_version"] == summary.prompt_version
    for reason in BAD:
        row = rows[f"bad-{reason}"]
        assert row["status"] == "failed" and row["error_kind"] == reason and row["script"] is None
        assert row["video"] in row["error"]
    assert rows["bad-blank"]["error_kind"] == "manifest_row"
    assert rows["good2"]["split"] == "test"


def test_the_runs_artifacts_are_on_the_server(built):
    """What the Prefect UI shows, read back from the server with Prefect's own client: the build's
    table names every shard it added with its rows, and its progress artifact of the same flow run
    reached 100 %."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    _root, _manifest, store, _durations, summary = built

    async def read(**filters):
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(**filters))

    tables = asyncio.run(read(key=ArtifactFilterKey(any_=["foley-build-shards"])))
    (table,) = [a for a in tables if a.description == f"build-dataset {summary.run_id}"]
    shards = json.loads(table.data) if isinstance(table.data, str) else table.data
    markers = DatasetStore(store).markers()
    assert sorted((s["marker"], s["rows"]) for s in shards) == sorted((m.name, m.rows) for m in markers)
    assert sum(s["rows"] for s in shards) == summary.new_rows == 8
    same_run = asyncio.run(read(flow_run_id=ArtifactFilterFlowRunId(any_=[table.flow_run_id])))
    progress = [a for a in same_run if a.type == "progress"]
    assert progress and all(float(a.data) == 100.0 for a in progress)
    assert f"{summary.new_rows} new rows" in progress[-1].description


def test_the_summary_and_each_shards_table_say_where_the_time_went(built):
    """Each step's wall time, summed over the shards, in the build's summary and, per shard, in the
    table artifact the Prefect UI shows (read back with Prefect's client): every step of the graph,
    within the build's own wall time."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _root, _manifest, _store, _durations, summary = built
    assert set(summary.step_seconds) == STEP_TASKS
    assert all(s > 0 for s in summary.step_seconds.values())
    assert sum(summary.step_seconds.values()) < summary.seconds

    async def read():
        async with get_client() as client:
            filters = ArtifactFilter(key=ArtifactFilterKey(any_=["foley-shard-summary"]))
            return await client.read_artifacts(artifact_filter=filters)

    mine = [a for a in asyncio.run(read()) if a.description.endswith(f" of build-dataset {summary.run_id}")]
    assert len(mine) == summary.shards
    rows = [row for a in mine for row in (json.loads(a.data) if isinstance(a.data, str) else a.data)]
    per_step = {step: sum(row.get(f"seconds_{step}", 0.0) for row in rows) for step in STEP_TASKS}
    assert per_step == pytest.approx(summary.step_seconds, abs=0.001 * summary.shards)


def test_rerun_skips_everything_and_still_sets_the_license(built):
    """A rerun with nothing new writes no shard, yet a license given to it reaches the card (read back
    with huggingface_hub's card parser)."""
    from huggingface_hub import DatasetCard

    _root, manifest, store, _durations, _summary = built
    again = build_dataset(
        manifest=manifest, store=store, model="tiny-random", shard_size=3, license_id="cc-by-4.0"
    )
    assert (again.new_rows, again.skipped, again.shards) == (0, 8, 0)
    assert again.computed == {} and again.cached == {}
    assert len(rows_by_id(store)) == 8
    assert DatasetCard.load(f"{store}/README.md").data.license == "cc-by-4.0"


def test_fresh_store_same_cache_makes_no_model_call(built, tmp_path):
    _root, manifest, store, _durations, _summary = built
    other = str(tmp_path / "store2")
    again = build_dataset(
        manifest=manifest, store=other, model="tiny-random", shard_size=3, result_storage=f"{store}/_cache"
    )
    assert again.computed == {}  # every chain step came from the cache
    assert set(again.cached) == CHAIN_STEPS
    first, second = rows_by_id(store), rows_by_id(other)
    for row_id in ("good0", "good1", "good2"):
        assert second[row_id]["script"] == first[row_id]["script"]


def test_editing_one_template_reruns_that_step_and_later_only(built, tmp_path):
    _root, manifest, store, _durations, _summary = built
    prompts = tmp_path / "prompts"
    shutil.copytree(default_prompt_dir(), prompts, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = prompts / "synthesize.txt"
    path.write_text(path.read_text() + "\nKeep every description under ten words.")
    again = build_dataset(
        manifest=manifest,
        store=str(tmp_path / "store3"),
        model="tiny-random",
        shard_size=3,
        result_storage=f"{store}/_cache",
        prompts_dir=str(prompts),
    )
    assert again.computed == {"synthesize": 3, "validate": 3}
    assert set(again.cached) == {"sample", "propose", "identify", "reason"}


def test_limit_and_retry_failed(built, tmp_path):
    _root, manifest, store, _durations, _summary = built
    limited = build_dataset(
        manifest=manifest,
        store=str(tmp_path / "s"),
        model="tiny-random",
        limit=2,
        result_storage=f"{store}/_cache",
    )
    assert limited.new_rows == 2
    retried = build_dataset(
        manifest=manifest, store=store, model="tiny-random", retry_failed=True, shard_size=10
    )
    assert retried.new_rows == 5 and retried.new_failed_rows == 5  # the bad ones again, nothing else
    # the retried failures replaced the old ones: still one row per video
    rows = DatasetStore(store).read_rows()
    assert len(rows) == len({r["id"] for r in rows}) == len(read_manifest(manifest))
    assert {r["run_id"] for r in rows if r["status"] == "failed"} == {retried.run_id}
