"""Shot cuts (PySceneDetect's content detector) and motion spans (frame differences), in one decode.

`scan_video` streams: each small frame is fed to the cut detector and differenced with the one before,
then dropped, so memory does not grow with the video's length (only one number per frame is kept).
`small_frames` + `detect_cuts` + `motion_energy` are the same measurements over frames held in memory.
"""

from __future__ import annotations

import av
import numpy as np
from scenedetect import ContentDetector, FrameTimecode

from v2t_foley.foley_core.proposals.base import Proposal, ProposalSettings
from v2t_foley.foley_core.video.convert import FrameConverter, decode_in_threads
from v2t_foley.foley_core.video.errors import CorruptVideoError
from v2t_foley.foley_core.video.video import Video


def small_frames(video: Video, width: int) -> np.ndarray:
    """Every frame, in presentation order, as (N, h, width, 3) BGR uint8 (what OpenCV-based detectors use)."""
    convert = FrameConverter("bgr24", width, _analysis_height(video, width))
    frames = []
    try:
        with av.open(str(video.path)) as media:
            stream = media.streams.video[0]
            decode_in_threads(stream)
            for frame in media.decode(stream):
                frames.append(convert.array(frame))
    except av.error.FFmpegError as err:
        raise CorruptVideoError(video.uri, f"decoding for analysis failed: {err}") from None
    return np.stack(frames[: len(video.frame_times)])


def _analysis_height(video: Video, width: int) -> int:
    return max(2, round(video.info.height * width / max(video.info.width, 1) / 2) * 2)


def scan_video(video: Video, settings: ProposalSettings) -> tuple[list[Proposal], np.ndarray, np.ndarray]:
    """Cuts, motion energy and the analysed frames' times in one streaming pass over the video stream."""
    width = settings.analysis_width
    convert = FrameConverter("bgr24", width, _analysis_height(video, width))
    times, fps = video.frame_times, video.info.fps
    detector = ContentDetector(
        threshold=settings.cut_threshold, min_scene_len=max(1, round(settings.min_shot_s * fps))
    )
    found: list[int] = []
    energy: list[float] = []
    previous: np.ndarray | None = None
    count = 0
    try:
        with av.open(str(video.path)) as media:
            stream = media.streams.video[0]
            decode_in_threads(stream)
            for frame in media.decode(stream):
                if count >= len(times):
                    break
                image = convert.array(frame)
                found += [tc.frame_num for tc in detector.process_frame(FrameTimecode(count, fps=fps), image)]
                gray = image.astype(np.float32).mean(axis=2)
                if previous is not None:
                    pair = np.stack([previous, gray])
                    energy.append(float(np.abs(np.diff(pair, axis=0)).mean(axis=(1, 2))[0]))
                previous = gray
                count += 1
    except av.error.FFmpegError as err:
        raise CorruptVideoError(video.uri, f"decoding for analysis failed: {err}") from None
    if count == 0:
        raise CorruptVideoError(video.uri, "decoding for analysis failed: no frame decodes")
    found += [tc.frame_num for tc in detector.post_process(FrameTimecode(count, fps=fps))]
    seen = times[:count]
    cuts = sorted({i for i in found if 0 < i < len(seen)})
    proposals = [Proposal(kind="cut", start=float(seen[i]), end=float(seen[i]), strength=1.0) for i in cuts]
    return proposals, np.asarray(energy, dtype=np.float32), seen


def detect_cuts(
    frames: np.ndarray, times: np.ndarray, fps: float, settings: ProposalSettings
) -> list[Proposal]:
    """Cut proposals at the first frame of each new shot."""
    min_len = max(1, round(settings.min_shot_s * fps))
    detector = ContentDetector(threshold=settings.cut_threshold, min_scene_len=min_len)
    found: list[int] = []
    for index, image in enumerate(frames):
        found += [tc.frame_num for tc in detector.process_frame(FrameTimecode(index, fps=fps), image)]
    found += [tc.frame_num for tc in detector.post_process(FrameTimecode(len(frames), fps=fps))]
    cuts = sorted({i for i in found if 0 < i < len(times)})
    return [Proposal(kind="cut", start=float(times[i]), end=float(times[i]), strength=1.0) for i in cuts]


def motion_energy(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive grayscale frames; energy[i] compares i and i+1."""
    gray = frames.astype(np.float32).mean(axis=3)
    return np.abs(np.diff(gray, axis=0)).mean(axis=(1, 2))


def detect_motion(
    energy: np.ndarray, times: np.ndarray, cut_times: list[float], settings: ProposalSettings
) -> list[Proposal]:
    """Spans where frames keep changing. A span starts at the last still frame (motion begins right
    after it) and ends at the first still frame. Differences across a cut are not motion."""
    energy = energy.copy()
    for t in cut_times:
        index = int(np.searchsorted(times, t - 1e-9))  # the first frame of the new shot
        if 0 < index <= len(energy):
            energy[index - 1] = 0.0
    median = float(np.median(energy)) if len(energy) else 0.0
    mad = float(np.median(np.abs(energy - median))) if len(energy) else 0.0
    threshold = max(settings.motion_floor, median + settings.motion_mad * mad)
    moving = energy > threshold
    spans: list[list[int]] = []
    for i in np.flatnonzero(moving):
        if spans and i - spans[-1][1] <= settings.motion_gap_frames:
            spans[-1][1] = int(i)
        else:
            spans.append([int(i), int(i)])
    return [
        Proposal(
            kind="motion",
            start=float(times[a]),
            end=float(times[min(b + 1, len(times) - 1)]),
            strength=round(float(energy[a : b + 1].mean() / threshold), 3),
        )
        for a, b in spans
    ]
