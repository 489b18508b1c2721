"""From a table row that names a neuron (contextual-neurons' ranked neurons) to its top-activating
contexts: `n` on Results opens the Probe form on neuron-contexts with that layer and neuron."""
from __future__ import annotations

import pyarrow as pa
import pytest

from tests.helpers.fakes import FIXED_TIME
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


ARROW = {"INTEGER": pa.int32(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "VARCHAR": pa.string(), "BOOLEAN": pa.bool_()}


def seed_contextual_run(store) -> int:
    """A stored contextual-neurons-shaped run: five ranked neurons (40, 47, 54...), the other tables empty."""
    from analyses.contextual_neurons import SPEC

    n = 5
    tables = {}
    for table in SPEC.tables:
        rows = n if table.name == "contextual_neurons_fit" else 0
        values = {}
        for name, kind in table.columns:
            if name == "neuron":
                data = [40 + 7 * i for i in range(rows)]
            elif name == "rank":
                data = list(range(1, rows + 1))
            elif kind in ("INTEGER", "BIGINT"):
                data = list(range(rows))
            elif kind == "DOUBLE":
                data = [0.5 - 0.05 * i for i in range(rows)]
            else:
                data = [None] * rows
            values[name] = pa.array(data, ARROW[kind])
        tables[table.name] = (table.columns, pa.table(values))
    run_id = store.begin_run("contextual-neurons", "fake-model", {}, "cpu", "float32", {"fake": True})
    tokens = pa.table({"input_id": pa.array([0], pa.int32()), "pos": pa.array([0], pa.int32()), "token_id": pa.array([0], pa.int32()), "token": ["x"]})
    inputs = pa.table({"input_id": pa.array([0], pa.int32()), "source": ["prompt"], "text": ["x"], "meta": ["{}"]})
    store.finish_run(run_id, inputs, tokens, tables)
    with store.write() as conn:
        conn.execute("UPDATE runs SET created_at = ?::TIMESTAMP WHERE run_id = ?", [FIXED_TIME, run_id])
    return run_id


async def test_n_on_a_neuron_row_opens_neuron_contexts_with_its_layer_and_neuron(tui_store):
    run_id = seed_contextual_run(tui_store)
    app = make_app(tui_store)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        table = app.screen.query_one("#chart-table")
        assert table.display and app.screen.selected_neuron() == (0, 40)
        table.focus()
        await pilot.press("down", "down")
        await pilot.press("n")
        await settle(app, pilot)
        assert app.screen.name == "probe"
        assert str(app.screen.query_one("#analysis").value) == "neuron-contexts"
        form = app.screen.query_one("#params")
        assert form.field("layer").value == "0" and form.field("neuron").value == "54"
        # again from another row while the form is shown: the fields follow
        await pilot.press("f3")
        await settle(app, pilot)
        app.screen.query_one("#chart-table").focus()
        await pilot.press("down")
        await pilot.press("n")
        await settle(app, pilot)
        assert app.screen.query_one("#params").field("neuron").value == "61"


async def test_n_elsewhere_says_what_it_needs(seeded_store):
    app = make_app(seeded_store)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.open_run(1)
        await settle(app, pilot)
        await pilot.press("n")
        await pilot.pause()
        assert app.screen.name == "results"
        assert any("names a neuron" in str(n.message) for n in app._notifications)
