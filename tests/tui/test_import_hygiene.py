"""The TUI process stays light: importing the TUI and the worker host loads no torch or transformer_lens."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tui_imports_without_torch():
    code = (
        "import sys\n"
        "import app.tui, app.tui.app, app.tui.main, app.run.worker, app.run.worker_host, app.charts\n"
        "from app.tui.app import Workbench\n"
        "heavy = sorted(name for name in sys.modules if name.split('.')[0] in ('torch', 'transformer_lens', 'transformers'))\n"
        "print(','.join(heavy))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
