"""The dump as text for a terminal: a table that fits the given width (120 columns by default), long cells
shortened with "…", then the qconfigs by key (the table names them Q1, Q2... with the rule that chose them) and
the full reasons of the nodes left float (the part a reader most needs whole)."""

from __future__ import annotations

import textwrap

from fxq.dump.rows import NodeRow

HEADERS = ("node", "call", "op", "fused", "qconfig: rule", "dtype", "observed", "scale / zp", "status", "own dB")
# How short each column may get: what identifies a node (its name) and what it became (status) are kept longest.
FLOORS = [10, 6, 8, 6, 9, 8, 11, 11, 22, 6]
_DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64", "quint8": "u8", "qint8": "i8",
           "qint32": "i32", "int64": "i64", "int32": "i32", "uint8": "u8", "int8": "i8"}
_KIND = {"module": "mod", "function": "fn", "method": "meth", "placeholder": "input", "constant": "const"}


def render_rows(rows: list[NodeRow], width: int = 120, rules: bool = False) -> str:
    """The rows as one table no wider than ``width``, then the qconfig key and the float nodes' reasons; with
    ``rules``, the passes and rules (file:line) that made each node and the near misses."""
    keys = {text: f"Q{i}" for i, text in enumerate(dict.fromkeys(r.qconfig for r in rows if r.qconfig), 1)}
    cells = [_cells(row, keys) for row in rows]
    has_error = any(row.sqnr_db is not None for row in rows)
    headers = list(HEADERS if has_error else HEADERS[:-1])
    cells = [line[: len(headers)] for line in cells]
    lines = [fit_table(headers, cells, width, FLOORS[: len(headers)])]
    if keys:
        lines += ["", "qconfigs:"] + [f"  {key}: {text}" for text, key in keys.items()]
    if any(row.output_dtype for row in rows):
        lines += ["dtypes: f32 float32, u8 quint8, i8 qint8, i64 int64"]
    floats = [(row.name, row.status[len("float: "):]) for row in rows if row.status.startswith("float: ")]
    if floats:
        lines += ["", "left float, and why:"]
        for name, reason in floats:
            lines.extend(textwrap.wrap(f"{name}: {reason}", width, initial_indent="  ", subsequent_indent="    "))
    if rules:
        lines += ["", "made by (pass:rule (file:line)), and near misses:"]
        for row in rows:
            for text in (*row.made_by, *(f"near miss {miss}" for miss in row.near_misses)):
                lines.extend(textwrap.wrap(f"{row.name}: {text}", width, initial_indent="  ",
                                           subsequent_indent="    "))
    return "\n".join(lines)


def fit_table(headers: list[str], cells: list[list[str]], width: int, floors: list[int] | None = None) -> str:
    """A plain table without its empty columns, shortened until it fits ``width``: the widest column above its
    floor loses a character at a time (headers too), so narrow columns and those with high floors stay whole.
    The first column names the row: it loses its middle, so ``quantize_per_tensor_2`` and ``..._8`` stay apart."""
    floors = floors or [4] * len(headers)
    keep = [i for i in range(len(headers)) if i == 0 or any(line[i] for line in cells)]
    headers, floors = [headers[i] for i in keep], [floors[i] for i in keep]
    cells = [[line[i] for i in keep] for line in cells]
    limits = [max([len(h)] + [len(line[i]) for line in cells]) for i, h in enumerate(headers)]
    gaps = 2 * (len(headers) - 1)
    while sum(limits) + gaps > width:
        candidates = [i for i in range(len(limits)) if limits[i] > floors[i]]
        if not candidates:
            break  # nothing left to shorten sensibly: let it overflow rather than garble every cell
        widest = max(candidates, key=lambda i: limits[i] - floors[i])
        limits[widest] -= 1
    lines = [[(_shorten_middle if i == 0 else _shorten)(cell, limits[i]) for i, cell in enumerate(line)]
             for line in [headers, *cells]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    lines.insert(1, ["-" * w for w in widths])
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _shorten_middle(text: str, limit: int) -> str:
    if len(text) <= limit or limit < 3:
        return _shorten(text, limit)
    tail = (limit - 1) // 2
    return text[: limit - 1 - tail] + "…" + text[len(text) - tail:]


def _cells(row: NodeRow, keys: dict[str, str]) -> list[str]:
    dtypes = ",".join(dict.fromkeys(_DTYPES.get(d, d) for d in row.input_dtypes))
    if row.output_dtype:
        output = _DTYPES.get(row.output_dtype, row.output_dtype)
        dtypes = f"{dtypes}->{output}" if dtypes else output
    status = "float" if row.status.startswith("float: ") else row.status
    error = "" if row.own_sqnr_db is None else f"{row.own_sqnr_db:.1f}"
    qconfig = f"{keys[row.qconfig]}: {row.rule}" if row.qconfig else (f"none: {row.rule}" if row.rule else "")
    return [row.name, f"{_KIND.get(row.kind, row.kind)} {row.target}", row.concept or "", row.fused_group or "",
            qconfig, dtypes, _range(row.observed_min, row.observed_max), _qparams(row.scale, row.zero_point), status,
            error]


def summarise(value, digits: int = 3) -> str:
    """A number as text; a per-channel list as "low..high (N ch)"."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if not value:
            return ""
        low, high = min(value), max(value)
        return f"{_number(low, digits)}..{_number(high, digits)} ({len(value)} ch)"
    return _number(value, digits)


def _number(value, digits: int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.{digits}g}"


def _range(low, high) -> str:
    if low is None or high is None:
        return ""
    if isinstance(low, (list, tuple)):
        return f"{_number(min(low), 3)}..{_number(max(high), 3)} ({len(low)} ch)"
    return f"{_number(low, 3)}..{_number(high, 3)}"


def _qparams(scale, zero_point) -> str:
    if scale is None:
        return ""
    if isinstance(scale, (list, tuple)):
        return summarise(scale)
    return f"{_number(scale, 3)} / {zero_point}"
