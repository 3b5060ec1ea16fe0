"""The export tests' media and store: a 20 s video at 29.97 fps with cuts, a short one, a script, a store
of three rows (one failed, one with an unsafe id), and `foley export` run through the CLI. A pytest
plugin of the suite (conftest.py): both export modules share one copy of each."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from v2t_foley.flows.cli import app
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.schema.script import Cue, FoleyScript
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.synthetic import SceneSpec, encode_video, scene_frames

runner = CliRunner()
NTSC = 30000 / 1001
DURATION = 20.0
SECRET = "s3cr3tKEYvalue"


def make_script(duration: float = DURATION) -> FoleyScript:
    return FoleyScript(
        foley=[
            Cue.at(0.5, 1.5, "Footsteps on wooden floorboards.", 0),
            Cue.at(7.0, 9.0, "A leather jacket rustles.", 1),
            Cue.at(16.0, 16.0, "A key turns in a lock.", 2),
        ],
        fx=[Cue.at(1.5, 1.55, "A door slams shut.", 0), Cue.at(12.0, 12.2, "A glass shatters on tiles.", 3)],
        ambience=[Cue.at(0.0, 6.0, "Quiet room tone."), Cue.at(6.0, duration, "Rain patters on a window.")],
        dialogue=[Cue.at(3.0, 5.0, "Someone whispers a warning.", 4)],
    )


EVENTS = [
    {
        "index": 0,
        "start": 0.5,
        "end": 1.6,
        "summary": "A man walks in and slams the door.",
        "kind": "motion",
        "reasoning": {
            "main_object": "A man in boots",
            "action": "walks in and slams the door",
            "context": "a wooden hallway",
            "sounds": ["heavy footsteps", "door slam"],
        },
    },
    {
        "index": 1,
        "start": 7.0,
        "end": 9.0,
        "summary": "He takes off his jacket.",
        "kind": "motion",
        "reasoning": {
            "main_object": "leather jacket",
            "action": "is pulled off",
            "context": "a dim living room",
            "sounds": ["leather creak", "cloth rustle"],
        },
    },
    {
        "index": 3,
        "start": 12.0,
        "end": 12.5,
        "summary": "A glass falls.",
        "kind": "audio_onset",
        "reasoning": {
            "main_object": "a wine glass",
            "action": "falls and breaks",
            "context": "a tiled kitchen floor",
            "sounds": ["glass shatter", "shards scatter"],
        },
    },
    {"index": 4, "start": 3.0, "end": 5.0, "summary": "A whisper.", "kind": "speech", "reasoning": None},
]


@pytest.fixture(scope="session")
def export_media(tmp_path_factory) -> dict:
    """A 20 s video at 29.97 fps with a cut at 6 s and keyframes every 2 s, and a short one."""
    folder = tmp_path_factory.mktemp("export-media")
    spec = SceneSpec(duration=DURATION, fps=NTSC, cuts=(6.0, 13.0), motions=((0.5, 1.5), (7.0, 9.0)))
    video = encode_video(folder / "long.mp4", scene_frames(spec), spec.fps, options={"g": "60"})
    short_spec = SceneSpec(duration=4.0, fps=25.0, cuts=(2.0,))
    short = encode_video(folder / "short.mp4", scene_frames(short_spec), 25.0)
    script_file = folder / "clip.json"
    script_file.write_text(make_script().model_dump_json())
    return {"video": video, "short": short, "script": script_file, "folder": folder}


def store_row(row_id: str, video: str, script: FoleyScript | None, *, duration: float, fps: float, **extra):
    trace = {
        "proposals": {
            "duration": duration,
            "cuts": [{"kind": "cut", "start": 6.0, "end": 6.0, "strength": 2}],
        }
    }
    return DatasetRow(
        id=row_id,
        video=video,
        split=extra.get("split", "train"),
        duration=duration,
        fps=fps,
        prompt_version="v1",
        model_id="m",
        backend="transformers",
        status="ok" if script else "failed",
        script=script.model_dump_json() if script else "",
        error="" if script else "the file is truncated",
        events=json.dumps(EVENTS if script else []),
        trace=json.dumps(trace) if script else "",
    )


@pytest.fixture(scope="session")
def export_store(export_media, tmp_path_factory) -> str:
    media = export_media
    uri = str(tmp_path_factory.mktemp("export-store") / "store")
    late = make_script(4.0).model_copy(
        update={"fx": [Cue.at(1.0, 1.2, "A click."), Cue.at(3.5, 6.0, "A boom past the end.")]}
    )
    rows = [
        store_row("long", str(media["video"]), make_script(), duration=DURATION, fps=NTSC),
        store_row("../evil/Id", str(media["short"]), late, duration=4.0, fps=25.0, split="test"),
        store_row("broken", "/nowhere/broken.mp4", None, duration=0.0, fps=0.0),
    ]
    DatasetStore(uri).write_shard(rows, "run1", 0)
    return uri


def export(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, ["export", *args])
    summary = None
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    return result.exit_code, summary, result.output


def decoded(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, frames / float(stream.average_rate)
