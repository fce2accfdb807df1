"""The dump as one self-contained HTML page: the graph drawn as SVG (nodes coloured by status, and by the
error they add when a comparison was made), the per-layer error as a bar chart, and the node table with a
filter. No external scripts, styles or fonts: it works offline and can be attached to a bug report.

Large graphs stay usable: the layout is computed here in linear time (``fxq.dump.layout``), the SVG sits in a
scrolling pane with zoom buttons, node details are native SVG tooltips, and clicking a node jumps to its row.
"""

from __future__ import annotations

import html
import math

from fxq.dump.layout import layered
from fxq.dump.text import summarise

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 34, 20, 26, 10
FILL = {"quantized": "#b7e4c7", "float": "#ffd6a5", "boundary": "#f8f9fa", "io": "#e9ecef", "pending": "#dee2e6"}
STROKE = {"quantized": "#2d6a4f", "float": "#c1121f", "boundary": "#6c757d", "io": "#495057", "pending": "#495057"}

_STYLE = """
body{font:13px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#212529}
header{padding:10px 16px;background:#f1f3f5;border-bottom:1px solid #ced4da}
h1{font-size:16px;margin:0 0 4px}h2{font-size:14px;margin:16px 16px 6px}
.legend span{display:inline-block;margin-right:12px}.swatch{display:inline-block;width:12px;height:12px;
border:1px solid #495057;vertical-align:middle;margin-right:4px}
#pane{height:60vh;overflow:auto;border-top:1px solid #ced4da;border-bottom:1px solid #ced4da;background:#fff}
.tools{padding:6px 16px}button{font:inherit;margin-right:4px}
table{border-collapse:collapse;margin:0 16px 24px;font-size:12px}
th,td{border:1px solid #dee2e6;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f1f3f5;position:sticky;top:0}tr:target td,tr.hit td{background:#fff3bf}
td.float{color:#c1121f}.bars text{font-size:11px}svg text{font-size:10px;pointer-events:none}
#filter{margin:0 16px 8px;padding:3px 6px;width:320px}
"""

_SCRIPT = """
(function(){
  var svg=document.getElementById('graph'), base=svg.getAttribute('width')*1, zoom=1;
  function setZoom(z){zoom=Math.max(0.05,Math.min(4,z));svg.setAttribute('width',base*zoom);
    svg.setAttribute('height',svg.getAttribute('data-h')*zoom);}
  document.getElementById('zin').onclick=function(){setZoom(zoom*1.25);};
  document.getElementById('zout').onclick=function(){setZoom(zoom/1.25);};
  document.getElementById('zfit').onclick=function(){
    setZoom(document.getElementById('pane').clientWidth/base);};
  var rows=document.querySelectorAll('#nodes tbody tr');
  document.getElementById('filter').oninput=function(){
    var q=this.value.toLowerCase();
    for(var i=0;i<rows.length;i++){rows[i].style.display=
      (!q||rows[i].textContent.toLowerCase().indexOf(q)>=0)?'':'none';}
  };
})();
"""


def to_html(document: dict) -> str:
    """The page for a dump document (``fxq.tools.dump.Dump.document()``)."""
    rows, layers = document["nodes"], document.get("comparison") or []
    title = f"fxq dump: {document['model']} ({_where(document)}, backend {document['backend']})"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<header><h1>{_e(title)}</h1>{_summary(rows)}{_legend(bool(layers))}</header>",
             '<div class="tools"><button id="zin">zoom in</button><button id="zout">zoom out</button>'
             '<button id="zfit">fit width</button> hover a node for details; click it for its row</div>',
             f'<div id="pane">{_graph_svg(rows)}</div>']
    if layers:
        parts.append("<h2>Error each layer adds (own SQNR, lowest first)</h2>" + _bars(layers))
    if document.get("passes"):
        parts.append("<h2>Passes</h2>" + _passes(document["passes"]))
    parts.append("<h2>Nodes</h2>" + '<input id="filter" placeholder="filter rows (name, op, status...)">'
                 + _table(rows))
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _where(document: dict) -> str:
    return f"after {document['after_pass']}" if document.get("after_pass") else f"stage {document['stage']}"


def _summary(rows) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.category] = counts.get(row.category, 0) + 1
    text = ", ".join(f"{count} {category}" for category, count in sorted(counts.items()))
    return f"<div>{len(rows)} nodes: {_e(text)}</div>"


