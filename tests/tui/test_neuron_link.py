"""Every stored table one tab away (fact-lookup's per-entity predictions and its neurons), and from
a table row that names a neuron (contextual-neurons' ranked neurons, fact-lookup's neurons) to its
top-activating contexts: `n` on Results opens the Probe form on neuron-contexts with that layer and
neuron."""
from __future__ import annotations

import pytest

from app import charts
from tests.helpers.fakes import seed_spec_run
from tests.helpers.tui import make_app, row_by_label, settle

pytestmark = pytest.mark.tui


def seed_contextual_run(store) -> int:
    """A stored contextual-neurons-shaped run: five ranked neurons (40, 47, 54...), the other tables empty."""
    return seed_spec_run(store, "contextual-neurons", {"contextual_neurons_fit": {
        "neuron": [40 + 7 * i for i in range(5)], "rank": list(range(1, 6)), "ctx_explained": [0.5 - 0.05 * i for i in range(5)]}})


async def test_n_on_a_neuron_row_opens_neuron_contexts_with_its_layer_and_neuron(tui_store):
    run_id = seed_contextual_run(tui_store)
    app = make_app(tui_store)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        table = app.screen.query_one("#chart-table")
        assert table.display and app.screen.selected_neuron() == (0, 40)
        assert "n: the row's neuron's top contexts" in str(app.screen.query_one("#cell-info").render())
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


async def test_fact_lookups_entities_and_neurons_are_table_views_and_n_follows_a_neuron(tui_store):
    entities = {"entity": ["Serena Williams", "Lionel Messi", "Tom Brady"], "attribute": ["tennis", "soccer", "football"],
                "predicted_among_answers": ["tennis", "basketball", "football"], "correct_logprob": [-0.25, -3.5, -0.75],
                "top1_among_answers_correct": [True, False, True]}
    run_id = seed_spec_run(tui_store, "fact-lookup", {"fact_lookup_entities": entities,
                                                      "fact_lookup_neurons": {"layer": [3, 5], "neuron": [101, 202], "and_score": [0.9, 0.4]}})
    app = make_app(tui_store)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        screen = app.screen
        titles = [data.chart.title for data in screen.loaded if data is not None]
        assert "Table fact_lookup_entities" in titles and "Table fact_lookup_neurons" in titles
        index = titles.index("Table fact_lookup_entities")
        screen.query_one("#chart-tabs").active = f"chart-{index}"
        await settle(app, pilot)
        table = screen.query_one("#chart-table")
        shown = [row_by_label(table, row) for row in range(table.row_count)]
        assert [(r["entity"], r["attribute"], r["predicted_among_answers"], r["correct_logprob"]) for r in shown] == [
            (e, a, p, charts.format_cell(lp)) for e, a, p, lp in zip(entities["entity"], entities["attribute"],
                                                                     entities["predicted_among_answers"], entities["correct_logprob"])]
        screen.query_one("#chart-tabs").active = f"chart-{titles.index('Table fact_lookup_neurons')}"
        await settle(app, pilot)
        screen.query_one("#chart-table").focus()
        await pilot.press("down", "n")
        await settle(app, pilot)
        form = app.screen.query_one("#params")
        assert (form.field("layer").value, form.field("neuron").value) == ("5", "202")
