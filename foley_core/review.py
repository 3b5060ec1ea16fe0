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

import html
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from foley_core.safenames import redact_uri, safe_join, safe_name
from foley_core.schema.rows import nested_script
from foley_core.schema.script import TRACKS
from foley_core.store.commit import row_key

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


STYLE = """
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
tr.failed td{background:#fff3f3}.err{color:#a00;max-width:40em}
.filters{margin:.6em 0}.filters>*{margin-right:1em}
video{width:480px;max-width:100%;background:#000;display:block}
.timeline{position:relative;width:640px;max-width:100%;margin-top:8px}
.lane{display:flex;align-items:center;margin:3px 0}.lane>.label{width:80px;flex:none;font-size:12px}
.track{position:relative;flex:1;height:26px;background:#f2f2f2;border-radius:3px;overflow:hidden}
.cue{position:absolute;top:2px;bottom:2px;min-width:6px;border:0;border-radius:3px;padding:0 3px;
 font-size:11px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;cursor:pointer;color:#fff;text-align:left}
.foley .cue{background:#3b7dd8}.fx .cue{background:#d8663b}.ambience .cue{background:#3ba86b}
.dialogue .cue{background:#9b59b6}.cue.current{outline:3px solid #ffcc00;z-index:2}
.proposal{position:absolute;top:4px;bottom:4px;min-width:2px;background:#555;opacity:.6}
.proposals[hidden]{display:none}
#playhead{position:absolute;top:0;bottom:0;width:2px;background:#e00;left:80px;pointer-events:none}
ol.cues li{cursor:pointer}ol.cues li.current{background:#fff3b0}
"""

INDEX_JS = """
const q=document.getElementById('q'),st=document.getElementById('status'),md=document.getElementById('model');
function apply(){const t=q.value.toLowerCase();let n=0;
 for(const tr of document.querySelectorAll('tbody tr')){
  const ok=(!st.value||tr.dataset.status===st.value)&&(!md.value||tr.dataset.model===md.value)
   &&(!t||tr.dataset.text.includes(t));tr.hidden=!ok;if(ok)n++;}
 document.getElementById('shown').textContent=n;}
for(const el of [q,st,md])el.addEventListener('input',apply);apply();
"""

PAGE_JS = """
const player=document.getElementById('player');
const cues=[...document.querySelectorAll('[data-start]')];
const data=JSON.parse(document.getElementById('row-data').textContent);
const head=document.getElementById('playhead');
function seek(el){player.currentTime=parseFloat(el.dataset.start);highlight();
 const p=player.play();if(p)p.catch(()=>{});}
for(const el of cues)el.addEventListener('click',()=>seek(el));
function highlight(){const t=player.currentTime;
 for(const el of cues){const s=parseFloat(el.dataset.start),e=Math.max(parseFloat(el.dataset.end),s+0.25);
  el.classList.toggle('current',t>=s&&t<e);}
 const track=document.querySelector('.track');
 if(track&&data.duration>0){head.style.left=(track.offsetLeft+track.offsetWidth*Math.min(t/data.duration,1))+'px';}}
for(const ev of ['timeupdate','seeked','seeking','play'])player.addEventListener(ev,highlight);
document.getElementById('show-proposals').addEventListener('change',e=>{
 for(const lane of document.querySelectorAll('.proposals'))lane.hidden=!e.target.checked;});
highlight();
"""


