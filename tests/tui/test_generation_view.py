"""A real generate run (tiny model, real store) reopened in the workbench at 80x24: the generation
view first (the text, the step cursor with each step's stored lens as a layer x top-k table and a
curve over layers), then the run's charts (the lens heatmap with its own cursor); a cancelled run
shows the steps it kept; Compare of a steered and an unsteered twin aligns them by step."""
from __future__ import annotations

import pytest

from analyses.core.contract import Input, no_progress
from app.run.session import Session
from app.tui.widgets.generation_view import CELL_TOKEN, cell_token, probability
from tests.helpers.tui import make_app, screen_lines, settle

pytestmark = pytest.mark.tui
PROMPT = "I think that you are"


def _run(store_path, model, params: dict) -> int:
    from store import Store

    prepared = Session.prepare("generate", (Input(0, "prompt", PROMPT),), {"max_new_tokens": "5", "stop_at_eos": "false", **params})
    return Session(Store(store_path)).run(model, prepared, no_progress)


def _table_rows(view) -> list[list[str]]:
    table = view.query_one("#gen-table")
    return [[str(cell) for cell in table.get_row_at(row)] for row in range(table.row_count)]


async def test_a_generate_run_reopens_in_the_generation_view(tui_store, tiny_model):
    run_id = _run(tui_store.path, tiny_model, {"steer": " Love| Hate", "steer_layer": "1"})
    steps = tui_store.query("SELECT pos, token, prob FROM generation_steps WHERE run_id = ? ORDER BY step", [run_id]).rows
    assert len(steps) == 5
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        view = app.screen.query_one("#generation")
        assert view.display and app.screen.focused is view
        assert view.step == 4  # the cursor starts on the last step
        lines = "\n".join(screen_lines(app))
        assert "Generation · step 5/5" in lines
        assert PROMPT in lines and "".join(token for _, token, _ in steps).strip()[:12] in lines.replace("\n", "")
        assert "p chosen" in lines and "top 1" in lines and "Lens at step 5" in lines
        await pilot.press("left", "left")
        await pilot.pause()
        assert view.step == 2
        assert f"step 3/5 · {steps[2][1]!r} pos {steps[2][0]}" in view.describe()
        # The table at step 3: the model's own output first, then layer n-1 .. 0; each cell the stored top-k.
        stored = tui_store.query("SELECT layer, k, token, prob FROM generation_topk WHERE run_id = ? AND step = 2 ORDER BY layer DESC, k",
                                 [run_id]).rows
        chosen = tui_store.query("SELECT layer, chosen_prob FROM generation_lens WHERE run_id = ? AND step = 2 ORDER BY layer DESC",
                                 [run_id]).rows
        rows = _table_rows(view)
        assert len(rows) == tiny_model.n_layers + 1 and rows[0][0] == "out" and rows[-1][0] == "0"
        assert [row[1] for row in rows] == [probability(p) for _, p in chosen]
        top1 = [(token, prob) for layer, k, token, prob in stored if k == 1]
        assert [row[2] for row in rows] == [f"{cell_token(token)} {probability(prob)}" for token, prob in top1]
        curve = view.query_one("#gen-curve").data
        assert curve.series[f"run {run_id}"][1] == pytest.approx([p for _, p in reversed(chosen)])
        await pilot.press("end")
        assert view.step == 4
        # tab goes on to the run's charts: the lens heatmap with its cursor on the stored values.
        await pilot.press("tab")
        await settle(app, pilot)
        chart = app.screen.query_one("#chart")
        assert not view.display and chart.data.chart.title.startswith("Lens: the chosen token's probability")
        assert chart.data.x_values[-5:] == [pos for pos, _, _ in steps]
        await pilot.press("left")
        await pilot.pause()
        layer, _, value = chart.data.cell(*chart.cursor)
        pos = chart.data.x_values[chart.cursor[1]]
        stored_value = tui_store.query("SELECT chosen_prob FROM generation_lens WHERE run_id = ? AND layer = ? AND pos = ?", [run_id, layer, pos]).rows[0][0]
        assert value == pytest.approx(stored_value)
        # Reopened from History (F4, enter): the same view, on the last step again.
        await pilot.press("f4")
        await settle(app, pilot)
        assert app.screen.selected_run() == run_id
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.screen.name == "results" and view.display and view.step == 4 and view.runs[0].run_id == run_id


