"""``onnxkit view``: Netron on loopback, or a static rendering (Graphviz DOT or self-contained SVG/HTML)."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

import onnx

from onnxkit.errors import InvalidRequest, MissingDependency
from onnxkit.inspect import read_graph

LOOPBACK = "127.0.0.1"
_BOX_W, _BOX_H, _GAP_X, _GAP_Y = 170, 34, 24, 46


def serve(path: Path, port: int = 0, browse: bool = True) -> tuple[str, int]:
    """Serve ``path`` with Netron on 127.0.0.1 (never on other interfaces); returns the address."""
    try:
        import netron
    except ImportError as exc:
        raise MissingDependency("netron", "view") from exc
    if not path.exists():
        raise InvalidRequest(f"{path} does not exist; expected an .onnx file")
    address = netron.start(str(path), address=(LOOPBACK, port), browse=browse)
    return str(address[0]), int(address[1])


def wait() -> None:
    import netron

    netron.wait()


def stop(address: tuple[str, int]) -> None:
    import netron

    netron.stop(address)




def _drawn(node: onnx.NodeProto) -> bool:
    # A Constant node is a weight in another form: drawn, exporters' hundreds of them fill the first row
    # (MiniLM: 164 boxes, 32,000 px wide) and push every real op off screen. Netron hides them too.
    return not (node.op_type == "Constant" and node.domain in ("", "ai.onnx"))


def _layers(graph: onnx.GraphProto) -> list[list[int]]:
    """Drawn nodes grouped by depth (longest path from the graph inputs), a simple layered layout."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out and _drawn(node)}
    depth: dict[int, int] = {}
    for i, node in enumerate(graph.node):  # ONNX nodes are topologically sorted
        if not _drawn(node):
            continue
        parents = [producer[n] for n in node.input if n in producer and producer[n] != i]
        depth[i] = 1 + max((depth[p] for p in parents if p in depth), default=-1)
    rows: dict[int, list[int]] = defaultdict(list)
    for i, d in depth.items():
        rows[d].append(i)
    return [rows[d] for d in sorted(rows)]


def _label(node: onnx.NodeProto) -> str:
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain.split('.')[-1]}.{node.op_type}"
    return op


def to_dot(graph: onnx.GraphProto) -> str:
    inits = {i.name for i in graph.initializer}
    lines = ["digraph onnx {", '  rankdir=TB; node [shape=box, fontname="Helvetica", fontsize=10];']
    style = "shape=ellipse, style=filled, fillcolor"
    for value in graph.input:
        if value.name not in inits:
            lines.append(f'  "in:{value.name}" [label="{value.name}", {style}="#dfe"];')
    for value in graph.output:
        lines.append(f'  "out:{value.name}" [label="{value.name}", {style}="#fde"];')
    producer: dict[str, str] = {v.name: f"in:{v.name}" for v in graph.input if v.name not in inits}
    for i, node in enumerate(graph.node):
        lines.append(f'  n{i} [label="{_label(node)}"];')
        for out in node.output:
            producer[out] = f"n{i}"
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name in producer:
                lines.append(f'  "{producer[name]}" -> n{i};')
    for value in graph.output:
        if value.name in producer:
            lines.append(f'  "{producer[value.name]}" -> "out:{value.name}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_svg(graph: onnx.GraphProto) -> str:
    rows = _layers(graph)
    width = max((len(r) for r in rows), default=1) * (_BOX_W + _GAP_X) + _GAP_X
    height = len(rows) * (_BOX_H + _GAP_Y) + _GAP_Y
    pos: dict[int, tuple[int, int]] = {}
    for y, row in enumerate(rows):
        offset = (width - len(row) * (_BOX_W + _GAP_X) + _GAP_X) // 2
        for x, i in enumerate(row):
            pos[i] = (offset + x * (_BOX_W + _GAP_X), _GAP_Y + y * (_BOX_H + _GAP_Y))
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out and i in pos}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="12">'
    ]
    for i, node in enumerate(graph.node):
        if i not in pos:
            continue
        x2, y2 = pos[i]
        for name in node.input:
            if name in producer and producer[name] in pos:
                x1, y1 = pos[producer[name]]
                parts.append(
                    f'<line x1="{x1 + _BOX_W // 2}" y1="{y1 + _BOX_H}" x2="{x2 + _BOX_W // 2}" '
                    f'y2="{y2}" stroke="#999"/>'
                )
    for i, node in enumerate(graph.node):
        if i not in pos:
            continue
        x, y = pos[i]
        title = html.escape(f"{node.name}: {', '.join(node.input)} → {', '.join(node.output)}")
        parts.append(
            f'<g><title>{title}</title><rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" '
            f'rx="5" fill="#eef3fb" stroke="#4a6fa5"/><text x="{x + _BOX_W // 2}" y="{y + 21}" '
            f'text-anchor="middle">{html.escape(_label(node))}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def to_html(graph: onnx.GraphProto, title: str) -> str:
    def io(values: Any) -> str:
        return ", ".join(html.escape(v.name) for v in values)

    inits = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    hidden = sum(not _drawn(n) for n in graph.node)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>inputs: {io(inputs)}<br>outputs: {io(graph.output)}<br>"
        f"{len(graph.node)} nodes ({hidden} Constant nodes not drawn); hover a box for its tensors.</p>"
        f"{to_svg(graph)}</body></html>\n"
    )


def rendering(path: Path, suffix: str) -> str:
    """A static rendering of ``path`` (a file, or a folder's model.onnx): .dot, .svg or .html.

    Only the structure is read (``inspect.read_graph``): weights are irrelevant to a drawing.
    """
    if not path.exists():
        raise InvalidRequest(f"{path} does not exist; expected an .onnx file")
    suffix = suffix.lower()
    if suffix not in (".dot", ".svg", ".html", ".htm"):
        raise InvalidRequest(f"expected a .dot, .svg or .html rendering, got {suffix!r}")
    graph = read_graph(path)
    if suffix == ".dot":
        return to_dot(graph)
    if suffix == ".svg":
        return to_svg(graph)
    return to_html(graph, path.name)


def render(path: Path, output: Path) -> Path:
    """Write a static rendering chosen by suffix: .dot (Graphviz source), .svg, or .html."""
    if output.suffix.lower() not in (".dot", ".svg", ".html", ".htm"):
        raise InvalidRequest(
            f"--output {output}: expected a .dot, .svg or .html file name, got {output.suffix.lower()!r}"
        )
    output.write_text(rendering(path, output.suffix), encoding="utf-8")
    return output
