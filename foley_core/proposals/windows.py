"""Candidate event windows from proposals: what the measured chain asks the model about.

Motion spans and audio onsets become windows; an onset at the start of a motion span (within JOIN_S
either side) joins it and becomes its onset, since a sound starts more sharply than movement. Windows
are at least `window_min_s` long and are split beyond `window_max_s`. Speech segments are windows of
their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2t_foley.foley_core.proposals.base import ProposalSet, ProposalSettings

JOIN_S = 0.25  # an onset this close to the start of a motion span belongs to it


@dataclass(frozen=True)
class Window:
    start: float  # seconds
    end: float  # seconds
    onset: float  # the measured onset the cue snaps to
    kind: str  # motion, audio_onset, motion+audio, speech
    strength: float  # for keeping the strongest when there are too many


def candidate_windows(
    proposals: ProposalSet, settings: ProposalSettings | None = None, max_windows: int | None = None
) -> list[Window]:
    settings = settings or ProposalSettings()
    duration = proposals.duration
    windows: list[Window] = []
    onsets = sorted(proposals.onsets, key=lambda p: p.start)
    used: set[int] = set()
    for span in proposals.motion:
        inside = [k for k, o in enumerate(onsets) if abs(o.start - span.start) <= JOIN_S and k not in used]
        if inside:
            used.update(inside)
            onset = onsets[inside[0]].start
            windows.append(
                Window(
                    min(span.start, onset),
                    span.end,
                    onset,
                    "motion+audio",
                    span.strength + max(onsets[k].strength for k in inside),
                )
            )
        else:
            windows.append(Window(span.start, span.end, span.start, "motion", span.strength))
    for k, onset in enumerate(onsets):
        if k not in used:
            windows.append(Window(onset.start, onset.start, onset.start, "audio_onset", onset.strength))
    windows = [piece for w in windows for piece in _fit(w, duration, settings)]
    for speech in proposals.speech:
        windows.append(
            Window(speech.start, min(speech.end, duration), speech.start, "speech", speech.strength)
        )
    if max_windows is not None and len(windows) > max_windows:
        windows = sorted(windows, key=lambda w: -w.strength)[:max_windows]
    return sorted(windows, key=lambda w: (w.start, w.end))


def _fit(window: Window, duration: float, settings: ProposalSettings) -> list[Window]:
    start, end = window.start, max(window.end, window.start + settings.window_min_s)
    end = min(end, duration)
    start = min(start, max(0.0, end - settings.window_min_s))
    pieces = []
    while end - start > settings.window_max_s + 1e-9:
        pieces.append(
            Window(
                start,
                start + settings.window_max_s,
                max(start, window.onset) if not pieces else start,
                window.kind,
                window.strength,
            )
        )
        start += settings.window_max_s
    pieces.append(Window(start, end, window.onset if not pieces else start, window.kind, window.strength))
    return pieces
