"""`iwb verify`: a done run recomputed on sampled inputs equals what is stored; a value changed by
hand in the database and a model swapped under the same name are caught."""
from __future__ import annotations

import shutil

from analyses.core.contract import Input, no_progress
from app.run.runner import RunRequest, execute, prepare
from store import Store
from tests.helpers.cli import assert_bad_input, iwb
from tests.helpers.shards import pile_inputs

PROMPTS = ["The Eiffel Tower is located in the city of", "The Colosseum is located in the city of"]


def _runs(model, db):
    store = Store(db)
    lens = execute(store, model, prepare(RunRequest("logit-lens", tuple(Input(i, "prompt", p) for i, p in enumerate(PROMPTS)), {})), no_progress)
    trunc = execute(store, model, prepare(RunRequest("truncation", pile_inputs(3), {"k_max": "3"})), no_progress)
    return store, lens, trunc


def test_verify_passes_a_true_run_and_catches_a_value_changed_by_hand(tmp_path):
    from analyses.model.loading import load_model
    from analyses.model.tiny import build_tiny

    folder = build_tiny("llama", tmp_path / "model", seed=0)
    model = load_model(str(folder), device="cpu", dtype="float32")
    db = tmp_path / "results.duckdb"
    store, lens, trunc = _runs(model, db)
    clean = iwb("verify", "--all", db=db)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f"run {lens}: logit_lens:" in clean.stdout and f"run {trunc}: truncation:" in clean.stdout
    with store.write() as conn:
        conn.execute("UPDATE logit_lens SET entropy_bits = entropy_bits + 0.01 WHERE run_id = ? AND input_id = 1 AND layer = 2 AND pos = 3", [lens])
    tampered = iwb("verify", str(lens), db=db)
    assert tampered.returncode == 1
    assert "entropy_bits" in tampered.stdout and "input_id=1" in tampered.stdout and "layer=2" in tampered.stdout
    # A checkpoint swapped in under the same folder is refused before anything is recomputed.
    other = build_tiny("llama", tmp_path / "other", seed=1)
    for weights in other.glob("*.safetensors"):
        shutil.copy(weights, folder / weights.name)
    assert_bad_input(iwb("verify", str(trunc), db=db), "model_revision")


def test_verify_refuses_what_it_cannot_check(tmp_path):
    db = tmp_path / "results.duckdb"
    Store(db)
    assert_bad_input(iwb("verify", db=db), "give a run id or --all")
    assert_bad_input(iwb("verify", "4", db=db), "does not exist")
