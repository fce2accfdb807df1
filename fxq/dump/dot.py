"""The dump as a Graphviz graph: quantized nodes, float nodes and quantize/dequantize/observer boundaries in
distinct styles, so the float islands and the boundaries around them stand out (``dot -Tsvg`` renders it)."""

from __future__ import annotations

from fxq.dump.rows import NodeRow

# category -> node attributes
STYLES = {
    "quantized": 'shape=box, style="filled,rounded", fillcolor="#b7e4c7", color="#2d6a4f"',
    "float": 'shape=box, style="filled", fillcolor="#ffd6a5", color="#c1121f"',
    "boundary": 'shape=diamond, style="dashed", color="#6c757d", fontsize=9',
    "io": 'shape=ellipse, style="filled", fillcolor="#e9ecef", color="#495057"',
    "pending": 'shape=box, style="filled", fillcolor="#dee2e6", color="#495057"',
}


def to_dot(rows: list[NodeRow], title: str = "fxq") -> str:
    """A ``digraph`` with one node per row and an edge per input; labels show the op, fused group and status."""
    lines = [f"digraph {_quote(title)} {{", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];',
             f"  label={_quote(title)}; labelloc=t;"]
    for category, style in STYLES.items():
        lines.append(f"  // {category}: {style}")
    for row in rows:
        lines.append(f"  {_quote(row.name)} [label={_quote(_label(row))}, {STYLES[row.category]}];")
    for row in rows:
        for source in row.inputs:
            lines.append(f"  {_quote(source)} -> {_quote(row.name)};")
    lines.append("}")
    return "\n".join(lines)


def _label(row: NodeRow) -> str:
    parts = [row.name]
    if row.concept and row.concept != row.name:
        parts.append(row.concept)
    if row.fused_group:
        parts.append(f"[{row.fused_group}]")
    if row.status:
        parts.append(row.status if len(row.status) <= 60 else row.status[:59] + "…")
    if row.own_sqnr_db is not None and row.own_sqnr_db != float("inf"):
        parts.append(f"{row.own_sqnr_db:.1f} dB")
    return "\n".join(parts)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