def test_a_table_cell_shows_a_token_s_spaces_and_cuts_a_long_one():
    # Gemma 3 has ' BC' and 'BC', ' clear' and 'clear' in one top-k; tokens of spaces; tokens of 30+ characters.
    assert cell_token(" BC") == "·BC" and cell_token("BC") == "BC" and cell_token("   ") == "···"
    assert cell_token("a\nb") == "a⏎b"
    long = "<start_of_image>" * 2
    assert len(cell_token(long)) == CELL_TOKEN and cell_token(long).endswith("…")


async def test_the_lens_table_pans_sideways_to_columns_past_80(tui_store, tiny_model):
    """At 80 columns a top-k of 10 is wider than the screen: shift+right brings the last columns into
    view (the table takes no focus, so its own keys cannot), shift+left goes back."""
    run_id = _run(tui_store.path, tiny_model, {"top_k": "10"})
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        view = app.screen.query_one("#generation")
        table = view.query_one("#gen-table")
        assert table.virtual_size.width > table.size.width
        assert "top 10" not in "\n".join(screen_lines(app))
        for _ in range(4):
            await pilot.press("shift+right")
        await pilot.pause()
        assert table.scroll_x > 0 and "top 10" in "\n".join(screen_lines(app))
        for _ in range(4):
            await pilot.press("shift+left")
        await pilot.pause()
        assert table.scroll_x == 0 and "p chosen" in "\n".join(screen_lines(app))


async def test_a_streaming_generation_shows_no_empty_chart(tui_store, tiny_model):
    """While a generate job runs (Gemma 3: a minute for 12 tokens) its text streams with no empty
    'No chart to show.' frame under it; the stored run brings the curve back."""
    run_id = _run(tui_store.path, tiny_model, {})
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        view = app.screen.query_one("#generation")
        view.stream(run_id + 1, "input 1/1: token 3/12 … right. I")
        await pilot.pause()
        lines = "\n".join(screen_lines(app))
        assert "generating: input 1/1: token 3/12" in lines and "No chart to show" not in lines
        app.open_run(run_id)  # the run stored: the view as it reopens
        await settle(app, pilot)
        assert view.query_one("#gen-curve").display and "Lens at step" in "\n".join(screen_lines(app))


async def test_compare_aligns_a_steered_and_an_unsteered_generation_by_step(tui_store, tiny_model):
    plain_id = _run(tui_store.path, tiny_model, {})
    steered_id = _run(tui_store.path, tiny_model, {"steer": " Love| Hate", "steer_layer": "1", "steer_coef": "8"})
    tokens = {run: [t for (t,) in tui_store.query("SELECT token FROM generation_steps WHERE run_id = ? ORDER BY step", [run]).rows]
              for run in (plain_id, steered_id)}
    assert tokens[plain_id] != tokens[steered_id]  # the steering changes the text
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.get_screen("compare").compare(plain_id, steered_id)
        app.action_show("compare")
        await settle(app, pilot)
        view = app.screen.query_one("#compare-generation")
        assert view.display and [run.run_id for run in view.runs] == [plain_id, steered_id]
        lines = "\n".join(screen_lines(app))
        assert f"run {plain_id}: " in lines and f"run {steered_id}: " in lines
        assert f"run {plain_id} p chosen" in lines and f"run {steered_id} p chosen" in lines
        await pilot.press("home", "right")
        await pilot.pause()
        readout = view.describe()
        assert readout.startswith("Generation · step 2/5")
        # The two runs' readout wraps rather than being cut at 80 columns: both ranks on screen.
        shown = " ".join(line.strip() for line in screen_lines(app))
        assert "…" not in str(view.query_one("#gen-step").render()) and shown.count(" rank ") >= 2
        for run in (plain_id, steered_id):
            assert f"run {run} {tokens[run][1]!r}" in readout  # the cursor on step 2 in both
        assert set(view.query_one("#gen-curve").data.series) == {f"run {plain_id}", f"run {steered_id}"}
        # tab: on to the aligned charts (the lens difference heatmap first).
        await pilot.press("tab")
        await settle(app, pilot)
        assert not view.display and app.screen.query_one("#compare-chart").display


