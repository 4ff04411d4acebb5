/**
 * cli/report-html: `-o html` for simulate and diff: one self-contained page (inline CSS and script,
 * no network access to view it) drawing a reach-view: the matrix grouped by namespace, one port at
 * a time, changed cells marked, and each cell's reasons on hover (title) and on click (a panel).
 *
 * Owns: the page. The data is embedded as JSON (with "<" escaped, so no object name can end the
 * script); the script builds the table with DOM calls and textContent only, never HTML strings from
 * data. Cells carry data-row, data-col, data-port and data-state for tests and tools.
 * May not: compute verdicts (reach-view does).
 */
import type { DiffResult, DiffSide } from "../compiler/diff.js";
import type { PortProto } from "../compiler/matrix.js";
import { diffView, type ReachView, simulateView } from "../compiler/reach-view.js";

const CSS = `
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;margin:16px;color:#1d1d1f;background:#fff}
h1{font-size:18px;margin:0 0 4px}
.summary{margin:4px 0 10px;color:#333}
.note{color:#666;font-size:12px}
.controls{margin:8px 0;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
.legend span{display:inline-block;padding:1px 6px;margin-right:6px;border-radius:3px;border:1px solid #ccc}
.wrap{overflow:auto;max-height:78vh;border:1px solid #ddd}
table.m{border-collapse:collapse}
table.m th{font-weight:normal;background:#fafafa;position:sticky;z-index:1}
table.m thead th{top:0}
table.m th.ns{background:#eef2f7;font-weight:600;text-align:left}
table.m th.col{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap;padding:4px 1px;max-height:160px;overflow:hidden;text-overflow:ellipsis}
table.m th.row{left:0;text-align:right;white-space:nowrap;padding:0 6px;z-index:2}
table.m th.rowns{left:0;text-align:left;padding:2px 6px;z-index:2}
td.c{width:16px;min-width:16px;height:16px;padding:0;border:1px solid #e4e4e4;text-align:center;font-size:10px;cursor:pointer}
td.c.allowed{background:#cdebd0}
td.c.denied{background:#f4c7c3}
td.c.mixed{background:repeating-linear-gradient(45deg,#cdebd0,#cdebd0 3px,#f4c7c3 3px,#f4c7c3 6px)}
td.c.none{background:#fff;cursor:default}
td.c.opened{outline:2px solid #0a7d28;outline-offset:-2px;font-weight:bold;color:#0a7d28}
td.c.closed{outline:2px solid #b3261e;outline-offset:-2px;font-weight:bold;color:#b3261e}
td.c.sel{box-shadow:inset 0 0 0 2px #1a56db}
.nsl{border-left:2px solid #8a94a6 !important}
th.ns div{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#detail{margin-top:10px;padding:8px 10px;border:1px solid #ccd;background:#f7f9fc;min-height:3em;white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
table.changes{border-collapse:collapse;margin-top:12px;font-size:12px}
table.changes td,table.changes th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
.open{color:#0a7d28;font-weight:600}.close{color:#b3261e;font-weight:600}
`;

