"""fact-lookup's entity view on Results: every entity with its true sport, the prediction among the
answers, p(answer set) and correct / incorrect; sorted by any column (o, r; a header click too),
filtered by text (/) and by correct / incorrect (c); the row under the cursor's details, with its
own ablation effects where the run stored them (fact_lookup_entity_ablation)."""
from __future__ import annotations

import pytest

from tests.helpers.fakes import seed_spec_run
from tests.helpers.tui import cells, make_app, row_by_label, settle, shown

pytestmark = pytest.mark.tui
ENTITIES = {
    "input_id": [0, 1, 2, 3],
    "entity": ["Serena Williams", "Lionel Messi", "Tom Brady", "Roger Federer"],
    "attribute": ["tennis", "soccer", "football", "tennis"],
    "predicted_among_answers": ["tennis", "basketball", "football", "golf"],
    "answer_set_prob": [0.71, 0.12, 0.55, 0.33],
    "top1_among_answers_correct": [True, False, True, False],
    "correct_logprob": [-0.25, -3.5, -0.75, -2.0],
    "correct_within_set_prob": [0.9, 0.05, 0.8, 0.2],
    "top1_token": [" tennis", " the", " football", " golf"],
    "top1_prob": [0.4, 0.1, 0.3, 0.2],
    "n_name_tokens": [3, 3, 2, 3],
}


def seed(store) -> int:
    run_id = seed_spec_run(store, "fact-lookup", {"fact_lookup_entities": ENTITIES})
    with store.write() as conn:  # Serena's own ablation effects (the table exists once fact-lookup stores it; made here otherwise)
        conn.execute("CREATE TABLE IF NOT EXISTS fact_lookup_entity_ablation (run_id BIGINT NOT NULL, component VARCHAR, layer INTEGER, "
                     "entity INTEGER, input_id INTEGER, logprob_drop DOUBLE, set_mass_drop DOUBLE, within_set_drop DOUBLE, "
                     "top1_among_answers_ablated BOOLEAN, top1_vocab_ablated BOOLEAN)")
        for component, layer, drop in (("mlp", 2, 1.5), ("attn", 3, 0.25), ("mlp", 3, 2.75)):
            conn.execute("INSERT INTO fact_lookup_entity_ablation (run_id, component, layer, entity, input_id, logprob_drop, set_mass_drop) "
                         "VALUES (?, ?, ?, 0, 0, ?, 0.1)", [run_id, component, layer, drop])
    return run_id


def rows(view) -> list[dict[str, str]]:
    table = view.query_one("#entity-table")
    return [row_by_label(table, row) for row in range(table.row_count)]


def names(view) -> list[str]:
    """The entities in the order shown (the first column; its label carries the sort arrow when sorted on)."""
    table = view.query_one("#entity-table")
    return [cells(table, row)[0] for row in range(table.row_count)]


async def test_entities_listed_sorted_filtered_and_detailed(tui_store):
    run_id = seed(tui_store)
    app = make_app(tui_store)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        screen = app.screen
        labels = [data.label for data in screen.loaded if data is not None]
        screen.query_one("#chart-tabs").active = f"chart-{labels.index('Entities')}"
        await settle(app, pilot)
        view = screen.query_one("#entities")
        assert view.display and not screen.query_one("#chart-table").display
        # Sorted by p(answer set), highest first; each row its true sport, prediction and verdict.
        assert rows(view) == [
            {"entity": "Serena Williams", "true": "tennis", "predicted": "tennis", "p(answer set) ↓": "0.71", "correct": "yes", "log p(correct)": "-0.25"},
            {"entity": "Tom Brady", "true": "football", "predicted": "football", "p(answer set) ↓": "0.55", "correct": "yes", "log p(correct)": "-0.75"},
            {"entity": "Roger Federer", "true": "tennis", "predicted": "golf", "p(answer set) ↓": "0.33", "correct": "no", "log p(correct)": "-2"},
            {"entity": "Lionel Messi", "true": "soccer", "predicted": "basketball", "p(answer set) ↓": "0.12", "correct": "no", "log p(correct)": "-3.5"},
        ]
        detail = shown(view.query_one("#entity-detail"))
        assert "4 of 4 entities · correct 2/4 (50%)" in detail
        assert "Serena Williams (input 0) · true tennis · predicted tennis correct" in detail
        assert "ablation, largest drops in log p(correct): mlp L3 2.75, mlp L2 1.5, attn L3 0.25" in detail

        await pilot.press("r")  # reversed: lowest p(answer set) first
        assert names(view) == ["Lionel Messi", "Roger Federer", "Tom Brady", "Serena Williams"]
        assert "this entity is not in the run's intervention subset" in shown(view.query_one("#entity-detail"))
        await pilot.press("o", "o")  # on past correct to log p(correct), still ascending
        assert names(view) == ["Lionel Messi", "Roger Federer", "Tom Brady", "Serena Williams"]
        assert "log p(correct) ↑" in rows(view)[0]
        await pilot.press("o")  # round to entity: A to Z
        assert names(view) == ["Lionel Messi", "Roger Federer", "Serena Williams", "Tom Brady"]
        await pilot.press("r")  # entity, Z to A
        assert names(view) == ["Tom Brady", "Serena Williams", "Roger Federer", "Lionel Messi"]

        await pilot.press("c")  # correct only
        assert names(view) == ["Tom Brady", "Serena Williams"]
        await pilot.press("c")  # incorrect only
        assert names(view) == ["Roger Federer", "Lionel Messi"]
        await pilot.press("c", "slash", *"tennis", "enter")  # all again, filtered by text: the true sport or the prediction
        assert names(view) == ["Serena Williams", "Roger Federer"]
        assert "2 of 4 entities · correct 1/2 (50%)" in shown(view.query_one("#entity-detail"))
        await pilot.press("down")  # the cursor opens the next entity's details
        await pilot.pause()
        assert "Roger Federer (input 3) · true tennis · predicted golf incorrect" in shown(view.query_one("#entity-detail"))
        assert app.focused is view.query_one("#entity-table")


async def test_a_run_without_per_entity_ablation_says_so(tui_store):
    run_id = seed_spec_run(tui_store, "fact-lookup", {"fact_lookup_entities": {name: values[:2] for name, values in ENTITIES.items()}})
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        screen = app.screen
        labels = [data.label for data in screen.loaded if data is not None]
        screen.query_one("#chart-tabs").active = f"chart-{labels.index('Entities')}"
        await settle(app, pilot)
        detail = shown(screen.query_one("#entities").query_one("#entity-detail"))
        assert "Serena Williams" in detail
        assert "ablation: " in detail and "largest drops" not in detail
