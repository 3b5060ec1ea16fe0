"""The `--demo` inputs: a handful of generated clips (one truncated on purpose) and their manifest."""

from __future__ import annotations

from pathlib import Path

from v2t_foley.foley_core.manifest import write_manifest
from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video

DEMO_CLIPS = (
    SceneSpec(duration=3.0, cuts=(1.5,), motions=((0.5, 1.2),), clicks=(1.2,)),
    SceneSpec(duration=4.0, cuts=(1.0, 3.0), motions=((1.5, 2.5),), clicks=(2.5,), speech=((0.2, 0.9),)),
    SceneSpec(duration=2.5, cuts=(), motions=((0.3, 2.0),), clicks=(0.3, 2.0)),
    SceneSpec(duration=5.0, cuts=(2.5,), motions=((3.0, 4.0),), clicks=(4.0,), speech=((0.5, 2.0),)),
    SceneSpec(duration=3.5, cuts=(1.0, 2.0, 3.0), motions=(), clicks=(), speech=((1.0, 3.0),)),
)


def make_demo(folder: Path) -> str:
    """Write the demo clips and manifest into `folder` (reused when already there); return the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, spec in enumerate(DEMO_CLIPS):
        path = folder / f"clip{k}.mp4"
        if not path.exists():
            write_scene_video(path, spec)
        rows.append(
            {
                "video": str(path.resolve()),
                "id": f"clip{k}",
                "split": "test" if k == 4 else "train",
                "source": "demo",
            }
        )
    broken = folder / "truncated.mp4"
    if not broken.exists():
        data = (folder / "clip0.mp4").read_bytes()
        broken.write_bytes(data[: len(data) // 3])
    rows.append({"video": str(broken.resolve()), "id": "truncated", "split": "train", "source": "demo"})
    return write_manifest(rows, str(folder / "manifest.csv"))
