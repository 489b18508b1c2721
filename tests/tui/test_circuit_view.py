"""The circuit view at 80x24: a stored attribution-patching run (tiny Llama through the bridge)
opened in Results, its Graph tab shows the circuit's boxes on screen, the cursor walks the nodes
(its box reversed, the view scrolled to it) and the readout names the node's exact check."""
from __future__ import annotations

import pytest

from analyses.core.contract import Input, no_progress
from app import charts
from app.run.runner import RunRequest, execute, prepare
from tests.helpers.tui import make_app, screen_lines, settle, shown

pytestmark = pytest.mark.tui

PROMPT = "The Eiffel Tower is located in the city of"


async def test_the_circuit_shows_at_80x24_and_the_cursor_reads_each_node(tiny_model, store):
    raw = {"subject": "Eiffel Tower", "samples": "1", "graddrop": "false", "top_k": "2", "random_checks": "2", "top_edges": "30", "edge_threshold": "0.02"}
    run_id = execute(store, tiny_model, prepare(RunRequest("attribution-patching", (Input(0, "prompt", PROMPT),), raw)), no_progress)
    circuit_nodes = {row[0]: row[1] for row in store.query("SELECT node, exact FROM atp_circuit WHERE run_id = ?", [run_id]).rows}
    assert "logits" in circuit_nodes and len(circuit_nodes) >= 4
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        results = app.screen
        index = next(i for i, data in enumerate(results.loaded) if data is not None and isinstance(data.chart, charts.Graph))
        results.query_one("#chart-tabs").active = f"chart-{index}"
        await settle(app, pilot)
        view = results.query_one("#chart")
        assert view.is_graph and view.circuit_layout is not None
        assert set(view.circuit_layout.order) == set(circuit_nodes)
        # The cursor starts on the logits, on screen, and the readout says so.
        assert view.circuit_layout.order[view.node] == "logits"
        assert any("│logits│" in line for line in screen_lines(app))
        assert shown(results.query_one("#cell-info")).startswith("logits · layer")
        # Walking every node from the top: each one's box comes on screen and the readout reads its check.
        seen = set()
        for _ in range(len(view.circuit_layout.order)):
            name = view.circuit_layout.order[view.node]
            seen.add(name)
            assert any(f"│{name}│" in line for line in screen_lines(app)), name
            info = shown(results.query_one("#cell-info"))
            assert info.startswith(f"{name} · layer"), info
            if circuit_nodes[name] is not None:
                assert f"exact {charts.format_cell(circuit_nodes[name])}" in info
            await pilot.press("left")
            await pilot.pause()
        assert seen == set(circuit_nodes)
        assert view.circuit_layout.order[view.node] == view.circuit_layout.order[0] == "embed"
        await pilot.press("up")
        await pilot.pause()
        assert view.circuit_layout.boxes[view.circuit_layout.order[view.node]][0] < view.circuit_layout.boxes["embed"][0]
