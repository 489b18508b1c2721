"""The `iwb` command through its real entry point, in a subprocess, and what its refusals look like."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb


def default_sigint() -> None:
    """preexec_fn for a child that must take Ctrl-C: a runner started in the background ignores SIGINT."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def iwb_command() -> list[str]:
    script = Path(sys.executable).parent / "iwb"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def iwb(*args: str, db: Path | None = None, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    env.pop("IWB_DB", None)
    extra = ["--db", str(db)] if db is not None else []
    return subprocess.run(iwb_command() + extra + list(args), capture_output=True, text=True, env=env, timeout=timeout)


def runs_in(db: Path) -> int:
    if not db.exists():
        return 0
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        conn.close()


def assert_bad_input(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iwb: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr
