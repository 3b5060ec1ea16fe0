"""Leases: a mutual-exclusion lock on a store, on local disk or S3, that a crashed holder cannot keep.

A lease is a small JSON object (`_locks/<name>.json`) naming its holder and when it expires. It is
taken and renewed by compare-and-swap, so two processes never both believe they hold it:

- S3 (s3fs): conditional writes. Create with `If-None-Match: *`, renew, take over an expired lease and
  release with `If-Match: <etag>`; the service decides, no clock or host is trusted but one's own.
- local disk: the same steps under an OS file lock (`filelock`) on a guard file beside the lease.

A holder renews its lease from a background thread every third of its time to live. A holder that dies
stops renewing; once its lease expires the next taker takes it over, and at once when the holder was a
process of the same machine (same boot and pid namespace) that no longer exists. A holder whose renewal
fails (it was paused past its expiry and someone took over) marks itself lost, and `check()` raises;
writers call `check()` just before their commit point.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from filelock import FileLock
from fsspec.asyn import sync

from v2t_foley.foley_core.errors import FoleyError

log = logging.getLogger(__name__)


class LeaseLost(FoleyError):
    """This process held a lease and lost it (it stopped renewing past the expiry and was taken over)."""


@dataclass(frozen=True)
class Holder:
    """What a lease says about whoever holds it."""

    token: str  # unique per acquisition
    host: str  # machine of the holder
    pid: int  # process of the holder
    purpose: str  # what the holder is doing, for "store busy" messages
    since: float  # epoch seconds when taken
    expires: float  # epoch seconds; past this anyone may take it over
    machine: str = ""  # boot id + pid namespace: a pid is only comparable on the same machine and namespace

    def gone(self) -> bool:
        """Expired, or held by a process of this machine that no longer exists (killed, crashed): no
        need to wait out the time to live for a holder we can see is dead."""
        if self.expires <= time.time():
            return True
        if not self.machine or self.machine != machine_id() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def describe(self) -> str:
        age = max(0.0, time.time() - self.since)
        return f"{self.purpose} (host {self.host}, pid {self.pid}, for {age:.0f} s)"


def machine_id() -> str:
    """This machine's boot and pid namespace ("" where unknown): containers that share a host name but
    not a pid namespace must not judge each other's processes dead."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


class _Backend:
    """Compare-and-swap on one small object. `version` is an opaque tag (an etag, a content hash)."""

    def read(self) -> tuple[dict[str, Any], str] | None:
        raise NotImplementedError

    def swap(self, expected: str | None, data: dict[str, Any]) -> str | None:
        """Write `data` if the object is at `expected` (None: absent). New version, or None if not."""
        raise NotImplementedError

    def delete(self, expected: str) -> None:
        raise NotImplementedError


class _LocalBackend(_Backend):
    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.guard = FileLock(path + ".guard")

    def _read(self) -> tuple[dict[str, Any], str] | None:
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        return json.loads(raw), hashlib.sha256(raw).hexdigest()

    def read(self) -> tuple[dict[str, Any], str] | None:
        with self.guard:
            return self._read()

    def swap(self, expected: str | None, data: dict[str, Any]) -> str | None:
        raw = json.dumps(data).encode()
        with self.guard:
            current = self._read()
            if (current[1] if current else None) != expected:
                return None
            staging = f"{self.path}.{uuid.uuid4().hex}"
            with open(staging, "wb") as handle:
                handle.write(raw)
            os.replace(staging, self.path)
        return hashlib.sha256(raw).hexdigest()

    def delete(self, expected: str) -> None:
        with self.guard:
            current = self._read()
            if current and current[1] == expected:
                os.remove(self.path)


class _S3Backend(_Backend):
    def __init__(self, fs: Any, path: str) -> None:
        self.fs = fs
        self.bucket, _, self.key = path.partition("/")

    def read(self) -> tuple[dict[str, Any], str] | None:
        async def get() -> tuple[bytes, str]:
            out = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with out["Body"] as body:  # content and etag from one response: no torn read
                return await body.read(), out["ETag"]

        try:
            raw, etag = sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        return json.loads(raw), etag

    def swap(self, expected: str | None, data: dict[str, Any]) -> str | None:
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            out = sync(
                self.fs.loop,
                self.fs._call_s3,
                "put_object",
                Bucket=self.bucket,
                Key=self.key,
                Body=json.dumps(data).encode(),
                **condition,
            )
        except Exception as err:  # 412 Precondition Failed, or 409 for a racing create
            if _is_precondition(err):
                return None
            raise
        self.fs.invalidate_cache(f"{self.bucket}/{self.key}")
        return out["ETag"]

    def delete(self, expected: str) -> None:
        try:
            sync(
                self.fs.loop,
                self.fs._call_s3,
                "delete_object",
                Bucket=self.bucket,
                Key=self.key,
                IfMatch=expected,
            )
        except Exception as err:
            if not (_is_precondition(err) or isinstance(err, FileNotFoundError)):
                raise
        self.fs.invalidate_cache(f"{self.bucket}/{self.key}")


