"""Progress of a local run, for the CLI's progress bar.

Flows report what happened to each video here; a CLI running the flow in its own process listens. In a
deployment run nobody listens and reports cost nothing (Prefect's logs and UI show progress there).
"""

from __future__ import annotations

from collections.abc import Callable

Listener = Callable[[str, dict], None]
_listeners: list[Listener] = []


def listen(listener: Listener) -> None:
    _listeners.append(listener)


def stop_listening(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def report(kind: str, **data) -> None:
    """kind: "planned" (total=N), "video" (status=ok|failed, id=...), "shard" (index, rows)."""
    for listener in list(_listeners):
        listener(kind, data)


class BuildProgress:
    """Counts of a build as its reports arrive: videos done/total, ok/failed, rate and ETA."""

    def __init__(self) -> None:
        import time

        self._clock = time.monotonic
        self.started = self._clock()
        self.total: int | None = None
        self.skipped = 0
        self.ok = 0
        self.failed = 0

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def update(self, kind: str, data: dict) -> None:
        if kind == "planned":
            self.total, self.skipped = data["total"], data.get("skipped", 0)
            self.started = self._clock()
        elif kind == "video":
            if data.get("status") == "ok":
                self.ok += 1
            else:
                self.failed += 1

    def per_second(self) -> float:
        return self.done / max(self._clock() - self.started, 1e-6)

    def rate(self) -> str:
        per_s = self.per_second()
        if not self.done:
            return ""
        return f"{per_s:.2f} videos/s" if per_s >= 1 / 60 else f"{60 / per_s:.0f} s/video"

    def eta_s(self) -> float | None:
        if not self.done or self.total is None:
            return None
        return max(self.total - self.done, 0) / self.per_second()

    def line(self, kind: str, data: dict) -> str:
        """One plain line for a log (no terminal): the plan, or a shard done and where the build is."""
        if kind == "planned":
            return (
                f"planned: {data['total']} videos to process ({data.get('skipped', 0)} already in the store)"
            )
        eta = self.eta_s()
        total = "?" if self.total is None else self.total
        return (
            f"shard {data['index']}: {data['rows']} rows | videos {self.done}/{total} "
            f"({self.ok} ok, {self.failed} failed) | {self.rate() or '-'} | "
            f"ETA {'-' if eta is None else f'{eta:.0f} s'}"
        )