/** Runs in the page: builds the matrix for the chosen port from the embedded data. */
const SCRIPT = `
(function(){
  "use strict";
  var V = JSON.parse(document.getElementById("data").textContent);
  var sel = document.getElementById("port");
  var host = document.getElementById("matrix");
  var detail = document.getElementById("detail");
  function el(tag, cls, text){ var e=document.createElement(tag); if(cls) e.className=cls; if(text!==undefined) e.textContent=text; return e; }
  function groupText(g, level){ return level==="pods" ? g.ns+"/"+g.label : level==="namespaces" ? g.ns+" ("+g.size+" pods)" : g.ns+" "+g.label+" ("+g.size+" pods)"; }
  function bands(groups){ var out=[], cur=null; groups.forEach(function(g,i){ if(!cur||cur.ns!==g.ns){ cur={ns:g.ns,start:i,n:0}; out.push(cur);} cur.n++; }); return out; }
  function state(c){
    if(!c) return "none";
    return c.denied===0 ? "allowed" : c.allowed===0 ? "denied" : "mixed";
  }
  function describe(c, r, k, port){
    var lines=[];
    lines.push("from: "+groupText(V.rows[r],V.level));
    lines.push("to:   "+groupText(V.cols[k],V.colLevel));
    lines.push("port: "+port);
    if(!c){ lines.push("no pair here shares an address family"); return lines.join("\\n"); }
    var total=c.allowed+c.denied;
    lines.push(total===1 ? (c.allowed ? "ALLOWED" : "DENIED") : (c.allowed+" of "+total+" pod pairs allowed, "+c.denied+" denied"));
    if(c.opened) lines.push("OPENED by the change: "+c.opened+(c.opened===1?" pair":" pairs"));
    if(c.closed) lines.push("CLOSED by the change: "+c.closed+(c.closed===1?" pair":" pairs"));
    (c.changes||[]).forEach(function(ch){
      lines.push("  before: "+V.reasons[ch[0]]);
      lines.push("  after:  "+V.reasons[ch[1]]+(total>1?"  ("+ch[2]+")":""));
    });
    lines.push(V.mode==="diff" ? "now:" : "why:");
    c.reasons.forEach(function(x){ lines.push("  "+V.reasons[x[0]]+(total>1?"  ("+x[1]+")":"")); });
    return lines.join("\\n");
  }
  function draw(){
    var pi = Number(sel.value);
    var port = V.ports[pi];
    var cells = V.cells[pi].map(function(id){ return id < 0 ? null : V.cellTypes[id]; });
    var nc = V.cols.length;
    var t = el("table","m");
    var thead = el("thead");
    var r1 = el("tr"); r1.appendChild(el("th","rowns",""));
    var starts = {};
    bands(V.cols).forEach(function(b){
      starts[b.start] = true;
      var th=el("th","ns nsl"); th.colSpan=b.n; th.title=b.ns;
      var d=el("div","",b.ns); d.style.width=(b.n*18-4)+"px"; th.appendChild(d); r1.appendChild(th);
    });
    thead.appendChild(r1);
    var r2 = el("tr"); r2.appendChild(el("th","row","from \\\\ to"));
    V.cols.forEach(function(g,k){ var th=el("th","col"+(starts[k]?" nsl":""),V.colLevel==="namespaces"?g.ns:g.label); th.title=groupText(g,V.colLevel)+"\\n"+g.members.join("\\n"); r2.appendChild(th); });
    thead.appendChild(r2);
    t.appendChild(thead);
    var tb = el("tbody");
    bands(V.rows).forEach(function(b){
      var hr = el("tr"); var th = el("th","rowns ns",b.ns); hr.appendChild(th); tb.appendChild(hr);
      for(var r=b.start;r<b.start+b.n;r++){
        var g = V.rows[r];
        var tr = el("tr");
        var rh = el("th","row",V.level==="namespaces"?g.ns:g.label); rh.title=groupText(g,V.level)+"\\n"+g.members.join("\\n"); tr.appendChild(rh);
        for(var k=0;k<nc;k++){
          var c = cells[r*nc+k];
          var st = state(c);
          var td = el("td","c "+st+(starts[k]?" nsl":""));
          if(c && c.opened) td.classList.add("opened");
          if(c && c.closed) td.classList.add("closed");
          td.dataset.row = String(r); td.dataset.col = String(k); td.dataset.port = port; td.dataset.state = st;
          td.dataset.from = groupText(g,V.level); td.dataset.to = groupText(V.cols[k],V.colLevel);
          if(c && (c.opened || c.closed)) td.dataset.change = c.opened && c.closed ? "both" : c.opened ? "opened" : "closed";
          td.textContent = c && c.opened && !c.closed ? "+" : c && c.closed && !c.opened ? "\\u2212" : c && c.closed ? "\\u00b1" : st==="denied" ? "\\u00d7" : "";
          td.title = describe(c, r, k, port);
          tr.appendChild(td);
        }
        tb.appendChild(tr);
      }
    });
    t.appendChild(tb);
    host.replaceChildren(t);
  }
  V.ports.forEach(function(p,i){
    var o = el("option","",p); o.value=String(i);
    var n = 0; V.cells[i].forEach(function(id){ var c = V.cellTypes[id]; if(id >= 0 && (c.opened||c.closed)) n++; });
    if(V.mode==="diff") o.textContent = p+(n?"  ("+n+" changed)":"");
    sel.appendChild(o);
  });
  if(V.mode==="diff"){ for(var i=0;i<V.ports.length;i++){ if(V.cells[i].some(function(id){ var c = V.cellTypes[id]; return id >= 0 && (c.opened||c.closed); })){ sel.value=String(i); break; } } }
  sel.addEventListener("change", draw);
  host.addEventListener("click", function(ev){
    var td = ev.target.closest("td.c"); if(!td) return;
    var old = host.querySelector("td.sel"); if(old) old.classList.remove("sel");
    td.classList.add("sel");
    detail.textContent = td.title;
  });
  draw();
  document.body.dataset.ready = "1";
})();
`;

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON safe inside a script element: no "<" (so no "</script>"), and no U+2028/2029 surprises. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

