"""The review site's fixed parts: its style sheet, its scripts and the curation export bar.

Plain strings, no row data: foley_core.review puts rows into pages (escaped) and these beside them.
The scripts run in the curator's browser: the index's filters, the player and timeline, side-by-side
comparison, and curation (decisions and edits in localStorage until exported as curation.json).
"""

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
#playhead,.playhead{position:absolute;top:0;bottom:0;width:2px;background:#e00;left:80px;pointer-events:none}
ol.cues li{cursor:pointer}ol.cues li.current{background:#fff3b0}
#curation{border-top:2px solid #ccc;margin-top:1em}.decide button.chosen{outline:3px solid #222}
#edit input.changed{background:#fff3b0}.notice{color:#555;max-width:60em;font-size:12px}
.compare{display:flex;gap:16px;flex-wrap:wrap}.side{flex:1;min-width:420px}.side .timeline{width:100%}
td.curation.rejected{color:#a00}td.curation.approved{color:#070}td.curation.needs-fix{color:#a60}
"""

INDEX_JS = """
const q=document.getElementById('q'),st=document.getElementById('status'),md=document.getElementById('model');
const cf=document.getElementById('decision');
function apply(){const t=q.value.toLowerCase();let n=0;
 for(const tr of document.querySelectorAll('tbody tr')){
  const ok=(!st.value||tr.dataset.status===st.value)&&(!md.value||tr.dataset.model===md.value)
   &&(!cf.value||tr.dataset.decision===cf.value)&&(!t||tr.dataset.text.includes(t));tr.hidden=!ok;if(ok)n++;}
 document.getElementById('shown').textContent=n;}
for(const el of [q,st,md,cf])el.addEventListener('input',apply);
function pageRefresh(){const all=curLoad();
 for(const td of document.querySelectorAll('td.curation')){const d=all[td.dataset.key];
  const kind=(d&&d.decision)||'undecided';td.className='curation '+kind;
  td.textContent=d?kind+(d.script?' (edited)':''):'';td.parentElement.dataset.decision=kind;}
 apply();}
pageRefresh();
"""

# decisions live in localStorage under one key per store: {JSON row key: decision}; shared by all pages
CURATION_JS = """
const STORE=document.body.dataset.store,NS='foley-curation:'+STORE;
function curLoad(){try{return JSON.parse(localStorage.getItem(NS)||'{}')||{}}catch(e){return {}}}
function curSave(all){localStorage.setItem(NS,JSON.stringify(all));curRefresh();}
function curCurator(){const el=document.getElementById('curator');
 return (el&&el.value)||localStorage.getItem('foley-curator')||'';}
function curPending(){const t=localStorage.getItem(NS+':exported')||'';
 return Object.values(curLoad()).filter(d=>d.decision&&d.decided_at>t).length;}
function curDocument(){const decisions=Object.values(curLoad()).filter(d=>d.decision).map(d=>{
  const o={id:d.id,prompt_version:d.prompt_version,model:d.model,decision:d.decision,note:d.note||'',
   curator:d.curator||curCurator(),decided_at:d.decided_at};if(d.script)o.script=d.script;return o;});
 return {format:'v2t-foley-curation/1',store:STORE,curator:curCurator(),
  exported_at:new Date().toISOString(),decisions};}
function curExport(){const doc=curDocument();const text=JSON.stringify(doc,null,1);
 const a=document.createElement('a');a.href=URL.createObjectURL(new Blob([text],{type:'application/json'}));
 a.download='curation.json';document.body.appendChild(a);a.click();a.remove();
 localStorage.setItem(NS+':exported',doc.exported_at);curRefresh();return text;}
function curRefresh(){const n=curPending(),el=document.getElementById('pending');
 if(el)el.textContent=n?n+' decision(s) not exported yet':'nothing waiting to be exported';
 if(typeof pageRefresh==='function')pageRefresh();}
document.getElementById('export').addEventListener('click',curExport);
const curatorInput=document.getElementById('curator');
if(curatorInput){curatorInput.value=localStorage.getItem('foley-curator')||'';
 curatorInput.addEventListener('input',()=>localStorage.setItem('foley-curator',curatorInput.value));}
window.addEventListener('storage',curRefresh);
curRefresh();
"""

PAGE_CURATION_JS = """
const KEY=JSON.stringify(data.key),TRACKS=['foley','fx','ambience','dialogue'];
const editRows=[...document.querySelectorAll('#edit tbody tr')];
function entry(){return curLoad()[KEY]||null;}
function put(change){const all=curLoad();
 const d=Object.assign(all[KEY]||{id:data.key[0],prompt_version:data.key[1],model:data.key[2],
  decision:null,note:''},change,{decided_at:new Date().toISOString(),curator:curCurator()});
 if(!d.decision&&!d.script&&!d.note)delete all[KEY];else all[KEY]=d;curSave(all);}
function ts(s){const t=Math.floor(s+1e-9),h=Math.floor(t/3600),m=Math.floor(t%3600/60),x=t%60;
 const p=n=>String(n).padStart(2,'0');return h?p(h)+':'+p(m)+':'+p(x):p(m)+':'+p(x);}
function fields(tr){return {start:tr.querySelector('.start').value,end:tr.querySelector('.end').value,
 text:tr.querySelector('.text').value};}
const original=editRows.map(fields);
function edited(){const out={};for(const t of TRACKS)out[t]=[];
 for(const tr of editRows){const f=fields(tr),s=Math.round(parseFloat(f.start)*1000)/1000,
   e=Math.round(parseFloat(f.end)*1000)/1000,orig=data.script[tr.dataset.track][+tr.dataset.index];
  out[tr.dataset.track].push({timestamp:isFinite(s)&&s>=0?ts(s):'',start:s,end:e,
   description:f.text.trim(),event:orig.event});}
 for(const t of TRACKS)out[t].sort((a,b)=>a.start-b.start||a.end-b.end);return out;}
function problems(script){const found=[];for(const t of TRACKS)script[t].forEach((c,k)=>{
  if(!isFinite(c.start)||c.start<0)found.push(t+' cue '+(k+1)+': start is not a time');
  if(!isFinite(c.end)||c.end<c.start)found.push(t+' cue '+(k+1)+': ends before it starts');
  if(data.row_duration&&c.end>data.row_duration+0.001)found.push(t+' cue '+(k+1)+': ends after the video');
  if(!c.description)found.push(t+' cue '+(k+1)+': no description');});return found;}
function onEdit(){
 const changed=editRows.some((tr,k)=>JSON.stringify(fields(tr))!==JSON.stringify(original[k]));
 const e=entry(),edits=changed?editRows.map(fields):undefined;
 put({script:changed?edited():undefined,edits,decision:(e&&e.decision)||(changed?'approved':null)});}
function fillEdits(){const e=entry();editRows.forEach((tr,k)=>{const f=(e&&e.edits&&e.edits[k])||original[k];
  tr.querySelector('.start').value=f.start;tr.querySelector('.end').value=f.end;
  tr.querySelector('.text').value=f.text;});}
function pageRefresh(){const e=entry();
 document.getElementById('decision-state').textContent=
  e&&e.decision?e.decision+(e.script?' (edited)':''):'undecided';
 for(const b of document.querySelectorAll('[data-decision]'))
  b.classList.toggle('chosen',!!e&&e.decision===b.dataset.decision);
 const note=document.getElementById('note');if(document.activeElement!==note)note.value=(e&&e.note)||'';
 editRows.forEach((tr,k)=>{const f=fields(tr);for(const n of ['start','end','text'])
  tr.querySelector('.'+n).classList.toggle('changed',f[n]!==original[k][n]);});
 const shown=document.getElementById('edit-problems');
 if(shown)shown.textContent=e&&e.script?problems(e.script).join('; '):'';}
for(const b of document.querySelectorAll('[data-decision]'))
 b.addEventListener('click',()=>put({decision:b.dataset.decision}));
document.getElementById('clear-decision').addEventListener('click',()=>{const all=curLoad();delete all[KEY];
 curSave(all);fillEdits();pageRefresh();});
document.getElementById('note').addEventListener('change',e=>put({note:e.target.value}));
const editTable=document.getElementById('edit');if(editTable)editTable.addEventListener('change',onEdit);
const reset=document.getElementById('reset-edits');
if(reset)reset.addEventListener('click',()=>{const e=entry();if(e){e.edits=undefined;e.script=undefined;}
 const all=curLoad();if(e)all[KEY]=e;curSave(all);fillEdits();pageRefresh();});
fillEdits();pageRefresh();
"""

COMPARE_JS = """
const player=document.getElementById('player');
const cues=[...document.querySelectorAll('[data-start]')];
const data=JSON.parse(document.getElementById('row-data').textContent);
for(const el of cues)el.addEventListener('click',()=>{player.currentTime=parseFloat(el.dataset.start);
 const p=player.play();if(p)p.catch(()=>{});});
function highlight(){const t=player.currentTime;
 for(const el of cues){const s=parseFloat(el.dataset.start),e=Math.max(parseFloat(el.dataset.end),s+0.25);
  el.classList.toggle('current',t>=s&&t<e);}
 for(const tl of document.querySelectorAll('.timeline')){const track=tl.querySelector('.track'),
  head=tl.querySelector('.playhead');if(track&&data.duration>0)
  head.style.left=(track.offsetLeft+track.offsetWidth*Math.min(t/data.duration,1))+'px';}}
for(const ev of ['timeupdate','seeked','seeking','play'])player.addEventListener(ev,highlight);
highlight();
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


EXPORT_BAR = """<div class="exportbar"><button id="export">export curation.json</button>
<span id="pending"></span><p class="notice" id="storage-notice">Decisions and edits are kept in this
browser only (localStorage, per store) until you export them: export <code>curation.json</code>, then run
<code>foley curate STORE --apply curation.json</code>. Closing or reloading this tab keeps them; clearing
the browser's data, a private window or another browser loses what was not exported. An exported file
loses nothing: the export holds every decision made here, and applying it again is harmless.</p></div>"""
