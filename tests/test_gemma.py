"""The second real model, Gemma-3-270M, runs every analysis end to end through the installed
`iwb` and stores it (small inputs: the point is that each analysis works on Gemma 3's sliding
windows, (1 + w) norms, scaled embeddings and 262k vocabulary, not its numbers).
Needs `make setup-gemma` (CI runs it); skipped with the reason otherwise."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from analyses.model.loading import EMBEDDED, gguf_path

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(gguf_path(EMBEDDED["gemma3-270m"]) is None, reason="gemma3-270m is not installed (make setup-gemma)"),
]
PROMPT = "The Eiffel Tower is located in the city of"
RUNS = {
    "logit-lens": ["--prompt", PROMPT, "--param", "target= Paris"],
    "causal-trace": ["--prompt", PROMPT, "--param", "subject=Eiffel Tower", "--param", "samples=2", "--param", "kinds=resid"],
    "truncation": ["--n-docs", "2", "--max-tokens", "24", "--param", "k_max=3"],
    "layer-interventions": ["--n-docs", "1", "--max-tokens", "16", "--param", "interventions=block,swap"],
    "attention-locality": ["--n-docs", "2", "--max-tokens", "32"],
    "component-norms": ["--n-docs", "2", "--max-tokens", "32"],
    "neuron-classes": ["--param", "layers=0"],
    "first-layer-heads": ["--n-docs", "2", "--max-tokens", "64", "--param", "dest_positions=40"],
    "contextual-neurons": ["--n-docs", "2", "--max-tokens", "64", "--param", "dest_positions=40"],
    "fact-lookup": ["--param", "layer_stride=9", "--param", "intervention_entities=6", "--param", "folds=2", "--param", "n_neurons=2"],
}


@pytest.fixture(scope="module")
def gemma_db(tmp_path_factory):
    return tmp_path_factory.mktemp("gemma") / "results.duckdb"


@pytest.mark.parametrize("analysis", list(RUNS))
def test_every_analysis_runs_and_stores_on_gemma(gemma_db, analysis):
    from analyses.core.registry import get_analysis

    iwb = Path(sys.executable).with_name("iwb")
    done = subprocess.run([str(iwb), "run", analysis, "--model", "gemma3-270m", "--db", str(gemma_db), "--no-chart", *RUNS[analysis]],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = int(done.stdout.strip().split()[-1])
    with duckdb.connect(str(gemma_db), read_only=True) as con:
        status, model = con.execute("SELECT status, model FROM runs WHERE run_id = ?", [run_id]).fetchone()
        assert (status, model) == ("done", "gemma3-270m")
        for table in get_analysis(analysis).spec.tables:
            if con.execute(f"SELECT count(*) FROM {table.name} WHERE run_id = ?", [run_id]).fetchone()[0] > 0:
                break
        else:
            pytest.fail(f"{analysis} stored no result rows")
        if analysis == "logit-lens":
            # Gemma's tokenizer adds <bos> itself: auto follows it; the model's own answer is " Paris".
            token = con.execute("SELECT token FROM tokens WHERE run_id = ? AND pos = 0", [run_id]).fetchone()[0]
            top = con.execute("SELECT top_token FROM logit_lens WHERE run_id = ? AND layer = 18 ORDER BY pos DESC LIMIT 1", [run_id]).fetchone()[0]
            assert token == "<bos>" and top == " Paris"
