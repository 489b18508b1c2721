"""`iwb sql`, the SQL console and every read-only command are read-only by DuckDB's own
configuration: each attack below is checked against the files it aimed at, opened afresh."""
from __future__ import annotations

import hashlib
import os

import duckdb
import pytest

from tests.helpers.cli import assert_bad_input, iwb
from tests.helpers.fakes import seed_lens_run


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count(path, sql: str) -> int:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def seeded_db(db_path):
    from store import Store

    seed_lens_run(Store(db_path))
    return db_path


@pytest.fixture
def other_db(tmp_path):
    path = tmp_path / "other.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE keep AS SELECT range AS x FROM range(5)")
    conn.close()
    return path


def test_attach_another_database_read_write_and_drop(seeded_db, other_db):
    result = iwb("sql", f"ATTACH '{other_db}' AS o (READ_WRITE); DROP TABLE o.keep", db=seeded_db)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert count(other_db, "SELECT count(*) FROM keep") == 5
    single = iwb("sql", f"ATTACH '{other_db}' AS o (READ_WRITE)", db=seeded_db)
    assert_bad_input(single, "read-only")


def test_attach_our_own_file_through_a_hard_link_and_delete(seeded_db, tmp_path):
    link = tmp_path / "alias.duckdb"
    os.link(seeded_db, link)
    before = count(seeded_db, "SELECT count(*) FROM logit_lens")
    result = iwb("sql", f"ATTACH '{link}' AS l (READ_WRITE); DELETE FROM l.logit_lens", db=seeded_db)
    assert result.returncode == 2
    assert count(seeded_db, "SELECT count(*) FROM logit_lens") == before > 0


def test_copy_to_cannot_overwrite_a_file(seeded_db, tmp_path):
    victim = tmp_path / "notes.csv"
    victim.write_text("precious\n")
    assert_bad_input(iwb("sql", f"COPY runs TO '{victim}'", db=seeded_db), "read-only")
    assert victim.read_text() == "precious\n"


def test_export_database_writes_nothing(seeded_db, tmp_path):
    target = tmp_path / "dump"
    assert_bad_input(iwb("sql", f"EXPORT DATABASE '{target}'", db=seeded_db), "read-only")
    assert not target.exists() or not any(target.iterdir())


def test_install_and_load_are_refused_by_configuration(seeded_db):
    for statement in ("INSTALL httpfs", "LOAD httpfs"):
        assert_bad_input(iwb("sql", statement, db=seeded_db), "disabled")


def test_other_files_cannot_be_read_and_settings_cannot_be_unlocked(seeded_db, other_db):
    assert_bad_input(iwb("sql", f"SELECT * FROM read_csv('{other_db}')", db=seeded_db), "read-only")
    assert_bad_input(iwb("sql", "SET enable_external_access = true", db=seeded_db), "locked")


def test_several_statements_in_one_argument_are_refused(seeded_db):
    assert_bad_input(iwb("sql", "SELECT 1; SELECT 2", db=seeded_db), "one statement at a time")


def test_the_engine_is_the_guard_not_the_parser(seeded_db, other_db):
    """Straight to the store (as the TUI console does), with no statement check in front."""
    from app.tui.store_access import SerialStore
    from store import StoreError

    store = SerialStore(seeded_db)
    with pytest.raises(StoreError, match="disabled by configuration"):
        store.query(f"ATTACH '{other_db}' AS o (READ_WRITE); DROP TABLE o.keep")
    with pytest.raises(StoreError, match="read-only"):
        store.query("SELECT 1; DELETE FROM runs")
    assert count(other_db, "SELECT count(*) FROM keep") == 5
    assert count(seeded_db, "SELECT count(*) FROM runs") == 1
    settings = store.query("SELECT current_setting('enable_external_access'), current_setting('lock_configuration')").rows
    assert settings == [(False, True)]


def test_read_only_commands_change_nothing_even_on_a_chmod_444_file(seeded_db, tmp_path):
    import socket

    from store import Store

    running = Store(seeded_db).begin_run("logit-lens", "m", {}, "cpu", "float32", {})
    # A dead run of this host: a writing open would mark it interrupted, reading must leave it.
    conn = duckdb.connect(str(seeded_db))
    conn.execute("UPDATE runs SET host = ?, pid = 999999999 WHERE run_id = ?", [socket.gethostname(), running])
    conn.close()
    os.chmod(seeded_db, 0o444)
    before, listing = digest(seeded_db), sorted(os.listdir(seeded_db.parent))
    try:
        assert iwb("runs", db=seeded_db).returncode == 0
        assert iwb("show", "1", db=seeded_db).returncode == 0
        assert iwb("sql", "SELECT count(*) FROM runs", db=seeded_db).returncode == 0
        assert iwb("export", "1", "--to", str(tmp_path / "out" / "lens.csv"), db=seeded_db).returncode == 2
        (tmp_path / "out").mkdir()
        assert iwb("export", "1", "--to", str(tmp_path / "out" / "lens.csv"), db=seeded_db).returncode == 0
    finally:
        os.chmod(seeded_db, 0o644)
    assert digest(seeded_db) == before
    assert sorted(os.listdir(seeded_db.parent)) == sorted(listing + ["out"])
    assert count(seeded_db, f"SELECT count(*) FROM runs WHERE run_id = {running} AND status = 'running'") == 1


def test_read_only_commands_never_create_a_file(tmp_path):
    missing = tmp_path / "none.duckdb"
    for args in (["runs"], ["show", "1"], ["sql", "SELECT 1"], ["export", "1", "--to", str(tmp_path / "x.csv")]):
        assert_bad_input(iwb(*args, db=missing), "does not exist")
    assert sorted(os.listdir(tmp_path)) == []


def test_another_applications_database_is_refused_untouched(tmp_path):
    foreign = tmp_path / "crm.duckdb"
    conn = duckdb.connect(str(foreign))
    conn.execute("CREATE TABLE runs (id INTEGER, customer VARCHAR)")
    conn.execute("CREATE TABLE schema_version (version INTEGER, description VARCHAR, applied_at TIMESTAMP)")
    conn.execute("INSERT INTO runs VALUES (1, 'acme')")
    conn.execute("INSERT INTO schema_version VALUES (1, 'crm v1', now()::TIMESTAMP)")
    conn.close()
    before = digest(foreign)
    for args in (["runs"], ["sql", "SELECT * FROM runs"], ["run", "logit-lens", "--prompt", "hello"]):
        assert_bad_input(iwb(*args, db=foreign), "not an iwb results database")
    assert digest(foreign) == before and sorted(os.listdir(tmp_path)) == ["crm.duckdb"]
