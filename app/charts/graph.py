"""Graph charts (a circuit): the edges and nodes read from the store, laid out as text.

Layout: one row of boxes per layer, the lowest layer at the bottom (a node fed by a node of its
own layer, an MLP by its block's heads, sits on a row just above them). Each node's outgoing
edges leave its box's top (┴) on one vertical track that runs up to every target's row; there each
edge turns along its own channel line under the target's row and enters the target's box at its
bottom (┬). Boxes are placed left to right in the first columns where neither a box nor a track
passing through that row is, so that a track never runs through a box; where lines cross they
read ┼. Only the ``limit`` strongest edges are drawn; every edge is listed under the picture.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from analyses.core.charts import Graph

UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
JOINS = {UP | DOWN: "│", LEFT | RIGHT: "─", UP | DOWN | LEFT | RIGHT: "┼", DOWN | RIGHT: "┌", DOWN | LEFT: "┐", UP | RIGHT: "└",
         UP | LEFT: "┘", UP | DOWN | RIGHT: "├", UP | DOWN | LEFT: "┤", LEFT | RIGHT | DOWN: "┬", LEFT | RIGHT | UP: "┴",
         UP: "╵", DOWN: "╷", LEFT: "╴", RIGHT: "╶"}


@dataclass
class Circuit:
    """What a Graph chart shows: nodes (name -> layer), edges (source, target, label, value), the
    nodes' readout columns, and every edge row as stored (for the listing)."""

    nodes: dict[str, int] = field(default_factory=dict)
    edges: list[tuple[str, str, str | None, float]] = field(default_factory=list)
    info: dict[str, tuple[tuple[str, Any], ...]] = field(default_factory=dict)


@dataclass
class Layout:
    lines: list[str]
    boxes: dict[str, tuple[int, int, int]]  # node -> (top line, first column, last column + 1)
    order: list[str]  # nodes bottom row first, left to right: the cursor's walk
    drawn: int  # edges drawn


def natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def circuit_of(columns: list[str], rows: list[tuple], chart: Graph, node_rows: tuple[list[str], list[tuple]] | None = None) -> Circuit:
    """The Circuit of a Graph chart's edge rows (and its node table's rows)."""
    at = {name: columns.index(name) for name in columns}
    circuit = Circuit()
    for row in rows:
        source, target = str(row[at[chart.source]]), str(row[at[chart.target]])
        circuit.nodes.setdefault(source, int(row[at[chart.source_layer]]))
        circuit.nodes.setdefault(target, int(row[at[chart.target_layer]]))
        label = row[at[chart.label]] if chart.label else None
        value = row[at[chart.value]]
        circuit.edges.append((source, target, None if label is None else str(label), float(value) if value is not None else 0.0))
    if node_rows is not None:
        node_columns, values = node_rows
        skip = {"node", "input_id"}
        for row in values:
            named = dict(zip(node_columns, row))
            circuit.info[str(named["node"])] = tuple((name, value) for name, value in named.items() if name not in skip)
    return circuit


