"""Golden results: numbers of the embedded model stored in tests/data/golden.json (written by
scripts/golden.py --write, only for a change that is meant); a dependency or code change that
moves one fails here, loudly, naming the number."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_the_embedded_model_gives_the_golden_numbers():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import golden
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    stored = json.loads(golden.GOLDEN.read_text())
    assert set(stored["numbers"]) == {case[0] for case in golden.CASES}
    today = golden.measure()
    moved = {name: (stored["numbers"][name], value) for name, value in today.items()
             if value != pytest.approx(stored["numbers"][name], rel=stored["rtol"], abs=stored["atol"])}
    assert not moved, f"numbers moved (stored, today): {moved}"