def _page(row: dict[str, Any], src: str | None, back: str) -> str:
    script = nested_script(row.get("script"))
    proposals = _proposals(row)
    duration = float(row.get("duration") or 0)
    ends = [c["end"] for t in TRACKS for c in (script or {}).get(t, [])]
    ends += [p["end"] for lane in proposals.values() for p in lane]
    span = max([duration, *ends, 0.001])

    def box(start: float, end: float) -> str:
        left = 100 * min(start / span, 1)
        width = max(100 * (max(end, start) - start) / span, 0.8)
        return f"left:{left:.3f}%;width:{min(width, 100 - left):.3f}%"

    lanes, items = [], []
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
        items += [
            f'<li data-start="{c["start"]}" data-end="{c["end"]}">{track} {_e(c["timestamp"])} '
            f"({c['start']:.2f}-{c['end']:.2f} s): {_e(c['description'])}</li>"
            for c in cues
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
    player = (
        f'<video id="player" controls preload="auto" src="{_e(src)}"></video>'
        if src
        else '<video id="player" controls></video><p class="err">not playable here: '
        f"{_e(redact_uri(row['video']))} "
        "(use --copy-media, or a local path or http/s URL)</p>"
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
    payload = _script_json({"id": row["id"], "duration": span, "script": script, "proposals": proposals})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(row["id"])} - foley review</title>
<style>{STYLE}</style></head><body>
<p><a href="{_e(back)}">all rows</a></p>
<h1 id="row-id">{_e(row["id"])}</h1>
<p>{meta}<br>video: {_e(redact_uri(row["video"]))}</p>{error}
{player}
<label><input type="checkbox" id="show-proposals"> show measured proposals</label>
<div class="timeline" id="timeline"><div id="playhead"></div>{"".join(lanes)}</div>
<ol class="cues">{"".join(items)}</ol>
<script type="application/json" id="row-data">{payload}</script>
<script>{PAGE_JS}</script>
</body></html>
"""


def _index(rows: list[dict[str, Any]], links: list[str], title: str) -> str:
    models = sorted({r["model_id"] for r in rows})
    body = []
    for row, link in zip(rows, links, strict=True):
        counts = _counts(nested_script(row.get("script")))
        text = " ".join([row["id"], row["error"], row["model_id"]]).lower()
        body.append(
            f'<tr class="{_e(row["status"])}" data-status="{_e(row["status"])}" '
            f'data-model="{_e(row["model_id"])}" data-text="{_e(text)}">'
            f'<td><a href="{_e(link)}">{_e(row["id"])}</a></td><td>{_e(row["split"])}</td>'
            f"<td>{_e(row['status'])}</td><td>{_e(row['model_id'])}</td><td>{_e(row['prompt_version'])}</td>"
            + "".join(f"<td>{'' if counts[t] is None else counts[t]}</td>" for t in TRACKS)
            + f'<td class="err">{_e(row["error"])}</td></tr>'
        )
    options = "".join(f'<option value="{_e(m)}">{_e(m)}</option>' for m in models)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style></head><body>
<h1>{_e(title)}</h1>
<div class="filters"><input id="q" placeholder="search id, error"> <select id="status">
<option value="">any status</option><option value="ok">ok</option>
<option value="failed">failed</option></select>
<select id="model"><option value="">any model</option>{options}</select>
<span><span id="shown">{len(rows)}</span> of {len(rows)} rows</span></div>
<table id="rows"><thead><tr><th>id</th><th>split</th><th>status</th><th>model</th><th>prompts</th>
{"".join(f"<th>{t}</th>" for t in TRACKS)}<th>error</th></tr></thead>
<tbody>{"".join(body)}</tbody></table>
<script>{INDEX_JS}</script>
</body></html>
"""


def build_review(store: Any, out: str | Path, *, copy_media: bool = False) -> ReviewSite:
    """Write the review site for `store` (a DatasetStore) into the local folder `out`."""
    out = Path(out).resolve()
    rows_dir, media_dir = out / "rows", out / "media"
    rows_dir.mkdir(parents=True, exist_ok=True)
    rows = sorted(
        store.read_rows(), key=lambda r: (r["id"], r["prompt_version"], r["model_id"], r["created_at"])
    )
    names = page_names(rows)
    pages: dict[str, Path] = {}
    for row, name in zip(rows, names, strict=True):
        page = Path(safe_join(str(rows_dir), f"{name}.html"))
        src = video_source(row["video"], rows_dir, media_dir, name, copy_media)
        page.write_text(_page(row, src, "../index.html"), encoding="utf-8")
        pages[name] = page
    title = f"foley review: {redact_uri(store.uri).rstrip('/').rsplit('/', 1)[-1]}"
    index = out / "index.html"
    index.write_text(_index(rows, [f"rows/{n}.html" for n in names], title), encoding="utf-8")
    return ReviewSite(index=index, pages=pages)