export function renderReachHtml(view: ReachView, title: string): string {
  const s = view.summary;
  const summary =
    view.mode === "diff"
      ? `${s.opened} opened, ${s.closed} closed, of ${s.cellsCompared} cells compared (${s.podsCompared} pods)` +
        ((s.podsAdded as string[]).length ? `; pods added: ${(s.podsAdded as string[]).join(", ")}` : "") +
        ((s.podsRemoved as string[]).length
          ? `; pods removed: ${(s.podsRemoved as string[]).join(", ")}`
          : "")
      : `${s.pods} pods: ${s.allowed} pod pairs x ports allowed, ${s.denied} denied`;
  const legend =
    view.mode === "diff"
      ? `<span style="background:#cdebd0">allowed now</span><span style="background:#f4c7c3">denied now</span><span style="outline:2px solid #0a7d28">+ opened</span><span style="outline:2px solid #b3261e">&minus; closed</span>`
      : `<span style="background:#cdebd0">allowed</span><span style="background:#f4c7c3">&times; denied</span><span style="background:repeating-linear-gradient(45deg,#cdebd0,#cdebd0 3px,#f4c7c3 3px,#f4c7c3 6px)">some of each</span>`;
  const changes = view.changes?.length
    ? `<h2 style="font-size:15px;margin-top:18px">Changed cells${
        view.changes.length < Number(s.opened) + Number(s.closed)
          ? ` (the first ${view.changes.length} of ${Number(s.opened) + Number(s.closed)}; <code>-o json</code> lists all)`
          : ""
      }</h2><table class="changes" id="changes"><tr><th></th><th>from</th><th>to</th><th>port</th><th>before</th><th>after</th></tr>${view.changes
        .map(
          (c) =>
            `<tr><td class="${c.after ? "open" : "close"}">${c.after ? "opened" : "closed"}</td><td>${escapeHtml(c.from)}</td><td>${escapeHtml(c.to)}</td><td>${escapeHtml(c.port)}</td><td>${escapeHtml(c.reasonBefore)}</td><td>${escapeHtml(c.reasonAfter)}</td></tr>`,
        )
        .join("")}</table>`
    : "";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(title)}</title><style>${CSS}</style></head>
<body>
<h1>${escapeHtml(title)}</h1>
<div class="summary" id="summary">${escapeHtml(summary)}</div>
<div class="note">${escapeHtml(view.levelNote)}. Rows: from, columns: to, grouped by namespace. Hover a cell for why; click it to pin the reasons below.</div>
<div class="controls"><label>port <select id="port"></select></label><span class="legend">${legend}</span></div>
<div class="wrap" id="matrix"></div>
<div id="detail">Click a cell.</div>
${changes}
<script type="application/json" id="data">${scriptJson(view)}</script>
<script>${SCRIPT}</script>
</body></html>
`;
}

export function simulateHtml(input: DiffSide, ports: readonly PortProto[]): string {
  return renderReachHtml(simulateView(input, ports), "podwall simulate: who can reach whom");
}

export function diffHtml(after: DiffSide, res: DiffResult): string {
  return renderReachHtml(diffView(after, res), "podwall diff: what the change opens and closes");
}