async def test_a_running_generation_streams_and_a_cancel_keeps_its_steps(tmp_path, tiny_model, monkeypatch):
    """On the REAL worker: Results (F3) streams a generate job's text while it runs; a cancel after a
    few steps ends the run 'cancelled' with the steps made so far stored, and the view shows them."""
    from app.run.worker import JobCancelled, JobProgress, Started
    from tests.helpers.tui import real_worker_app, until

    app, store = real_worker_app(tmp_path, tiny_model, monkeypatch, "generate.duckdb")
    prompts = tuple(Input(i, "prompt", text) for i, text in enumerate((PROMPT, "Hello there", "One two three", "The sky is")))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        # 4 prompts x 240 tokens, one shard: far more steps than are made before the cancel lands.
        app.submit_job("generate", prompts, {"max_new_tokens": "240", "stop_at_eos": "false"})
        await until(lambda: any(isinstance(e, Started) for e in app.events_seen), "the run to start")
        await pilot.press("f3")
        await settle(app, pilot)
        view = app.screen.query_one("#generation")
        await until(lambda: "token 3/240" in str(view.query_one("#gen-text").render()) or
                    any(isinstance(e, JobProgress) and e.done >= 6 for e in app.events_seen), "a few streamed tokens")
        await until(lambda: view.display and "generating" in str(view.query_one("#gen-text").render()), "the streamed text shown")
        app.cancel_job()
        await until(lambda: any(isinstance(e, JobCancelled) for e in app.events_seen), "the cancel")
        run_id = next(e.run_id for e in app.events_seen if isinstance(e, Started))
        await until(lambda: bool(view.runs), "the kept steps shown")
        await settle(app, pilot)
        row = store.run_row(run_id)
        assert row["status"] == "cancelled" and "cut short after" in row["error"]
        kept = store.query("SELECT input_id, count(*) FROM generation_steps WHERE run_id = ? GROUP BY input_id ORDER BY input_id", [run_id]).rows
        assert kept and 0 < sum(n for _, n in kept) < 4 * 240
        assert all(n == 240 for _, n in kept[:-1])  # the finished prompts whole, then the one cut short
        assert len(view.runs[0].steps) == kept[0][1]  # input 0's steps in the generation view
        assert "one in part" in str(app.screen.query_one("#run-info").render())


async def test_a_long_text_scrolls_with_the_step_cursor(tui_store, tiny_model):
    run_id = _run(tui_store.path, tiny_model, {"max_new_tokens": "80"})
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(run_id)
        await settle(app, pilot)
        view = app.screen.query_one("#generation")
        box = view.query_one("#gen-text-box")
        assert box.max_scroll_y > 0  # 80 tokens do not fit the text's 4 lines at 80 columns
        assert box.scroll_y == box.max_scroll_y  # on the last step: the end of the text
        # A resize rewraps the text (the scroll range changes, as when the scrollbar first appears):
        # the box keeps the cursor's share of it, not the stale offset.
        for size in ((120, 30), (70, 24), (80, 24)):
            await pilot.resize_terminal(*size)
            await settle(app, pilot)
            assert box.max_scroll_y > 0 and box.scroll_y == box.max_scroll_y, size
        # The text's wrapped height can change with the box's own size unchanged (the scrollbar
        # appearing narrows the text; here, more text): the box follows its scroll range then too.
        text = view.query_one("#gen-text")
        before = box.max_scroll_y
        text.update(str(text.render()) + " more words" * 40)
        await settle(app, pilot)
        assert box.max_scroll_y > before and box.scroll_y == box.max_scroll_y
        await pilot.press("home")
        await settle(app, pilot)
        assert view.step == 0 and box.scroll_y == 0


async def test_history_puts_a_run_in_the_probe_form_to_rerun_with_one_change(tui_store, tiny_model):
    """History's e: the run's analysis, prompt and the parameters it set go into the Probe form;
    one changed coefficient and ctrl+r submit the twin."""
    run_id = _run(tui_store.path, tiny_model, {"steer": " Love| Hate", "steer_layer": "1"})
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        assert app.screen.selected_run() == run_id
        await pilot.press("e")
        await settle(app, pilot)
        probe = app.screen
        assert probe.name == "probe" and probe.query_one("#analysis").value == "generate"
        await settle(app, pilot)
        assert probe.query_one("#prompt").text == PROMPT
        form = probe.query_one("#params")
        assert form.values() == {"max_new_tokens": "5", "stop_at_eos": "false", "steer": " Love| Hate", "steer_layer": "1"}
        form.field("steer_coef").value = "8"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        analysis, inputs, raw = app.host.jobs[-1]
        assert analysis == "generate" and inputs[0].text == PROMPT
        assert raw == {"max_new_tokens": "5", "stop_at_eos": "false", "steer": " Love| Hate", "steer_layer": "1", "steer_coef": "8"}