def _is_precondition(err: BaseException) -> bool:
    if isinstance(err, FileExistsError):  # s3fs' translation of 412 Precondition Failed
        return True
    text = f"{type(err).__name__} {err}"
    return any(s in text for s in ("PreconditionFailed", "Precondition Failed", "412", "ConditionalRequest"))


def _backend(fs: Any, path: str) -> _Backend:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return _LocalBackend(path)
    if protocol in ("s3", "s3a"):
        return _S3Backend(fs, path)
    raise FoleyError(
        f"stores on {protocol}:// cannot be locked (no compare-and-swap write); use a local folder or s3://"
    )


class Lease:
    """One named lease on a store. Use `hold()` as a context manager, or `try_acquire` / `release`."""

    def __init__(self, fs: Any, path: str, purpose: str, ttl_s: float = 120.0) -> None:
        self.backend = _backend(fs, path)
        self.purpose = purpose
        self.ttl_s = ttl_s
        self._version: str | None = None
        self._holder: Holder | None = None
        self._lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._renewing = threading.Lock()  # the renewing thread and a holder's own check, one at a time
        # whom the last acquisition took the lease over from (its process died, or stopped renewing
        # past the expiry); None when the lease was free
        self.left_by: Holder | None = None

    def holder(self) -> Holder | None:
        """Who holds the lease now (None when free or expired)."""
        found = self.backend.read()
        if found is None:
            return None
        holder = Holder(**found[0])
        return None if holder.gone() else holder

    def _new_holder(self) -> Holder:
        now = time.time()
        return Holder(
            token=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            purpose=self.purpose,
            since=now,
            expires=now + self.ttl_s,
            machine=machine_id(),
        )

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; never waits."""
        found = self.backend.read()
        holder = self._new_holder()
        if found is not None and not Holder(**found[0]).gone():
            return False
        if found is not None:
            log.warning("taking over a lease its holder left: %s", Holder(**found[0]).describe())
        version = self.backend.swap(found[1] if found else None, holder.__dict__)
        if version is None:
            return False
        self._version, self._holder, self._lost = version, holder, False
        self.left_by = Holder(**found[0]) if found is not None else None
        self._stop.clear()
        # in its creator's context: whoever routes log records by context (a Prefect run's logs,
        # flows/core_logs.py) sees its warnings as the taker's
        context = contextvars.copy_context()
        self._renewer = threading.Thread(
            target=context.run, args=(self._renew_loop,), name="foley-lease", daemon=True
        )
        self._renewer.start()
        return True

    def acquire(self, wait_s: float, poll_s: float = 1.0) -> bool:
        """Take the lease, waiting up to `wait_s` seconds for its holder to finish."""
        deadline = time.monotonic() + wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())) or poll_s)
        return True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except LeaseLost:
                return
            except Exception as err:  # a flaky network: try again next period, before the expiry
                log.warning("could not renew the %s lease: %s", self.purpose, err)

    def renew(self) -> None:
        """Extend the lease by compare-and-swap; raise LeaseLost when another process took it over."""
        with self._renewing:  # two renewals at once would swap from one version: the second "lost"
            if self._holder is None or self._version is None:
                raise LeaseLost(f"the {self.purpose} lease is not held")
            holder = Holder(**{**self._holder.__dict__, "expires": time.time() + self.ttl_s})
            version = self.backend.swap(self._version, holder.__dict__)
            if version is None:
                self._lost = True
                raise LeaseLost(f"the {self.purpose} lease was taken over by another process")
            self._version, self._holder = version, holder

    def check(self) -> None:
        """Raise LeaseLost if the lease was lost, or is about to expire unrenewed (renewals failing):
        the fence before a write that only the holder may make."""
        if self._lost:
            raise LeaseLost(f"the {self.purpose} lease was taken over by another process; stopping")
        holder = self._holder
        if holder is None or time.time() > holder.expires - self.ttl_s / 6:
            raise LeaseLost(f"the {self.purpose} lease could not be renewed in time; stopping")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        if self._version is not None and not self._lost:
            self.backend.delete(self._version)
        self._version = self._holder = None

    @contextmanager
    def hold(self, wait_s: float) -> Iterator[Lease]:
        """Hold the lease for the block; raise StoreBusy naming the holder if not free within `wait_s`."""
        if not self.acquire(wait_s):
            holder = self.holder()
            raise StoreBusy(self.purpose, holder)
        try:
            yield self
        finally:
            self.release()


class StoreBusy(FoleyError):
    """Another process holds the lease; the message names it."""

    def __init__(self, purpose: str, holder: Holder | None) -> None:
        who = holder.describe() if holder else "another process"
        super().__init__(f"the store is busy: {who} holds its {purpose} lease")
        self.holder = holder
