"""Analyses as plugins: the example package of docs/plugins.md, built and installed into a temporary
folder like a package from outside this repository, is listed, run, stored, drawn, exported,
compared and resumed through the CLI and offered by the workbench's probe form like a built-in.
The built-ins register through the same entry point group."""
from __future__ import annotations

import asyncio
import csv
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analyses.core.errors import BadInput
from tests.helpers.cli import assert_bad_input, iwb
from tests.helpers.plugin import (
    PLUGIN_DIST,
    PLUGIN_MODULE,
    PLUGIN_NAME,
    PLUGIN_TABLE,
    doc_blocks,
    install_plugin,
    with_pythonpath,
)
from tests.helpers.shards import rows, same_results

ROOT = Path(__file__).resolve().parents[1]
PROMPT_A = "The Eiffel Tower is located in Paris"
PROMPT_B = "The Eiffel Tower is located in Rome"
N_LAYERS = 3  # build_tiny's default
MODEL_FLAGS = ("--device", "cpu", "--dtype", "float32")
CHART_FLAGS = ("--width", "80", "--height", "16")
# Three prompts, one per shard: the run is stopped once the first shard is stored.
PROMPT_SET = "prompt\nThe Eiffel Tower is located in Paris\nThe Colosseum is in Rome\nBig Ben stands in London\n"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugin, pip-installed into a folder of its own (not the venv)."""
    return install_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> str:
    from analyses.model.tiny import build_tiny

    return str(build_tiny("llama", tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture
def on_path(plugin_site, monkeypatch):
    """The plugin importable in this process, as it would be when installed next to iwb."""
    monkeypatch.syspath_prepend(str(plugin_site))
    yield plugin_site
    sys.modules.pop(PLUGIN_MODULE, None)


def plugin_iwb(site: Path, *args: str, db: Path | None = None) -> subprocess.CompletedProcess:
    return iwb(*args, db=db, env=with_pythonpath(site))


@pytest.fixture(scope="module")
def stored(plugin_site, tiny_folder, tmp_path_factory):
    """Two runs of the plugin stored by `iwb run` (run 1 on PROMPT_A, run 2 on PROMPT_B): the database
    and the two commands' results, which test_run_stores_the_plugin checks."""
    db = tmp_path_factory.mktemp("stored") / "results.duckdb"
    first = plugin_iwb(plugin_site, "run", PLUGIN_NAME, "--prompt", PROMPT_A, "--model", tiny_folder, *MODEL_FLAGS, *CHART_FLAGS, db=db)
    second = plugin_iwb(plugin_site, "run", PLUGIN_NAME, "--prompt", PROMPT_B, "--model", tiny_folder, *MODEL_FLAGS, "--no-chart", db=db)
    return db, first, second


# The registry: entry points, the built-in table, collisions, broken plugins.


