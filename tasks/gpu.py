"""The GPU concurrency limit: one model per worker machine at a time.

A process-shard run started by a worker holds one slot of the global concurrency limit `gpu:<worker>`
while it uses its model, so two flow runs on one GPU worker never run two models at once. A
process-shards run that takes other runs' shards holds it from its start to its end (its process keeps
the model between shards); a shard inside it takes none more: the slot is the process's. The worker is
named by `WORKER_ID` (default: the host name); `FOLEY_GPU_SLOTS` sets the limit (default 1) when it is
created. Inside a process, one batching thread owns the model (foley_core.backends.batching), so a
local run (one process, no worker) needs no limit and takes none.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def gpu_limit_name() -> str:
    return f"gpu:{os.environ.get('WORKER_ID') or socket.gethostname()}"


def ensure_limit(name: str, slots: int) -> None:
    """Create the limit if this worker has none yet (racing workers are fine)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


_holding = threading.Event()  # set while this process holds its slot
SLOT_LEASE_S = 300.0  # the slot is a lease on the Prefect server, renewed at three quarters of it while
# its run lives: the server frees a crashed run's slot once it lapses


@contextmanager
def gpu_slot(enabled: bool = True) -> Iterator[None]:
    """Hold one slot of this worker's GPU limit (a no-op when `enabled` is False, or when this process
    holds the slot already: a second slot would wait for the first, held by this same process)."""
    if not enabled or _holding.is_set():
        yield
        return
    name = gpu_limit_name()
    ensure_limit(name, int(os.environ.get("FOLEY_GPU_SLOTS", "1")))
    # A run holds its slot for hours. Prefect's renewal gives up after three tries in ~20 s (its server
    # restarting, say) and would then cancel the run mid-shard; the lapse it guards against (a second
    # holder of this worker's slot) needs a second process of the same worker name, which `--limit 1`
    # keeps away, so the run goes on, warned.
    with concurrency(
        name, occupy=1, strict=True, lease_duration=SLOT_LEASE_S, raise_on_lease_renewal_failure=False
    ):
        _holding.set()
        try:
            yield
        finally:
            _holding.clear()


def started_by_worker() -> bool:
    """This process is a flow run a Prefect worker started (workers set PREFECT__FLOW_RUN_ID)."""
    return bool(os.environ.get("PREFECT__FLOW_RUN_ID"))
