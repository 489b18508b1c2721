"""History at 80x24: every row shows its model whole and the start of its prompt (the last column),
with the longest usual cells (causal-trace, cancelled, smollm2-135m)."""
from __future__ import annotations

import pytest

from tests.helpers.fakes import seed_lens_run
from tests.helpers.tui import make_app, screen_lines, settle

pytestmark = pytest.mark.tui
PROMPTS = ("The Eiffel Tower is located in the city of", "Alpha beta gamma delta", "The Louvre is located in the city of")


async def test_each_row_shows_its_model_whole_and_its_prompt_start_at_80x24(tui_store):
    runs = [seed_lens_run(tui_store, prompt) for prompt in PROMPTS]
    with tui_store.write() as conn:
        conn.execute("UPDATE runs SET model = 'smollm2-135m', analysis = 'causal-trace', status = 'cancelled' WHERE run_id = ?", [runs[0]])
        conn.execute("UPDATE runs SET model = 'smollm2-135m' WHERE run_id <> ?", [runs[0]])
    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f4")
        await settle(app, pilot)
        lines = screen_lines(app)
        for run_id, prompt in zip(runs, PROMPTS):
            row = next(line for line in lines if line.split()[:1] == [str(run_id)])
            assert len(row) <= 80 and "smollm2-135m" in row, row
            assert prompt[:12] in row, "\n".join(lines)


def test_the_time_and_seconds_cells():
    from datetime import datetime

    from app.tui.screens.history import run_seconds, run_time

    assert run_time(datetime(2026, 12, 4, 17, 2), 2026) == "12-04 17:02"
    assert run_time(datetime(2025, 3, 1, 9, 5), 2026) == "2025-03-01"
    assert run_seconds(79.0, 79.02) == "79.0"
    assert run_seconds(43.8, 120.0) == "43.8/120.0"  # paused before a resume
    assert run_seconds(None, None) == ""
