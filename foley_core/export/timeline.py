"""OpenTimelineIO timelines: the video on a video track, one audio track per script track.

A cue becomes a clip on its track (a placeholder for the sound to make, `MissingReference`) at the video's
frame rate; a cue that overlaps the one before it on its track, or lasts no whole frame, becomes a marker
on that track instead. Every clip and marker carries `metadata["v2t_foley"]` (track, index, event,
description). `edl` (CMX 3600) and `fcp7` (FCP 7 XML) are written from the same timeline through OTIO's
adapters (packages `otio-cmx3600-adapter`, `otio-fcp-adapter`).
"""

from __future__ import annotations

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.export.base import ExportOptions, ExportReport, item_fps, out_file
from v2t_foley.foley_core.export.source import ExportItem, Skipped
from v2t_foley.foley_core.schema.script import TRACKS

ADAPTERS = {
    "edl": ("cmx_3600", ".edl", "otio-cmx3600-adapter"),
    "fcp7": ("fcp_xml", ".xml", "otio-fcp-adapter"),
}


def build_timeline(item: ExportItem, fps: float):
    import opentimelineio as otio

    def t(frames: int):
        return otio.opentime.RationalTime(frames, fps)

    def span(first: int, frames: int):
        return otio.opentime.TimeRange(t(first), t(frames))

    ends = [c.end for _, c in item.script.cues()]
    duration = item.duration or max(ends, default=1.0)
    total = max(1, round(duration * fps))
    timeline = otio.schema.Timeline(name=item.id)
    timeline.global_start_time = t(0)
    video = otio.schema.Track(name="video", kind=otio.schema.TrackKind.Video)
    if item.video:
        reference = otio.schema.ExternalReference(target_url=item.shown_video, available_range=span(0, total))
    else:
        reference = otio.schema.MissingReference()
    video.append(otio.schema.Clip(name=item.id, media_reference=reference, source_range=span(0, total)))
    timeline.tracks.append(video)
    for name in TRACKS:
        track = otio.schema.Track(name=name, kind=otio.schema.TrackKind.Audio)
        cursor = 0
        for k, cue in enumerate(item.script.track(name)):
            first, last = round(cue.start * fps), round(cue.end * fps)
            meta = {
                "v2t_foley": {
                    "track": name,
                    "index": k,
                    "event": cue.event,
                    "description": cue.description,
                    "start": cue.start,
                    "end": cue.end,
                }
            }
            label = f"[{name.upper()}] {cue.description}"
            if last > first and first >= cursor:
                if first > cursor:
                    track.append(otio.schema.Gap(source_range=span(0, first - cursor)))
                track.append(
                    otio.schema.Clip(
                        name=label,
                        media_reference=otio.schema.MissingReference(),
                        source_range=span(0, last - first),
                        metadata={**meta, "cmx_3600": {"reel": f"{name[:3].upper()}{k:03d}"}},
                    )
                )
                cursor = last
            else:
                track.markers.append(
                    otio.schema.Marker(
                        name=label, marked_range=span(first, max(0, last - first)), metadata=meta
                    )
                )
        timeline.tracks.append(track)
    return timeline


def export_otio(items: list[ExportItem], options: ExportOptions, report: ExportReport) -> None:
    import opentimelineio as otio

    for item in items:
        path = out_file(options, item.id, ".otio")
        path.parent.mkdir(parents=True, exist_ok=True)
        otio.adapters.write_to_file(build_timeline(item, item_fps(item, options, report)), str(path))
        report.files.append(path.name)
        report.items += 1


def export_adapter(kind: str, items: list[ExportItem], options: ExportOptions, report: ExportReport) -> None:
    import opentimelineio as otio

    adapter, suffix, package = ADAPTERS[kind]
    if adapter not in otio.adapters.available_adapter_names():
        raise InputError(f"format {kind!r} needs OTIO's {adapter} adapter: pip install {package}")
    for item in items:
        fps = item_fps(item, options, report)
        timeline = build_timeline(item, fps)
        if kind == "edl":
            # CMX 3600 holds a video track and at most two audio tracks: one EDL per script track, for
            # the tracks with an event (a clip) to list; an EDL of none is no EDL
            parts = [(f".{t.name}", _only(timeline, t.name)) for t in _audio(timeline) if _has_clip(t)]
            if not parts:
                why = "no cue lasts a whole frame" if item.script.cues() else "the script has no cue"
                report.skipped.append(Skipped(item.id, f"edl: {why}: no event to list"))
                continue
        else:
            parts = [("", timeline)]
        for tag, part in parts:
            path = out_file(options, item.id, tag + suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                otio.adapters.write_to_file(part, str(path), adapter_name=adapter)
            except ValueError as error:  # e.g. a frame rate SMPTE timecode lacks
                path.unlink(missing_ok=True)
                report.skipped.append(
                    Skipped(
                        item.id,
                        f"{kind}: {error} (timecode at {fps:g} fps; SMPTE timecode runs at 23.976, 24, 25, "
                        "29.97, 30, 50, 59.94 or 60: pass --fps with one of them)",
                    )
                )
                break
            report.files.append(path.name)
        else:
            report.items += 1


def _audio(timeline):
    import opentimelineio as otio

    return [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Audio]


def _has_clip(track) -> bool:
    import opentimelineio as otio

    return any(isinstance(child, otio.schema.Clip) for child in track)


def _only(timeline, track_name: str):
    """A timeline of one script track's cues for CMX 3600, which lists the events of one picture track
    only: the cue track is that track (each cue an event; its name in the `FROM CLIP NAME` comment)."""
    import opentimelineio as otio

    part = otio.schema.Timeline(name=f"{timeline.name} {track_name}")
    part.global_start_time = timeline.global_start_time
    track = next(t for t in timeline.tracks if t.name == track_name).deepcopy()
    track.kind = otio.schema.TrackKind.Video
    part.tracks.append(track)
    return part
