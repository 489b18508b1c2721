"""The installed `iwb` in a real pseudo-terminal (tmux): three runs, History, the SQL console, ctrl+q.

Keys go in with `tmux send-keys`, the screen comes back with `capture-pane`. HOME and the XDG
state, data and config dirs are temporary; XDG_CACHE_HOME stays the user's, where the embedded
model was converted once (converting it again takes minutes and is not what this test is about).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.tui]
REPO = Path(__file__).resolve().parents[1]
PROMPT = "The Eiffel Tower is located in the city of"
WAIT_S = 240


class Terminal:
    def __init__(self, socket: str, session: str, exit_file: Path) -> None:
        self.socket, self.session, self.exit_file = socket, session, exit_file

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], check=True, capture_output=True, text=True).stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", self.session, *(["-l"] if literal else []), *keys)

    def screen(self) -> str:
        try:
            return self.tmux("capture-pane", "-p", "-t", self.session)
        except subprocess.CalledProcessError:
            return ""

    def wait_for(self, *texts: str, timeout: float = WAIT_S) -> str:
        """Poll the terminal until every text is on screen (an external process: nothing to await)."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if all(text in shown for text in texts):
                return shown
            if self.exit_file.exists():
                raise AssertionError(f"iwb ended (exit code {self.exit_file.read_text().strip()}) before {texts} showed; the screen:\n{shown}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts} not on screen after {timeout} s; the screen:\n{shown}")
            time.sleep(0.2)


@pytest.fixture
def terminal(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the real-terminal session needs it (apt-get install tmux)")
    iwb = Path(sys.executable).parent / "iwb"
    if not iwb.exists():
        pytest.skip(f"the iwb console script is not installed next to {sys.executable} (pip install -e .)")
    home = tmp_path / "home"
    env = {
        "HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"),
        "PYTHONPATH": str(REPO), "TERM": "xterm-256color",
    }
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    command = (f"env {exports} {shlex.quote(str(iwb))} --db {shlex.quote(str(tmp_path / 'runs.duckdb'))} --device cpu"
               f"; echo $? > {shlex.quote(str(tmp_path / 'exit'))}")
    term = Terminal(f"iwb-test-{os.getpid()}", "iwb", tmp_path / "exit")
    term.tmux("new-session", "-d", "-s", "iwb", "-x", "100", "-y", "30", command)
    term.home = home
    try:
        yield term
    finally:
        subprocess.run(["tmux", "-L", term.socket, "kill-server"], capture_output=True)


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
