"""The installed `iwb` in a real pseudo-terminal (tmux): keys in with send-keys (or raw bytes in one
write), the screen back with capture-pane. HOME and the XDG state, data and config dirs are
temporary; XDG_CACHE_HOME stays the user's, where the embedded model was converted once."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 240


class Terminal:
    def __init__(self, socket: str, session: str, exit_file: Path) -> None:
        self.socket, self.session, self.exit_file = socket, session, exit_file
        self.home = exit_file.parent / "home"

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], check=True, capture_output=True, text=True).stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", self.session, *(["-l"] if literal else []), *keys)

    def write(self, data: bytes) -> None:
        """Bytes as the terminal gets them from a fast typist or an SSH packet: one write to the pty."""
        self.tmux("send-keys", "-t", self.session, "-H", *(f"{byte:02x}" for byte in data))

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

    def wait_for_line(self, pattern: str, timeout: float = 30) -> re.Match:
        """The first screen line matching the regular expression, once one does."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            for line in shown.splitlines():
                found = re.search(pattern, line)
                if found:
                    return found
            if time.monotonic() > deadline or self.exit_file.exists():
                raise AssertionError(f"no line matches {pattern!r}; the screen:\n{shown}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not self.exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.exit_file.read_text().strip() if self.exit_file.exists() else ""


def open_terminal(tmp_path: Path, width: int, height: int, *arguments: str) -> Terminal:
    """`iwb --db tmp_path/runs.duckdb --device cpu ARGUMENTS` in a fresh tmux server of that size."""
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
    # COLUMNS and LINES unset: pytest's environment sets them to 80x24, and Textual would take them
    # over the pane's real size.
    command = (f"env -u COLUMNS -u LINES {exports} {shlex.quote(str(iwb))} --db {shlex.quote(str(tmp_path / 'runs.duckdb'))} --device cpu "
               + " ".join(shlex.quote(argument) for argument in arguments)
               + f"; echo $? > {shlex.quote(str(tmp_path / 'exit'))}")
    term = Terminal(f"iwb-test-{os.getpid()}-{tmp_path.name}", "iwb", tmp_path / "exit")
    term.tmux("new-session", "-d", "-s", "iwb", "-x", str(width), "-y", str(height), command)
    return term


def close_terminal(term: Terminal) -> None:
    subprocess.run(["tmux", "-L", term.socket, "kill-server"], capture_output=True)
