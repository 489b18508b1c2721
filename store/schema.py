"""All DDL of the store, with numbered migrations recorded in schema_version.

Timestamps are UTC. JSON columns hold params, provenance and input meta.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "runs, inputs, tokens",
        [
            "CREATE SEQUENCE IF NOT EXISTS run_id_seq START 1",
            """CREATE TABLE IF NOT EXISTS runs (
                run_id BIGINT PRIMARY KEY,
                analysis VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                params JSON,
                status VARCHAR NOT NULL,
                error VARCHAR,
                created_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP,
                device VARCHAR,
                dtype VARCHAR,
                provenance JSON,
                host VARCHAR,
                pid INTEGER
            )""",
            """CREATE TABLE IF NOT EXISTS inputs (
                run_id BIGINT NOT NULL,
                input_id INTEGER NOT NULL,
                source VARCHAR NOT NULL,
                text VARCHAR NOT NULL,
                meta JSON
            )""",
            """CREATE TABLE IF NOT EXISTS tokens (
                run_id BIGINT NOT NULL,
                input_id INTEGER NOT NULL,
                pos INTEGER NOT NULL,
                token_id INTEGER NOT NULL,
                token VARCHAR
            )""",
        ],
    ),
    (
        2,
        "result shards: runs are written shard by shard and can be resumed",
        [
            "ALTER TABLE runs ADD COLUMN n_shards INTEGER",
            "ALTER TABLE runs ADD COLUMN shards_done INTEGER",
            """CREATE TABLE IF NOT EXISTS shards (
                run_id BIGINT NOT NULL,
                shard INTEGER NOT NULL,
                rows JSON,
                registered_at TIMESTAMP NOT NULL,
                PRIMARY KEY (run_id, shard)
            )""",
        ],
    ),
    (
        3,
        "run folder identity: a run's folder on disk is its own only when the folder ids match",
        ["ALTER TABLE runs ADD COLUMN folder_id VARCHAR"],
    ),
    (
        4,
        "run_checks: each run's fidelity record (model vs plain Hugging Face, fingerprints, invariants)",
        ["""CREATE TABLE IF NOT EXISTS run_checks (
            run_id BIGINT NOT NULL,
            "check" VARCHAR NOT NULL,
            value DOUBLE,
            tolerance DOUBLE,
            ok BOOLEAN,
            detail VARCHAR
        )"""],
    ),
    (
        5,
        "run_events: each run's history (started, resumed, cancelled, failed, interrupted, completed) with times",
        [
            """CREATE TABLE IF NOT EXISTS run_events (
                run_id BIGINT NOT NULL,
                happened_at TIMESTAMP NOT NULL,
                event VARCHAR NOT NULL,
                detail VARCHAR
            )""",
            # Runs stored before this table: what their row still says (their start and how they ended).
            "INSERT INTO run_events SELECT run_id, created_at, 'started', NULL FROM runs",
            "INSERT INTO run_events SELECT run_id, finished_at, CASE status WHEN 'done' THEN 'completed' ELSE status END, NULL "
            "FROM runs WHERE finished_at IS NOT NULL AND status <> 'running'",
        ],
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
RUN_STATUSES = ("running", "done", "failed", "cancelled", "interrupted")
CORE_TABLES = ("runs", "inputs", "tokens", "schema_version", "shards", "run_checks", "run_events")
RUN_EVENTS = ("started", "resumed", "completed", "failed", "cancelled", "interrupted")  # started and resumed open a stretch of compute, the others end it
_SIGNATURE_COLUMNS = {
    "runs": ("run_id", "analysis", "model", "params", "status", "created_at", "provenance"),
    "inputs": ("run_id", "input_id", "source", "text"),
    "tokens": ("run_id", "input_id", "pos", "token_id", "token"),
}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# FLOAT[]: a list of float32 per row (a per-entity state vector a sharded analysis stores for its finalize).
_TYPES = {"INTEGER", "BIGINT", "SMALLINT", "DOUBLE", "FLOAT", "FLOAT[]", "VARCHAR", "BOOLEAN", "JSON", "TIMESTAMP"}


def first_value(cursor: duckdb.DuckDBPyConnection) -> Any:
    """The first value of a query that always returns one row (an aggregate, nextval)."""
    row = cursor.fetchone()
    assert row is not None, "a one-row query returned no row"
    return row[0]


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Apply every migration newer than the file's version, each in its own transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, description VARCHAR, applied_at TIMESTAMP)")
    current = first_value(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version"))
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)", [version, description]
            )
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        current = version
    return current


def signature_problem(conn: duckdb.DuckDBPyConnection, allow_empty: bool) -> str | None:
    """Why this database is not an iwb results store (None when it is, or is empty and may become one).

    Checked on a read-only connection before anything is written, so that another application's
    file (which may well have a `runs` or `schema_version` table of its own) is never altered.
    """
    tables = {row[0]: row[1] for row in conn.execute(
        "SELECT table_name, list(column_name ORDER BY column_index) FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' GROUP BY table_name"
    ).fetchall()}
    if not tables:
        return None if allow_empty else "it holds no tables yet (`iwb run` creates them)"
    if tables.get("schema_version") != ["version", "description", "applied_at"]:
        return "it has no iwb schema_version table"
    first = conn.execute("SELECT description FROM schema_version WHERE version = 1").fetchone()
    if first is None or first[0] != MIGRATIONS[0][1]:
        return "its schema_version table was not written by iwb"
    missing = [name for name, columns in _SIGNATURE_COLUMNS.items() if not set(columns) <= set(tables.get(name, []))]
    if missing:
        return f"its {', '.join(missing)} table{'s do' if len(missing) > 1 else ' does'} not have iwb's columns"
    version = first_value(conn.execute("SELECT max(version) FROM schema_version"))
    if version > SCHEMA_VERSION:
        return f"it was written by a newer iwb (schema {version}; this one knows up to {SCHEMA_VERSION})"
    return None


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name) or name in CORE_TABLES:
        raise ValueError(f"not a usable result table or column name: {name!r}")
    return name


def ensure_result_table(conn: duckdb.DuckDBPyConnection, name: str, columns: tuple[tuple[str, str], ...]) -> None:
    """Create a result table (run_id first) or add the columns a newer analysis version has."""
    check_identifier(name)
    for column, column_type in columns:
        if not _IDENTIFIER.match(column) or column_type not in _TYPES:
            raise ValueError(f"bad column {column!r} {column_type!r} for table {name!r}")
    body = ", ".join(["run_id BIGINT NOT NULL"] + [f"{column} {column_type}" for column, column_type in columns])
    conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({body})")
    existing = {row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'", [name]
    ).fetchall()}
    for column, column_type in columns:
        if column not in existing:
            conn.execute(f"ALTER TABLE {name} ADD COLUMN {column} {column_type}")
