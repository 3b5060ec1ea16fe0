"""What sharing a build's shards costs the store, on S3 (moto's server on 127.0.0.1, through s3fs).

    PYTHONPATH=. python3 bench/claim_cost.py --shards 1000 4000 > bench/results/cpu-claim-cost.jsonl

For each shard count: a build's run folder as the runs leave it near its end (every shard's entries,
every shard marked but `--held` of them, each held by a live claim), then
- one look of a run waiting for crashed runs' shards (`_take_over`: one listing, then a claim tried on
  each unmarked shard), three times;
- the build's read of every mark at its end (`failed_marks`).
Requests are counted from moto's own request log (by method), time on the wall clock. moto is not S3:
the request counts carry over, the times do not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REQUEST = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) ')


def requests_since(log: Path, start: int) -> tuple[dict[str, int], int]:
    """Requests moto logged after byte `start` of its log, by method; and the log's end."""
    text = log.read_bytes()
    counts: dict[str, int] = {}
    for method in REQUEST.findall(text[start:].decode(errors="replace")):
        counts[method] = counts.get(method, 0) + 1
    return counts, len(text)


def measure(shards: int, held: int, log: Path) -> dict:
    from v2t_foley.flows import shard_claims
    from v2t_foley.flows.build_dataset import new_run_id
    from v2t_foley.foley_core.store import DatasetStore

    dataset, run_id = DatasetStore("s3://foley/store"), new_run_id()
    folder = dataset.path(shard_claims.run_folder(run_id))
    files = {f"{folder}/{index:05d}.jsonl": b'{"id": "v", "video": "/v.mp4"}\n' for index in range(shards)}
    files |= {f"{folder}/{index:05d}.done": b'{"error": null}' for index in range(held, shards)}
    dataset.fs.pipe(files)
    shard_claims.CLAIM_TTL_S = 3600.0  # no renewal inside the measurement
    claims = [shard_claims.claim(dataset, run_id, index) for index in range(held)]
    assert all(claims), "the held shards could not be claimed"
    looks = []
    for _ in range(3):
        _, start = requests_since(log, 0)
        began = time.perf_counter()
        done, entries = shard_claims._listing(dataset, run_id)
        taken = shard_claims._first_claim(dataset, run_id, sorted(entries - done))
        seconds = time.perf_counter() - began
        assert taken is None, "a held shard was taken"
        counts, _ = requests_since(log, start)
        looks.append({"seconds": round(seconds, 3), "requests": counts})
    _, start = requests_since(log, 0)
    began = time.perf_counter()
    failed = shard_claims.failed_marks(dataset, run_id)
    read_marks = {"seconds": round(time.perf_counter() - began, 3), "requests": requests_since(log, start)[0]}
    assert failed == {}
    for lease in claims:
        lease.release()
    return {
        "shards": shards,
        "held": held,
        "objects_listed": len(files) + held,
        "look": looks,
        "read_every_mark": read_marks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--held", type=int, default=32, help="shards held by live claims (runs at work)")
    args = parser.parse_args()
    import pytest

    from tests.servers import moto_bucket

    patch = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "moto.log"
        try:
            with moto_bucket(log, "foley", patch):
                for shards in args.shards:
                    print(json.dumps(measure(shards, args.held, log)), flush=True)
        finally:
            patch.undo()


if __name__ == "__main__":
    main()