def pyproject_entry_points(group: str) -> dict[str, str]:
    """iwb's pyproject.toml table of an entry point group (tomllib is 3.11+; iwb supports 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(rf'^\[project\.entry-points\."{re.escape(group)}"\]\n(.*?)(?=^\[|\Z)', text, flags=re.DOTALL | re.MULTILINE)
    assert section, f"pyproject.toml has no [project.entry-points.\"{group}\"] table"
    return dict(re.findall(r'^"?([\w.-]+)"?\s*=\s*"([^"]+)"', section.group(1), flags=re.MULTILINE))


def test_builtins_are_the_entry_points_pyproject_declares():
    from analyses.core import registry

    declared = pyproject_entry_points(registry.GROUP)
    assert declared == registry.BUILTIN
    found = registry.discover()
    assert found.builtins == declared, "the installed iwb's entry points are stale: run `make setup` (pip install -e .)"
    assert PLUGIN_NAME not in found.plugins  # the example is installed into a temporary folder only
    for name, value in declared.items():
        analysis = registry.get_analysis(name)
        assert f"{type(analysis).__module__}:{type(analysis).__qualname__}" == value


def test_a_source_checkout_without_the_iwb_distribution_falls_back_to_the_builtin_table(on_path, monkeypatch):
    import importlib.metadata

    from analyses.core import registry

    real = importlib.metadata.entry_points

    def without_iwb(**selection):
        return [entry for entry in real(**selection) if entry.dist is None or entry.dist.name != "iwb"]

    monkeypatch.setattr(importlib.metadata, "entry_points", without_iwb)
    found = registry.discover()
    assert found.builtins == registry.BUILTIN
    assert set(found.plugins) == {PLUGIN_NAME}


def test_listing_reads_the_entry_points_without_importing_any_analysis(plugin_site):
    code = (
        "import sys\nfrom analyses.core.registry import analysis_names\nnames = analysis_names()\n"
        f"print({PLUGIN_NAME!r} in names, 'logit-lens' in names, {PLUGIN_MODULE!r} in sys.modules, 'analyses.logit_lens' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=with_pythonpath(plugin_site), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "False", "False"]


def test_the_plugin_appears_and_leaves_with_its_folder_on_sys_path(plugin_site, monkeypatch):
    from analyses.core.registry import REGISTRY, analysis_names, get_analysis

    assert PLUGIN_NAME not in analysis_names()
    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(plugin_site))
        assert PLUGIN_NAME in analysis_names() and PLUGIN_NAME in REGISTRY
        analysis = get_analysis(PLUGIN_NAME)
        assert type(analysis).__module__ == PLUGIN_MODULE and analysis.spec.name == PLUGIN_NAME
        assert REGISTRY.plugin(PLUGIN_NAME).distribution == PLUGIN_DIST
    sys.modules.pop(PLUGIN_MODULE, None)
    assert PLUGIN_NAME not in analysis_names()
    with pytest.raises(BadInput, match=f"unknown analysis '{PLUGIN_NAME}'"):
        get_analysis(PLUGIN_NAME)


def test_the_plugin_honours_the_contract_every_builtin_honours(on_path):
    from analyses.core.registry import analysis_names
    from tests.test_params_registry import test_every_registered_analysis_honours_the_contract

    assert PLUGIN_NAME in analysis_names()
    test_every_registered_analysis_honours_the_contract()


BAD_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "iwb-bad-plugins"
version = "0.1.0"

[tool.setuptools]
py-modules = ["bad_broken", "bad_empty", "bad_named"]

[project.entry-points."iwb.analyses"]
"logit-lens" = "bad_empty"
"broken-one" = "bad_broken:Broken"
"empty-one" = "bad_empty"
"misnamed-one" = "bad_named:Misnamed"
"""
BAD_FILES = {
    "pyproject.toml": BAD_PYPROJECT,
    "bad_broken.py": "import frobnicate_is_not_installed  # noqa: F401\n",
    "bad_empty.py": "VALUE = 1\n",
    "bad_named.py": "import dataclasses\nfrom iwb_token_norms import TokenNorms\nclass Misnamed(TokenNorms):\n    spec = dataclasses.replace(TokenNorms.spec, name='other-name')\n",
}


@pytest.fixture(scope="module")
def bad_site(tmp_path_factory) -> Path:
    return install_plugin(tmp_path_factory.mktemp("bad-plugins"), BAD_FILES, name="bad")


def test_a_builtin_name_wins_and_broken_plugins_fail_only_when_used(bad_site, on_path, monkeypatch):
    from analyses.core.registry import analysis_names, get_analysis, ignored_plugins

    monkeypatch.syspath_prepend(str(bad_site))
    names = analysis_names()  # listing imports none of them, so a broken one cannot break it
    assert {"broken-one", "empty-one", "misnamed-one", PLUGIN_NAME, "logit-lens"} <= set(names)
    assert "bad_broken" not in sys.modules
    assert type(get_analysis("logit-lens")).__module__ == "analyses.logit_lens"
    assert any(line.startswith("'logit-lens' from iwb-bad-plugins (bad_empty)") and "built-in" in line for line in ignored_plugins())
    cases = {
        "broken-one": "analysis plugin 'broken-one' (bad_broken:Broken, from iwb-bad-plugins) failed to import: ModuleNotFoundError: No module named 'frobnicate_is_not_installed'",
        "empty-one": "does not follow the analysis contract: bad_empty is not a subclass of analyses.core.contract.Analysis",
        "misnamed-one": "has spec.name 'other-name'; it must be the entry point's name 'misnamed-one'",
    }
    for name, message in cases.items():
        with pytest.raises(BadInput) as raised:
            get_analysis(name)
        assert message in str(raised.value) and "\n" not in str(raised.value)
    assert get_analysis(PLUGIN_NAME).spec.name == PLUGIN_NAME  # the good plugin beside them still works
    for module in ("bad_broken", "bad_empty", "bad_named"):
        sys.modules.pop(module, None)


