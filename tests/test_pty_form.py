"""The probe form through the installed `iwb` in a real terminal (tmux), read from what the terminal
shows: every parameter of every analysis is reached by Tab in form order and, when focused, is on
screen with its whole description and default (the open row, nothing cut to `…`); a bad value in
the last parameter is flagged in place when ctrl+r is pressed, and nothing runs.

Every analysis at 80x24; at 60x20 the analyses with the most parameters and the longest
descriptions. tests/tui/test_probe_form.py checks the same in-process, through run_test.
"""
from __future__ import annotations

import re
import time

import pytest

from tests.helpers.terminal import Terminal, close_terminal, open_terminal

pytestmark = pytest.mark.tui
NARROW = ("causal-trace", "fact-lookup", "attribution-patching", "truncation")  # at 60x20
SCROLLBAR = re.compile(r"[\u2580-\u259f]+\s*$")  # a scrollbar's blocks at a line's end


def collapsed(text: str) -> str:
    return " ".join(text.split())


def shown_text(screen: str) -> str:
    """The screen's lines without the scrollbars at their ends, joined and spaces collapsed: a
    description wrapped over lines reads as one text."""
    return collapsed(" ".join(SCROLLBAR.sub("", line) for line in screen.splitlines()))


def open_row(info) -> str:
    """What the focused (open) row shows under its line: the whole description, then the default."""
    from app.tui.widgets.param_form import show_default

    return collapsed(f"{info.doc} (default {show_default(info)})")


def bad_value(info) -> str | None:
    return "x!" if info.type_name in ("int", "float", "bool") or info.choices else None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from analyses.model.tiny import build_tiny

    return build_tiny("llama", tmp_path_factory.mktemp("tiny") / "tiny")


def settled(term: Terminal, before: str) -> str:
    """The screen once a key's effect has drawn: changed from before (or 2 s), then still for 0.2 s
    (a guard for reading a half-drawn screen, not a timing assertion)."""
    deadline = time.monotonic() + 2
    screen = term.screen()
    while screen == before and time.monotonic() < deadline:
        time.sleep(0.05)
        screen = term.screen()
    while True:
        time.sleep(0.2)
        again = term.screen()
        if again == screen:
            return screen
        screen = again


def choose(term: Terminal, analysis: str) -> None:
    term.keys("C-p")
    term.wait_for("Search for commands")
    term.keys(f"({analysis})", literal=True)
    time.sleep(0.5)
    term.keys("Enter")
    term.wait_for_line(rf"analysis {re.escape(analysis[:12])}", timeout=30)  # the picker may cut the name at 60 columns


def check_form(term: Terminal, analysis: str, size: tuple[int, int]) -> None:
    from analyses.core.params import param_infos
    from analyses.core.registry import get_analysis

    infos = param_infos(get_analysis(analysis).Params)
    choose(term, analysis)
    reached: list[str] = []
    screen = settled(term, "")
    for _ in range(len(infos) + 12):
        screen = settled(term, screen)
        text = shown_text(screen)
        opened = [info.name for info in infos if open_row(info) in text]
        assert len(opened) <= 1, (analysis, opened, screen)
        if opened and (not reached or reached[-1] != opened[0]):
            reached.append(opened[0])
        if reached and reached[-1] == infos[-1].name:
            break
        term.keys("Tab")
    assert reached == [info.name for info in infos], (size, analysis, reached, screen)
    assert "…" not in screen.splitlines()[next(i for i, line in enumerate(screen.splitlines()) if line.strip().startswith(infos[-1].name[:12]))]

    last = infos[-1]
    value = bad_value(last)
    if value is None:
        return
    term.keys(value, literal=True)
    term.keys("BTab")  # shift+tab: away from the field: ctrl+r must bring the focus back to it
    screen = settled(term, screen)
    term.keys("C-r")
    screen = term.wait_for(f"Not run: parameter '{last.name}'", timeout=30)
    screen = settled(term, screen)
    assert open_row(last) in shown_text(screen), (analysis, screen)  # the focus is back on the bad field
    assert "started" not in screen and "submitted" not in screen, screen  # nothing ran
    term.keys("BSpace", "BSpace")  # the value fixed, the refusal goes
    deadline = time.monotonic() + 10
    while "Not run:" in term.screen() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Not run:" not in term.screen(), term.screen()


@pytest.mark.parametrize("size", [(80, 24), (60, 20)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_parameter_reachable_and_a_bad_last_value_flagged(tmp_path, tiny, size):
    from analyses.core.registry import analysis_names

    analyses = analysis_names() if size == (80, 24) else [name for name in NARROW if name in analysis_names()]
    term = open_terminal(tmp_path, *size, "--model", str(tiny))
    try:
        term.wait_for("ready")
        for analysis in analyses:
            check_form(term, analysis, size)
        term.keys("C-q")
        assert term.wait_exit() == "0"
    finally:
        close_terminal(term)
