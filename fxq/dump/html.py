"""The dump as one self-contained HTML page: the graph drawn as SVG (nodes coloured by status, and by the
error they add when a comparison was made), the per-layer error as a bar chart, and the node table with a
filter. No external scripts, styles or fonts: it works offline and can be attached to a bug report.

Large graphs stay usable: the layout is layered and near-linear (``fxq.dump.layout``); nodes are grouped by
block (``layer1.0``, ``features.3``) and a group collapses into one box, which also closes up the rows it took;
a search box finds nodes; the SVG sits in a scrolling pane with zoom buttons; node details are native SVG
tooltips, and clicking a node jumps to its row. The page's script redraws the graph from the layout's data
(layer and column of each node, column of each edge's lane per layer) when a group opens or closes.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass

from fxq.dump.layout import Layout, layered
from fxq.dump.text import summarise

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 34, 20, 26, 10
FOLD_OVER = 60  # a graph deeper than this many layers (about 3,600 pixels) opens with its groups collapsed
FILL = {"quantized": "#b7e4c7", "float": "#ffd6a5", "boundary": "#f8f9fa", "io": "#e9ecef", "pending": "#dee2e6"}
STROKE = {"quantized": "#2d6a4f", "float": "#c1121f", "boundary": "#6c757d", "io": "#495057", "pending": "#495057"}

_STYLE = """
body{font:13px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#212529}
header{padding:10px 16px;background:#f1f3f5;border-bottom:1px solid #ced4da}
h1{font-size:16px;margin:0 0 4px}h2{font-size:14px;margin:16px 16px 6px}p.note{margin:4px 16px;max-width:900px}
.legend span{display:inline-block;margin-right:12px}.swatch{display:inline-block;width:12px;height:12px;
border:1px solid #495057;vertical-align:middle;margin-right:4px}
#pane{height:60vh;overflow:auto;border-top:1px solid #ced4da;border-bottom:1px solid #ced4da;background:#fff}
.tools{padding:6px 16px}button{font:inherit;margin-right:4px}#find{margin-left:12px;padding:2px 6px;width:220px}
table{border-collapse:collapse;margin:0 16px 24px;font-size:12px}
th,td{border:1px solid #dee2e6;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f1f3f5;position:sticky;top:0}tr:target td,tr.hit td{background:#fff3bf}
td.float{color:#c1121f}.bars text{font-size:11px}svg text{font-size:10px;pointer-events:none}
#filter{margin:0 16px 8px;padding:3px 6px;width:320px}
.tab,.group{cursor:pointer}.tab rect{fill:#e7f5ff;stroke:#74c0fc}.group rect{fill:#e7f5ff;stroke:#1c7ed6;
stroke-width:2}.hit rect{stroke:#f08c00;stroke-width:4}
"""

# D: the layout's data (see _layout_data); the drawing is the one ``drawing`` computes, with the layers that only
# hidden nodes used closed up, so a collapsed group takes one row.
_SCRIPT = """
(function(){
  var D=%(data)s, W=%(w)d, H=%(h)d, GX=%(gx)d, GY=%(gy)d, M=%(m)d;
  function $(id){return document.getElementById(id);}
  var svg=$('graph'), pane=$('pane'), base=svg.getAttribute('width')*1, height=svg.getAttribute('data-h')*1,
    zoom=1, closed={}, ys={}, hits=[], current=-1;
  var text=D.nodes.map(function(n,i){return $('node-'+i).textContent.toLowerCase();});
  function setZoom(z){zoom=Math.max(0.05,Math.min(4,z));svg.setAttribute('width',base*zoom);
    svg.setAttribute('height',height*zoom);}
  function key(i){var g=D.nodes[i][2];return g>=0&&closed[g]?-1-g:i;}
  function cell(k){return D.nodes[k<0?D.groups[-1-k]:k];}
  function x(c){return M+c*(W+GX);}
  function draw(){
    var used={}, routes=[], seen={}, count=0;
    D.nodes.forEach(function(n,i){used[cell(key(i))[0]]=1;});
    D.edges.forEach(function(e){
      var a=key(e[0]), b=key(e[1]), la=cell(a)[0], lb=cell(b)[0], lane=[];
      if(a===b||seen[a+'>'+b])return;
      seen[a+'>'+b]=1;
      e[2].forEach(function(c,j){var l=D.nodes[e[0]][0]+1+j;if(l>la&&l<lb){lane.push([l,c]);used[l]=1;}});
      routes.push([a,b,lane]);
    });
    ys={};
    Object.keys(used).map(Number).sort(function(p,q){return p-q;}).forEach(function(l){ys[l]=M+GY+(count++)*(H+GY);});
    D.nodes.forEach(function(n,i){var el=$('node-'+i);el.style.display=key(i)===i?'':'none';
      el.setAttribute('transform','translate('+x(n[1])+','+(ys[n[0]]||0)+')');});
    D.groups.forEach(function(a,g){var n=D.nodes[a], at='translate('+x(n[1])+','+ys[n[0]]+')';
      $('group-'+g).style.display=closed[g]?'':'none';$('tab-'+g).style.display=closed[g]?'none':'';
      $('group-'+g).setAttribute('transform',at);$('tab-'+g).setAttribute('transform',at);});
    $('edges').setAttribute('d',routes.map(function(r){
      var s=cell(r[0]), t=cell(r[1]), d='M'+(x(s[1])+W/2)+','+(ys[s[0]]+H);
      r[2].forEach(function(p){var c=x(p[1])+W/2;d+=' L'+c+','+ys[p[0]]+' L'+c+','+(ys[p[0]]+H);});
      return d+' L'+(x(t[1])+W/2)+','+ys[t[0]];}).join(' '));
    height=2*M+count*(H+GY);svg.setAttribute('data-h',height);svg.setAttribute('viewBox','0 0 '+base+' '+height);
    setZoom(zoom);
  }
  function show(k){var n=cell(k);pane.scrollLeft=x(n[1])*zoom-pane.clientWidth/3;
    pane.scrollTop=ys[n[0]]*zoom-pane.clientHeight/3;}
  function fold(state){D.groups.forEach(function(a,g){closed[g]=state;});draw();}
  svg.addEventListener('click',function(ev){var t=ev.target.closest('[data-g]');if(!t)return;
    var g=+t.getAttribute('data-g');ev.preventDefault();closed[g]=!closed[g];draw();show(key(D.groups[g]));});
  $('fold').onclick=function(){fold(true);};
  $('unfold').onclick=function(){fold(false);};
  $('find').oninput=function(){
    var q=this.value.toLowerCase(), inGroup={};
    hits=[];current=-1;
    text.forEach(function(t,i){var on=q!==''&&t.indexOf(q)>=0;$('node-'+i).classList.toggle('hit',on);
      if(on){hits.push(i);inGroup[D.nodes[i][2]]=1;}});
    D.groups.forEach(function(a,g){$('group-'+g).classList.toggle('hit',!!inGroup[g]);});
    $('found').textContent=q?hits.length+' found'+(hits.length?' (Enter: next)':''):'';
    if(hits.length)show(key(hits[0]));
  };
  $('find').onkeydown=function(ev){if(ev.key!=='Enter'||!hits.length)return;
    current=(current+1)%%hits.length;var i=hits[current], g=D.nodes[i][2];
    if(g>=0&&closed[g]){closed[g]=false;draw();}
    show(i);$('found').textContent=(current+1)+' of '+hits.length;};
  $('zin').onclick=function(){setZoom(zoom*1.25);};
  $('zout').onclick=function(){setZoom(zoom/1.25);};
  $('zfit').onclick=function(){setZoom(pane.clientWidth/base);};
  var rows=document.querySelectorAll('#nodes tbody tr');
  $('filter').oninput=function(){
    var q=this.value.toLowerCase();
    for(var i=0;i<rows.length;i++){rows[i].style.display=
      (!q||rows[i].textContent.toLowerCase().indexOf(q)>=0)?'':'none';}
  };
  if(D.fold)fold(true);
})();
"""


def to_html(document: dict) -> str:
    """The page for a dump document (``tools.dump.Dump.document()``)."""
    rows, layers = document["nodes"], document.get("comparison") or []
    errors = {layer.origin: layer for layer in layers}
    title = f"fxq dump: {document['model']} ({_where(document)}, backend {document['backend']})"
    picture = drawing(rows)
    groups = _groups(rows, picture.layout)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<header><h1>{_e(title)}</h1>{_summary(rows)}{_legend(bool(layers))}</header>",
             '<div class="tools"><button id="zin">zoom in</button><button id="zout">zoom out</button>'
             '<button id="zfit">fit width</button><button id="fold">collapse all</button>'
             '<button id="unfold">expand all</button>'
             '<input id="find" placeholder="find nodes (name, op, module...)"> <span id="found"></span>'
             '<div>hover a node for details; click it for its row; click a group\'s tab or box to collapse or '
             'expand it</div></div>',
             f'<div id="pane">{_graph_svg(rows, picture, groups, errors)}</div>']
    if layers:
        parts.append("<h2>Error each layer adds (own SQNR, lowest first)</h2>" + _bars(layers))
    if document.get("passes"):
        parts.append("<h2>Passes</h2>" + _passes(document["passes"]))
    parts.append("<h2>Nodes</h2>" + '<input id="filter" placeholder="filter rows (name, op, status...)">'
                 + _table(rows, errors if layers else None))
    data = json.dumps(_layout_data(rows, picture, groups), separators=(",", ":")).replace("</", "<\\/")
    script = _SCRIPT % {"data": data, "w": BOX_W, "h": BOX_H, "gx": GAP_X, "gy": GAP_Y, "m": MARGIN}
    parts.append(f"<script>{script}</script></body></html>")
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


@dataclass(frozen=True)
class Drawing:
    """The graph in pixels: each node's box (top-left corner) and each edge as a polyline that crosses the
    layers between its ends vertically, in its lane, so it never runs behind another box."""

    boxes: dict[str, tuple[int, int]]
    edges: list[tuple[str, str, list[tuple[int, int]]]]
    width: int
    height: int
    layout: Layout


def drawing(rows) -> Drawing:
    """Where ``rows``' nodes and edges go on the page (the script's ``draw`` computes the same)."""
    layout = layered([row.name for row in rows], {row.name: row.inputs for row in rows})

    def x(column: int) -> int:
        return MARGIN + column * (BOX_W + GAP_X) + BOX_W // 2

    def y(layer: int) -> int:
        return MARGIN + GAP_Y + layer * (BOX_H + GAP_Y)

    boxes = {name: (x(p.column) - BOX_W // 2, y(p.layer)) for name, p in layout.nodes.items()}
    edges = []
    for (source, target), lane in layout.lanes.items():
        start, end = layout.nodes[source], layout.nodes[target]
        points = [(x(start.column), y(start.layer) + BOX_H)]
        for layer, column in enumerate(lane, start.layer + 1):
            points += [(x(column), y(layer)), (x(column), y(layer) + BOX_H)]
        edges.append((source, target, points + [(x(end.column), y(end.layer))]))
    return Drawing(boxes, edges, 2 * MARGIN + layout.columns * (BOX_W + GAP_X),
                   2 * MARGIN + layout.layers * (BOX_H + GAP_Y), layout)


def group_of(module_path: str) -> str:
    """The block a node belongs to: its module path up to the first index ("layer1.0", "features.3",
    "encoder.layers.0": an entry of a Sequential or ModuleList, the unit a network is read in), else its top-level
    module; "" for the root."""
    parts = module_path.split(".") if module_path else []
    for index, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: index + 1])
    return parts[0] if parts else ""


def _groups(rows, layout: Layout) -> dict[str, list[str]]:
    """Group name -> its nodes, for groups of two nodes or more; its anchor (where its tab and collapsed box go,
    the top-left node) first."""
    members: dict[str, list[str]] = {}
    for row in rows:
        if group_of(row.module_path):
            members.setdefault(group_of(row.module_path), []).append(row.name)
    return {name: sorted(names, key=lambda n: (layout.nodes[n].layer, layout.nodes[n].column))
            for name, names in members.items() if len(names) > 1}


def _layout_data(rows, picture: Drawing, groups: dict[str, list[str]]) -> dict:
    """What the script redraws from: per node [layer, column, group index or -1]; per edge [source, target, its
    lane's columns]; per group the index of its anchor node; and whether to start collapsed."""
    index = {row.name: i for i, row in enumerate(rows)}
    group_index = {name: g for g, members in enumerate(groups.values()) for name in members}
    nodes = [[p.layer, p.column, group_index.get(row.name, -1)]
             for row, p in ((row, picture.layout.nodes[row.name]) for row in rows)]
    edges = [[index[s], index[t], list(lane)] for (s, t), lane in picture.layout.lanes.items()]
    return {"nodes": nodes, "edges": edges, "groups": [index[members[0]] for members in groups.values()],
            "fold": picture.layout.layers > FOLD_OVER}


def _graph_svg(rows, picture: Drawing, groups: dict[str, list[str]], errors: dict) -> str:
    path = " ".join("M" + " L".join(f"{x},{y}" for x, y in points) for _, _, points in picture.edges)
    items = [f'<path id="edges" d="{path}" fill="none" stroke="#adb5bd"/>']
    for i, row in enumerate(rows):
        x, y = picture.boxes[row.name]
        fill = FILL[row.category]
        if row.category == "quantized" and row.own_sqnr_db is not None:
            fill = _error_colour(row.own_sqnr_db)
        dash = ' stroke-dasharray="4 2"' if row.category == "boundary" else ""
        second = row.status if row.category != "io" else row.kind
        items.append(
            f'<g id="node-{i}" transform="translate({x},{y})"><a href="#row-{_e(row.name)}">'
            f'<title>{_e(_tooltip(row, errors.get(row.origin)))}</title>'
            f'<rect width="{BOX_W}" height="{BOX_H}" rx="4" fill="{fill}" stroke="{STROKE[row.category]}"{dash}/>'
            f'<text x="5" y="14">{_e(_clip(row.name, 24))}</text>'
            f'<text x="5" y="27" fill="#495057">{_e(_clip(second, 26))}</text></a></g>')
    for g, (name, members) in enumerate(groups.items()):
        x, y = picture.boxes[members[0]]
        at = f'data-g="{g}" transform="translate({x},{y})"'
        items.append(f'<g id="tab-{g}" class="tab" {at}><title>{_e(name)}: click to collapse</title>'
                     f'<rect y="-15" width="{BOX_W}" height="13" rx="3"/>'
                     f'<text x="4" y="-5">▾ {_e(_clip(name, 20))} ({len(members)})</text></g>')
        items.append(f'<g id="group-{g}" class="group" {at} style="display:none">'
                     f'<title>{_e(name)}: {len(members)} nodes; click to expand</title>'
                     f'<rect width="{BOX_W}" height="{BOX_H}" rx="4"/>'
                     f'<text x="5" y="14">▸ {_e(_clip(name, 22))}</text>'
                     f'<text x="5" y="27" fill="#495057">{len(members)} nodes</text></g>')
    return (f'<svg id="graph" width="{picture.width}" height="{picture.height}" data-h="{picture.height}" '
            f'viewBox="0 0 {picture.width} {picture.height}" role="img">{"".join(items)}</svg>')


def _tooltip(row, error) -> str:
    lines = [f"{row.name} ({row.kind} {row.target})"]
    for label, value in (("module", row.module_path), ("op", row.concept), ("fused", row.fused_group),
                         ("qconfig", row.qconfig), ("rule", row.rule), ("status", row.status),
                         ("weight", row.weight)):
        if value:
            lines.append(f"{label}: {value}")
    if row.scale is not None:
        lines.append(f"scale {summarise(row.scale)}, zero point {summarise(row.zero_point)}")
    if row.observed_min is not None:
        lines.append(f"observed {summarise(row.observed_min)} .. {summarise(row.observed_max)}")
    lines += [f"made by {text}" for text in row.made_by] + [f"near miss {text}" for text in row.near_misses]
    if error is not None:
        lines.append(f"SQNR {_db(error.sqnr_db)} dB (worst channel {_db(error.worst_channel_sqnr_db)} dB), "
                     f"cosine {error.cosine:.5f}, own SQNR {_own(error.own_sqnr_db)}"
                     f"{' dB' if error.own_sqnr_db != math.inf else ''}")
    return "\n".join(lines)


def _bars(layers) -> str:
    """One bar per layer that adds error: longer for more (60 dB - own SQNR, clipped to [0, 60]). A layer whose
    output is no further from the float model than its worst input's (own SQNR inf: an exact op such as a pool
    or a reshape, a float layer, an add whose rounding is below the noise it receives) gets no bar but a mention
    under the chart: "inf dB" read as a measurement."""
    adding = [layer for layer in layers if layer.own_sqnr_db != math.inf]
    scale, row_h, label_w = 6, 16, 220
    width, height = label_w + 60 * scale + 80, len(adding) * row_h + 4
    items = []
    for index, layer in enumerate(adding):
        db = layer.own_sqnr_db
        length = max(0.0, min(60.0, 60.0 - db)) * scale
        y = index * row_h + 2
        items.append(f'<text x="0" y="{y + 11}">{_e(_clip(layer.node, 34))}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{row_h - 4}" '
                     f'fill="{_error_colour(db)}"/>'
                     f'<text x="{label_w + length + 4:.1f}" y="{y + 11}">{_e(_db(db))} dB</text>')
    chart = (f'<svg class="bars" width="{width}" height="{height}" role="img" style="margin:0 16px">'
             f'{"".join(items)}</svg>') if adding else ""
    exact = [layer for layer in layers if layer.own_sqnr_db == math.inf]
    if not exact:
        return chart
    names = ", ".join(f"{layer.node} ({_db(layer.sqnr_db)} dB)" for layer in exact)
    return (f'{chart}<p class="note" id="no-added-error">No measurable error added (output no further from the '
            f'float model than its worst input; SQNR in brackets): {_e(names)}</p>')


def _passes(passes) -> str:
    body = "".join(
        f"<tr><td>{_e(p['name'])}</td><td>{p['seconds'] * 1000:.1f} ms</td><td>{p['nodes_before']} -> "
        f"{p['nodes_after']}</td><td>{len(p['added'])} added, {len(p['removed'])} removed, "
        f"{len(p['rewired'])} rewired</td></tr>" for p in passes)
    return f"<table><thead><tr><th>pass</th><th>time</th><th>nodes</th><th>changes</th></tr></thead>" \
           f"<tbody>{body}</tbody></table>"


_COLUMNS = ("name", "kind", "op", "fused group", "rule", "dtype in -> out", "observed", "scale / zp", "status")
_ERROR_COLUMNS = ("SQNR dB", "own dB", "worst channel dB", "cosine")


def _table(rows, errors: dict | None) -> str:
    """The node table; with a comparison (``errors``: origin -> layer error), its columns too."""
    columns = _COLUMNS + (_ERROR_COLUMNS if errors is not None else ())
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        dtypes = ",".join(dict.fromkeys(row.input_dtypes))
        dtypes = f"{dtypes} -> {row.output_dtype}" if row.output_dtype else dtypes
        observed = (f"{summarise(row.observed_min)} .. {summarise(row.observed_max)}"
                    if row.observed_min is not None else "")
        qparams = f"{summarise(row.scale)} / {summarise(row.zero_point)}" if row.scale is not None else ""
        cells = [row.name, row.kind, row.concept or row.target, row.fused_group or "", row.rule or "", dtypes,
                 observed, qparams, row.status]
        error = errors.get(row.origin) if errors is not None else None
        if errors is not None:
            cells += ([_db(error.sqnr_db), _own(error.own_sqnr_db), _db(error.worst_channel_sqnr_db),
                       f"{error.cosine:.5f}"] if error is not None else [""] * len(_ERROR_COLUMNS))
        status_class = ' class="float"' if row.category == "float" else ""
        tds = "".join(f"<td{status_class if i == 8 else ''}>{_e(str(c))}</td>" for i, c in enumerate(cells))
        body.append(f'<tr id="row-{_e(row.name)}">{tds}</tr>')
    return f'<table id="nodes"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _error_colour(db: float) -> str:
    """Green at 40 dB and above, through yellow, to red at 20 dB and below."""
    share = 1.0 if db == math.inf else max(0.0, min(1.0, (db - 20.0) / 20.0))
    return f"hsl({int(share * 120)},70%,70%)"


def _db(value: float) -> str:
    return "inf" if value == math.inf else f"{value + 0.0:.1f}"  # + 0.0: no "-0.0"


def _own(value: float) -> str:
    """An own SQNR as text: inf is no measurable added error, not a measured infinity."""
    return "none added" if value == math.inf else _db(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
