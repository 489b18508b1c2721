"""Key bursts through the installed `iwb` in a real terminal at 80x24: keys sent in one write (as a
fast typist or an SSH packet delivers them) land exactly as typed.

Before app.tui.keys, `5 Tab 3` in one write gave k_max = 53 (all three keys went to the field that
was focused when they arrived), two Tabs on Results moved one chart, and a History filter followed
by Down Enter opened nothing (Down went to the filter, Enter only moved the focus).
"""
from __future__ import annotations

import time

import pytest

from tests.helpers.terminal import close_terminal, open_terminal

pytestmark = pytest.mark.tui
PROMPTS = ("Alpha apples are red and", "Bravo bananas are yellow and", "Charlie cherries are dark and")


@pytest.fixture
def stored_runs(tmp_path):
    """Three logit-lens runs of a tiny random Llama, stored by the session as the CLI would store them."""
    from analyses.core.contract import Input
    from analyses.model.loading import load_model
    from analyses.model.tiny import build_tiny
    from app.run.session import Session
    from store import Store

    folder = build_tiny("llama", tmp_path / "tiny")
    model = load_model(str(folder), device="cpu", dtype="float32")
    store = Store(tmp_path / "runs.duckdb")  # a connection per operation: nothing stays open for iwb
    for prompt in PROMPTS:
        Session(store).run(model, Session.prepare("logit-lens", (Input(0, "prompt", prompt),), {}), lambda *args: None)
    return folder


def chart_title(screen: str, run_id: int) -> str:
    return next((line.strip() for line in screen.splitlines() if f"(run {run_id}" in line), "")


def test_bursts_land_as_typed(tmp_path, stored_runs):
    term = open_terminal(tmp_path, 80, 24, "--model", str(stored_runs))
    try:
        term.wait_for("ready")
        # The probe form: truncation's k_max, then 5 Tab 3 in one write.
        term.keys("C-p")
        term.wait_for("Search for commands")
        term.keys("truncation", literal=True)
        time.sleep(0.5)
        term.keys("Enter")
        term.wait_for("analysis truncation")
        for _ in range(8):  # to k_max: its row open, its default under its description
            if "(default 10)" in term.screen():
                break
            term.keys("Tab")
            time.sleep(0.5)
        term.wait_for("(default 10)")
        term.write(b"5\t3")
        term.wait_for_line(r"^\s*min_context\s+3\s")
        assert term.wait_for_line(r"^\s*k_max\s+(\S+)").group(1) == "5"

        # History: filter text, Down, Enter in one write opens the run the filter found.
        term.keys("F4")
        term.wait_for("3 runs")
        term.keys("/")
        time.sleep(0.5)
        term.write(b"Bravo\x1b[B\r")
        term.wait_for("run 2 · logit-lens", timeout=30)

        # Results: learn the run's chart cycle one Tab at a time, then ten Tabs in one write.
        titles = [chart_title(term.wait_for("(run 2", timeout=30), 2)]
        while len(titles) < 12:
            term.keys("Tab")
            deadline = time.monotonic() + 10
            while (title := chart_title(term.screen(), 2)) == titles[-1] and time.monotonic() < deadline:
                time.sleep(0.1)
            if title == titles[0]:
                break
            titles.append(title)
        assert 1 < len(titles) < 12, titles
        expected = titles[10 % len(titles)]
        term.write(b"\t" * 10)
        deadline = time.monotonic() + 20
        while chart_title(term.screen(), 2) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # and it stays there: no press arrives late
        assert chart_title(term.screen(), 2) == expected, (titles, term.screen())

        term.keys("C-q")
        assert term.wait_exit() == "0"
    finally:
        close_terminal(term)
