"""The fidelity badge in the workbench: the results line and History's status say ok in green,
a skipped check in yellow and a failed one in red, with the check's name."""
from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, settle

pytestmark = pytest.mark.tui


def _record(store, run_id: int, failed: str | None = None) -> None:
    with store.write() as conn:
        for name in ("model_vs_hf_max_kl", "model_vs_hf_top1_agreement"):
            conn.execute("INSERT INTO run_checks VALUES (?, ?, 0.0, 1e-6, ?, '')", [run_id, name, name != failed])


def _styled(text, fragment: str) -> str:
    """The style of the span that holds fragment in a rich Text."""
    start = text.plain.index(fragment)
    return " ".join(str(span.style) for span in text.spans if span.start <= start < span.end)


async def test_the_badge_shows_its_colour_and_the_failing_check(store):
    good, bad = seed_lens_run(store), seed_lens_run(store, prompt="The Colosseum is located in the city of")
    _record(store, good)
    _record(store, bad, failed="model_vs_hf_max_kl")
    app = make_app(store)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.open_run(good)
        await settle(app, pilot)
        info = app.screen.query_one("#run-info", Static).content
        assert "checks ok" in info.plain and "green" in _styled(info, "checks ok")
        app.open_run(bad)
        await settle(app, pilot)
        info = app.screen.query_one("#run-info", Static).content
        assert "red" in _styled(info, "checks FAILED: model_vs_hf_max_kl")
        await pilot.press("f4")
        await settle(app, pilot)
        table = app.screen.query_one("#runs", DataTable)
        status = table.get_row(str(bad))[3]
        # The cell says how many failed (a check's name there pushed the columns off 80 columns);
        # the line under the table names them for the highlighted run.
        assert status.plain == "done (1 FAILED)" and "red" in _styled(status, "FAILED")
        assert "FAILED" not in table.get_row(str(good))[3].plain
        table.move_cursor(row=table.get_row_index(str(bad)))
        await settle(app, pilot)
        assert f"run {bad}: checks FAILED: model_vs_hf_max_kl" in str(app.screen.query_one("#run-detail", Static).render())


def test_a_short_badge_counts_the_checks():
    from app.tui.plain import short_badge

    assert short_badge("FAILED: a, b") == "2 FAILED" and short_badge("skipped: model_vs_hf") == "1 skipped" and short_badge("ok") == "ok"
