"""The light faces never import torch or transformer_lens (checked in a fresh interpreter)."""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformer_lens", "transformers")


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import store; import store.db; import store.schema",
        "import analyses.core.registry as b, analyses.core.params as p\nfor name in b.analysis_names():\n    m = b.get_analysis(name); m.spec; p.param_infos(m.Params)",
        "import app.cli, app.charts, app.run.runner",
    ],
    ids=["store", "registry-and-every-analysis-module", "cli"],
)
def test_light_imports_do_not_pull_torch(code):
    loaded = _modules_after(code)
    assert not [name for name in HEAVY if name in loaded]


def test_store_knows_nothing_of_the_engine_or_the_ui():
    loaded = _modules_after("import store, store.db, store.schema, store.paths")
    # The one exception: the error tree (analyses.core.errors, which imports nothing) that store's errors extend.
    allowed = {"analyses", "analyses.core", "analyses.core.errors"}
    assert not [m for m in loaded if m.split(".")[0] in ("analyses", "app", "textual", "torch") and m not in allowed]


def test_analyses_know_nothing_of_duckdb_or_textual():
    code = "import analyses.core.registry as b, analyses.inputs.corpus, analyses.model.loading\nfor n in b.analysis_names(): b.get_analysis(n)"
    loaded = _modules_after(code)
    assert not [m for m in loaded if m.split(".")[0] in ("duckdb", "textual", "store", "app")]


def test_help_does_not_import_torch():
    probe = "import sys\nfrom app.cli.commands import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('MODULES', ' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "usage: iwb" in out.stdout
    loaded = out.stdout.split("MODULES", 1)[1].split()
    assert "torch" not in loaded
