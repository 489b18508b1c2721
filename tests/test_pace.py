"""Progress as read by a person: rate in the note's unit and time left, from the reports alone (a fake clock)."""
from __future__ import annotations

import io

from app.run.progress import Pace, StderrProgress, duration, unit_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_time_left_in_the_notes_unit():
    clock = Clock()
    pace = Pace(clock)
    pace.update(0, 30)
    assert pace.describe(0, 30, "layer 0/30") == ""  # one report: no rate yet
    for layer in range(1, 13):
        clock.now += 0.25
        pace.update(layer, 30)
    # 12 layers in 3 s: 4 layers/s, 18 left: 4.5 s
    assert pace.describe(12, 30, "layer 12/30") == " · 4 layers/s · ~4 s left"


def test_the_rate_follows_the_recent_reports_and_restarts_with_a_new_phase():
    clock = Clock()
    pace = Pace(clock)
    for done in range(11):  # fast: 10 per second
        pace.update(done, 1000)
        clock.now += 0.1
    for done in range(11, 41):  # then slow: 1 per second, for longer than the window
        pace.update(done, 1000)
        clock.now += 1.0
    assert abs(pace.rate() - 1.0) < 0.01
    pace.update(0, 50)  # a new phase with its own total
    assert pace.rate() is None


def test_units_times_and_an_abstract_count():
    assert unit_of("token 3/7: cells 1-30/300 (30/300 cells)", 300) == "cells"
    assert unit_of("input 2/4: document 3/8", 8) == "documents"
    assert unit_of("forward 2/5, block 12/30", 150) == ""
    assert [duration(s) for s in (2.4, 59.6, 125, 3780)] == ["2 s", "1 min 0 s", "2 min 5 s", "1 h 3 min"]
    clock = Clock()
    pace = Pace(clock)
    pace.update(0, 200)
    clock.now += 2.0
    pace.update(20, 200)  # 10 units/s of 200: 5%/s, 18 s left
    assert pace.describe(20, 200, "forward 1/5, block 4/30") == " · 5%/s · ~18 s left"
    clock.now += 2.0
    pace.update(21, 200)  # 21 cells in 4 s
    assert pace.describe(21, 200, "cells 21/200") == " · 5.25 cells/s · ~34 s left"
    slow = Pace(clock)
    slow.update(0, 10)
    clock.now += 20.0
    slow.update(1, 10)
    assert slow.describe(1, 10, "layer 1/10") == " · 20 s per layer · ~3 min 0 s left"


def test_cli_progress_line_carries_the_pace():
    stream = io.StringIO()
    progress = StderrProgress("logit-lens", stream=stream, min_interval=0.0)
    progress.started -= 5.0  # as if the run had started 5 s ago
    progress.pace.samples.append((progress.pace.clock() - 2.0, 0))
    progress.pace.total = 30
    progress(10, 30, "layer 10/30")
    line = stream.getvalue()
    assert "layer 10/30 · " in line and "layers/s" in line and "left" in line
