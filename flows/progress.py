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
