"""Every parameter that scales work or output is bounded (by the model, the inputs or a fixed
limit) and refused in one line before anything is stored; a sweep that no node can hold is
refused before it waits."""
from __future__ import annotations

import pytest

from analyses.core.contract import Input
from analyses.core.errors import BadInput
from app.run.runner import RunRequest, check_with_model, prepare
from tests.helpers.cli import assert_bad_input, iwb, runs_in

TEXT = "The river flows north through a wide valley before it turns east and reaches the sea."


@pytest.mark.parametrize(("analysis", "param", "fragment"), [
    ("fact-lookup", "seed=-1", "'seed' must be between 0"),
    ("causal-trace", "seed=-1", "'seed' must be between 0"),
    ("causal-trace", "samples=1000000000", "'samples' must be between 1"),
    ("contextual-neurons", "curve_bins=10000000", "curve_bins must be at most"),
])
def test_unbounded_parameters_are_refused_in_one_line_and_nothing_is_stored(tmp_path, analysis, param, fragment):
    db = tmp_path / "results.duckdb"
    extra = ["--param", "subject=river"] if analysis == "causal-trace" else []
    result = iwb("run", analysis, "--prompt", TEXT, "--param", param, *extra, db=db)
    assert_bad_input(result, fragment)
    assert runs_in(db) == 0


def test_model_bounds_of_contextual_neurons(tiny_model):
    inputs = (Input(0, "prompt", TEXT),)
    fits = {"dest_positions": "5"}
    for raw, fragment in (({"top_k": str(tiny_model.d_vocab + 1)}, "top_k must be at most the vocabulary"),
                          ({"n_curves": "100000"}, "n_curves must be at most the layer-0 MLP width")):
        prepared = prepare(RunRequest("contextual-neurons", inputs, {**fits, **raw}))
        with pytest.raises(BadInput, match=fragment):
            check_with_model(tiny_model, prepared)
    check_with_model(tiny_model, prepare(RunRequest("contextual-neurons", inputs, {**fits, "top_k": str(tiny_model.d_vocab)})))


def test_a_sweep_asking_for_gpus_a_cpu_cluster_lacks_is_refused_before_it_waits():
    from app.run.ray_pool import PoolOptions, plan

    with pytest.raises(BadInput, match="asks for 1 GPU but the Ray cluster has 0"):
        plan(PoolOptions(address="local", num_gpus=1), {"CPU": 2.0})
    with pytest.raises(BadInput, match="asks for 8 CPUs"):
        plan(PoolOptions(address="local", num_gpus=0, num_cpus=8), {"CPU": 2.0})
    assert plan(PoolOptions(address="local", num_gpus=1), {"CPU": 2.0, "GPU": 2.0}).actors == 2


def test_a_command_that_fails_before_its_first_write_creates_no_database(tmp_path):
    db = tmp_path / "results.duckdb"
    assert_bad_input(iwb("run", "logit-lens", "--prompt", TEXT, "--model", str(tmp_path / "no-model"), db=db), "not a Hugging Face model folder")
    assert_bad_input(iwb("resume", "3", db=db), "does not exist")
    assert not db.exists() and not (tmp_path / "results.duckdb.runs").exists()


@pytest.mark.integration
def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes(monkeypatch, tmp_path, capsys):
    """ENOSPC while a shard is written: one line, exit 1, and `iwb resume` finishes the run."""
    import errno

    from app.cli import commands as cli
    from store.shards import RunFolder

    db = tmp_path / "results.duckdb"
    real_write = RunFolder.write_shard
    calls = []

    def full_after_one(self, index, tables, meta=None):
        calls.append(index)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.shard_path(index)))
        return real_write(self, index, tables, meta)

    monkeypatch.setattr(RunFolder, "write_shard", full_after_one)
    from analyses.inputs.corpus import DEFAULT_CORPUS

    args = ["--db", str(db), "run", "logit-lens", "--pile", str(DEFAULT_CORPUS), "--n-docs", "3", "--max-tokens", "8", "--shard-docs", "1", "--no-chart"]
    assert cli.main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("iwb:")]
    assert len(err) == 1 and "No space left on device" in err[0] and "iwb resume" in err[0] and "Traceback" not in err[0]
    monkeypatch.setattr(RunFolder, "write_shard", real_write)
    assert cli.main(["--db", str(db), "resume", "1", "--no-chart"]) == 0
    assert runs_in(db) == 1
