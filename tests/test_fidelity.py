"""Every run checks itself: its fidelity record (the model layer against a plain Hugging Face
forward on the first input, fingerprints, versions) is stored in run_checks, and the badge says
ok, skipped or FAILED in `iwb runs` and `iwb show`."""
from __future__ import annotations

import json

import pytest

from analyses.core.contract import Input, no_progress
from analyses.model.fidelity import model_checks
from app.run.runner import RunRequest, execute, prepare
from store import Store
from tests.helpers.cli import iwb

PROMPT = "The Eiffel Tower is located in the city of"


def test_the_model_layer_agrees_with_hugging_face_on_every_family(family_model):
    checks = {check.name: check for check in model_checks(family_model, PROMPT)}
    assert checks["model_vs_hf_top1_agreement"].ok and checks["model_vs_hf_top1_agreement"].value == 1.0
    assert checks["model_vs_hf_max_abs_logit_diff"].ok and checks["model_vs_hf_max_kl"].ok
    assert len(checks["tokenizer_fingerprint"].detail) == 64
    assert "transformers" in json.loads(checks["library_versions"].detail)


def test_a_broken_model_layer_is_caught(tiny_model, monkeypatch):
    """A plausible bug (a block skipped in the model layer's forward) fails the record."""
    from analyses.model.adapters import Adapter

    real_run = Adapter.run
    monkeypatch.setattr(Adapter, "run", lambda self, resid, layers, ctx, caches=None: real_run(self, resid, list(layers)[1:], ctx, caches))
    checks = {check.name: check for check in model_checks(tiny_model, PROMPT)}
    assert checks["model_vs_hf_max_abs_logit_diff"].ok is False and checks["model_vs_hf_max_abs_logit_diff"].value > 1e-2


def test_every_run_stores_its_record_and_the_badge_shows_it(tiny_model, tmp_path):
    db = tmp_path / "results.duckdb"
    store = Store(db)
    lens = execute(store, tiny_model, prepare(RunRequest("logit-lens", (Input(0, "prompt", PROMPT),), {})), no_progress)
    weights = execute(store, tiny_model, prepare(RunRequest("neuron-classes", (), {})), no_progress)
    names = [row[0] for row in store.run_checks(lens)]
    assert names[:4] == ["tokenizer_fingerprint", "bos", "weights_fingerprint", "library_versions"] and "model_vs_hf_max_kl" in names
    badges = store.check_badges([lens, weights])
    assert badges[lens] == "ok" and badges[weights] == "skipped: model_vs_hf"
    with store.write() as conn:  # a failed check, as a broken model layer would leave it
        conn.execute("UPDATE run_checks SET ok = false WHERE run_id = ? AND \"check\" = 'model_vs_hf_max_kl'", [lens])
    listed = iwb("runs", db=db)
    assert listed.returncode == 0, listed.stderr
    lines = {int(line.split()[0]): line for line in listed.stdout.splitlines()[2:]}
    assert "FAILED: model_vs_hf_max_kl" in lines[lens] and "skipped: model_vs_hf" in lines[weights]
    shown = iwb("show", str(lens), "--width", "60", db=db)
    assert "checks: FAILED: model_vs_hf_max_kl" in shown.stdout


@pytest.mark.integration
def test_the_embedded_model_passes_its_own_record(embedded_model):
    failed = [check for check in model_checks(embedded_model, PROMPT) if check.ok is False]
    assert not failed


def test_exact_invariants_are_checked_on_the_stored_numbers(tiny_model, tmp_path):
    import pyarrow as pa

    from analyses import causal_trace, logit_lens

    store = Store(tmp_path / "results.duckdb")
    lens = execute(store, tiny_model, prepare(RunRequest("logit-lens", (Input(0, "prompt", PROMPT),), {})), no_progress)
    trace = execute(store, tiny_model, prepare(RunRequest("causal-trace", (Input(0, "prompt", PROMPT),),
                                                          {"subject": "Eiffel Tower", "samples": "2", "kinds": "resid", "threshold": "-1"})), no_progress)
    for run_id, name in ((lens, "invariant_final_layer_kl"), (trace, "invariant_last_resid_restoration")):
        record = {row[0]: row for row in store.run_checks(run_id)}
        assert record[name][3] is True and record[name][1] is not None, record[name]
    assert store.check_badges([lens, trace]) == {lens: "ok", trace: "ok"}
    # The checkers themselves fail on numbers that break the invariant.
    broken = pa.table({"layer": [0, 3, 3], "kl_to_final": [0.4, 0.0, 0.02]})
    assert logit_lens.ANALYSIS.invariants(logit_lens.Params(), lambda *args, **kwargs: broken, {})[0][3] is False
    off = pa.table({"input_id": [0, 0], "kind": ["resid", "resid"], "layer": [2, 2], "pos": [0, 1], "restoration": [0.0, 0.9]})
    assert causal_trace.ANALYSIS.invariants(causal_trace.Params(subject="x"), lambda *args, **kwargs: off, {})[0][3] is False


def test_layer_interventions_records_its_no_op_invariant(tiny_model, tmp_path):
    from analyses import layer_interventions

    store = Store(tmp_path / "results.duckdb")
    inputs = (Input(0, "prompt", PROMPT), Input(1, "prompt", "The Colosseum is in Rome and it is old"))
    run_id = execute(store, tiny_model, prepare(RunRequest("layer-interventions", inputs, {"interventions": "block,swap"})), no_progress)
    name, value, tolerance, ok, detail = {row[0]: row for row in store.run_checks(run_id)}["invariant_noop_intervention_kl"]
    assert ok is True and 0 <= abs(value) <= tolerance == 1e-6, (value, detail)
    assert store.check_badges([run_id]) == {run_id: "ok"}
    checker = layer_interventions.ANALYSIS
    assert checker.invariants(layer_interventions.Params(), None, {"noop_intervention_kl": 0.01})[0][3] is False
    assert checker.invariants(layer_interventions.Params(), None, {})[0][3] is None  # skipped, said as such


def test_each_analysis_declares_the_invariants_it_records():
    """The names and tolerances on the reference pages are the ones the checkers write."""
    import pyarrow as pa

    from analyses import causal_trace, layer_interventions, logit_lens

    cases = [
        (logit_lens.ANALYSIS, logit_lens.Params(), lambda *a, **k: pa.table({"layer": [0, 1], "kl_to_final": [0.5, 0.0]}), {}),
        (causal_trace.ANALYSIS, causal_trace.Params(subject="x"),
         lambda *a, **k: pa.table({"input_id": [0], "kind": ["resid"], "layer": [1], "pos": [2], "restoration": [1.0]}), {}),
        (layer_interventions.ANALYSIS, layer_interventions.Params(), None, {"noop_intervention_kl": 0.0}),
    ]
    for analysis, params, read, notes in cases:
        declared = {item.name: item.tolerance for item in analysis.invariant_checks}
        recorded = {row[0]: row[2] for row in analysis.invariants(params, read, notes)}
        assert recorded == declared and all(row[3] is True for row in analysis.invariants(params, read, notes)), analysis
