"""Probe and results screens over a fake worker: the message sequence, the chart and its cursor."""
from __future__ import annotations

import pytest

from app.charts import label_token
from app.run.worker import Failed, Finished, JobCancelled, JobProgress, ModelStatus, Started, Submitted
from tests.helpers.fakes import TOKENS
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui
PROMPT = "The Eiffel Tower is located in the city of"


async def test_run_shows_sequence_and_opens_chart(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.click("#prompt")
        app.screen.query_one("#prompt").insert(PROMPT)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        kinds = [type(e) for e in app.events_seen]
        assert kinds == [ModelStatus, Submitted, Started, JobProgress, JobProgress, JobProgress, JobProgress, Finished]
        analysis, inputs, raw_params = app.host.jobs[0]
        assert (analysis, inputs[0].text, raw_params) == ("logit-lens", PROMPT, {})
        assert app.screen.name == "results"
        view = app.screen.query_one("#chart")
        assert view.data is not None and view.data.chart.kind == "heatmap"
        assert view.data.chart.title.startswith("Top-token probability")
        assert str(app.screen.query_one("#chart-tabs").active_tab.label).startswith("Top-token probab")  # shortened to fit


async def test_cursor_reads_exact_cell(seeded_store):
    app = make_app(seeded_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.open_run(1)
        await settle(app, pilot)
        view = app.screen.query_one("#chart")
        rows, cols = len(view.data.matrix), len(view.data.matrix[0])
        assert view.cursor == (rows - 1, cols - 1)
        await pilot.press("down", "down", "left", "left", "left")
        await pilot.pause()
        assert view.cursor == (rows - 3, cols - 4)
        layer, token, value = view.data.cell(*view.cursor)
        expected = seeded_store.query("SELECT top_prob FROM logit_lens WHERE run_id = 1 AND layer = ? AND pos = ?", [layer, cols - 4]).rows[0][0]
        assert value == pytest.approx(expected)
        info = str(app.screen.query_one("#cell-info").render())
        assert f"layer {layer}" in info and f"top_prob = {expected:.6g}" in info and f"pos {cols - 4} {label_token(TOKENS[cols - 4], 16)} " in info
        await pilot.press("tab")
        await pilot.pause()
        assert app.screen.query_one("#chart").data.chart.kind == "line"


async def test_param_form_flags_bad_value_and_refuses_run(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#prompt").insert(PROMPT)
        await pilot.click("#param-prepend_bos")
        await pilot.press(*"maybe")
        await pilot.pause()
        assert "takes one of auto, true, false" in str(app.screen.query_one("#param-error").render())
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.host.jobs == []
        assert "takes one of auto, true, false" in str(app.screen.query_one("#param-error").render())


async def test_empty_prompt_is_refused_in_place(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.host.jobs == []
        assert "prompt is empty" in str(app.screen.query_one("#param-error").render())


async def test_cancel_reaches_the_host_and_resets_the_buttons(tui_store):
    app = make_app(tui_store, hold=True)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#prompt").insert(PROMPT)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.job_state.running and not app.screen.query_one("#cancel").disabled
        await pilot.press("ctrl+k")
        await settle(app, pilot)
        assert app.host.cancelled == [1]
        assert isinstance(app.events_seen[-1], JobCancelled)
        assert app.job_state.phase == "cancelled"
        assert app.screen.query_one("#cancel").disabled and not app.screen.query_one("#run").disabled


async def test_worker_failure_is_shown(tui_store):
    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.post_job_event(Submitted(7, "logit-lens"))
        app.post_job_event(Failed(7, 3, "WorkerDied", "the worker process died (killed by signal SIGKILL) while running logit-lens"))
        await settle(app, pilot)
        note = str(app.screen.query_one("#progress-note").render())
        assert "failed" in note and "SIGKILL" in note
        assert not app.screen.query_one("#run").disabled


async def test_palette_help_and_theme(tui_store):
    from analyses.core.registry import analysis_names
    from app.tui.commands import WorkbenchCommands

    app = make_app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        titles = [title for title, _, _ in WorkbenchCommands(app.screen).entries()]
        for name in analysis_names():
            assert any(f"({name})" in title for title in titles)
        assert "Go to: SQL console" in titles
        await pilot.press("f1")  # the screen's own help (tests/tui/test_help.py), not Textual's key list
        await pilot.pause()
        assert app.screen.name == "help" and not app.screen.query("HelpPanel")
        await pilot.press("f1")
        await pilot.pause()
        assert app.screen.name == "probe"
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light"


async def test_run_finishing_while_another_screen_is_shown_opens_in_the_background(seeded_store):
    app = make_app(seeded_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        app.post_job_event(Submitted(9, "logit-lens"))
        app.post_job_event(Finished(9, 1, {"logit_lens": 60}, 1.0))
        await settle(app, pilot)
        assert app.screen.name == "history"
        await pilot.press("f3")
        await settle(app, pilot)
        assert app.screen.run_id == 1 and app.screen.query_one("#chart").data is not None


async def test_a_queued_job_that_ends_does_not_take_results_away_from_another_run(tui_store):
    """Found on Gemma at 80x24: walking run 1's circuit on Results while a queued generate job ran, its
    start and its end each replaced run 1 with run 2 under the cursor. Now Results keeps the run being
    read and a toast says the other is done; from the Probe screen a finished job still opens."""
    from tests.helpers.fakes import seed_lens_run

    reading, queued, later = seed_lens_run(tui_store), seed_lens_run(tui_store), seed_lens_run(tui_store)
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.open_run(reading)
        await settle(app, pilot)
        results = app.screen
        assert results.name == "results" and results.run_id == reading
        app.post_job_event(Submitted(2, "generate"))
        app.post_job_event(Started(2, queued, "generate", "fake-model"))
        app.post_job_event(Finished(2, queued, {"generation_steps": 3}, 1.0))
        await settle(app, pilot)
        assert app.screen is results and results.run_id == reading
        assert any(f"run {queued} is done" in str(n.message) for n in app._notifications)
        await pilot.press("f2")
        await settle(app, pilot)
        app.post_job_event(Submitted(3, "logit-lens"))
        app.post_job_event(Started(3, later, "logit-lens", "fake-model"))
        app.post_job_event(Finished(3, later, {"logit_lens": 3}, 1.0))
        await settle(app, pilot)
        assert app.screen.name == "results" and app.screen.run_id == later
