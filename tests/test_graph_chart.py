"""The Graph chart's text layout: a small known circuit draws every node as a box, layers from the
bottom up, and every drawn edge as a connected line from the source's top to the target's bottom."""
from __future__ import annotations

from app.charts.graph import JOINS, Circuit, describe, layout

DIRECTIONS = {char: code for code, char in JOINS.items()}
UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
STEP = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}
OPPOSITE = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}


def _circuit() -> Circuit:
    circuit = Circuit()
    circuit.nodes = {"embed": -1, "L0.H1": 0, "L0.H2": 0, "L0.MLP": 0, "L1.H0": 1, "L1.KV0": 1, "logits": 2, "L1.MLP": 1}
    circuit.edges = [("embed", "L0.H1", "q", 0.9), ("L0.H1", "L0.MLP", "mlp", -0.7), ("L0.MLP", "logits", "logits", 0.6),
                     ("embed", "L1.H0", "v", 0.5), ("L1.H0", "logits", "logits", -0.4), ("L0.H2", "L1.KV0", "k", 0.3),
                     ("L0.H1", "logits", "logits", 0.2), ("embed", "L1.MLP", "mlp", 0.01)]
    circuit.info = {"L1.H0": (("layer", 1), ("kind", "head"), ("estimate", 0.25), ("exact", 0.5))}
    return circuit


def _reachable(lines: list[str], start: tuple[int, int]) -> set[tuple[int, int]]:
    """Cells joined to ``start`` through box-drawing line characters (each step both ways)."""
    seen, todo = set(), [start]
    while todo:
        y, x = todo.pop()
        if (y, x) in seen:
            continue
        seen.add((y, x))
        code = DIRECTIONS.get(lines[y][x] if x < len(lines[y]) else " ", 0)
        for direction, (dy, dx) in STEP.items():
            ny, nx = y + dy, x + dx
            if code & direction and 0 <= ny < len(lines) and 0 <= nx < len(lines[ny]):
                if DIRECTIONS.get(lines[ny][nx], 0) & OPPOSITE[direction]:
                    todo.append((ny, nx))
    return seen


def test_every_node_is_a_box_and_layers_read_from_the_bottom_up():
    drawn = layout(_circuit(), limit=7)
    text = "\n".join(drawn.lines)
    for name in _circuit().nodes:
        assert text.count(f"│{name}│") == 1, name
        top, left, right = drawn.boxes[name]
        assert drawn.lines[top][left] == "┌" and drawn.lines[top + 2][left] == "└" and drawn.lines[top + 1][left + 1: right - 1] == name
    rows = {name: drawn.boxes[name][0] for name in _circuit().nodes}
    assert rows["logits"] < rows["L1.H0"] < rows["L0.MLP"] < rows["L0.H1"] < rows["embed"]
    assert rows["L0.H1"] == rows["L0.H2"] and rows["L1.H0"] == rows["L1.KV0"]
    # The weakest edge (8th) is not drawn under limit=7, but its node still is.
    assert drawn.drawn == 7 and "│L1.MLP│" in text
    # The cursor walks the nodes from the bottom row up.
    assert drawn.order[0] == "embed" and drawn.order[-1] == "logits"


def test_every_drawn_edge_joins_its_source_top_to_its_target_bottom():
    circuit = _circuit()
    drawn = layout(circuit, limit=7)
    for source, target, _, _ in circuit.edges[:7]:
        top, left, right = drawn.boxes[source]
        centre = left + (right - left) // 2
        assert drawn.lines[top][centre] == "┴", source
        t_top, t_left, t_right = drawn.boxes[target]
        t_centre = t_left + (t_right - t_left) // 2
        assert drawn.lines[t_top + 2][t_centre] == "┬", target
        assert (t_top + 3, t_centre) in _reachable(drawn.lines, (top - 1, centre)), (source, target)
    # No line runs through a box: a box's label line holds only its name between its sides.
    for name, (top, left, right) in drawn.boxes.items():
        assert drawn.lines[top + 1][left:right] == f"│{name}│"


def test_a_node_readout_names_its_checks_and_edges():
    line = describe(_circuit(), "L1.H0")
    assert line.startswith("L1.H0 · layer 1") and "exact 0.5" in line and "1 edges in, 1 out" in line
