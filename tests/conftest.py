"""Shared fixtures: an isolated cache folder, the tiny models, generated videos and broken files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download
# flows measure in this process's threads whatever the machine's cores (test_measuring_processes.py sets
# its own counts): a test on a big machine would otherwise start measuring processes that outlive it
os.environ.setdefault("FOLEY_MEASURE_PROCESSES", "0")

pytest_plugins = ["tests.export_data"]  # the export tests' media and store


@pytest.fixture(scope="session", autouse=True)
def foley_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test session builds its tiny models into its own cache (unless one is given)."""
    cache = Path(os.environ.get("FOLEY_TEST_CACHE") or tmp_path_factory.mktemp("foley-cache"))
    os.environ["FOLEY_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_llm(foley_cache):
    from v2t_foley.foley_core.backends.transformers_backend import load_transformers_model

    return load_transformers_model("tiny-random")


@pytest.fixture(params=[True, False], ids=["kernels", "small-ops"])
def kernels(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Each test once with the prefix attention's parts as fused kernels, once as small ops
    (`PrefixBatch.kernels`, backends/prefix_attention.py)."""
    return request.param


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def scene_video(media_dir: Path) -> Path:
    from v2t_foley.foley_core.synthetic import write_scene_video

    return write_scene_video(media_dir / "scene.mp4")


@pytest.fixture(scope="session")
def bad_videos(media_dir: Path, scene_video: Path) -> dict[str, Path]:
    """One file per failure reason, keyed by the VideoError reason tag it must produce."""
    from v2t_foley.foley_core.synthetic import SceneSpec, scene_audio, write_index_video

    folder = media_dir / "bad"
    folder.mkdir()
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    text = folder / "notes.mp4"
    text.write_text("this is a text file with a video's name\n" * 10)
    whole = write_index_video(folder / "whole.mp4", 40).read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])
    audio_only = folder / "audio_only.mka"
    _write_audio_only(audio_only, scene_audio(SceneSpec(duration=1.0)))
    no_frames = folder / "no_frames.avi"
    _write_no_frames(no_frames)
    return {
        "missing": folder / "does-not-exist.mp4",
        "empty": empty,
        "not_a_video": text,
        "corrupt": truncated,
        "no_video_stream": audio_only,
        "zero_duration": no_frames,
    }


def _write_audio_only(path: Path, audio) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (audio * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_no_frames(path: Path) -> None:
    """A complete container header with a video stream and not one frame."""
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()
    container.close()


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server for flow tests (Prefect's own test harness: a real server + database)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def make_manifest_videos(folder: Path, bad: dict[str, Path] | None = None) -> tuple[str, dict[str, float]]:
    """Three generated clips (one in the test split) plus the given bad files and a blank row.

    Returns the manifest path and each good video's duration.
    """
    from v2t_foley.foley_core.manifest import write_manifest
    from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video

    folder.mkdir(parents=True, exist_ok=True)
    rows, durations = [], {}
    for k, duration in enumerate((2.0, 3.0, 2.5)):
        path = write_scene_video(
            folder / f"good{k}.mp4", SceneSpec(duration=duration, cuts=(1.0,), clicks=(0.5,))
        )
        rows.append({"video": str(path), "id": f"good{k}", "split": "test" if k == 2 else "train", "take": k})
        durations[f"good{k}"] = duration
    for reason, path in (bad or {}).items():
        rows.append({"video": str(path), "id": f"bad-{reason}", "split": "train", "take": -1})
    rows.append({"video": "", "id": "bad-blank", "split": "train", "take": -1})
    return write_manifest(rows, str(folder / "manifest.csv")), durations


@pytest.fixture(scope="session")
def training_store(tmp_path_factory, prefect_harness) -> str:
    """A store the factory made from three good clips (test_training*.py; tests that add shards copy it)."""
    from v2t_foley.flows.build_dataset import build_dataset

    root = tmp_path_factory.mktemp("train")
    manifest, _ = make_manifest_videos(root / "videos")
    path = str(root / "store")
    summary = build_dataset(manifest=manifest, store=path, model="tiny-random")
    assert summary.new_ok_rows == 3
    return path
