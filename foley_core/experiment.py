"""Prompt experiments: the same videos through several prompt sets, compared in one report.

`compare_versions` takes a store's rows and the prompt versions to compare (the first is the baseline
A) and measures, per version: the validity rate, events per video, cues per track, description length
and vocabulary diversity, and the model's cost (calls, generated tokens and seconds per video, from
each row's trace and timings). Between versions: how far each later version agrees with A (event F1,
mean temporal IoU and description similarity of its cues against A's, foley_core.metrics). With
references, every version is scored against them the same way. `write_report` writes report.json,
report.md and experiment.png.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from v2t_foley.foley_core.metrics import Similarity, score_corpus
from v2t_foley.foley_core.schema.rows import row_events, row_script
from v2t_foley.foley_core.schema.script import TRACKS, FoleyScript

_WORD = re.compile(r"[a-z0-9']+")


def newest_per_id(rows: Iterable[dict[str, Any]], version: str) -> dict[str, dict[str, Any]]:
    """id -> the newest row of prompt version `version` (base-model chain rows win over adapters')."""
    found: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (not r.get("adapter"), r["created_at"])):
        if row["prompt_version"] == version:
            found[row["id"]] = row
    return found


def _script(row: dict[str, Any] | None) -> FoleyScript | None:
    if row is None or row["status"] != "ok":
        return None
    try:
        return row_script(row)
    except ValueError:
        return None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _cost(row: dict[str, Any]) -> tuple[int, int, float]:
    """(model calls, generated tokens, seconds) of one row, from its trace and timings."""
    try:
        calls = json.loads(row.get("trace") or "{}").get("calls") or []
    except (ValueError, AttributeError):
        calls = []
    try:
        seconds = sum(float(v) for v in json.loads(row.get("timings") or "{}").values())
    except (ValueError, AttributeError, TypeError):
        seconds = 0.0
    return len(calls), sum(int(c.get("new_tokens") or 0) for c in calls), seconds


