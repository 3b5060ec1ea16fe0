"""The GPU slot (tasks/gpu.py) that a process-shards run holds for hours, on a real `prefect server
start`: the server goes away while a process holds the slot on a short lease, its renewals fail, and
the process goes on to its end rather than being cancelled mid-shard."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import prefect_server

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

# The server takes leases of 60 s at least, renewed at three quarters, and a client retries a request
# five times: the renewal is brought forward to 3 s (Prefect's own fraction, set in the holding process
# only) and the client's retries are off, so the renewal gives up in seconds, not minutes.
HOLD = """
import time
from prefect.concurrency import _leases
from v2t_foley.tasks import gpu
gpu.SLOT_LEASE_S = 60.0
_leases._RENEWAL_FRACTION = 0.05
with gpu.gpu_slot():
    print("held", flush=True)
    for _ in range(50):  # a shard's work
        time.sleep(0.5)
    print("went on to its end", flush=True)
"""


def test_a_held_gpu_slot_outlives_its_server_going_away(tmp_path):
    with prefect_server(tmp_path / "home", tmp_path / "server.log") as (_url, env):
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD],
            cwd=REPO,
            env={**env, "WORKER_ID": "slot-lapse", "PREFECT_CLIENT_MAX_RETRIES": "0"},  # fail in seconds
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        said, deadline = [], time.monotonic() + 120
        while "held" not in said and time.monotonic() < deadline and holder.poll() is None:
            said.append(holder.stdout.readline().strip())
        assert "held" in said, "\n".join(said)
    try:  # the server is stopped now, before the slot's first renewal
        out, _ = holder.communicate(timeout=120)
    finally:
        holder.kill()
    assert "Concurrency lease renewal failed" in out, out  # the renewals did fail
    assert "went on to its end" in out, out
