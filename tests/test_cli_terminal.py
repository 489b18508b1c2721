"""Colour follows the terminal: on for a terminal, off for a pipe, NO_COLOR and TERM=dumb."""
from __future__ import annotations

import pytest

from app.cli import commands as cli


@pytest.mark.parametrize(("tty", "environment", "expected"), [
    (True, {"TERM": "xterm-256color"}, True),
    (True, {"TERM": "dumb"}, False),
    (True, {"TERM": "xterm", "NO_COLOR": "1"}, False),
    (False, {"TERM": "xterm"}, False),
    (False, {"TERM": "dumb", "FORCE_COLOR": "1"}, True),
])
def test_colour_follows_the_terminal(monkeypatch, tty, environment, expected):
    for name in ("TERM", "NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli.sys.stdout, "isatty", lambda: tty)
    assert cli._use_colour() is expected