def _legend(with_error: bool) -> str:
    items = [f'<span><span class="swatch" style="background:{FILL[c]};border-color:{STROKE[c]}"></span>{c}</span>'
             for c in ("quantized", "float", "boundary", "io", "pending")]
    if with_error:
        items.append(f'<span><span class="swatch" style="background:{_error_colour(20)}"></span>'
                     f'quantized, adds much error</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def _graph_svg(rows) -> str:
    placed = layered([row.name for row in rows], {row.name: row.inputs for row in rows})
    columns = max((p.column for p in placed.values()), default=0) + 1
    depth = max((p.layer for p in placed.values()), default=0) + 1
    width, height = 2 * MARGIN + columns * (BOX_W + GAP_X), 2 * MARGIN + depth * (BOX_H + GAP_Y)

    def corner(name: str) -> tuple[int, int]:
        p = placed[name]
        return MARGIN + p.column * (BOX_W + GAP_X), MARGIN + p.layer * (BOX_H + GAP_Y)

    edges, boxes = [], []
    for row in rows:
        x, y = corner(row.name)
        for source in row.inputs:
            if source in placed:
                sx, sy = corner(source)
                edges.append(f"M{sx + BOX_W // 2},{sy + BOX_H} C{sx + BOX_W // 2},{sy + BOX_H + GAP_Y // 2} "
                             f"{x + BOX_W // 2},{y - GAP_Y // 2} {x + BOX_W // 2},{y}")
        fill = FILL[row.category]
        if row.category == "quantized" and row.own_sqnr_db is not None:
            fill = _error_colour(row.own_sqnr_db)
        dash = ' stroke-dasharray="4 2"' if row.category == "boundary" else ""
        label = _clip(row.name, 24)
        second = _clip(row.status if row.category != "io" else row.kind, 26)
        boxes.append(
            f'<a href="#row-{_e(row.name)}"><g><title>{_e(_tooltip(row))}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="4" fill="{fill}" '
            f'stroke="{STROKE[row.category]}"{dash}/>'
            f'<text x="{x + 5}" y="{y + 14}">{_e(label)}</text>'
            f'<text x="{x + 5}" y="{y + 27}" fill="#495057">{_e(second)}</text></g></a>')
    path = f'<path d="{" ".join(edges)}" fill="none" stroke="#adb5bd"/>' if edges else ""
    return (f'<svg id="graph" width="{width}" height="{height}" data-h="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">{path}{"".join(boxes)}</svg>')


def _tooltip(row) -> str:
    lines = [f"{row.name} ({row.kind} {row.target})"]
    for label, value in (("op", row.concept), ("fused", row.fused_group), ("qconfig", row.qconfig),
                         ("rule", row.rule), ("status", row.status), ("weight", row.weight)):
        if value:
            lines.append(f"{label}: {value}")
    if row.scale is not None:
        lines.append(f"scale {summarise(row.scale)}, zero point {summarise(row.zero_point)}")
    if row.observed_min is not None:
        lines.append(f"observed {summarise(row.observed_min)} .. {summarise(row.observed_max)}")
    if row.own_sqnr_db is not None:
        lines.append(f"own SQNR {_db(row.own_sqnr_db)} dB, SQNR {_db(row.sqnr_db)} dB")
    return "\n".join(lines)


def _bars(layers) -> str:
    """One bar per layer: longer for more error (60 dB - own SQNR, clipped to [0, 60])."""
    scale, row_h, label_w = 6, 16, 220
    width, height = label_w + 60 * scale + 80, len(layers) * row_h + 4
    items = []
    for index, layer in enumerate(layers):
        db = layer.own_sqnr_db
        length = 0 if db == math.inf else max(0.0, min(60.0, 60.0 - db)) * scale
        y = index * row_h + 2
        items.append(f'<text x="0" y="{y + 11}">{_e(_clip(layer.node, 34))}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{row_h - 4}" '
                     f'fill="{_error_colour(db)}"/>'
                     f'<text x="{label_w + length + 4:.1f}" y="{y + 11}">{_e(_db(db))} dB</text>')
    return f'<svg class="bars" width="{width}" height="{height}" role="img" style="margin:0 16px">{"".join(items)}</svg>'


def _passes(passes) -> str:
    body = "".join(
        f"<tr><td>{_e(p['name'])}</td><td>{p['seconds'] * 1000:.1f} ms</td><td>{p['nodes_before']} -> "
        f"{p['nodes_after']}</td><td>{len(p['added'])} added, {len(p['removed'])} removed, "
        f"{len(p['rewired'])} rewired</td></tr>" for p in passes)
    return f"<table><thead><tr><th>pass</th><th>time</th><th>nodes</th><th>changes</th></tr></thead>" \
           f"<tbody>{body}</tbody></table>"


_COLUMNS = ("name", "kind", "op", "fused group", "rule", "dtype in -> out", "observed", "scale / zp", "status",
            "own dB")


def _table(rows) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in _COLUMNS)
    body = []
    for row in rows:
        dtypes = ",".join(dict.fromkeys(row.input_dtypes))
        dtypes = f"{dtypes} -> {row.output_dtype}" if row.output_dtype else dtypes
        observed = (f"{summarise(row.observed_min)} .. {summarise(row.observed_max)}"
                    if row.observed_min is not None else "")
        qparams = f"{summarise(row.scale)} / {summarise(row.zero_point)}" if row.scale is not None else ""
        cells = [row.name, row.kind, row.concept or row.target, row.fused_group or "", row.rule or "", dtypes,
                 observed, qparams, row.status, _db(row.own_sqnr_db) if row.own_sqnr_db is not None else ""]
        status_class = ' class="float"' if row.category == "float" else ""
        tds = "".join(f"<td{status_class if i == 8 else ''}>{_e(str(c))}</td>" for i, c in enumerate(cells))
        body.append(f'<tr id="row-{_e(row.name)}">{tds}</tr>')
    return f'<table id="nodes"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _error_colour(db: float) -> str:
    """Green at 40 dB and above, through yellow, to red at 20 dB and below."""
    share = 1.0 if db == math.inf else max(0.0, min(1.0, (db - 20.0) / 20.0))
    return f"hsl({int(share * 120)},70%,70%)"


def _db(value) -> str:
    return "inf" if value == math.inf else f"{value:.1f}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
