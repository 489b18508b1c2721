"""A run folder is as trustworthy as the database: a folder left by another database is never
reused, a damaged shard never blocks anything and is computed again, a resumed run never mixes two
checkpoints, and nothing in a run folder is ever unpickled."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from analyses.core.errors import BadInput
from app.run.runner import RunRequest, execute, prepare, resume
from store import Store
from store.errors import StoreError
from store.shards import RunFolder, runs_root, stray_folders
from tests.helpers.shards import pile_inputs, rows, stop_after_shard

TABLES = ("truncation", "truncation_summary", "truncation_lowest", "tokens")


def _truncation(k_max: int = 3):
    return prepare(RunRequest("truncation", pile_inputs(6), {"k_max": str(k_max)}))


def _cancelled_after_first_shard(store: Store, model, prepared) -> int:
    """A run stopped by the user once its first of three shards is stored (its state saved)."""
    run_id = stop_after_shard(store, model, prepared, stored=1, n_shards=3)
    assert rows(store.path, f"SELECT status, shards_done FROM runs WHERE run_id = {run_id}") == [("cancelled", 1)]
    return run_id


def _delete_database(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _clean_twin(model, prepared, tmp_path: Path, name: str) -> Path:
    """The same run in a database of its own, never interrupted."""
    twin = tmp_path / name
    execute(Store(twin), model, prepared, lambda *a: None, shard_docs=2)
    return twin


def _same_as_twin(db: Path, run_id: int, twin: Path) -> None:
    for table in TABLES:
        mine = rows(db, f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = {run_id} ORDER BY ALL")
        theirs = rows(twin, f"SELECT * EXCLUDE (run_id) FROM {table} ORDER BY ALL")
        assert mine and mine == theirs, table


def test_a_folder_left_by_a_deleted_database_is_set_aside_not_reused(tiny_model, tmp_path):
    db = tmp_path / "results.duckdb"
    _cancelled_after_first_shard(Store(db), tiny_model, _truncation(k_max=3))
    assert RunFolder(db, 1).has_state()
    _delete_database(db)
    other = _truncation(k_max=2)
    store = Store(db)
    run_id = execute(store, tiny_model, other, lambda *a: None, shard_docs=2)
    assert run_id == 1 and rows(db, "SELECT status FROM runs") == [("done",)]
    _same_as_twin(db, 1, _clean_twin(tiny_model, other, tmp_path, "twin.duckdb"))
    strays = stray_folders(db)
    assert len(strays) == 1 and [notice for notice in store.notices if str(strays[0]) in notice]
    # Another analysis on a path with a leftover folder, and every later write, work too.
    _cancelled_after_first_shard(Store(db), tiny_model, _truncation(k_max=3))
    _delete_database(db)
    lens = prepare(RunRequest("logit-lens", pile_inputs(2), {}))
    assert execute(Store(db), tiny_model, lens, lambda *a: None) == 1
    assert execute(Store(db), tiny_model, lens, lambda *a: None) == 2
    assert rows(db, "SELECT analysis, status FROM runs ORDER BY run_id") == [("logit-lens", "done")] * 2


def test_a_folder_of_another_run_with_the_same_number_is_refused_by_resume(tiny_model, tmp_path):
    db = tmp_path / "results.duckdb"
    run_id = _cancelled_after_first_shard(Store(db), tiny_model, _truncation())
    manifest = RunFolder(db, run_id).path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"folder_id": "', '"folder_id": "x'))
    store = Store(db)  # the open sets the folder aside, with one notice
    assert any("set aside" in notice for notice in store.notices)
    with pytest.raises(BadInput, match="no shard folder"):
        resume(store, tiny_model, run_id, lambda *a: None)


def test_a_damaged_unregistered_shard_is_quarantined_and_computed_again(tiny_model, tmp_path):
    db = tmp_path / "results.duckdb"
    prepared = _truncation()
    run_id = _cancelled_after_first_shard(Store(db), tiny_model, prepared)
    folder = RunFolder(db, run_id)
    # A shard on disk that the database never registered (a kill, a lock), then damaged (a power cut).
    shutil.copytree(folder.shard_path(0), folder.shard_path(1))
    parquet = folder.shard_path(1) / "truncation.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])
    store = Store(db)  # never blocked: the damaged shard is moved aside with one notice
    assert [n for n in store.notices if "quarantined" in n and "shard 1" in n]
    assert not folder.has_shard(1) and (folder.path / "quarantine").is_dir()
    unrelated = execute(Store(db), tiny_model, prepare(RunRequest("logit-lens", pile_inputs(1), {})), lambda *a: None)
    assert rows(db, f"SELECT status FROM runs WHERE run_id = {unrelated}") == [("done",)]
    resume(Store(db), tiny_model, run_id, lambda *a: None)
    _same_as_twin(db, run_id, _clean_twin(tiny_model, prepared, tmp_path, "twin.duckdb"))


def test_a_stray_file_in_a_shard_is_quarantined(tiny_model, tmp_path):
    db = tmp_path / "results.duckdb"
    run_id = _cancelled_after_first_shard(Store(db), tiny_model, _truncation())
    folder = RunFolder(db, run_id)
    shutil.copytree(folder.shard_path(0), folder.shard_path(1))
    shutil.copy(folder.shard_path(1) / "tokens.parquet", folder.shard_path(1) / "planted.parquet")
    store = Store(db)
    assert [n for n in store.notices if "planted.parquet" in n]
    assert rows(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'planted'") == [(0,)]


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_nothing_in_a_run_folder_is_unpickled(tiny_model, tmp_path):
    db = tmp_path / "results.duckdb"
    prepared = _truncation()
    run_id = _cancelled_after_first_shard(Store(db), tiny_model, prepared)
    folder = RunFolder(db, run_id)
    marker = tmp_path / "executed"
    payload = pickle.dumps(_Planted(marker))
    (folder.path / "state.pkl").write_bytes(payload)
    (folder.path / "state.npz").write_bytes(payload)
    store = Store(db)
    resume(store, tiny_model, run_id, lambda *a: None)
    assert not marker.exists()
    assert any("state" in notice and "quarantined" in notice for notice in store.notices)
    _same_as_twin(db, run_id, _clean_twin(tiny_model, prepared, tmp_path, "twin.duckdb"))


def test_resume_refuses_a_checkpoint_swapped_in_under_the_same_folder(tmp_path):
    from analyses.model.loading import load_model
    from analyses.model.tiny import build_tiny

    folder = build_tiny("llama", tmp_path / "model", seed=0)
    db = tmp_path / "results.duckdb"
    first = load_model(str(folder), device="cpu", dtype="float32")
    run_id = _cancelled_after_first_shard(Store(db), first, _truncation())
    other = build_tiny("llama", tmp_path / "other", seed=1)
    for weights in other.glob("*.safetensors"):
        shutil.copy(weights, folder / weights.name)  # same shapes, other numbers
    swapped = load_model(str(folder), device="cpu", dtype="float32")
    assert swapped.revision != first.revision
    with pytest.raises(BadInput, match="model_revision"):
        resume(Store(db), swapped, run_id, lambda *a: None)
    assert rows(db, f"SELECT count(DISTINCT input_id) FROM truncation WHERE run_id = {run_id}") == [(2,)]


def test_old_pickled_state_is_not_read_and_the_run_resumes(tiny_model, tmp_path):
    """A run folder from before this version (state.pkl) resumes by computing its state again."""
    db = tmp_path / "results.duckdb"
    prepared = _truncation()
    run_id = _cancelled_after_first_shard(Store(db), tiny_model, prepared)
    folder = RunFolder(db, run_id)
    (folder.path / "state.npz").rename(folder.path / "state.pkl")
    resume(Store(db), tiny_model, run_id, lambda *a: None)
    assert not runs_root(db).joinpath(f"run-{run_id:06d}").exists()
    _same_as_twin(db, run_id, _clean_twin(tiny_model, prepared, tmp_path, "twin.duckdb"))


def test_show_draws_what_a_stopped_run_has_and_says_what_is_missing(tiny_model, tmp_path):
    from tests.helpers.cli import iwb

    db = tmp_path / "results.duckdb"
    run_id = _cancelled_after_first_shard(Store(db), tiny_model, _truncation())
    shown = iwb("show", str(run_id), "--width", "60", "--height", "12", db=db)
    assert shown.returncode == 0, shown.stderr
    assert "partial results: 1 of 3 shards stored" in shown.stdout
    assert shown.stdout.count("not drawn yet, truncation_summary has no rows") == 3
    assert "┤" in shown.stdout  # the per-token chart of the stored shard is drawn


def test_runs_whose_owner_is_gone_show_as_stale_and_can_be_marked(tmp_path):
    import subprocess
    import sys

    from tests.helpers.cli import iwb

    db = tmp_path / "results.duckdb"
    store = Store(db)
    ids = [store.begin_run("toy", "m", {}, "cpu", "float32", {}) for _ in range(3)]
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with store.write() as conn:
            # A run of another host; a run whose pid now belongs to a process started after it began.
            conn.execute("UPDATE runs SET host = 'elsewhere' WHERE run_id = ?", [ids[0]])
            conn.execute("UPDATE runs SET pid = ?, created_at = created_at - INTERVAL 1 HOUR WHERE run_id = ?", [bystander.pid, ids[1]])
        listed = iwb("runs", db=db)
        assert listed.returncode == 0, listed.stderr
        lines = {int(line.split()[0]): line for line in listed.stdout.splitlines()[2:]}
        assert "running (on elsewhere)" in lines[ids[0]] and "running (stale?)" in lines[ids[1]]
        assert "stale" not in lines[ids[2]] and "running" in lines[ids[2]]  # this test process: alive
        Store(db)  # an ordinary open marks this host's dead runs only
        assert rows(db, "SELECT run_id, status FROM runs ORDER BY run_id") == [(ids[0], "running"), (ids[1], "interrupted"), (ids[2], "running")]
        marked = iwb("runs", "--mark-stale", db=db)
        assert marked.returncode == 0 and f"run {ids[0]}" in marked.stdout and f"run {ids[2]}" not in marked.stdout
        assert rows(db, "SELECT status FROM runs ORDER BY run_id") == [("interrupted",), ("interrupted",), ("running",)]
    finally:
        bystander.kill()
        bystander.wait()


def test_stray_folders_are_listed_and_removed(tmp_path):
    from tests.helpers.cli import iwb

    db = tmp_path / "results.duckdb"
    store = Store(db)
    RunFolder(db, 7).create({"run_id": 7, "analysis": "toy", "folder_id": "gone", "shards": [], "tables": {}})
    Store(db)
    listed = iwb("runs", "--strays", db=db)
    assert listed.returncode == 0 and "stray: " in listed.stdout and "run-000007" in listed.stdout
    removed = iwb("runs", "--remove-strays", db=db)
    assert "removed: " in removed.stdout and stray_folders(db) == [] and store.path.exists()


def test_of_two_resumes_of_one_run_one_claims_it_and_the_other_is_told_it_is_busy(tiny_model, tmp_path):
    from store.errors import RunBusy

    db = tmp_path / "results.duckdb"
    prepared = _truncation()
    run_id = _cancelled_after_first_shard(Store(db), tiny_model, prepared)
    first, second = Store(db), Store(db)
    from app.run.runner import resumable

    seen_by_second = resumable(second, run_id)  # both resumes have read the run as stopped
    first.reopen_run(run_id)  # the first one's claim, as resume() makes it
    with pytest.raises(RunBusy, match="another process") as refused:
        resume(second, tiny_model, run_id, lambda *a: None, prepared=seen_by_second)
    assert refused.value.exit_code == 3
    assert rows(db, f"SELECT status, pid FROM runs WHERE run_id = {run_id}")[0][0] == "running"
    assert RunFolder(db, run_id).exists()  # the refused resume touched nothing


def _tamper(kind: str, folder: RunFolder, marker: Path) -> None:
    missing = next(i for i in range(3) if not folder.has_shard(i))
    if kind in ("damaged shard", "planted file"):
        shutil.copytree(folder.shard_path(0), folder.shard_path(missing))
        if kind == "damaged shard":
            target = folder.shard_path(missing) / "truncation.parquet"
            target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
        else:
            (folder.shard_path(missing) / "extra.parquet").write_bytes(b"PAR1")
    elif kind == "garbage state":
        (folder.path / "state.npz").write_bytes(b"\x00" * 64)
    elif kind == "pickled state":
        (folder.path / "state.npz").write_bytes(pickle.dumps(_Planted(marker)))
    elif kind == "foreign manifest":
        manifest = folder.path / "manifest.json"
        manifest.write_text(manifest.read_text().replace('"folder_id": "', '"folder_id": "other-'))


def test_interleaved_stops_tamperings_and_resumes_end_equal_to_the_twin_or_refused(tiny_model, tmp_path):
    """Property-style: seeded random stops and tamperings; every run that finishes equals its
    uninterrupted twin, every refusal is one line, and nothing planted ever runs."""
    import random

    prepared = _truncation()
    twin = _clean_twin(tiny_model, prepared, tmp_path, "twin.duckdb")
    kinds = ["none", "damaged shard", "planted file", "garbage state", "pickled state", "foreign manifest"]
    marker = tmp_path / "executed"
    tried = set()
    for seed in range(8):
        rng = random.Random(seed)
        db = tmp_path / f"property-{seed}.duckdb"
        run_id = stop_after_shard(Store(db), tiny_model, prepared, stored=rng.choice([1, 2]), n_shards=3)
        kind = rng.choice(kinds)
        tried.add(kind)
        _tamper(kind, RunFolder(db, run_id), marker)
        try:
            resume(Store(db), tiny_model, run_id, lambda *a: None)
        except (BadInput, StoreError) as refused:
            assert kind == "foreign manifest" and "\n" not in str(refused), (seed, kind, str(refused))
            assert execute(Store(db), tiny_model, prepared, lambda *a: None, shard_docs=2) == run_id + 1
            _same_as_twin(db, run_id + 1, twin)
        else:
            assert kind != "foreign manifest", seed
            _same_as_twin(db, run_id, twin)
        assert not marker.exists(), (seed, kind)
    assert tried == set(kinds)  # the seeds cover every kind of tampering