def version_stats(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What one prompt version wrote for these videos (id -> row)."""
    scripts = {vid: _script(row) for vid, row in rows.items()}
    valid = [s for s in scripts.values() if s is not None]
    ok_rows = [rows[vid] for vid, s in scripts.items() if s is not None]
    words = [w for s in valid for _, cue in s.cues() for w in _WORD.findall(cue.description.lower())]
    descriptions = [cue.description for s in valid for _, cue in s.cues()]
    costs = [_cost(row) for row in rows.values()]
    return {
        "videos": len(rows),
        "ok": len(valid),
        "failed": len(rows) - len(valid),
        "validity_rate": round(len(valid) / len(rows), 4) if rows else None,
        "events_per_video": _mean([len(row_events(r)) for r in ok_rows]),
        "cues_per_video": _mean([len(s.cues()) for s in valid]),
        "cues_per_track": {t: _mean([len(s.track(t)) for s in valid]) for t in TRACKS},
        "description_words": _mean([len(_WORD.findall(d.lower())) for d in descriptions]),
        "description_chars": _mean([len(d) for d in descriptions]),
        "vocabulary": len(set(words)),  # distinct words over all descriptions
        "vocabulary_diversity": round(len(set(words)) / len(words), 4) if words else None,  # type/token
        "model_calls_per_video": _mean([c[0] for c in costs]),
        "tokens_per_video": _mean([c[1] for c in costs]),
        "seconds_per_video": _mean([c[2] for c in costs]),
    }


def _corpus(pairs: dict[str, tuple[FoleyScript | None, FoleyScript]], similarity: Similarity | None) -> dict:
    summary = score_corpus(pairs, similarity=similarity).summary()
    return {k: summary[k] for k in ("videos", "json_validity", "tracks", "overall", "per_video")}


def compare_versions(
    rows: Iterable[dict[str, Any]],
    versions: list[str],
    *,
    ids: Iterable[str] | None = None,
    references: dict[str, FoleyScript] | None = None,
    similarity: Similarity | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The experiment report: per-version statistics, agreement with the first version, and scores
    against `references` when given. `ids`: only these videos (default: every id of any version)."""
    rows = list(rows)
    per_version = {v: newest_per_id(rows, v) for v in versions}
    wanted = set(ids) if ids is not None else {vid for found in per_version.values() for vid in found}
    per_version = {v: {i: r for i, r in found.items() if i in wanted} for v, found in per_version.items()}
    base = versions[0]
    report: dict[str, Any] = {
        "versions": versions,
        "labels": labels or {},
        "baseline": base,
        "videos": len(wanted),
        "stats": {v: version_stats(found) for v, found in per_version.items()},
        "agreement": {},
        "against_references": {},
        "similarity": similarity is not None,
    }
    a_scripts = {vid: _script(row) for vid, row in per_version[base].items()}
    for version in versions[1:]:
        pairs = {
            vid: (_script(per_version[version].get(vid)), script)
            for vid, script in a_scripts.items()
            if script is not None
        }
        report["agreement"][version] = _corpus(pairs, similarity) | {"against": base}
    if references:
        for version in versions:
            pairs = {
                vid: (_script(per_version[version].get(vid)), ref)
                for vid, ref in references.items()
                if vid in wanted
            }
            report["against_references"][version] = _corpus(pairs, similarity)
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (the Prefect artifact and report.md)."""

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    versions = report["versions"]
    labels = report.get("labels") or {}
    head = "| | " + " | ".join(f"`{v}`" + (f" ({labels[v]})" if v in labels else "") for v in versions)
    lines = [
        f"# Prompt experiment: {len(versions)} prompt versions on {report['videos']} video(s)",
        "",
        f"Baseline A: `{report['baseline']}`.",
        "",
        head + " |",
        "|---|" + "---|" * len(versions),
    ]
    rows = [
        ("videos", "videos"),
        ("ok rows", "ok"),
        ("validity rate", "validity_rate"),
        ("events per video", "events_per_video"),
        ("cues per video", "cues_per_video"),
        *((f"{t} cues per video", ("cues_per_track", t)) for t in TRACKS),
        ("words per description", "description_words"),
        ("distinct words", "vocabulary"),
        ("vocabulary diversity (type/token)", "vocabulary_diversity"),
        ("model calls per video", "model_calls_per_video"),
        ("generated tokens per video", "tokens_per_video"),
        ("seconds per video", "seconds_per_video"),
    ]
    for label, field in rows:
        values = []
        for version in versions:
            stats = report["stats"][version]
            values.append(stats[field[0]][field[1]] if isinstance(field, tuple) else stats[field])
        lines.append(f"| {label} | " + " | ".join(fmt(v) for v in values) + " |")

    def scores(title: str, section: dict[str, Any], note: str) -> None:
        if not section:
            return
        lines.extend(
            ["", f"## {title}", "", note, "", "| version | videos | F1 | P | R | mean IoU | similarity |"]
        )
        lines.append("|---|---|---|---|---|---|---|")
        for version, score in section.items():
            o = score["overall"]
            lines.append(
                f"| `{version}` | {score['videos']} | {fmt(o['f1'])} | {fmt(o['precision'])} | "
                f"{fmt(o['recall'])} | {fmt(o['mean_iou'])} | {fmt(o['description_similarity'])} |"
            )

    scores(
        "Agreement with A",
        report["agreement"],
        f"Each version's cues scored against A's (`{report['baseline']}`) on the videos A scripted: "
        "event F1 (onset tolerance 0.5 s), temporal IoU and description similarity of matched cues.",
    )
    scores("Against references", report["against_references"], "Each version scored against your references.")
    if not report.get("similarity"):
        lines.extend(["", "Description similarity was not computed (`--no-similarity`)."])
    return "\n".join(lines) + "\n"


def write_plot(report: dict[str, Any], path: Path) -> Path:
    """One PNG: a bar chart per measure, one bar per version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = report["versions"]
    measures = [
        ("validity rate", lambda v: report["stats"][v]["validity_rate"]),
        ("events / video", lambda v: report["stats"][v]["events_per_video"]),
        ("cues / video", lambda v: report["stats"][v]["cues_per_video"]),
        ("words / description", lambda v: report["stats"][v]["description_words"]),
        ("vocabulary diversity", lambda v: report["stats"][v]["vocabulary_diversity"]),
        ("tokens / video", lambda v: report["stats"][v]["tokens_per_video"]),
        ("seconds / video", lambda v: report["stats"][v]["seconds_per_video"]),
        (
            "F1 vs A",
            lambda v: 1.0 if v == report["baseline"] else report["agreement"][v]["overall"]["f1"],
        ),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    names = [v[:8] for v in versions]
    for ax, (title, value) in zip(axes.flat, measures, strict=True):
        ax.bar(names, [value(v) or 0 for v in versions], color=[f"C{k}" for k in range(len(versions))])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"prompt experiment on {report['videos']} video(s); A = {report['baseline'][:8]}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """report.json, report.md and experiment.png in the local folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "experiment.png"}
    paths["json"].write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(report_markdown(report), encoding="utf-8")
    write_plot(report, paths["plot"])
    return paths
