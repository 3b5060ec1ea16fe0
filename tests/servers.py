"""Real servers for tests, bound to 127.0.0.1 and stopped by PID: moto's S3 server and a Prefect server."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerExited(RuntimeError):
    """The server ended before it answered (its port taken between our probe and its bind, say)."""


def wait_http(url: str, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerExited(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"no answer from {url} within {timeout} s")


def start_server(
    command: Callable[[int], list[str]],
    health: str,
    timeout: float,
    log: Path,
    env: Callable[[int], dict[str, str]] | None = None,
) -> tuple[subprocess.Popen, int]:
    """A server started on a free port of 127.0.0.1 in its own session (`command` and `env` for that
    port), once it answers `health` (a URL with `{port}`); a port taken by another process between the
    probe and the server's bind gets another try on a new port."""
    for attempt in itertools.count(1):
        port = free_port()
        with open(log, "a") as out:
            process = subprocess.Popen(
                command(port),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else env(port),
                start_new_session=True,
            )
        try:
            wait_http(health.format(port=port), timeout, process)
            return process, port
        except ServerExited:
            with contextlib.suppress(ProcessLookupError):  # what it started, if anything
                os.killpg(process.pid, signal.SIGKILL)
            if attempt == 3:
                raise
        except BaseException:
            stop(process)
            raise


def stop(process: subprocess.Popen) -> None:
    """Stop a server started in its own session, with everything it started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@contextlib.contextmanager
def moto_s3(log: Path) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1; yields its endpoint URL.

    s3fs caches filesystem instances (with the endpoint they were made with) per process: the cache is
    cleared on the way in and out, so no test reaches another test's stopped server."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    process, port = start_server(
        lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        "http://127.0.0.1:{port}/moto-api/",
        60,
        log,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        stop(process)


class S3Bucket(NamedTuple):
    endpoint: str  # moto's URL
    env: dict[str, str]  # the AWS_* variables that point boto/s3fs at it (also set in this process)
    fs: Any  # an s3fs filesystem on it


@contextlib.contextmanager
def moto_bucket(log: Path, bucket: str, patch: Any) -> Iterator[S3Bucket]:
    """moto's S3 server with `bucket` made, and the AWS_* variables set through `patch` (a pytest
    MonkeyPatch) so that every s3fs made in this process, or in a child given `env`, reaches it."""
    import fsspec

    with moto_s3(log) as endpoint:
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        for name, value in env.items():
            patch.setenv(name, value)
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(bucket)
        yield S3Bucket(endpoint, env, fs)


@contextlib.contextmanager
def prefect_server(home: Path, log: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`prefect server start` on 127.0.0.1 with its own database; yields its API URL and the env to use."""

    def env_for(port: int) -> dict[str, str]:
        return {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "DO_NOT_TRACK": "1",
        }

    process, port = start_server(
        lambda port: [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        "http://127.0.0.1:{port}/api/health",
        120,
        log,
        env_for,
    )
    env = env_for(port)
    try:
        yield env["PREFECT_API_URL"], env
    finally:
        stop(process)
