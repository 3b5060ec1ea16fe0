"""`foley review`: a static site for a curator, from a store's rows. No server: it opens from disk.

`index.html` lists every row (id, split, status, model, cues per track, error) with filters; one page per
row (`rows/<safe_name>.html`) shows the video with its four tracks as a timeline under it: clicking a cue
seeks the video, the cue under the playhead is highlighted, and the measured proposals (cuts, motion,
onsets, speech, from the trace) can be shown as lanes.

Everything from rows is untrusted: ids, descriptions and errors are HTML-escaped, JSON for scripts is
escaped for `<script>`, page names go through `safe_name`/`safe_join`, and URIs lose their credentials.
Videos are referenced where they are (a relative path for local files, the URL for http/s), never
copied unless `copy_media`.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from v2t_foley.foley_core.curation import DECISIONS
from v2t_foley.foley_core.review_assets import (
    COMPARE_JS,
    CURATION_JS,
    EXPORT_BAR,
    INDEX_JS,
    PAGE_CURATION_JS,
    PAGE_JS,
    STYLE,
)
from v2t_foley.foley_core.safenames import redact_uri, safe_join, safe_name
from v2t_foley.foley_core.schema.rows import nested_script
from v2t_foley.foley_core.schema.script import TRACKS
from v2t_foley.foley_core.store.commit import row_key

PROPOSAL_LANES = ("cuts", "motion", "onsets", "speech")


@dataclass(frozen=True)
class ReviewSite:
    index: Path  # index.html
    pages: dict[str, Path]  # page name -> file, one per row


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no `<`, `>` or `&` can end the element or open a comment."""
    text = json.dumps(data, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_names(rows: list[dict[str, Any]]) -> list[str]:
    """A file-name stem per row: the id's safe name, or the whole key's when an id has several rows."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["id"]] = counts.get(row["id"], 0) + 1
    return [safe_name(r["id"] if counts[r["id"]] == 1 else "\x1f".join(row_key(r))) for r in rows]


def video_source(video: str, page_dir: Path, media_dir: Path, name: str, copy_media: bool) -> str | None:
    """What a page's <video src> gets; None when a browser cannot play it from here."""
    parts = urlsplit(video)
    scheme = parts.scheme.lower() if len(parts.scheme) > 1 else ""  # "C:" is a drive, not a scheme
    if copy_media:
        import fsspec

        suffix = "".join(c for c in Path(parts.path).suffix if c.isalnum() or c == ".")[:8] or ".mp4"
        media_dir.mkdir(parents=True, exist_ok=True)
        target = Path(safe_join(str(media_dir), name + suffix))
        try:
            with fsspec.open(video, "rb") as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
        except (OSError, ValueError):
            return None
        return os.path.relpath(target, page_dir).replace(os.sep, "/")
    if scheme in ("http", "https"):  # no credentials and no signed query in a page
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((scheme, netloc, parts.path, "", ""))
    if scheme in ("", "file"):
        path = Path(parts.path if scheme == "file" else video).expanduser().resolve()
        return os.path.relpath(path, page_dir).replace(os.sep, "/")
    return None


def _counts(script: dict[str, Any] | None) -> dict[str, int | None]:
    return {t: (len(script[t]) if script else None) for t in TRACKS}


def _proposals(row: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    try:
        found = json.loads(row.get("trace") or "{}").get("proposals") or {}
    except (ValueError, AttributeError):
        return {}
    return {
        lane: [
            {"start": float(p["start"]), "end": float(p["end"]), "strength": float(p.get("strength", 0))}
            for p in found.get(lane) or []
        ]
        for lane in PROPOSAL_LANES
    }


def _boxer(span: float):
    def box(start: float, end: float) -> str:
        left = 100 * min(start / span, 1)
        width = max(100 * (max(end, start) - start) / span, 0.8)
        return f"left:{left:.3f}%;width:{min(width, 100 - left):.3f}%"

    return box


def _span(row: dict[str, Any], script: dict[str, Any] | None, proposals: dict[str, list]) -> float:
    ends = [c["end"] for t in TRACKS for c in (script or {}).get(t, [])]
    ends += [p["end"] for lane in proposals.values() for p in lane]
    return max([float(row.get("duration") or 0), *ends, 0.001])


def _cue_lanes(script: dict[str, Any] | None, box) -> list[str]:
    lanes = []
    for track in TRACKS:
        cues = (script or {}).get(track, [])
        buttons = "".join(
            f'<button class="cue" data-track="{track}" data-index="{k}" data-start="{c["start"]}" '
            f'data-end="{c["end"]}" style="{box(c["start"], c["end"])}" '
            f'title="{_e(c["timestamp"])} {_e(c["description"])}">{_e(c["description"])}</button>'
            for k, c in enumerate(cues)
        )
        lanes.append(
            f'<div class="lane {track}"><span class="label">{track}</span>'
            f'<div class="track">{buttons}</div></div>'
        )
    return lanes


def _player(row: dict[str, Any], src: str | None) -> str:
    if src:
        return f'<video id="player" controls preload="auto" src="{_e(src)}"></video>'
    return (
        '<video id="player" controls></video><p class="err">not playable here: '
        f"{_e(redact_uri(row['video']))} (use --copy-media, or a local path or http/s URL)</p>"
    )


def _curation_panel(script: dict[str, Any] | None) -> str:
    """Decision buttons, a note, one editable line per cue, and the export."""
    edits = "".join(
        f'<tr data-track="{track}" data-index="{k}"><td>{track}</td>'
        f'<td><input class="start" type="number" min="0" step="0.01" value="{c["start"]}"></td>'
        f'<td><input class="end" type="number" min="0" step="0.01" value="{c["end"]}"></td>'
        f'<td><input class="text" size="60" value="{_e(c["description"])}"></td></tr>'
        for track in TRACKS
        for k, c in enumerate((script or {}).get(track, []))
    )
    table = (
        '<table id="edit"><thead><tr><th>track</th><th>start (s)</th><th>end (s)</th><th>description</th>'
        f'</tr></thead><tbody>{edits}</tbody></table><p class="err" id="edit-problems"></p>'
        '<button id="reset-edits">undo my edits</button>'
        if edits
        else "<p>no cues to edit</p>"
    )
    return f"""<section id="curation"><h2>Curation</h2>
<div class="decide"><button data-decision="approved">approve</button>
<button data-decision="rejected">reject</button><button data-decision="needs-fix">needs fix</button>
<button id="clear-decision">clear</button> decision: <b id="decision-state">undecided</b></div>
<p><label>note <input id="note" size="60"></label> <label>curator <input id="curator" size="16"></label></p>
{table}
{EXPORT_BAR}</section>"""


def _page(row: dict[str, Any], src: str | None, back: str, store_id: str) -> str:
    script = nested_script(row.get("script"))
    proposals = _proposals(row)
    duration = float(row.get("duration") or 0)
    span = _span(row, script, proposals)
    box = _boxer(span)
    lanes = _cue_lanes(script, box)
    items = [
        f'<li data-start="{c["start"]}" data-end="{c["end"]}">{track} {_e(c["timestamp"])} '
        f"({c['start']:.2f}-{c['end']:.2f} s): {_e(c['description'])}</li>"
        for track in TRACKS
        for c in (script or {}).get(track, [])
    ]
    for lane, found in proposals.items():
        marks = "".join(
            f'<span class="proposal" style="{box(p["start"], p["end"])}" '
            f'title="{lane} {p["start"]:.2f} s"></span>'
            for p in found
        )
        lanes.append(
            f'<div class="lane proposals" hidden><span class="label">{lane}</span>'
            f'<div class="track">{marks}</div></div>'
        )
    meta = " | ".join(
        _e(x)
        for x in (
            row["status"],
            row["split"],
            row["model_id"] + (f" + {row['adapter']}" if row.get("adapter") else ""),
            f"prompts {row['prompt_version']}",
            f"{duration:.2f} s",
        )
    )
    error = (
        f'<p class="err">{_e(row["error_kind"])}: {_e(row["error"])}</p>' if row["status"] == "failed" else ""
    )
    payload = _script_json(
        {
            "id": row["id"],
            "key": list(row_key(row)),
            "duration": span,
            "row_duration": duration,
            "script": script,
            "proposals": proposals,
        }
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(row["id"])} - foley review</title>
<style>{STYLE}</style></head><body data-store="{_e(store_id)}">
<p><a href="{_e(back)}">all rows</a></p>
<h1 id="row-id">{_e(row["id"])}</h1>
<p>{meta}<br>video: {_e(redact_uri(row["video"]))}</p>{error}
{_player(row, src)}
<label><input type="checkbox" id="show-proposals"> show measured proposals</label>
<div class="timeline" id="timeline"><div class="playhead" id="playhead"></div>{"".join(lanes)}</div>
<ol class="cues">{"".join(items)}</ol>
{_curation_panel(script)}
<script type="application/json" id="row-data">{payload}</script>
<script>{PAGE_JS}</script>
<script>{CURATION_JS}</script>
<script>{PAGE_CURATION_JS}</script>
</body></html>
"""


def _compare_page(
    row_a: dict[str, Any], row_b: dict[str, Any], src: str | None, back: str, agreement: dict[str, Any]
) -> str:
    """One video, two prompt versions' scripts side by side under one player."""
    scripts = [nested_script(r.get("script")) for r in (row_a, row_b)]
    span = max(_span(r, s, {}) for r, s in zip((row_a, row_b), scripts, strict=True))
    box = _boxer(span)
    sides = []
    for label, row, script in (("A", row_a, scripts[0]), ("B", row_b, scripts[1])):
        status = row["status"] + (
            f": {row['error_kind']}: {row['error']}" if row["status"] == "failed" else ""
        )
        sides.append(
            f'<div class="side" id="side-{label.lower()}"><h2>{label}: prompts {_e(row["prompt_version"])}'
            f"</h2><p>{_e(row['model_id'])} | {_e(status)}</p>"
            f'<div class="timeline"><div class="playhead"></div>{"".join(_cue_lanes(script, box))}</div>'
            "</div>"
        )
    overall = agreement.get("overall") or {}
    summary = (
        f"B against A: event F1 {overall.get('f1')}, mean IoU {overall.get('mean_iou')} "
        f"({overall.get('tp')} matched, {overall.get('fp')} only in B, {overall.get('fn')} only in A)"
        if overall
        else "no agreement: a version has no script"
    )
    payload = _script_json({"id": row_a["id"], "duration": span})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(row_a["id"])} - compare - foley review</title>
<style>{STYLE}</style></head><body>
<p><a href="{_e(back)}">all comparisons</a></p>
<h1 id="row-id">{_e(row_a["id"])}</h1>
<p>video: {_e(redact_uri(row_a["video"]))}</p>
{_player(row_a, src)}
<p id="agreement">{_e(summary)}</p>
<div class="compare">{"".join(sides)}</div>
<script type="application/json" id="row-data">{payload}</script>
<script>{COMPARE_JS}</script>
</body></html>
"""


def _index(
    rows: list[dict[str, Any]], links: list[str], title: str, store_id: str, compare_link: str = ""
) -> str:
    models = sorted({r["model_id"] for r in rows})
    body = []
    for row, link in zip(rows, links, strict=True):
        counts = _counts(nested_script(row.get("script")))
        text = " ".join([row["id"], row["error"], row["model_id"]]).lower()
        key = json.dumps(list(row_key(row)), ensure_ascii=False, separators=(",", ":"))
        body.append(
            f'<tr class="{_e(row["status"])}" data-status="{_e(row["status"])}" '
            f'data-model="{_e(row["model_id"])}" data-text="{_e(text)}" data-decision="undecided">'
            f'<td><a href="{_e(link)}">{_e(row["id"])}</a></td><td>{_e(row["split"])}</td>'
            f"<td>{_e(row['status'])}</td><td>{_e(row['model_id'])}</td><td>{_e(row['prompt_version'])}</td>"
            + "".join(f"<td>{'' if counts[t] is None else counts[t]}</td>" for t in TRACKS)
            + f'<td class="err">{_e(row["error"])}</td><td class="curation" data-key="{_e(key)}"></td></tr>'
        )
    options = "".join(f'<option value="{_e(m)}">{_e(m)}</option>' for m in models)
    decisions = "".join(f'<option value="{d}">{d}</option>' for d in (*DECISIONS, "undecided"))
    compare = (
        f'<p><a id="compare-link" href="{_e(compare_link)}">compare prompt versions</a></p>'
        if compare_link
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style></head>
<body data-store="{_e(store_id)}">
<h1>{_e(title)}</h1>{compare}
<div class="filters"><input id="q" placeholder="search id, error"> <select id="status">
<option value="">any status</option><option value="ok">ok</option>
<option value="failed">failed</option></select>
<select id="model"><option value="">any model</option>{options}</select>
<select id="decision"><option value="">any decision</option>{decisions}</select>
<span><span id="shown">{len(rows)}</span> of {len(rows)} rows</span>
<label>curator <input id="curator" size="16"></label></div>
<table id="rows"><thead><tr><th>id</th><th>split</th><th>status</th><th>model</th><th>prompts</th>
{"".join(f"<th>{t}</th>" for t in TRACKS)}<th>error</th><th>curation</th></tr></thead>
<tbody>{"".join(body)}</tbody></table>
{EXPORT_BAR}
<script>{CURATION_JS}</script>
<script>{INDEX_JS}</script>
</body></html>
"""


def _compare_index(
    items: list[tuple[str, str, dict[str, Any], dict[str, Any], dict]], va: str, vb: str
) -> str:
    body = []
    for _name, link, row_a, row_b, agreement in items:
        overall = agreement.get("overall") or {}
        counts = [
            sum(len(v) for v in (nested_script(r.get("script")) or {}).values()) for r in (row_a, row_b)
        ]
        body.append(
            f'<tr><td><a href="{_e(link)}">{_e(row_a["id"])}</a></td><td>{_e(row_a["status"])}</td>'
            f"<td>{_e(row_b['status'])}</td><td>{counts[0]}</td><td>{counts[1]}</td>"
            f"<td>{_e(overall.get('f1', ''))}</td><td>{_e(overall.get('mean_iou', ''))}</td></tr>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>compare {_e(va)} / {_e(vb)}</title>
<style>{STYLE}</style></head><body>
<p><a href="index.html">all rows</a></p>
<h1>prompts A <code>{_e(va)}</code> against B <code>{_e(vb)}</code></h1>
<p>{len(items)} video(s) with a row in both versions. Agreement: event F1 and mean temporal IoU of B's
cues against A's (onset tolerance 0.5 s).</p>
<table id="pairs"><thead><tr><th>id</th><th>A status</th><th>B status</th><th>A cues</th><th>B cues</th>
<th>F1 (B vs A)</th><th>mean IoU</th></tr></thead><tbody>{"".join(body)}</tbody></table>
</body></html>
"""


def store_id(store: Any) -> str:
    """The namespace of a store's decisions in the browser: stable per store location, no path in it."""
    return hashlib.sha256(redact_uri(store.uri).encode()).hexdigest()[:12]


def newest_per_id(rows: list[dict[str, Any]], version: str) -> dict[str, dict[str, Any]]:
    """id -> the newest row of prompt version `version` (base-model chain rows before adapters' rows)."""
    found: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (not r.get("adapter"), r["created_at"])):
        if row["prompt_version"] == version:
            found[row["id"]] = row
    return found


def build_review(
    store: Any, out: str | Path, *, copy_media: bool = False, compare: tuple[str, str] | None = None
) -> ReviewSite:
    """Write the review site for `store` (a DatasetStore) into the local folder `out`.

    `compare=(A, B)`: also `compare.html` and `compare/<id>.html`, the two prompt versions' scripts of
    each video side by side (ValueError when the store has no row of a version).
    """
    out = Path(out).resolve()
    rows_dir, media_dir = out / "rows", out / "media"
    rows_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(
        store.read_rows(), key=lambda r: (r["id"], r["prompt_version"], r["model_id"], r["created_at"])
    )
    namespace = store_id(store)
    names = page_names(rows)
    pages: dict[str, Path] = {}
    for row, name in zip(rows, names, strict=True):
        page = Path(safe_join(str(rows_dir), f"{name}.html"))
        src = video_source(row["video"], rows_dir, media_dir, name, copy_media)
        page.write_text(_page(row, src, "../index.html", namespace), encoding="utf-8")
        pages[name] = page
    compare_link = ""
    if compare:
        _write_compare(rows, compare, out, media_dir, copy_media)
        compare_link = "compare.html"
    title = f"foley review: {redact_uri(store.uri).rstrip('/').rsplit('/', 1)[-1]}"
    index = out / "index.html"
    index.write_text(
        _index(rows, [f"rows/{n}.html" for n in names], title, namespace, compare_link), encoding="utf-8"
    )
    return ReviewSite(index=index, pages=pages)


def _write_compare(
    rows: list[dict[str, Any]], versions: tuple[str, str], out: Path, media_dir: Path, copy_media: bool
) -> None:
    from v2t_foley.foley_core.metrics import score_script
    from v2t_foley.foley_core.schema.rows import row_script

    va, vb = versions
    known = sorted({r["prompt_version"] for r in rows})
    for version in (va, vb):
        if version not in known:
            raise ValueError(f"no rows of prompt version {version!r}; the store has: {', '.join(known)}")
    side_a, side_b = newest_per_id(rows, va), newest_per_id(rows, vb)
    compare_dir = out / "compare"
    compare_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for video_id in sorted(set(side_a) & set(side_b)):
        row_a, row_b = side_a[video_id], side_b[video_id]
        name = safe_name(video_id)
        agreement: dict[str, Any] = {}
        if row_a["status"] == "ok":
            pred = row_script(row_b) if row_b["status"] == "ok" else None
            agreement = score_script(pred, row_script(row_a)).summary()
        src = video_source(row_a["video"], compare_dir, media_dir, name, copy_media)
        page = Path(safe_join(str(compare_dir), f"{name}.html"))
        page.write_text(_compare_page(row_a, row_b, src, "../compare.html", agreement), encoding="utf-8")
        items.append((name, f"compare/{name}.html", row_a, row_b, agreement))
    (out / "compare.html").write_text(_compare_index(items, va, vb), encoding="utf-8")
