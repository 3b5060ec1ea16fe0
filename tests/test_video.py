"""Video access on real encoded files: true frame times for every sampling strategy, with both decoders,
and one specific VideoError per kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from v2t_foley.foley_core.synthetic import read_index, write_index_video
from v2t_foley.foley_core.video import (
    CorruptVideoError,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
    VideoNotFoundError,
    ZeroDurationError,
    open_video,
    sha256_file,
)
from v2t_foley.foley_core.video.sampling import FramePolicy, fps_indices, uniform_indices, window_indices

N_FRAMES = 60

# (suffix, codec, encoder options, fps): mp4/mkv with B-frames, and the AVI + mpeg4 B-frames case
# where decord's own seeks return wrong frames.
CONTAINERS = {
    "mp4-h264": (".mp4", "libx264", {"bf": "2"}, 10.0),
    "mkv-h264": (".mkv", "libx264", {"bf": "3"}, 25.0),
    "avi-mpeg4-bframes": (".avi", "mpeg4", {"bf": "2", "g": "12"}, 12.0),
}


@pytest.fixture(scope="module", params=list(CONTAINERS))
def index_video(request, tmp_path_factory) -> tuple[Path, float]:
    suffix, codec, options, fps = CONTAINERS[request.param]
    path = tmp_path_factory.mktemp("index") / f"index{suffix}"
    write_index_video(path, N_FRAMES, fps, codec=codec, options=options)
    return path, fps


def assert_true_frames(frames, fps: float) -> None:
    """Each decoded image shows the index it claims, at the time that index has in the stream."""
    shown = [read_index(image) for image in frames.images]
    assert shown == list(frames.indices)
    assert frames.times == pytest.approx([i / fps for i in frames.indices], abs=1e-6)


@pytest.mark.parametrize("reader", ["decord", "pyav"])
class TestSampling:
    def test_uniform(self, index_video, reader):
        path, fps = index_video
        video = open_video(str(path), reader=reader)
        assert video.info.frame_count == N_FRAMES
        assert video.info.duration == pytest.approx(N_FRAMES / fps)
        frames = video.uniform(8)
        assert frames.indices[0] == 0 and frames.indices[-1] == N_FRAMES - 1
        assert_true_frames(frames, fps)

    def test_window(self, index_video, reader):
        path, fps = index_video
        video = open_video(str(path), reader=reader)
        start, end = 13 / fps, 37 / fps
        frames = video.window(start, end, 5)
        assert frames.indices[0] == 13 and max(frames.indices) <= 36
        assert_true_frames(frames, fps)

    def test_fps(self, index_video, reader):
        path, fps = index_video
        video = open_video(str(path), reader=reader)
        frames = video.at_fps(fps / 3)
        assert frames.indices[:4] == (0, 3, 6, 9)
        assert_true_frames(frames, fps)

    def test_random_order_and_repeats(self, index_video, reader):
        path, fps = index_video
        video = open_video(str(path), reader=reader)
        frames = video.frames([41, 3, 41, 59, 0])
        assert_true_frames(frames, fps)

    def test_one_open_file_serves_many_reads_in_any_order_and_from_threads(self, index_video, reader):
        """The file is opened once per reader (opening indexes the whole file); later reads seek in it,
        backwards too, and reads from several threads at once each get their own frames."""
        from concurrent.futures import ThreadPoolExecutor

        path, fps = index_video
        video = open_video(str(path), reader=reader)
        sets = [[50, 51, 52], [2, 30, 58], [45, 12], [57, 1, 33, 20], [9], [44, 43, 42]]
        for indices in sets:
            assert_true_frames(video.frames(indices), fps)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(video.frames, [[k, (k * 7) % N_FRAMES] for k in range(4, 40, 3)]))
        for frames in results:
            assert_true_frames(frames, fps)
        if reader == "decord":
            assert len(video.reader._open) == 1

    def test_downscaled_frames_keep_their_identity(self, index_video, reader):
        path, fps = index_video
        video = open_video(str(path), reader=reader, max_side=80)
        frames = video.uniform(4)
        assert frames.images.shape[1:] == (48, 80, 3)
        assert_true_frames(frames, fps)


def test_decord_falls_back_when_its_seeks_are_wrong(tmp_path, caplog):
    """On AVI with B-frames decord itself returns wrong frames; the reader must notice and fix it."""
    import decord

    fps = 12.0
    path = write_index_video(tmp_path / "b.avi", N_FRAMES, fps, codec="mpeg4", options={"bf": "2", "g": "12"})
    wanted = [0, 13, 29, 41]
    raw = decord.VideoReader(str(path)).get_batch(wanted).asnumpy()
    raw_shown = [read_index(image) for image in raw]
    video = open_video(str(path), reader="decord")
    assert_true_frames(video.frames(wanted), fps)
    if raw_shown != wanted:  # decord got it wrong on its own, so the fallback must have fired
        assert "using sequential decoding" in caplog.text


def test_sampling_functions_on_a_table():
    times = np.arange(10) / 10.0
    assert uniform_indices(10, 4) == [0, 3, 6, 9]
    assert uniform_indices(3, 5) == [0, 0, 1, 2, 2]  # repeats keep the frame count a model needs
    assert window_indices(times, 0.2, 0.6, 2) == [2, 5]
    assert window_indices(times, 0.33, 0.34, 3) == [3, 3, 3]  # shorter than a frame: the frame on screen
    assert fps_indices(times, 5.0) == [0, 2, 4, 6, 8]
    assert fps_indices(times, 100.0) == list(range(10))  # more fps than frames: each frame once
    with pytest.raises(ValueError):
        fps_indices(times, 0)


def test_fps_policy_is_capped():
    from v2t_foley.foley_core.video.sampling import policy_indices

    times = np.arange(100) / 10.0
    picks = policy_indices(times, FramePolicy("fps", n=6, fps=2.0))
    assert len(picks) == 6 and picks[0] == 0 and picks[-1] == 95  # the frame shown at 9.5 s


def test_probe_facts(scene_video):
    video = open_video(str(scene_video))
    assert video.info.has_audio
    assert (video.info.width, video.info.height) == (160, 96)
    assert video.info.fps == pytest.approx(12.0)
    assert video.sha256 == sha256_file(scene_video)


EXPECTED = {
    "missing": VideoNotFoundError,
    "empty": EmptyVideoError,
    "not_a_video": NotAVideoError,
    "corrupt": CorruptVideoError,
    "no_video_stream": NoVideoStreamError,
    "zero_duration": ZeroDurationError,
}


@pytest.mark.parametrize("reason", list(EXPECTED))
def test_bad_input_raises_its_specific_error(bad_videos, reason):
    path = bad_videos[reason]
    with pytest.raises(VideoError) as caught:
        open_video(str(path))
    assert type(caught.value) is EXPECTED[reason]
    assert caught.value.reason == reason
    assert str(path) in str(caught.value)


def test_a_still_image_is_not_a_video(tmp_path):
    from PIL import Image

    path = tmp_path / "poster.mp4"
    Image.new("RGB", (32, 32)).save(path, format="PNG")
    with pytest.raises(NotAVideoError, match="still image"):
        open_video(str(path))


def test_truncated_faststart_mp4_is_corrupt(tmp_path):
    """moov at the front, data cut: the header promises frames the file no longer holds."""
    import av

    source = write_index_video(tmp_path / "src.mp4", 40)
    faststart = tmp_path / "fast.mp4"
    with av.open(str(source)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptVideoError, match="truncated"):
        open_video(str(cut))


@pytest.mark.parametrize(
    ("fmt", "width", "height"), [("bgr24", 96, 58), ("rgb24", 224, 134), ("yuv420p", 80, 48)]
)
def test_one_converter_for_a_pass_gives_each_frame_what_its_own_conversion_gives(
    scene_video, fmt, width, height
):
    """A converter keeps one scaler for the whole pass (bench/propose_cost.py: its speed); every frame,
    scaled down, up or to another pixel format, must come out as `to_ndarray` converts it alone."""
    import av

    from v2t_foley.foley_core.video.convert import FrameConverter

    convert = FrameConverter(fmt, width, height)
    compared = 0
    with av.open(str(scene_video)) as media:
        for frame in media.decode(media.streams.video[0]):
            alone = frame.to_ndarray(format=fmt, width=width, height=height)
            np.testing.assert_array_equal(convert.array(frame), alone)
            assert convert.frame(frame).width == width and convert.frame(frame).format.name == fmt
            compared += 1
    assert compared > 10


def test_one_converter_follows_a_stream_whose_frame_size_changes(tmp_path):
    """Two MPEG-TS streams of different sizes, one after the other (as a broadcast capture can hold): the
    converter's scaler is set up again for the new size, and each frame still equals its own conversion."""
    import av

    from v2t_foley.foley_core.video.convert import FrameConverter

    def write(path: Path, width: int, height: int, seed: int) -> bytes:
        images = np.random.default_rng(seed).integers(0, 255, (6, height, width, 3), dtype=np.uint8)
        with av.open(str(path), "w", format="mpegts") as out:
            stream = out.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for image in images:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(stream.encode())
        return path.read_bytes()

    joined = tmp_path / "joined.ts"
    joined.write_bytes(write(tmp_path / "a.ts", 160, 96, 0) + write(tmp_path / "b.ts", 128, 80, 1))
    convert, sizes = FrameConverter("bgr24", 96, 58), set()
    with av.open(str(joined)) as media:
        for frame in media.decode(media.streams.video[0]):
            sizes.add((frame.width, frame.height))
            alone = frame.to_ndarray(format="bgr24", width=96, height=58)
            np.testing.assert_array_equal(convert.array(frame), alone)
    assert sizes == {(160, 96), (128, 80)}
