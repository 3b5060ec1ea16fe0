"""How the runs of a build share its shards, through files in the store (local disk or S3).

The build writes each shard's entries into its run folder (`_runs/<run>/<n>.jsonl`) and removes the
folder when it ends. A run claims a shard by a lease beside them (`<n>.lease.json`: compare-and-swap,
renewed while held, foley_core/store/lease.py), so one run works on it at a time, and marks it
finished there (`<n>.done`, its error inside when it failed), so no run takes it again.

`claimed_shards` is the order a run takes shards in: its own, then any other no run has taken, then,
while shards are unmarked, any whose run crashed, once that run's lease lets go (120 s after its last
renewal, at once when the taker runs on the dead process's machine). A shard two runs left unfinished
is marked failed rather than taken a third time (`check_takeover`). A run that stops taking shards
(its process looks broken) notes it (`stopped.<machine>.<token>`); once two have on one machine, the
build's later runs there take nothing (`stops_here`), so a broken machine does not go through the
build's shards a fresh run at a time.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator

from prefect import get_run_logger

from v2t_foley.foley_core.errors import FoleyError
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.store.lease import Lease, LeaseLost
from v2t_foley.tasks.gpu import machine_name

CLAIM_TTL_S = 120.0  # a claim's time to live: renewed every third of it while its run works on the shard
SWEEP_POLL_S = 30.0  # how often, give or take half, a run that has passed over every shard looks again
# for one whose run crashed: one listing of the run folder and a read of each held shard's lease. The
# claim's expiry sets how soon a crashed run's shard can be taken; jitter keeps runs apart.
SWEEP_WAIT_S = 1800.0  # how long a run waits with no shard to take before it ends anyway: a run that
# holds its shard that long while renewing is hung, and the others should not hold their GPUs for it
SWEEP_ERRORS_IN_A_ROW = 5  # failed looks in a row (a slow or throttling store) that end a run's waiting


class ShardKillsItsRuns(FoleyError):
    """Two runs left a shard unfinished (their process ended, or their claim lapsed): not taken again."""


def run_folder(run_id: str) -> str:
    """The build's folder in its store: the shards' entries, leases and marks (removed at the end)."""
    return f"_runs/{run_id}"


def _shard_file(run_id: str, index: int, kind: str) -> str:
    """Store-relative path of shard `index`'s file of `kind`: `jsonl` (its entries), `lease.json` (its
    claim), `done` (its mark), `crashed` (a run's process ended while working on it)."""
    return f"{run_folder(run_id)}/{index:05d}.{kind}"


def shard_manifest(dataset: DatasetStore, run_id: str, index: int) -> str:
    """The URI of shard `index`'s entries (flow-run parameters stay small)."""
    return dataset.url(_shard_file(run_id, index, "jsonl"))


def _fresh(dataset: DatasetStore, run_id: str) -> None:
    """Forget what the filesystem cached of the build's folder: other runs write marks into it (s3fs
    answers `exists` from its listings cache)."""
    dataset.fs.invalidate_cache(dataset.path(run_folder(run_id)))


def build_ended(dataset: DatasetStore, run_id: str, index: int) -> bool:
    """Whether the build has removed shard `index`'s entries (it ended, or stopped): nothing to take.
    (The entries, not the folder: on S3 a mark written late would make the folder seem to exist.)"""
    _fresh(dataset, run_id)
    return not dataset.fs.exists(dataset.path(_shard_file(run_id, index, "jsonl")))


def _listing(dataset: DatasetStore, run_id: str) -> tuple[set[int], set[int]]:
    """The shards with a mark and those with entries, from one listing of the build's folder (a few
    requests on S3 for thousands of shards, where a look at each shard is one); none once it ended."""
    try:
        listed = dataset.fs.ls(dataset.path(run_folder(run_id)), detail=False, refresh=True)
    except FileNotFoundError:
        return set(), set()
    found: dict[str, set[int]] = {"done": set(), "jsonl": set()}
    for name in listed:
        stem, _, kind = str(name).rsplit("/", 1)[-1].partition(".")
        if kind in found and stem.isdigit():
            found[kind].add(int(stem))
    return found["done"], found["jsonl"]


def marked(dataset: DatasetStore, run_id: str) -> set[int]:
    """The shards of the build with a mark (none once the build ended)."""
    return _listing(dataset, run_id)[0]


def unfinished(dataset: DatasetStore, run_id: str, shards: int) -> list[int]:
    """The shards of the build without a mark."""
    done = marked(dataset, run_id)
    return [index for index in range(shards) if index not in done]


def failed_marks(dataset: DatasetStore, run_id: str) -> dict[int, str]:
    """The marked shards that failed, with their errors (read at the build's end: a run that marked a
    shard failed may have crashed later, and no run state says so then). A mark that cannot be read is
    named as such: a failure must not pass unseen."""
    paths = [dataset.path(_shard_file(run_id, index, "done")) for index in sorted(marked(dataset, run_id))]
    contents = dataset.fs.cat(paths, on_error="return") if paths else {}
    errors: dict[int, str] = {}
    for path, raw in contents.items():
        index = int(str(path).rsplit("/", 1)[-1].partition(".")[0])
        if isinstance(raw, FileNotFoundError):  # listed, then gone: the build's folder is being removed
            continue
        try:
            if isinstance(raw, Exception):
                raise raw
            error = json.loads(raw)["error"]
        except Exception as unreadable:  # a read that failed, a torn write
            error = f"its mark could not be read ({type(unreadable).__name__}: {unreadable})"
        if error:
            errors[index] = error
    return dict(sorted(errors.items()))


def claim(dataset: DatasetStore, run_id: str, index: int, *, looked: bool = False) -> Lease | None:
    """The lease on shard `index` when this run may work on it now: not finished, not held by a live run
    (None otherwise). Release it when the shard is finished (`finish`) or given up. `looked`: a listing
    just showed it unmarked (no need to look before the claim; it is looked at after)."""
    mark = dataset.path(_shard_file(run_id, index, "done"))
    if not looked:
        _fresh(dataset, run_id)
        if dataset.fs.exists(mark):
            return None
    lease_file = dataset.path(_shard_file(run_id, index, "lease.json"))
    lease = Lease(dataset.fs, lease_file, f"shard {index} of build {run_id}", ttl_s=CLAIM_TTL_S)
    if not lease.try_acquire():
        return None
    try:
        _fresh(dataset, run_id)
        finished = dataset.fs.exists(mark)  # between the look and the claim
    except BaseException:
        lease.release()  # not left renewing a claim nobody works on
        raise
    if finished:
        lease.release()
        return None
    return lease


def claimed_shards(
    dataset: DatasetStore, run_id: str, indexes: list[int], shard_count: int
) -> Iterator[tuple[int, Lease]]:
    """The shards of build `run_id` this run works on, in order, each with its claim (release it once the
    shard is `finish`ed or given up): `indexes` first; with `shard_count`, then every other shard no run
    has taken; then, while shards are left without a mark, any whose run crashed, taken over once its
    lease lets go (`_take_over`). Ends when the build ends.
    """
    mine = set(indexes)
    seen: set[int] | None = None  # the shards marked at the last listing
    for index in [*indexes, *(i for i in range(shard_count) if i not in mine)]:
        if index not in mine:  # another run's: skip those a listing shows finished, unlooked at
            seen = marked(dataset, run_id) if seen is None else seen
            if index in seen:
                continue
        if build_ended(dataset, run_id, index):
            get_run_logger().warning("build %s has ended (its shard files are gone): nothing to take", run_id)
            return
        seen = None  # a claim, and a shard, take time: list again before the next of the others'
        shard = claim(dataset, run_id, index)
        if shard is not None:  # None: finished, or another run's
            yield index, shard
    if shard_count:
        yield from _take_over(dataset, run_id)


def _take_over(dataset: DatasetStore, run_id: str) -> Iterator[tuple[int, Lease]]:
    """Once a run has passed over every shard: while shards are unmarked, look every `SWEEP_POLL_S` for
    one whose claim has let go, and take it. So a crashed run's shard is finished within the build, not
    left to a rerun; the run would otherwise idle anyway, since the build waits for its last shard. A
    look that fails is tried again at the next; after `SWEEP_ERRORS_IN_A_ROW` the run stops looking
    (a slow store should not fail a run that has its work done: the build names what is left). Ends
    when every shard is marked, the build ended, or after `SWEEP_WAIT_S` with nothing taken."""
    logger = get_run_logger()
    idle_since = time.monotonic()
    errors = 0
    waited_for: set[int] = set()
    while True:
        try:
            done, entries = _listing(dataset, run_id)
            left = sorted(entries - done)  # those with entries: a build removing its folder shows fewer
            taken = _first_claim(dataset, run_id, left)
        except Exception as error:  # s3fs and botocore raise many kinds: counted, and the run stops
            errors += 1
            logger.warning("could not look for shards left (%d in a row): %s", errors, error)
            if errors == SWEEP_ERRORS_IN_A_ROW:
                return
            time.sleep(SWEEP_POLL_S * random.uniform(0.5, 1.5))
            continue
        errors = 0
        if not entries:
            logger.info("build %s has ended (its shard files are gone): nothing to take", run_id)
            return
        if not left:
            return
        if taken is not None:
            yield taken
            idle_since = time.monotonic()
            continue
        if time.monotonic() - idle_since > SWEEP_WAIT_S:
            logger.warning("shard(s) %s still held after %.0f s: not waited for longer", left, SWEEP_WAIT_S)
            return
        if not set(left) <= waited_for:  # said once per shard, not at every mark
            logger.info("waiting for shard(s) %s: other runs hold them (taken over if one crashed)", left)
            waited_for |= set(left)
        time.sleep(SWEEP_POLL_S * random.uniform(0.5, 1.5))


def _first_claim(dataset: DatasetStore, run_id: str, left: list[int]) -> tuple[int, Lease] | None:
    """The first of `left` (shards a listing just showed unmarked) this run can claim now, claimed."""
    for index in left:
        shard = claim(dataset, run_id, index, looked=True)
        if shard is not None:
            return index, shard
    return None


def check_takeover(dataset: DatasetStore, run_id: str, index: int, shard: Lease) -> None:
    """Note that claim `shard` took shard `index` over from a run that left it unfinished (its process
    ended, or stopped renewing its claim past the expiry: a frozen machine looks the same) in
    `<n>.crashed`; the second time, raise ShardKillsItsRuns: a shard two runs' processes died on
    likely kills its process itself (a video that runs the host out of memory, say), and taking it
    again and again would crash every run of the build in turn. A store error here counts as no note
    (the shard is worth doing more than the count is worth keeping)."""
    if shard.left_by is None:
        return
    logger = get_run_logger()
    left_by = shard.left_by.describe()
    note = dataset.path(_shard_file(run_id, index, "crashed"))
    try:
        _fresh(dataset, run_id)
        noted = dataset.fs.exists(note)
    except Exception as error:  # s3fs and botocore raise many kinds
        logger.warning("shard %d: could not look for an earlier takeover: %s", index, error)
        return
    if noted:
        raise ShardKillsItsRuns(
            f"two runs left it unfinished (their process ended, or their claim lapsed; the last: {left_by});"
            " not taken a third time (a rerun of the build tries it again)"
        )
    logger.warning("shard %d: taken over from a run that left it unfinished: %s", index, left_by)
    try:
        if not build_ended(dataset, run_id, index):  # a late note would bring the removed folder back on S3
            with dataset.fs.open(note, "w") as handle:
                handle.write(json.dumps({"left_by": left_by}))
    except Exception as error:
        logger.warning("shard %d: could not note the takeover: %s", index, error)


def finish(
    dataset: DatasetStore, run_id: str, index: int, error: str | None = None, shard: Lease | None = None
) -> None:
    """Mark shard `index` finished (committed, or failed after its retry with `error`): taken by no
    run again. Nothing is written once the build has ended (its shard files are gone), nor when claim
    `shard` was taken over meanwhile (this run's renewals lapsed: a frozen machine): the run that took
    it marks it. The claim is renewed to know, a compare-and-swap."""
    if shard is not None:
        try:
            shard.renew()
        except LeaseLost:
            get_run_logger().warning("shard %d: its claim was taken over while this run worked on it", index)
            return
    if not build_ended(dataset, run_id, index):
        with dataset.fs.open(dataset.path(_shard_file(run_id, index, "done")), "w") as handle:
            handle.write(json.dumps({"error": error}))


STOPS_PER_MACHINE = 2  # runs of a build that stopped on one machine before its later runs take nothing:
# one stop may be its process (a fresh one starts clean); two say the machine (its GPU, its disk)


def note_stop(dataset: DatasetStore, run_id: str, why: str) -> None:
    """Note in the build's folder that a run on this machine stopped taking shards, and why (best effort:
    the run's own failure says it too)."""
    note = f"{run_folder(run_id)}/stopped.{machine_name()}.{uuid.uuid4().hex[:12]}"
    try:
        if not build_ended(dataset, run_id, 0):  # shard 0's entries: every build has them
            dataset.fs.pipe(dataset.path(note), json.dumps({"why": why}).encode())
    except Exception as error:  # s3fs and botocore raise many kinds
        get_run_logger().warning("could not note this run's stop in the build's folder: %s", error)


def stops_here(dataset: DatasetStore, run_id: str) -> int:
    """How many of the build's runs on this machine stopped taking shards (`note_stop`)."""
    try:
        listed = dataset.fs.ls(dataset.path(run_folder(run_id)), detail=False, refresh=True)
    except FileNotFoundError:
        return 0
    names = (str(name).rsplit("/", 1)[-1] for name in listed)
    return sum(
        name.startswith("stopped.") and name.removeprefix("stopped.").rpartition(".")[0] == machine_name()
        for name in names
    )
