"""The installed `iwb` in a real pseudo-terminal (tmux): three runs, History, the SQL console, ctrl+q.

Keys go in with `tmux send-keys`, the screen comes back with `capture-pane`. HOME and the XDG
state, data and config dirs are temporary; XDG_CACHE_HOME stays the user's, where the embedded
model was converted once (converting it again takes minutes and is not what this test is about).
"""
from __future__ import annotations

import time

import pytest

from tests.helpers.terminal import close_terminal, open_terminal

pytestmark = [pytest.mark.integration, pytest.mark.tui]
PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture
def terminal(tmp_path):
    term = open_terminal(tmp_path, 100, 30)
    try:
        yield term
    finally:
        close_terminal(term)


def test_three_runs_history_and_sql_then_a_clean_quit(terminal):
    terminal.wait_for("smollm2-135m", "30 layers", "ready")
    terminal.keys(PROMPT, literal=True)
    terminal.keys("C-r")
    terminal.wait_for("run 1 · logit-lens", "Top-token probability")
    for run_id in (2, 3):
        terminal.keys("F2")
        terminal.wait_for("model smollm2-135m")
        terminal.keys("C-r")
        terminal.wait_for(f"run {run_id} · logit-lens", "Top-token probability")
    shown = terminal.screen()
    assert "layer" in shown and "pos" in shown and "Traceback" not in shown

    terminal.keys("F4")
    terminal.wait_for("3 runs")
    terminal.keys("Down")
    terminal.keys("Enter")
    terminal.wait_for("run 2 · logit-lens", "Top-token probability")

    terminal.keys("F5")
    terminal.wait_for("read-only")
    terminal.keys("select count(*) AS n_done from runs where status = 'done'", literal=True)
    terminal.keys("C-r")
    shown = terminal.wait_for("n_done", "rows 1-1")
    assert any(line.strip().split() == ["3"] or line.strip().endswith(" 3") for line in shown.splitlines()), shown

    terminal.keys("C-q")
    deadline = time.monotonic() + 60
    while not terminal.exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert terminal.exit_file.read_text().strip() == "0"
    assert not (terminal.home / "state" / "iwb" / "crash.log").exists()
