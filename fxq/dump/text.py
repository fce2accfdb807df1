"""The dump as text for a terminal: a table that fits the given width (120 columns by default), long cells
shortened with "…", then the full reasons of the nodes left float (the part a reader most needs whole)."""

from __future__ import annotations

import textwrap

from fxq.dump.rows import NodeRow

HEADERS = ("node", "op", "fused group", "rule", "dtype in->out", "observed range", "scale / zp", "status", "own dB")


def render_rows(rows: list[NodeRow], width: int = 120) -> str:
    """The rows as one table no wider than ``width``, followed by the float nodes' reasons."""
    cells = [_cells(row) for row in rows]
    has_error = any(row.sqnr_db is not None for row in rows)
    headers = list(HEADERS if has_error else HEADERS[:-1])
    cells = [line[: len(headers)] for line in cells]
    table = fit_table(headers, cells, width)
    floats = [(row.name, row.status[len("float: "):]) for row in rows if row.status.startswith("float: ")]
    if not floats:
        return table
    lines = [table, "", "left float, and why:"]
    for name, reason in floats:
        lines.extend(textwrap.wrap(f"{name}: {reason}", width, initial_indent="  ", subsequent_indent="    "))
    return "\n".join(lines)


def fit_table(headers: list[str], cells: list[list[str]], width: int) -> str:
    """A plain table without its empty columns, whose columns are shortened (widest first, headers too) until
    the whole table fits ``width``."""
    keep = [i for i in range(len(headers)) if i == 0 or any(line[i] for line in cells)]
    headers, cells = [headers[i] for i in keep], [[line[i] for i in keep] for line in cells]
    limits = [max([len(h)] + [len(line[i]) for line in cells]) for i, h in enumerate(headers)]
    gaps = 2 * (len(headers) - 1)
    while sum(limits) + gaps > width:
        widest = max(range(len(limits)), key=lambda i: limits[i])
        if limits[widest] <= 4:
            break  # nothing left to shorten sensibly: let it overflow rather than garble every cell
        limits[widest] -= 1
    lines = [[_shorten(cell, limits[i]) for i, cell in enumerate(line)] for line in [headers, *cells]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    lines.insert(1, ["-" * w for w in widths])
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _cells(row: NodeRow) -> list[str]:
    dtypes = ",".join(dict.fromkeys(row.input_dtypes)) if row.input_dtypes else ""
    if row.output_dtype:
        dtypes = f"{dtypes}->{row.output_dtype}" if dtypes else row.output_dtype
    status = "float" if row.status.startswith("float: ") else row.status
    error = "" if row.own_sqnr_db is None else f"{row.own_sqnr_db:.1f}"
    return [row.name, row.concept or row.target, row.fused_group or "", row.rule or "", dtypes,
            _range(row.observed_min, row.observed_max), _qparams(row.scale, row.zero_point), status, error]


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
