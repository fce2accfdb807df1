"""A tune run (``fxq.tuning.TuneReport``) as one self-contained HTML page: the verdict and what it cost, every
plan evaluated as a score-against-latency (Pareto) plot, the error each layer adds in int8 as a bar chart, and
the per-layer table with int8 and float times side by side. Inline CSS and SVG and one small script (sorting
the table); nothing is fetched, so the page works offline and can be attached to a bug report.
"""

from __future__ import annotations

import math

from fxq.dump.html import _STYLE as _DUMP_STYLE
from fxq.dump.html import _clip, _e, _error_colour
from fxq.tuning.report import LayerTuning, TunePoint, TuneReport

MEETS, MISSES, CHOSEN, FLOAT_LINE = "#2d6a4f", "#c1121f", "#1c7ed6", "#868e96"
INT8_BAR, FLOAT_BAR = "#52b788", "#f4a261"
PLOT_W, PLOT_H = 780, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 20, 46

_STYLE = _DUMP_STYLE + """
.summary{border-collapse:collapse;margin:6px 0 0;font-size:13px}.summary th,.summary td{border:0;padding:1px 12px 1px 0;
background:none;position:static}.met{color:#2d6a4f;font-weight:600}.missed{color:#c1121f;font-weight:600}
ul.tips{margin:4px 0 0;padding-left:20px}
tr.speed td{background:#fff3bf}.times span{display:block;height:5px;margin:1px 0}
.times .i8{background:""" + INT8_BAR + """}.times .fp{background:""" + FLOAT_BAR + """}
th.sortable{cursor:pointer}svg.plot text{font-size:11px}.note{margin:0 16px 8px;color:#495057}
"""

_SCRIPT = """
(function(){
  var table=document.getElementById('layers'), heads=table.querySelectorAll('th.sortable');
  function key(row,i){var c=row.cells[i], v=c.getAttribute('data-sort');
    if(v===null){return c.textContent.toLowerCase();} return v===''?Infinity:parseFloat(v);}
  for(var h=0;h<heads.length;h++){(function(th,i){th.onclick=function(){
    var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows), up=th.getAttribute('data-dir')!=='up';
    rows.sort(function(a,b){var x=key(a,i), y=key(b,i); return (x<y?-1:x>y?1:0)*(up?1:-1);});
    for(var r=0;r<rows.length;r++){body.appendChild(rows[r]);}
    th.setAttribute('data-dir',up?'up':'down');};})(heads[h],h);}
})();
"""


