"""The `iwb` command through its real entry point, in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.helpers.cli import assert_bad_input, iwb, iwb_command, runs_in

PROMPT = "The Eiffel Tower is located in the city of"


def test_help_and_listings(db_path):
    result = iwb("--help")
    assert result.returncode == 0 and "iwb" in result.stdout and "run" in result.stdout
    listing = iwb("analyses")
    assert listing.returncode == 0 and "logit-lens" in listing.stdout and "--param target=" in listing.stdout
    models = iwb("models")
    assert models.returncode == 0 and "smollm2-135m" in models.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "logit-lens", "--prompt", "   "], "prompt is empty"),
        (["run", "logit-lense", "--prompt", PROMPT], "unknown analysis 'logit-lense'"),
        (["run", "logit-lens", "--prompt", PROMPT, "--param", "targte= Paris"], "unknown parameter 'targte'"),
        (["run", "logit-lens", "--prompt", PROMPT, "--param", "prepend_bos=perhaps"], "takes one of auto, true, false"),
        (["run", "logit-lens", "--prompt", PROMPT, "--param", "target"], "key=value"),
        (["run", "logit-lens", "--prompt", PROMPT, "--model", "no-such-model-xyz"], "no-such-model-xyz"),
        (["run", "logit-lens", "--prompt", PROMPT, "--model", "./no/such/folder"], "no/such/folder"),
        (["sql", "SELEC * FROM runs"], "syntax error"),
        (["sql", "SELECT * FROM no_such_table"], "no_such_table"),
        (["sql", "DELETE FROM runs"], "read-only"),
        (["show", "4242"], "run 4242 does not exist"),
        (["export", "4242", "--to", "x.parquet"], "run 4242 does not exist"),
        (["run", "logit-lens"], "prompt is empty"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_stores_nothing(store, db_path, args, fragment):
    result = iwb(*args, db=db_path)
    assert_bad_input(result, fragment)
    assert runs_in(db_path) == 0


def test_db_that_is_a_directory_or_unwritable(tmp_path):
    assert_bad_input(iwb("runs", db=tmp_path), "is a directory")
    unwritable = Path("/proc/iwb/results.duckdb") if os.geteuid() == 0 else tmp_path / "ro" / "x" / "r.duckdb"
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
    result = iwb("runs", db=unwritable)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_db_from_environment(tmp_path):
    from store import Store

    target = tmp_path / "env.duckdb"
    env = {**os.environ, "IWB_DB": str(target)}
    missing = subprocess.run(iwb_command() + ["runs"], capture_output=True, text=True, env=env)
    # A read-only command names the file it would have read and does not create it.
    assert missing.returncode == 2 and str(target) in missing.stderr and not target.exists()
    Store(target)
    result = subprocess.run(iwb_command() + ["runs"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "run_id" in result.stdout


@pytest.mark.integration
def test_prompt_longer_than_the_context(db_path):
    result = iwb("run", "logit-lens", "--prompt", "word " * 9000, db=db_path)
    assert_bad_input(result, "context is 8192")
    assert runs_in(db_path) == 0


@pytest.mark.integration
def test_run_show_sql_export_end_to_end(db_path, tmp_path):
    result = iwb("run", "logit-lens", "--prompt", PROMPT, "--param", "target= Paris", "--width", "90", "--height", "20", db=db_path)
    assert result.returncode == 0, result.stderr
    assert "Top-token probability" in result.stdout and "Target probability" in result.stdout
    assert "·Paris" in result.stdout or "·Tower" in result.stdout
    run_line = result.stdout.strip().splitlines()[-1]
    assert run_line.startswith("run ")
    run_id = int(run_line.split()[1])

    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        top = conn.execute(
            "SELECT top_token FROM logit_lens WHERE run_id = ? AND layer = 30 AND pos = (SELECT max(pos) FROM tokens WHERE run_id = ?)",
            [run_id, run_id],
        ).fetchone()[0]
        status, provenance = conn.execute("SELECT status, provenance FROM runs WHERE run_id = ?", [run_id]).fetchone()
    finally:
        conn.close()
    assert top == " Paris" and status == "done"
    provenance = json.loads(provenance)
    assert provenance["model_source"] == "embedded" and provenance["model_revision"].startswith("gguf-sha256:")
    assert provenance["weight_processing"]["fold_ln"] is False and provenance["prepend_bos"] is False and provenance["bos_setting"] == "auto"
    assert {"python", "torch", "transformer_lens", "iwb"} <= provenance.keys()

    query = iwb("sql", "select layer, target_prob from logit_lens where pos = (select max(pos) from logit_lens) order by layer", "--format", "json", db=db_path)
    rows = json.loads(query.stdout)
    assert len(rows) == 31 and rows[-1]["target_prob"] > rows[15]["target_prob"]

    shown = iwb("show", str(run_id), "--width", "80", "--height", "18", db=db_path)
    assert shown.returncode == 0 and "logit-lens on smollm2-135m (done)" in shown.stdout

    listing = iwb("runs", db=db_path)
    assert "logit-lens" in listing.stdout and "The Eiffel Tower" in listing.stdout

    for suffix in ("parquet", "csv"):
        target = tmp_path / f"lens.{suffix}"
        exported = iwb("export", str(run_id), "--to", str(target), db=db_path)
        assert exported.returncode == 0 and target.exists()
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "lens.parquet").num_rows == 31 * 10  # 10 prompt tokens, no BOS (as the model's tokenizer)
    assert_bad_input(iwb("export", str(run_id), "--to", str(tmp_path / "x.xlsx"), db=db_path), ".parquet or .csv")