def layout(circuit: Circuit, limit: int = 24) -> Layout:
    """The circuit as lines of text (see the module's doc)."""
    strongest = sorted(circuit.edges, key=lambda edge: -abs(edge[3]))[: max(0, limit)]
    names = set(circuit.nodes)
    # Rows: (layer, 1 when fed by a node of its own layer).
    row_key = {name: (circuit.nodes[name], 0) for name in names}
    for source, target, _, _ in strongest:
        if circuit.nodes[source] == circuit.nodes[target]:
            row_key[target] = (circuit.nodes[target], 1)
    keys = sorted(set(row_key.values()))
    row_of = {name: keys.index(key) for name, key in row_key.items()}
    outgoing: dict[str, list[tuple[str, str | None, float]]] = {}
    incoming: dict[int, list[tuple[str, str]]] = {}
    for source, target, label, value in strongest:
        outgoing.setdefault(source, []).append((target, label, value))
        incoming.setdefault(row_of[target], []).append((source, target))
    # Columns: boxes avoid boxes and the tracks passing through their row.
    taken: dict[int, list[tuple[int, int]]] = {}
    left: dict[str, int] = {}
    for name in sorted(names, key=lambda n: (row_of[n], natural(n))):
        width, row = len(name) + 2, row_of[name]
        reach = max((row_of[target] for target, _, _ in outgoing.get(name, [])), default=row)
        x = 0
        while True:
            centre = x + width // 2
            clash = [(start, stop) for start, stop in taken.get(row, []) if start < x + width + 1 and x < stop + 1]
            clash += [(start, stop) for r in range(row + 1, reach + 1) for start, stop in taken.get(r, []) if start <= centre < stop + 1]
            if not clash:
                break
            x = max(stop for _, stop in clash) + 1
        left[name] = x
        taken.setdefault(row, []).append((x, x + width))
        for r in range(row + 1, reach + 1):
            taken.setdefault(r, []).append((centre, centre + 1))
    # Lines, top row first: a box is 3 lines; under it one channel line per edge into the row (one at least).
    n_rows = len(keys)
    channels = {row: max(1, len(incoming.get(row, []))) for row in range(n_rows)}
    top_of: dict[int, int] = {}
    y = 0
    for row in reversed(range(n_rows)):
        top_of[row] = y
        y += 3 + channels[row]
    height = y
    width = max((left[name] + len(name) + 2 for name in names), default=0)
    joins = [[0] * (width + 1) for _ in range(height)]

    def centre(name: str) -> int:
        return left[name] + (len(name) + 2) // 2

    def vertical(x: int, y1: int, y2: int) -> None:
        for line in range(min(y1, y2), max(y1, y2) + 1):
            if line > min(y1, y2):
                joins[line][x] |= UP
            if line < max(y1, y2):
                joins[line][x] |= DOWN

    def horizontal(y0: int, x1: int, x2: int) -> None:
        for column in range(min(x1, x2), max(x1, x2) + 1):
            if column > min(x1, x2):
                joins[y0][column] |= LEFT
            if column < max(x1, x2):
                joins[y0][column] |= RIGHT

    used: dict[int, int] = {}
    for source, target, _, _ in strongest:
        row = row_of[target]
        channel = top_of[row] + 3 + used.get(row, 0)
        used[row] = used.get(row, 0) + 1
        start = top_of[row_of[source]] - 1
        vertical(centre(source), start, channel)
        joins[start][centre(source)] |= DOWN
        horizontal(channel, centre(source), centre(target))
        vertical(centre(target), top_of[row] + 2, channel)
    grid = [[JOINS.get(code, " ") for code in line] for line in joins]
    boxes: dict[str, tuple[int, int, int]] = {}
    for name in names:
        top, x, w = top_of[row_of[name]], left[name], len(name) + 2
        grid[top][x: x + w] = ["┌", *("─" * (w - 2)), "┐"]
        grid[top + 1][x: x + w] = ["│", *name, "│"]
        grid[top + 2][x: x + w] = ["└", *("─" * (w - 2)), "┘"]
        if name in outgoing:
            grid[top][centre(name)] = "┴"
        boxes[name] = (top, x, x + w)
    for target in {edge[1] for edge in strongest}:
        top = top_of[row_of[target]]
        grid[top + 2][centre(target)] = "┬"
    order = sorted(names, key=lambda n: (row_of[n], left[n]))
    return Layout(["".join(line).rstrip() for line in grid], boxes, order, len(strongest))


def describe(circuit: Circuit, name: str) -> str:
    """One line on a node: its layer, its readout columns that have a value, its edges in and out."""
    from app.charts import format_cell

    parts = [name, f"layer {circuit.nodes.get(name)}"]
    parts += [f"{column} {format_cell(value)}" for column, value in circuit.info.get(name, ()) if column != "layer" and value is not None]
    into = [edge for edge in circuit.edges if edge[1] == name]
    out = [edge for edge in circuit.edges if edge[0] == name]
    parts.append(f"{len(into)} edges in, {len(out)} out")
    return " · ".join(parts)


def render(title: str, circuit: Circuit, columns: list[str], rows: list[tuple], limit: int, max_width: int = 100) -> str:
    """The picture, the nodes' checks and every edge, as plain text (`iwb show`)."""
    from app.charts import format_table

    drawn = layout(circuit, limit)
    lines = [title, f"{len(circuit.nodes)} nodes, {len(circuit.edges)} edges ({drawn.drawn} strongest drawn; layers from the bottom up; "
                    "an edge leaves a box's top ┴ and enters the box above at its bottom ┬)", ""]
    lines += drawn.lines
    widest = max((len(line) for line in drawn.lines), default=0)
    if widest > max_width:
        lines.append(f"(the picture is {widest} columns wide: view it with less -S)")
    if circuit.info:
        lines += ["", "Nodes (exact = patching the whole node; spearman / fn_estimate: its kind's check):"]
        node_columns = ["node", *(name for name, _ in next(iter(circuit.info.values())))]
        node_rows = [(name, *(value for _, value in circuit.info[name])) for name in sorted(circuit.info, key=lambda n: (circuit.nodes.get(n, 0), natural(n)))]
        lines.append(format_table(node_columns, node_rows))
    lines += ["", "Edges:", format_table(columns, rows)]
    return "\n".join(lines)