def tune_html(report: TuneReport, title: str) -> str:
    """The page for one tune run; every piece of text from the report is escaped."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<header><h1>{_e(title)}</h1>{_summary(report)}</header>",
             "<h2>Score against latency: every plan evaluated</h2>",
             '<div class="note">Each point is a plan, quantized, scored and timed on the example inputs; hover it '
             "for its name. Filled points meet the budget; the chosen plan is ringed.</div>",
             _pareto_svg(report),
             "<h2>Error each layer adds in int8 (own SQNR, lowest first)</h2>", _sensitivity_svg(report.layers),
             "<h2>Layers</h2>",
             '<div class="note">Highlighted rows are kept float because their int8 form is slower here; click a '
             "heading to sort.</div>", _layer_table(report.layers),
             f"<script>{_SCRIPT}</script></body></html>"]
    return "\n".join(parts)


# -- the summary -------------------------------------------------------------------------------------------------
def _summary(report: TuneReport) -> str:
    if report.met:
        verdict = '<span class="met" id="verdict">meets the budget</span>'
    else:
        tips = "".join(f"<li>{_e(tip)}</li>" for tip in report.suggestions)
        verdict = (f'<span class="missed" id="verdict">misses the budget by {_num(report.missed_by, 4)}</span>'
                   + (f'<ul class="tips" id="suggestions">{tips}</ul>' if tips else ""))
    speed = (f" ({report.float_latency_ms / report.latency_ms:.2f}x the float model's speed)"
             if report.latency_ms > 0 and math.isfinite(report.float_latency_ms) else "")
    counts = ", ".join(f"{count} {precision}" for precision, count in sorted(report.counts().items())) or "none"
    rows = [("metric", _e(report.metric)),
            ("float model's score", _num(report.float_score)),
            ("chosen plan's score", _num(report.score)),
            ("budget", f"score &gt;= {_num(report.target)} (max drop {_e(f'{report.max_drop:g}')})"),
            ("verdict", verdict),
            ("metric evaluations", str(report.evaluations)),
            ("latency", f"{_ms(report.latency_ms)} ms vs float {_ms(report.float_latency_ms)} ms{_e(speed)}"),
            ("threads", str(report.threads)), ("backend", _e(report.backend)),
            ("layers per precision", _e(counts)),
            *(("speed check", _e(note)) for note in report.notes)]
    body = "".join(f"<tr><th>{_e(name)}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="summary" id="summary">{body}</table>'


# -- the Pareto plot ---------------------------------------------------------------------------------------------
def _pareto_svg(report: TuneReport) -> str:
    points = [p for p in report.points if math.isfinite(p.score) and math.isfinite(p.latency_ms)]
    xs = [p.latency_ms for p in points] + _finite([report.float_latency_ms])
    ys = [p.score for p in points] + _finite([report.target, report.float_score])
    x_lo, x_hi = _span(xs, from_zero=True)
    y_lo, y_hi = _span(ys)
    inner_w, inner_h = PLOT_W - LEFT - RIGHT, PLOT_H - TOP - BOTTOM

    def sx(value: float) -> float:
        return LEFT + (value - x_lo) / (x_hi - x_lo) * inner_w

    def sy(value: float) -> float:
        return TOP + (y_hi - value) / (y_hi - y_lo) * inner_h

    items = [f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" fill="#fff" stroke="#ced4da"/>']
    for tick in _ticks(x_lo, x_hi):
        x = sx(tick)
        items.append(f'<line x1="{x:.1f}" y1="{TOP + inner_h}" x2="{x:.1f}" y2="{TOP + inner_h + 5}" '
                     f'stroke="#495057"/><text x="{x:.1f}" y="{TOP + inner_h + 17}" text-anchor="middle">'
                     f"{_e(_tick_label(tick))}</text>")
    for tick in _ticks(y_lo, y_hi):
        y = sy(tick)
        items.append(f'<line x1="{LEFT - 5}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}" stroke="#495057"/>'
                     f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + inner_w}" y2="{y:.1f}" stroke="#f1f3f5"/>'
                     f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{_e(_tick_label(tick))}</text>')
    items.append(f'<text x="{LEFT + inner_w / 2:.1f}" y="{PLOT_H - 8}" text-anchor="middle">measured latency '
                 f"(ms, {report.threads} threads)</text>"
                 f'<text transform="translate(14,{TOP + inner_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f"score ({_e(_clip(report.metric, 40))})</text>")
    if math.isfinite(report.target):
        y = sy(report.target)
        items.append(f'<line class="budget" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + inner_w}" y2="{y:.1f}" '
                     f'stroke="{MISSES}" stroke-dasharray="6 4"><title>budget: score &gt;= '
                     f"{_num(report.target)}</title></line>"
                     f'<text x="{LEFT + inner_w - 4}" y="{y - 4:.1f}" text-anchor="end" fill="{MISSES}">budget '
                     f"&gt;= {_num(report.target)}</text>")
    if math.isfinite(report.float_latency_ms):
        x = sx(report.float_latency_ms)
        items.append(f'<line class="float-latency" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + inner_h}" '
                     f'stroke="{FLOAT_LINE}" stroke-dasharray="2 3"><title>float model: '
                     f"{_ms(report.float_latency_ms)} ms</title></line>"
                     f'<text x="{x - 4:.1f}" y="{TOP + inner_h - 6}" text-anchor="end" fill="{FLOAT_LINE}">'
                     f"float model {_ms(report.float_latency_ms)} ms</text>")
    front = _front(points)
    if len(front) > 1:
        path = " ".join(f"{sx(p.latency_ms):.1f},{sy(p.score):.1f}" for p in front)
        items.append(f'<polyline class="front" points="{path}" fill="none" stroke="#adb5bd"/>')
    for index, point in enumerate(points):
        items.append(_point(point, index, sx(point.latency_ms), sy(point.score)))
    chosen = [p for p in points if p.chosen]
    for point in chosen:  # drawn last: on top of the others
        x, y = sx(point.latency_ms), sy(point.score)
        anchor = "end" if x > LEFT + inner_w * 0.6 else "start"
        dx = -10 if anchor == "end" else 10
        state = "meets the budget" if point.meets_budget else "misses the budget"
        label_y = y - 12 if y - 12 > TOP + 12 else y + 22  # below the point when it is at the top
        items.append(f'<g id="chosen-point"><circle cx="{x:.1f}" cy="{y:.1f}" r="10" fill="none" '
                     f'stroke="{CHOSEN}" stroke-width="2"><title>chosen: {_e(point.label)} ({state})</title>'
                     f'</circle><text x="{x + dx:.1f}" y="{label_y:.1f}" text-anchor="{anchor}" fill="{CHOSEN}" '
                     f'font-weight="600">chosen: {_e(_clip(point.label, 40))}</text></g>')
    legend = (f'<g class="legend" transform="translate({LEFT + inner_w + 14},{TOP + 6})">'
              f'<circle cx="6" cy="5" r="5" fill="{MEETS}"/><text x="18" y="9">meets the budget</text>'
              f'<circle cx="6" cy="23" r="4.5" fill="#fff" stroke="{MISSES}" stroke-width="1.5"/>'
              f'<text x="18" y="27">misses it</text>'
              f'<circle cx="6" cy="41" r="7" fill="none" stroke="{CHOSEN}" stroke-width="2"/>'
              f'<text x="18" y="45">the chosen plan</text>'
              f'<line x1="0" y1="59" x2="12" y2="59" stroke="{MISSES}" stroke-dasharray="3 2"/>'
              f'<text x="18" y="63">budget</text>'
              f'<line x1="6" y1="70" x2="6" y2="82" stroke="{FLOAT_LINE}" stroke-dasharray="2 2"/>'
              f'<text x="18" y="80">float model latency</text>'
              f'<line x1="0" y1="95" x2="12" y2="95" stroke="#adb5bd"/>'
              f'<text x="18" y="99">Pareto front</text></g>')
    if not points:
        items.append(f'<text x="{LEFT + inner_w / 2:.1f}" y="{TOP + inner_h / 2:.1f}" text-anchor="middle">'
                     "no plan was evaluated</text>")
    return (f'<svg id="pareto" class="plot" width="{PLOT_W}" height="{PLOT_H}" viewBox="0 0 {PLOT_W} {PLOT_H}" '
            f'role="img" style="margin:0 16px">{"".join(items)}{legend}</svg>')


def _point(point: TunePoint, index: int, x: float, y: float) -> str:
    tip = (f"{point.label}\nscore {_num(point.score)}, {_ms(point.latency_ms)} ms, {point.int8_layers} layers "
           f"int8\n{'meets' if point.meets_budget else 'misses'} the budget" + ("; chosen" if point.chosen else ""))
    classes = "point " + ("meets" if point.meets_budget else "misses") + (" chosen" if point.chosen else "")
    style = (f'fill="{MEETS}" stroke="{MEETS}"' if point.meets_budget else
             f'fill="#fff" stroke="{MISSES}" stroke-width="1.5"')
    return (f'<g class="{classes}" id="point-{index}"><title>{_e(tip)}</title>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if point.meets_budget else 4.5}" {style}/></g>')


def _front(points: list[TunePoint]) -> list[TunePoint]:
    """The plans no other plan beats on both latency and score, fastest first."""
    front, best = [], -math.inf
    for point in sorted(points, key=lambda p: (p.latency_ms, -p.score)):
        if point.score > best:
            front.append(point)
            best = point.score
    return front


def _span(values: list[float], from_zero: bool = False) -> tuple[float, float]:
    """A padded axis range holding ``values`` (never empty or zero-wide)."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if from_zero and lo >= 0:
        lo = 0.0
    if hi - lo < 1e-12:
        pad = max(abs(hi) * 0.05, 1e-6)
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.08
    return (lo if from_zero and lo == 0.0 else lo - pad), hi + pad


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) inside [lo, hi]."""
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:.6g}"


# -- the sensitivity chart ---------------------------------------------------------------------------------------
def _sensitivity_svg(layers: list[LayerTuning]) -> str:
    """One bar per layer, longer for more error (60 dB - own SQNR, clipped to [0, 60]); exact layers none."""
    ranked = sorted(layers, key=lambda layer: _db_value(layer.sensitivity_db))
    scale, row_h, label_w = 6, 18, 230
    width, height = label_w + 60 * scale + 150, max(len(ranked), 1) * row_h + 6
    items = []
    for index, layer in enumerate(ranked):
        db = _db_value(layer.sensitivity_db)
        length = 0.0 if db == math.inf else max(0.0, min(60.0, 60.0 - db)) * scale
        y = index * row_h + 3
        label = "exact (adds no error)" if db == math.inf else f"{db:.1f} dB"
        items.append(f'<g class="sensitivity"><title>{_e(layer.path)} ({_e(layer.concept)}): {_e(label)}, '
                     f'{_e(layer.precision)}</title>'
                     f'<text x="0" y="{y + 12}">{_e(_clip(layer.path, 36))}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{row_h - 5}" '
                     f'fill="{_error_colour(db)}"/>'
                     f'<text x="{label_w + length + 4:.1f}" y="{y + 12}">{_e(label)} ({_e(layer.precision)})'
                     f"</text></g>")
    if not ranked:
        items.append('<text x="0" y="14">no tunable layers</text>')
    return (f'<svg id="sensitivity" class="bars" width="{width}" height="{height}" role="img" '
            f'style="margin:0 16px">{"".join(items)}</svg>')


# -- the layer table ---------------------------------------------------------------------------------------------
_COLUMNS = ("layer", "op", "sensitivity dB", "int8 ms", "float ms", "int8 vs float", "precision", "why")


def _layer_table(layers: list[LayerTuning]) -> str:
    longest = max([t for layer in layers for t in (layer.int8_ms, layer.float_ms) if _finite([t])] or [1.0])
    head = "".join(f'<th class="sortable">{_e(c)}</th>' if c != "int8 vs float" else f"<th>{_e(c)}</th>"
                   for c in _COLUMNS)
    body = []
    for layer in layers:
        db = _db_value(layer.sensitivity_db)
        cells = [f"<td>{_e(layer.path)}</td>", f"<td>{_e(layer.concept)}</td>",
                 f'<td data-sort="{"" if db == math.inf else f"{db:.6g}"}">'
                 f'{"exact" if db == math.inf else f"{db:.1f}"}</td>',
                 f'<td data-sort="{_sort_value(layer.int8_ms)}">{_ms(layer.int8_ms)}</td>',
                 f'<td data-sort="{_sort_value(layer.float_ms)}">{_ms(layer.float_ms)}</td>',
                 f'<td class="times">{_time_bars(layer, longest)}</td>',
                 f'<td class="{"float" if layer.precision == "float" else ""}">{_e(layer.precision)}</td>',
                 f"<td>{_e(layer.why)}</td>"]
        speed = ' class="speed" title="kept float: int8 is slower here"' if _kept_for_speed(layer) else ""
        body.append(f'<tr id="layer-{_e(layer.path)}"{speed}>{"".join(cells)}</tr>')
    return (f'<table id="layers"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _time_bars(layer: LayerTuning, longest: float) -> str:
    """Two bars on one scale (the longest time of any layer = 120 px): int8 above, float below."""
    if not _finite([layer.int8_ms]) or not _finite([layer.float_ms]):
        return ""
    bars = []
    for css, name, value in (("i8", "int8", layer.int8_ms), ("fp", "float", layer.float_ms)):
        width = max(1.0, 120.0 * value / longest)
        bars.append(f'<span class="{css}" style="width:{width:.0f}px" title="{name} {_ms(value)} ms"></span>')
    return "".join(bars)


def _kept_for_speed(layer: LayerTuning) -> bool:
    return layer.precision == "float" and layer.for_speed


# -- numbers -----------------------------------------------------------------------------------------------------
def _db_value(value: float | None) -> float:
    """None (how JSON writes an exact layer's infinite SQNR) and inf both mean exact."""
    return math.inf if value is None else value


def _finite(values: list) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _sort_value(value: float | None) -> str:
    return f"{value:.6g}" if _finite([value]) else ""


def _num(value: float, digits: int = 5) -> str:
    return _e(f"{value:.{digits}g}")


def _ms(value: float | None) -> str:
    return _e(f"{value:.3g}") if _finite([value]) else ""
