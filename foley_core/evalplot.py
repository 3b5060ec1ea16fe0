"""One PNG per video: a strip of frames over a timeline of each track, reference cues above predicted
ones, so a person sees at a glance where the timing is off."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from v2t_foley.foley_core.safenames import safe_join, safe_name
from v2t_foley.foley_core.schema.script import TRACKS, FoleyScript

COLORS = {"reference": "#2b7bba", "predicted": "#e4572e"}


def plot_path(folder: str | Path, video_id: str) -> Path:
    """Where the plot of `video_id` goes in `folder`: ids come from manifests and stores, so the file
    name is `safe_name(id).png`, never the id itself."""
    return Path(safe_join(str(folder), f"{safe_name(video_id)}.png"))


def plot_video(
    title: str,
    reference: FoleyScript,
    predicted: FoleyScript | None,
    out: Path,
    duration: float | None = None,
    frames: tuple[np.ndarray, tuple[float, ...]] | None = None,
) -> Path:
    """Write the comparison plot of one video to `out` (PNG)."""
    cues = reference.cues() + (predicted.cues() if predicted else [])
    duration = duration or max([c.end for _t, c in cues] + [1.0])
    strip = frames is not None and len(frames[0]) > 0
    fig, axes = plt.subplots(
        2 if strip else 1,
        1,
        figsize=(12, 5.5 if strip else 4),
        gridspec_kw={"height_ratios": [1, 2.2]} if strip else None,
        squeeze=False,
    )
    if strip:
        images, times = frames
        top = axes[0][0]
        top.imshow(np.concatenate(list(images), axis=1))
        width = images.shape[2]
        top.set_xticks(
            [width * (k + 0.5) for k in range(len(times))], [f"{t:.2f}s" for t in times], fontsize=7
        )
        top.set_yticks([])
        top.set_title(title, fontsize=10)
    timeline = axes[-1][0]
    for row, track in enumerate(TRACKS):
        for offset, (label, script) in ((0.18, ("reference", reference)), (-0.18, ("predicted", predicted))):
            if script is None:
                continue
            for cue in script.track(track):
                y = len(TRACKS) - 1 - row + offset
                width = max(cue.end - cue.start, duration / 400)
                timeline.barh(y, width, left=cue.start, height=0.3, color=COLORS[label], alpha=0.85)
    timeline.set_yticks(range(len(TRACKS)), list(reversed(TRACKS)))
    timeline.set_xlim(0, duration)
    timeline.set_xlabel("seconds")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    timeline.legend(handles, ["reference (upper)", "predicted (lower)"], loc="upper right", fontsize=8)
    if not strip:
        timeline.set_title(title + ("" if predicted else "  (no valid prediction)"), fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