def test_iwb_run_of_a_broken_plugin_is_one_line_of_bad_input(bad_site, tmp_path):
    db = tmp_path / "results.duckdb"
    result = iwb("run", "broken-one", "--prompt", PROMPT_A, db=db, env=with_pythonpath(bad_site))
    assert_bad_input(result, "analysis plugin 'broken-one' (bad_broken:Broken, from iwb-bad-plugins) failed to import")
    assert not db.exists()


# The CLI: list, run, show, export, compare, resume.


def test_iwb_analyses_lists_the_plugin_beside_the_builtins(plugin_site):
    from analyses.core.registry import BUILTIN

    result = plugin_iwb(plugin_site, "analyses")
    assert result.returncode == 0, result.stderr
    listed = [line.split(":", 1)[0] for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert listed == sorted([*BUILTIN, PLUGIN_NAME])
    assert "token-norms: Residual-stream norm per token  (inputs: prompt, prompt_set, pile; tables: token_norms)" in result.stdout
    assert "--param prepend_bos=<str>  default 'auto'" in result.stdout.split("token-norms:", 1)[1]


def test_iwb_run_stores_the_plugin_and_draws_its_chart(stored):
    db, first, second = stored
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.strip().endswith("run 1") and second.stdout.strip() == "run 2"
    assert "Residual-stream norm after each layer (run 1, input 0)" in first.stdout
    assert rows(db, "SELECT run_id, analysis, status FROM runs ORDER BY run_id") == [(1, PLUGIN_NAME, "done"), (2, PLUGIN_NAME, "done")]
    for run_id in (1, 2):
        n_tokens = rows(db, f"SELECT count(*) FROM tokens WHERE run_id = {run_id}")[0][0]
        cells = rows(db, f"SELECT layer, pos, norm FROM {PLUGIN_TABLE} WHERE run_id = {run_id} ORDER BY layer, pos")
        assert n_tokens > 5 and [(layer, pos) for layer, pos, _ in cells] == [(layer, pos) for layer in range(N_LAYERS) for pos in range(n_tokens)]
        assert all(math.isfinite(norm) and norm > 0 for _, _, norm in cells)


def test_iwb_show_draws_the_stored_plugin_run(plugin_site, stored):
    db, _, _ = stored
    result = plugin_iwb(plugin_site, "show", "1", *CHART_FLAGS, db=db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"run 1: {PLUGIN_NAME} on ")
    assert f"input 0 (prompt): {PROMPT_A!r}" in result.stdout
    assert "Residual-stream norm after each layer (run 1, input 0)" in result.stdout
    assert "Tower" in result.stdout and "shade: norm" in result.stdout  # NO_COLOR: shades, and the legend says so


def test_iwb_export_writes_the_plugin_table(plugin_site, stored, tmp_path):
    db, _, _ = stored
    target = tmp_path / "norms.csv"
    result = plugin_iwb(plugin_site, "export", "1", "--to", str(target), db=db)
    assert result.returncode == 0, result.stderr
    expected = rows(db, f"SELECT run_id, input_id, layer, pos, norm FROM {PLUGIN_TABLE} WHERE run_id = 1 ORDER BY layer, pos")
    assert result.stdout.strip() == f"wrote {len(expected)} rows of {PLUGIN_TABLE} to {target}"
    with target.open(newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == ["run_id", "input_id", "layer", "pos", "norm"]
    body = sorted(((int(r), int(i), int(layer), int(pos), float(norm)) for r, i, layer, pos, norm in written[1:]), key=lambda row: (row[2], row[3]))
    assert body == expected


def test_iwb_compare_two_plugin_runs(plugin_site, stored, on_path):
    from app.run.compare import compare_runs
    from store import Store

    db, _, _ = stored
    # Wide enough for the difference chart's title (plotext leaves out a title wider than the chart).
    result = plugin_iwb(plugin_site, "compare", "1", "2", "--width", "120", "--height", "16", db=db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"compare run 1 vs run 2 ({PLUGIN_NAME})")
    assert f"input: {PROMPT_A!r} vs {PROMPT_B!r}" in result.stdout  # A first, as the heading 'run 1 vs run 2' names them
    assert "Residual-stream norm after each layer (run 2 - run 1" in result.stdout
    # The drawn difference: the prompts share all but their last token, and a causal model sees the
    # shared prefix the same way, so B - A is zero on every aligned cell.
    (data,) = compare_runs(Store(db, read_only=True), 1, 2).charts
    shared = len(PROMPT_A.split(" ")) - 1
    assert data.chart.kind == "heatmap" and data.y_values == list(range(N_LAYERS)) and len(data.x_values) >= shared
    assert all(value == pytest.approx(0.0, abs=1e-4) for row in data.matrix for value in row)


STOP_AFTER_FIRST_SHARD = """\
import sys, threading
from analyses.core.errors import Cancelled
from analyses.core.registry import get_analysis
from analyses.inputs.corpus import InputChoice, build_inputs
from analyses.model.loading import load_model
from app.run.runner import RunRequest, execute, prepare
from store import Store

db, model, prompts = sys.argv[1:4]
inputs, _ = build_inputs(InputChoice("prompt_set", path=prompts), get_analysis("token-norms").spec.input_kinds)
cancel = threading.Event()

def progress(done, total, note=""):
    if "shard 1/" in note and "stored" in note:
        cancel.set()

try:
    execute(Store(db), load_model(model, device="cpu", dtype="float32"), prepare(RunRequest("token-norms", inputs)), progress, cancel, shard_docs=1)
except Cancelled:
    print("cancelled")
else:
    print("finished")
"""


def test_a_stopped_plugin_run_resumes_to_the_uninterrupted_results(plugin_site, tiny_folder, tmp_path):
    db, prompts = tmp_path / "results.duckdb", tmp_path / "prompts.csv"
    prompts.write_text(PROMPT_SET)
    reference = plugin_iwb(plugin_site, "run", PLUGIN_NAME, "--prompts", str(prompts), "--shard-docs", "1", "--model", tiny_folder,
                           *MODEL_FLAGS, "--no-chart", db=db)
    assert reference.returncode == 0 and reference.stdout.strip() == "run 1", reference.stderr
    assert rows(db, "SELECT status, n_shards, shards_done FROM runs WHERE run_id = 1") == [("done", 3, 3)]

    stopped = subprocess.run([sys.executable, "-c", STOP_AFTER_FIRST_SHARD, str(db), tiny_folder, str(prompts)],
                             capture_output=True, text=True, env=with_pythonpath(plugin_site), timeout=300)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "cancelled", stopped.stderr
    assert rows(db, "SELECT status, n_shards, shards_done FROM runs WHERE run_id = 2") == [("cancelled", 3, 1)]
    assert rows(db, f"SELECT DISTINCT input_id FROM {PLUGIN_TABLE} WHERE run_id = 2") == [(0,)]  # the partial results

    resumed = plugin_iwb(plugin_site, "resume", "2", *MODEL_FLAGS, "--no-chart", db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert f"run 2: {PLUGIN_NAME} on {tiny_folder}, 2 of 3 shards to compute" in resumed.stderr
    assert resumed.stdout.strip() == "run 2"
    assert rows(db, "SELECT status, n_shards, shards_done FROM runs WHERE run_id = 2") == [("done", 3, 3)]
    same_results(db, 1, 2, (PLUGIN_TABLE, "tokens"))


# The workbench: the probe form, the results and compare views.


@pytest.mark.tui
def test_the_workbench_offers_draws_and_compares_the_plugin(stored, on_path, tmp_path):
    from app.tui.store_access import SerialStore
    from tests.helpers.tui import make_app, settle

    db, _, _ = stored
    copy = tmp_path / "tui.duckdb"
    for suffix in ("", ".wal"):
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", f"{copy}{suffix}")
    store = SerialStore(copy)
    drawn_cells = {(layer, pos): norm for layer, pos, norm in rows(db, f"SELECT layer, pos, norm FROM {PLUGIN_TABLE} WHERE run_id = 1")}

    async def session() -> None:
        app = make_app(store)
        async with app.run_test(size=(110, 36)) as pilot:
            await settle(app, pilot)
            # The results view draws the stored plugin run with its own chart.
            app.open_run(1)
            await settle(app, pilot)
            data = app.screen.query_one("#chart").data
            assert data is not None and data.chart.kind == "heatmap" and data.chart.table == PLUGIN_TABLE
            drawn = {(y, x): data.matrix[i][j] for i, y in enumerate(data.y_values) for j, x in enumerate(data.x_values)}
            assert drawn.keys() == drawn_cells.keys()
            assert all(drawn[key] == pytest.approx(value) for key, value in drawn_cells.items())

            # History: mark run 2, compare with run 1.
            await pilot.press("f4")
            await settle(app, pilot)
            assert app.screen.selected_run() == 2
            await pilot.press("f7")
            await pilot.press("down")
            await pilot.press("f7")
            await settle(app, pilot)
            assert app.screen.name == "compare"
            compared = app.screen.query_one("#compare-chart").data
            assert compared.chart.table == PLUGIN_TABLE and compared.subtitle.startswith("run 1 - run 2")
            assert all(value == pytest.approx(0.0, abs=1e-4) for row in compared.matrix for value in row)

            # The probe: the picker offers the plugin; its form is built from its Params.
            await pilot.press("f2")
            await settle(app, pilot)
            probe = app.screen
            probe.query_one("#analysis").value = PLUGIN_NAME  # a Select refuses a value that is not one of its options
            await settle(app, pilot)
            assert probe.shown_analysis == PLUGIN_NAME
            assert [info.name for info in probe.query_one("#params").infos] == ["prepend_bos"]
            assert str(probe.query_one("#param-prepend_bos").placeholder) == "'auto'"
            assert "Residual-stream norm per token" in str(probe.query_one("#analysis-doc").render())
            assert probe.query_one("#source").value == "prompt"  # the plugin's first input kind
            probe.query_one("#param-prepend_bos").focus()
            await pilot.press(*"maybe")
            await pilot.pause()
            assert "takes one of auto, true, false" in str(probe.query_one("#param-error").render())
            await pilot.press("ctrl+r")
            await settle(app, pilot)
            assert app.host.jobs == []  # refused in place
            probe.query_one("#param-prepend_bos").value = "false"
            probe.query_one("#prompt").load_text(PROMPT_A)
            await pilot.pause()
            await pilot.press("ctrl+r")
            await settle(app, pilot)
            assert len(app.host.jobs) == 1
            analysis, inputs, raw_params = app.host.jobs[0]
            assert (analysis, [item.text for item in inputs], raw_params) == (PLUGIN_NAME, [PROMPT_A], {"prepend_bos": "false"})

    asyncio.run(session())


def test_the_doc_shows_the_example_the_tests_install():
    (module,) = doc_blocks("python")
    (pyproject,) = doc_blocks("toml")
    assert f'"{PLUGIN_NAME}" = "{PLUGIN_MODULE}:TokenNorms"' in pyproject and f'name = "{PLUGIN_DIST}"' in pyproject
    assert f'name="{PLUGIN_NAME}"' in module and "sharded = True" in module and "class TokenNorms(Analysis):" in module
    # The README promises a short example: the module stays about thirty lines of code.
    code = [line for line in module.splitlines() if line.strip()]
    assert len(code) <= 40, len(code)


def test_the_readme_shows_the_same_example():
    """The README's example is the one this file installs and runs (docs/plugins.md), to the letter."""
    (module,) = doc_blocks("python")
    readme = [block for block in doc_blocks("python", ROOT / "README.md") if "class TokenNorms(Analysis):" in block]
    assert readme == [module]
