"""Runs written shard by shard: on disk before the database, stored once, resumable after kill -9,
never lost to a notebook holding the file, with bounded work per shard."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from app.run.runner import RunRequest, execute, prepare, resume
from store import Store
from store.errors import ResultsPending
from store.shards import FINAL, RunFolder, runs_root
from tests.helpers.cli import iwb, iwb_command
from tests.helpers.shards import pile_inputs, rows, same_results, stop_after_shard

ROOT = Path(__file__).resolve().parents[1]
TRUNCATION = ["truncation", "--n-docs", "12", "--max-tokens", "16", "--param", "k_max=3", "--shard-docs", "2", "--no-chart"]
COLUMNS = "input_id, pos, token, category, layer, context, cos"


# -- the folder and the registration, no model ------------------------------------------------

def _shard(i: int) -> dict:
    return {"toy": pa.table({"input_id": pa.array([i, i], pa.int32()), "value": pa.array([0.5 * i, 1.0], pa.float32())})}


def _toy_run(store: Store, n_shards: int) -> RunFolder:
    run_id = store.begin_run("toy", "m", {}, "cpu", "float32", {}, n_shards=n_shards, folder_id=f"toy-{n_shards}")
    folder = store.run_folder(run_id)
    folder.create({"run_id": run_id, "folder_id": f"toy-{n_shards}", "analysis": "toy", "n_shards": n_shards,
                   "shards": [[i] for i in range(n_shards)], "tables": {"toy": [["input_id", "INTEGER"], ["value", "FLOAT"]]}})
    return folder


def test_a_shard_written_or_registered_twice_is_stored_once(store):
    folder = _toy_run(store, 2)
    assert folder.write_shard(0, _shard(0)) is True
    assert folder.write_shard(0, _shard(7)) is False  # the first one stays
    store.register(folder.run_id)
    store.register(folder.run_id)
    assert rows(store.path, "SELECT input_id, value FROM toy ORDER BY ALL") == [(0, 0.0), (0, 1.0)]
    assert rows(store.path, f"SELECT status, shards_done FROM runs WHERE run_id = {folder.run_id}") == [("running", 1)]
    folder.write_shard(1, _shard(1))
    folder.write_shard(FINAL, {})
    folder.mark_complete({"provenance": {"seed": 3}, "finished_at": "2026-11-22T10:00:00"})
    store.register(folder.run_id)
    assert rows(store.path, f"SELECT status, shards_done, provenance->>'seed' FROM runs WHERE run_id = {folder.run_id}") == [("done", 2, "3")]
    assert rows(store.path, "SELECT count(*) FROM toy") == [(4,)]
    assert not folder.exists()  # registered and done: the database holds everything


def test_results_left_on_disk_under_a_lock_are_registered_at_the_next_open(db_path):
    store = Store(db_path, lock_retry_seconds=0.2)
    folder = _toy_run(store, 1)
    folder.write_shard(0, _shard(4))
    folder.write_shard(FINAL, {})
    folder.mark_complete({"provenance": {}, "finished_at": None})
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,sys,time; c=duckdb.connect({str(db_path)!r}, read_only=True); print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ResultsPending, match="safe on disk"):
            store.register(folder.run_id)
    finally:
        holder.communicate("")
    assert folder.has_shard(0)
    Store(db_path)  # any read-write open registers what was left
    assert rows(db_path, "SELECT status, shards_done FROM runs") == [("done", 1)]
    assert rows(db_path, "SELECT count(*) FROM toy") == [(2,)]


# -- real runs on the embedded model -------------------------------------------------------------

@pytest.mark.integration
def test_logit_lens_shard_by_shard_equals_one_shard(embedded_model, db_path):
    store = Store(db_path)
    prepared = prepare(RunRequest("logit-lens", pile_inputs(5), {}))
    whole = execute(store, embedded_model, prepared, lambda *a: None, shard_docs=100)
    sharded = execute(store, embedded_model, prepared, lambda *a: None, shard_docs=2)
    assert rows(db_path, f"SELECT n_shards, shards_done FROM runs WHERE run_id = {sharded}") == [(3, 3)]
    same_results(db_path, whole, sharded, ("logit_lens", "tokens"))


@pytest.mark.integration
def test_a_cancelled_run_keeps_its_shards_and_resume_finishes_it_exactly(embedded_model, db_path):
    store = Store(db_path)
    prepared = prepare(RunRequest("truncation", pile_inputs(8), {"k_max": "3"}))
    reference = execute(store, embedded_model, prepared, lambda *a: None, shard_docs=2)
    run_id = stop_after_shard(store, embedded_model, prepared, stored=2, n_shards=4)
    assert run_id == reference + 1
    status, shards_done = rows(db_path, f"SELECT status, shards_done FROM runs WHERE run_id = {run_id}")[0]
    assert status == "cancelled" and shards_done == 2
    assert rows(db_path, f"SELECT count(DISTINCT input_id) FROM truncation WHERE run_id = {run_id}") == [(4,)]  # partial results
    computed = []
    resume(store, embedded_model, run_id, lambda done, total, note="": computed.append(note))
    assert not any("shard 1/4" in note or "shard 2/4" in note for note in computed)  # only the missing shards
    assert rows(db_path, f"SELECT status, shards_done FROM runs WHERE run_id = {run_id}") == [("done", 4)]
    same_results(db_path, reference, run_id)


@pytest.mark.integration
def test_kill_9_half_way_then_iwb_resume_gives_the_uninterrupted_results(db_path):
    reference = iwb("run", *TRUNCATION, db=db_path)
    assert reference.returncode == 0, reference.stderr
    env = {**os.environ, "NO_COLOR": "1"}
    victim = subprocess.Popen(iwb_command() + ["--db", str(db_path), "run", *TRUNCATION], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = RunFolder(db_path, 2)
    deadline = time.monotonic() + 240
    while len([i for i in folder.shards_on_disk() if i >= 0]) < 3:
        assert victim.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = iwb("resume", "2", "--no-chart", db=db_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "shards to compute" in resumed.stderr and resumed.stdout.strip().endswith("run 2")
    assert rows(db_path, "SELECT status, n_shards, shards_done FROM runs WHERE run_id = 2") == [("done", 6, 6)]
    same_results(db_path, 1, 2)
    assert not folder.exists()
    again = iwb("resume", "2", db=db_path)
    assert again.returncode == 0 and "is done" in again.stdout
    missing = iwb("resume", "9", db=db_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.integration
def test_a_notebook_holding_the_file_delays_registration_and_loses_nothing(db_path):
    """The issue's case: a read-only connection open while `iwb run truncation` finishes."""
    env = {**os.environ, "NO_COLOR": "1", "IWB_LOCK_RETRY_S": "1"}
    run = subprocess.Popen(iwb_command() + ["--db", str(db_path), "run", *TRUNCATION], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = runs_root(db_path) / "run-000001" / "manifest.json"
    deadline = time.monotonic() + 240
    while not manifest.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.02)
    notebook = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time\n"
         "while True:\n"
         "    try:\n"
         f"        c = duckdb.connect({str(db_path)!r}, read_only=True); break\n"
         "    except duckdb.IOException: time.sleep(0.01)\n"
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert notebook.stdout.readline().strip() == "held"
        out, err = run.communicate(timeout=300)
    finally:
        notebook.communicate("")
    assert run.returncode == 3, err
    assert "safe on disk" in err and "iwb resume 1" in err and len(err.strip().splitlines()[-1]) < 400
    assert RunFolder(db_path, 1).complete() is not None
    finished = iwb("resume", "1", db=db_path)  # any write open registers; resume says so
    assert finished.returncode == 0 and "is done" in finished.stdout, finished.stderr
    assert rows(db_path, "SELECT status, shards_done FROM runs") == [("done", 6)]
    assert rows(db_path, "SELECT count(DISTINCT input_id) FROM truncation") == [(12,)]
    assert rows(db_path, "SELECT count(*) FROM truncation_summary") != [(0,)]


def test_the_readme_notebook_helpers_never_hold_the_file(db_path):
    from store.notebook import query, snapshot

    store = Store(db_path, lock_retry_seconds=0.2)
    folder = _toy_run(store, 1)
    assert query("SELECT count(*) AS n FROM runs", db=db_path).to_pydict() == {"n": [1]}
    con = snapshot(db=db_path)  # kept open, like a notebook's connection
    try:
        folder.write_shard(0, _shard(2))
        store.register(folder.run_id, retry_seconds=0.2)  # not blocked by the snapshot
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        assert con.execute("SELECT count(*) FROM shards").fetchone() == (0,)  # the copy as it was
    finally:
        con.close()
    assert rows(db_path, "SELECT count(*) FROM shards") == [(1,)]
