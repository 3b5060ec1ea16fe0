"""Damaged audio costs its own stretch, never the video (issue #8).

Real encoded clips whose audio bytes are overwritten inside the file, at the byte positions PyAV reports
for the audio packets: one packet (the rest of the audio is still measured, on the right clock), or
every packet (the video is still fine, with video-only proposals and a note saying so).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from v2t_foley.foley_core.proposals import propose
from v2t_foley.foley_core.synthetic import SceneSpec, encode_video, scene_audio, scene_frames
from v2t_foley.foley_core.video import open_video

SPEC = SceneSpec(duration=4.0, fps=12.0, cuts=(2.5,), motions=((0.5, 1.5),), clicks=(1.0, 3.0))

# (suffix, audio codec): the AVI + AC3 file of the issue, and the common MP4 + AAC
CLIPS = {"avi-ac3": (".avi", "ac3"), "mp4-aac": (".mp4", "aac")}


def audio_packets(path: Path) -> list[tuple[int, int, float]]:
    """(byte position, size, time) of every audio packet in the file."""
    with av.open(str(path)) as media:
        stream = media.streams.audio[0]
        return [
            (p.pos, p.size, float(p.pts * p.time_base))
            for p in media.demux(stream)
            if p.size and p.pos is not None and p.pos >= 0 and p.pts is not None
        ]


def damage(source: Path, target: Path, packets: list[tuple[int, int, float]]) -> None:
    """Overwrite the bytes of these packets with noise (the container's own bytes are left alone)."""
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(7)
    for pos, size, _time in packets:
        data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))


@pytest.fixture(scope="module", params=list(CLIPS))
def clean(request, tmp_path_factory) -> Path:
    suffix, codec = CLIPS[request.param]
    path = tmp_path_factory.mktemp("audio") / f"clean{suffix}"
    frames = scene_frames(SPEC)
    return encode_video(
        path, frames, SPEC.fps, audio=scene_audio(SPEC), sample_rate=SPEC.sample_rate, audio_codec=codec
    )


def test_one_damaged_packet_is_skipped_and_the_rest_measured(clean, tmp_path):
    packets = audio_packets(clean)
    # a packet between the clicks, so both clicks must still be found, and where they really are
    middle = min(packets, key=lambda p: abs(p[2] - 2.0))
    broken = tmp_path / f"broken{clean.suffix}"
    damage(clean, broken, [middle])
    with av.open(str(broken)) as media, pytest.raises(av.error.FFmpegError):  # really damaged
        for _frame in media.decode(media.streams.audio[0]):
            pass

    video = open_video(str(broken))  # the probe does not reject it
    assert video.info.has_audio and video.info.frame_count == SPEC.n_frames
    assert len(video.uniform(4)) == 4
    proposals = propose(video)
    reference = propose(open_video(str(clean)))

    found = [o.start for o in proposals.onsets]
    assert len(found) == len(SPEC.clicks)
    # the skipped stretch is kept as silence, so the click after it is not pulled earlier
    assert found == pytest.approx([o.start for o in reference.onsets], abs=2e-3)
    assert all(min(abs(f - c) for f in found) <= 1.0 / SPEC.fps for c in SPEC.clicks)
    assert [c.start for c in proposals.cuts] == [c.start for c in reference.cuts]
    (note,) = proposals.notes
    assert note.startswith("audio: 1 damaged packet skipped")
    assert reference.notes == []


def test_audio_that_cannot_be_decoded_leaves_video_only_proposals(clean, tmp_path):
    broken = tmp_path / f"garbage{clean.suffix}"
    damage(clean, broken, audio_packets(clean))

    video = open_video(str(broken))
    proposals = propose(video)
    assert proposals.onsets == [] and proposals.speech == []
    assert [c.start for c in proposals.cuts] == pytest.approx([2.5], abs=1.0 / SPEC.fps)
    assert proposals.motion  # the video measurements are all there
    (note,) = proposals.notes
    assert note.startswith("audio: cannot be decoded") and "video-only" in note


def test_the_chain_trace_carries_the_audio_note(clean, tmp_path, tiny_llm):
    from v2t_foley.foley_core.chain import run_chain

    packets = audio_packets(clean)
    broken = tmp_path / f"broken{clean.suffix}"
    damage(clean, broken, [min(packets, key=lambda p: abs(p[2] - 2.0))])
    result = run_chain(open_video(str(broken)), tiny_llm)
    assert any(n.startswith("audio: 1 damaged packet skipped") for n in result.trace.notes)
    assert result.trace.proposals["notes"] == [n for n in result.trace.notes if n.startswith("audio:")]
