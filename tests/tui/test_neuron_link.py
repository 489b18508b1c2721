"""Every stored table one tab away (fact-lookup's per-entity predictions and its neurons), and from
a table row that names a neuron (contextual-neurons' ranked neurons, fact-lookup's neurons) to its
top-activating contexts: `n` on Results opens the Probe form on neuron-contexts with that layer and
neuron."""
from __future__ import annotations

import pytest

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


async def test_fact_lookups_entities_have_their_view_its_neurons_a_table_view_and_n_follows_a_neuron(tui_store):
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
        labels = [data.label for data in screen.loaded if data is not None]
        assert "Entities" in labels and "Table fact_lookup_neurons" in labels
        assert "Table fact_lookup_entities" not in labels  # the entity view replaces the generic table
        screen.query_one("#chart-tabs").active = f"chart-{labels.index('Table fact_lookup_neurons')}"
        await settle(app, pilot)
        screen.query_one("#chart-table").focus()
        await pilot.press("down", "n")
        await settle(app, pilot)
        form = app.screen.query_one("#params")
        assert (form.field("layer").value, form.field("neuron").value) == ("5", "202")


def seed_contexts_run(store, model: str, layer: int, neuron: int) -> int:
    """A stored neuron-contexts run of that model, layer and neuron: three contexts, best first."""
    import json

    run_id = seed_spec_run(store, "neuron-contexts", {"neuron_contexts": {
        "rank": [1, 2, 3], "activation": [9.5, 7.25, 3.0], "token": [" Paris", " Rome", " Oslo"],
        "context": [f"capital of [ Paris] n{neuron}", "city of [ Rome]", "the fjords of [ Oslo]"], "input_id": [0, 0, 0], "pos": [4, 9, 12]}})
    with store.write() as conn:
        conn.execute("UPDATE runs SET model = ?, params = ? WHERE run_id = ?",
                     [model, json.dumps({"layer": layer, "neuron": neuron, "top_k": 3, "context": 12, "prepend_bos": "auto"}), run_id])
    return run_id


async def test_n_reads_a_neurons_stored_contexts_and_computes_only_where_none_are_stored(tui_store):
    """n on a neuron row opens the newest stored neuron-contexts run of the same model, layer and
    neuron (its contexts read from the store, nothing submitted); a neuron with none stored, or N,
    opens the Probe form to compute them."""
    source = seed_contextual_run(tui_store)  # neurons 40, 47, 54, 61, 68 of layer 0, model fake-model
    seed_contexts_run(tui_store, "fake-model", 0, 54)
    newest = seed_contexts_run(tui_store, "fake-model", 0, 54)
    seed_contexts_run(tui_store, "other-model", 0, 47)  # another model's neuron 47: not this one
    seed_contexts_run(tui_store, "fake-model", 1, 47)  # another layer's neuron 47: not this one
    app = make_app(tui_store)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)

        async def press_on_row(row: int, key: str) -> None:
            if app.screen.name != "results" or app.screen.run_id != source:
                app.open_run(source)
                await settle(app, pilot)
            table = app.screen.query_one("#chart-table")
            table.focus()
            table.move_cursor(row=row)
            await pilot.pause()
            await pilot.press(key)
            await settle(app, pilot)
            await settle(app, pilot)

        await press_on_row(2, "n")  # neuron 54: stored twice, the newest opens
        screen = app.screen
        assert screen.name == "results" and screen.run_id == newest
        assert f"run {newest} · neuron-contexts" in str(screen.query_one("#run-info").render())
        table = screen.query_one("#chart-table")
        assert [row_by_label(table, row)["context"] for row in range(table.row_count)] == ["capital of [ Paris] n54", "city of [ Rome]", "the fjords of [ Oslo]"]
        assert app.host.jobs == []  # read, not computed

        await press_on_row(1, "n")  # neuron 47 of layer 0 on this model: none stored, so the form to compute
        assert app.screen.name == "probe" and str(app.screen.query_one("#analysis").value) == "neuron-contexts"
        assert app.screen.query_one("#params").field("neuron").value == "47"

        await press_on_row(2, "N")  # N: compute anew even where contexts are stored
        assert app.screen.name == "probe" and app.screen.query_one("#params").field("neuron").value == "54"
        assert app.host.jobs == []
