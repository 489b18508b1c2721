"""The results database: short read-write connections with retry, read-only queries, atomic runs.

DuckDB lets one process write at a time and, while a process holds a read-write connection,
no other process can open the file at all; so every write opens, writes and closes, and a
lock held elsewhere is retried with backoff instead of failing.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from store.errors import DatabaseBusy, ResultsPending, RunBusy, StoreError
from store.reading import READ_ONLY_CONFIG, QueryStop, interruptible
from store.schema import RUN_EVENTS, RUN_STATUSES, ensure_result_table, first_value, migrate, signature_problem
from store.shards import FINAL, PARTIAL, RunFolder, run_folders

LOCK_RETRY_SECONDS = 30.0


def lock_retry_window() -> float:
    """Seconds a write retries a database locked by another process: $IWB_LOCK_RETRY_S, else 30."""
    try:
        return max(0.0, float(os.environ.get("IWB_LOCK_RETRY_S", LOCK_RETRY_SECONDS)))
    except ValueError:
        return LOCK_RETRY_SECONDS


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _timestamp(text: str | None) -> datetime:
    try:
        return datetime.fromisoformat(text) if text else utc_now()
    except ValueError:
        return utc_now()


def _is_lock_conflict(error: Exception) -> bool:
    text = str(error)
    return "Could not set lock" in text or "Conflicting lock" in text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_started(pid: int) -> datetime | None:
    """When a process started (UTC), from /proc; None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return datetime.fromtimestamp(started, timezone.utc).replace(tzinfo=None)


def owner_alive(host: str | None, pid: int | None, created_at: datetime | None) -> bool:
    """Whether the process that began a run (on this host) still runs: its pid is alive and was not
    reused by a process started after the run began. A run of another host cannot be checked: False."""
    if host != socket.gethostname() or pid is None or not _pid_alive(pid):
        return False
    started = _process_started(pid)
    # Clock ticks and the boot time are coarse: a process started within 2 s of the run is its owner.
    return started is None or created_at is None or (started - created_at).total_seconds() < 2.0


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple]


class QueryStream:
    """An open query's rows, read a batch at a time (Store.stream): DuckDB holds the result and hands
    over only the rows asked for, so a result of any size is read in bounded memory. The values are
    DuckDB's own Python values, the very ones `Store.query` returns (Arrow's conversion differs for
    intervals, maps, arrays, TIME WITH TIME ZONE, TIMESTAMP_NS, BIT, BIGNUM and infinite dates)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, description: Any) -> None:
        self._conn = conn
        self.columns: list[str] = [d[0] for d in description] if description else []
        self.types: list[str] = [str(d[1]) for d in description] if description else []
        self._exhausted = not description

    def fetch(self, size: int) -> list[tuple]:
        """The next rows, at most size; [] once the result is used up. Ctrl-C stops the query."""
        if self._exhausted or size <= 0:
            return []
        rows: list[tuple] = interruptible(self._conn, lambda c: c.fetchmany(size))
        self._exhausted = not rows
        return rows

    def batches(self, size: int) -> Iterator[list[tuple]]:
        """The remaining rows, size at a time (only the last batch is shorter)."""
        while rows := self.fetch(size):
            yield rows

    def count_rest(self, size: int) -> int:
        """How many rows are left, read through and dropped batch by batch, never held together."""
        if self._exhausted:
            return 0

        def count(conn: duckdb.DuckDBPyConnection) -> int:
            total = 0
            while batch := conn.fetchmany(size):
                total += len(batch)
            return total

        total: int = interruptible(self._conn, count)
        self._exhausted = True
        return total


class Store:
    """One DuckDB file. Opening it migrates the schema and marks dead in-flight runs interrupted;
    ``read_only=True`` (for `iwb runs/show/sql/export`) neither creates, migrates nor alters it."""

    def __init__(self, path: str | Path, lock_retry_seconds: float | None = None, read_only: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.lock_retry_seconds = lock_retry_window() if lock_retry_seconds is None else lock_retry_seconds
        self.read_only = read_only
        # One-line notices about run folders set aside (stray, damaged): the faces show them once.
        self.notices: list[str] = []
        self._has_events = False  # run_events seen in the file (a read-only open of an older store has none)
        if read_only:
            self._check_readable()
            self._check_signature(allow_empty=False)
            return
        self._check_path()
        if self.path.exists() and self.path.stat().st_size > 0:
            self._check_signature(allow_empty=True)
        with self.write() as conn:
            migrate(conn)
            # Results a finished run left on disk while the database was locked are registered now.
            self._register_folders(conn, run_folders(self.path))
            self._mark_interrupted(conn)

    @classmethod
    def check_usable(cls, path: str | Path) -> None:
        """What a read-write open checks (a usable path; an iwb file, or none yet), creating nothing:
        a command that may still fail before its first write calls this, then opens the store."""
        probe = cls.__new__(cls)
        probe.path, probe.read_only, probe.notices = Path(path).expanduser(), True, []
        probe.lock_retry_seconds = lock_retry_window()
        probe._check_path()
        if probe.path.exists() and probe.path.stat().st_size > 0:
            probe._check_signature(allow_empty=True)

    def _check_readable(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"--db {self.path} is a directory, not a database file")
        if not self.path.exists():
            raise StoreError(f"database {self.path} does not exist (`iwb run` creates it)")
        if not os.access(self.path, os.R_OK):
            raise StoreError(f"database {self.path} is not readable by this user")

    def _check_signature(self, allow_empty: bool) -> None:
        """Refuse a file that is not ours, looking through a read-only connection before any write."""
        with self.read() as conn:
            problem = signature_problem(conn, allow_empty)
        if problem is not None:
            raise StoreError(f"{self.path} is not an iwb results database: {problem}; nothing was changed")

    def _check_path(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"--db {self.path} is a directory, not a database file")
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the folder for {self.path}: {error.strerror}") from None
        if self.path.exists():
            if not os.access(self.path, os.R_OK | os.W_OK):
                raise StoreError(f"database {self.path} is not readable and writable by this user")
        elif not os.access(parent, os.W_OK):
            raise StoreError(f"cannot create {self.path}: folder {parent} is not writable")

    def _connect(self, read_only: bool, retry_seconds: float | None = None) -> duckdb.DuckDBPyConnection:
        delay = 0.02
        retry_seconds = self.lock_retry_seconds if retry_seconds is None else retry_seconds
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                if read_only:
                    return duckdb.connect(str(self.path), read_only=True, config=dict(READ_ONLY_CONFIG))
                return duckdb.connect(str(self.path))
            except duckdb.IOException as error:
                if _is_lock_conflict(error) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                if _is_lock_conflict(error):
                    raise DatabaseBusy(f"database {self.path} stayed locked by another process for {retry_seconds:.0f} s") from None
                raise StoreError(f"cannot open database {self.path}: {str(error).splitlines()[0]}") from None
            except duckdb.Error as error:
                raise StoreError(f"cannot open database {self.path}: {str(error).splitlines()[0]}") from None

    @contextlib.contextmanager
    def write(self, retry_seconds: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-write connection; keep the body brief."""
        if self.read_only:
            raise StoreError(f"database {self.path} was opened read-only")
        conn = self._connect(read_only=False, retry_seconds=retry_seconds)
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection that can touch nothing but this file (see READ_ONLY_CONFIG)."""
        conn = self._connect(read_only=True)
        try:
            yield conn
        finally:
            conn.close()

    def _mark_interrupted(self, conn: duckdb.DuckDBPyConnection, other_hosts: bool = False) -> list[int]:
        """Mark running runs whose process is gone interrupted (this host's; every host's when
        other_hosts, for runs whose owner cannot be checked from here); their ids."""
        host = socket.gethostname()
        rows = conn.execute("SELECT run_id, host, pid, created_at FROM runs WHERE status = 'running'").fetchall()
        dead = [run_id for run_id, run_host, pid, created in rows
                if (run_host == host or other_hosts) and not owner_alive(run_host, pid, created)]
        for run_id in dead:
            now = utc_now()
            conn.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, error = ? WHERE run_id = ?",
                [now, f"the process running it ended before it finished; `iwb resume {run_id}` computes only its missing shards", run_id],
            )
            # When it stopped is not known: its last stored shard, else its start, is the last sign of life.
            conn.execute(
                "INSERT INTO run_events SELECT ?, coalesce((SELECT max(registered_at) FROM shards WHERE run_id = ?), "
                "(SELECT max(happened_at) FROM run_events WHERE run_id = ?), ?), 'interrupted', 'noticed at ' || ?::VARCHAR",
                [run_id, run_id, run_id, now, now.strftime("%Y-%m-%d %H:%M:%S")],
            )
        return dead

    def mark_stale(self) -> list[int]:
        """`iwb runs --mark-stale`: every running run whose owner is not a live process of this host
        (a killed run, a reused pid, a run of another host that never came back) becomes interrupted."""
        with self.write() as conn:
            return self._mark_interrupted(conn, other_hosts=True)

    def stale_runs(self) -> dict[int, str]:
        """Running runs whose owner cannot be seen alive from here: run id -> why (for read-only listings)."""
        rows = self.query("SELECT run_id, host, pid, created_at FROM runs WHERE status = 'running'").rows
        here = socket.gethostname()
        return {run_id: ("stale?" if run_host == here else f"on {run_host}") for run_id, run_host, pid, created in rows
                if not owner_alive(run_host, pid, created)}

    def begin_run(self, analysis: str, model: str, params: dict, device: str, dtype: str, provenance: dict, inputs: Any = None,
                  n_shards: int | None = None, folder_id: str | None = None) -> int:
        """Record a run as running, with its inputs (Arrow) when given, in one transaction; return its id.

        The inputs go in here so that a run that fails or is cancelled still shows what it ran on.
        """
        with self.write() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                run_id = int(first_value(conn.execute("SELECT nextval('run_id_seq')")))
                now = utc_now()
                conn.execute(
                    "INSERT INTO runs (run_id, analysis, model, params, status, created_at, device, dtype, provenance, host, pid, n_shards, shards_done, folder_id) "
                    "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    [run_id, analysis, model, json.dumps(params), now, device, dtype, json.dumps(provenance), socket.gethostname(), os.getpid(), n_shards,
                     folder_id],
                )
                conn.execute("INSERT INTO run_events VALUES (?, ?, 'started', NULL)", [run_id, now])
                if inputs is not None:
                    self._insert_arrow(conn, "inputs", inputs, run_id)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return run_id

    def finish_run(self, run_id: int, inputs: Any, tokens: Any, tables: dict[str, tuple[tuple[tuple[str, str], ...], Any]], provenance: dict | None = None) -> None:
        """Write inputs (None when begin_run stored them), tokens and result tables (Arrow) and mark
        the run done, all or nothing."""
        with self.write() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                for name, arrow_table in (("inputs", inputs), ("tokens", tokens)):
                    if arrow_table is not None:
                        self._insert_arrow(conn, name, arrow_table, run_id)
                for name, (columns, arrow_table) in tables.items():
                    ensure_result_table(conn, name, columns)
                    self._insert_arrow(conn, name, arrow_table, run_id)
                now = utc_now()
                update = "UPDATE runs SET status = 'done', finished_at = ?, error = NULL"
                values: list = [now]
                if provenance is not None:
                    update += ", provenance = ?"
                    values.append(json.dumps(provenance))
                conn.execute(update + " WHERE run_id = ?", values + [run_id])
                conn.execute("INSERT INTO run_events VALUES (?, ?, 'completed', NULL)", [run_id, now])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _insert_arrow(conn: duckdb.DuckDBPyConnection, name: str, arrow_table: Any, run_id: int) -> None:
        import pyarrow as pa

        with_run = arrow_table.add_column(0, "run_id", pa.array([run_id] * arrow_table.num_rows, type=pa.int64()))
        conn.register("_iwb_incoming", with_run)
        try:
            conn.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _iwb_incoming")
        finally:
            # After a failed insert the transaction is aborted and unregister raises too: the
            # insert's own error is the one to see.
            with contextlib.suppress(duckdb.Error):
                conn.unregister("_iwb_incoming")

    # -- shards ---------------------------------------------------------------------------------

    def run_folder(self, run_id: int) -> RunFolder:
        return RunFolder(self.path, run_id)

    def register(self, run_id: int, retry_seconds: float | None = None) -> dict:
        """Register the run's shards that are on disk and not yet in the database, and mark the run
        done when its folder is complete. Raises ResultsPending when the database stays locked."""
        folder = self.run_folder(run_id)
        try:
            with self.write(retry_seconds) as conn:
                return self._register_folders(conn, [folder]).get(run_id, {})
        except DatabaseBusy:
            raise ResultsPending(
                f"run {run_id}: its results are safe on disk in {folder.path}, but the database stayed locked by another "
                f"process, so they are not registered yet; the next iwb command that writes to {self.path.name} "
                f"registers them, or `iwb resume {run_id}`"
            ) from None

    def try_register(self, run_id: int, retry_seconds: float = 0.5) -> bool:
        """Register what is on disk now if the database can be had within retry_seconds; False when not."""
        try:
            self.register(run_id, retry_seconds)
        except ResultsPending:
            return False
        return True

    def run_folder_problem(self, run_id: int) -> str | None:
        """Why run_id's folder on disk is not that run's (None when it is)."""
        with self.read() as conn:
            return self.folder_problem(conn, self.run_folder(run_id))

    def folder_problem(self, conn: duckdb.DuckDBPyConnection, folder: RunFolder) -> str | None:
        """Why a run folder is not its runs row's (None when it is): no such run, or another run's."""
        row = conn.execute("SELECT analysis, folder_id FROM runs WHERE run_id = ?", [folder.run_id]).fetchone()
        if row is None:
            return f"this database has no run {folder.run_id}"
        return folder.identity_problem(folder.run_id, row[0], row[1])

    def _register_folders(self, conn: duckdb.DuckDBPyConnection, folders: list[RunFolder]) -> dict:
        """Register every whole, intact shard of these run folders not yet registered (each shard in
        its own transaction, so a shard is stored once), mark complete runs done and remove their
        folders. A folder that is not its run's goes to stray/ and a damaged shard to its run's
        quarantine/, each with one notice: neither is ever registered or blocks anything else."""
        outcome: dict[int, dict] = {}
        for folder in folders:
            try:
                outcome.update(self._register_folder(conn, folder))
            except (OSError, duckdb.Error) as error:
                self.notices.append(f"run {folder.run_id}: its folder {folder.path} could not be registered ({str(error).splitlines()[0]})")
        return outcome

    def _register_folder(self, conn: duckdb.DuckDBPyConnection, folder: RunFolder) -> dict:
        row = conn.execute("SELECT status, pid, host FROM runs WHERE run_id = ?", [folder.run_id]).fetchone()
        if row is not None and folder.manifest() is None and row[0] == "running":
            return {}  # being created by the process that runs it (the manifest comes right after the folder)
        problem = self.folder_problem(conn, folder)
        if problem is not None:
            moved = folder.move_to_stray()
            self.notices.append(f"run folder {folder.path.name} was set aside as {moved} and not used: {problem}")
            return {}
        assert row is not None
        manifest = folder.manifest() or {}
        registered = {r[0] for r in conn.execute("SELECT shard FROM shards WHERE run_id = ?", [folder.run_id]).fetchall()}
        added = 0
        for index in folder.shards_on_disk():
            if index in registered:
                continue
            damage = folder.shard_problem(index)
            if damage is None:
                try:
                    self._register_shard(conn, folder, manifest, index)
                except duckdb.Error as error:
                    damage = f"the database could not read it ({str(error).splitlines()[0]})"
            if damage is not None:
                moved = folder.quarantine_shard(index)
                self.notices.append(f"run {folder.run_id}: shard {index} was quarantined in {moved}: {damage}; `iwb resume {folder.run_id}` computes it again")
                continue
            registered.add(index)
            added += 1
        self._register_checks(conn, folder)
        status = row[0]
        complete = folder.complete()
        n_shards = int(manifest.get("n_shards", 0))
        whole = complete is not None and FINAL in registered and all(i in registered for i in range(n_shards))
        if complete is not None and whole and status != "done":
            finished = _timestamp(complete.get("finished_at"))
            conn.execute(
                "UPDATE runs SET status = 'done', error = NULL, finished_at = ?, provenance = ?, "
                "device = coalesce(?, device), dtype = coalesce(?, dtype) WHERE run_id = ?",
                [finished, json.dumps(complete.get("provenance") or {}),
                 complete.get("device"), complete.get("dtype"), folder.run_id],
            )
            conn.execute("INSERT INTO run_events VALUES (?, ?, 'completed', NULL)", [folder.run_id, finished])
            status = "done"
        if status == "done" and whole:
            folder.remove()
        return {folder.run_id: {"registered": added, "status": status}}

    @staticmethod
    def _register_checks(conn: duckdb.DuckDBPyConnection, folder: RunFolder) -> None:
        """The run's fidelity-record rows on disk that the database does not hold yet (by check name)."""
        pending = folder.checks()
        if not pending:
            return
        held = {r[0] for r in conn.execute('SELECT "check" FROM run_checks WHERE run_id = ?', [folder.run_id]).fetchall()}
        new = [[folder.run_id, *row] for row in pending if row[0] not in held]
        if new:
            conn.executemany("INSERT INTO run_checks VALUES (?, ?, ?, ?, ?, ?)", new)

    @staticmethod
    def _register_shard(conn: duckdb.DuckDBPyConnection, folder: RunFolder, manifest: dict, index: int) -> None:
        tables = folder.shard_tables(index)
        meta = folder.shard_meta(index)
        conn.execute("BEGIN TRANSACTION")
        try:
            for name, path in tables.items():
                if name not in ("tokens", "inputs"):
                    ensure_result_table(conn, name, tuple(tuple(c) for c in manifest["tables"][name]))
                conn.execute(f"INSERT INTO {name} BY NAME SELECT ?::BIGINT AS run_id, * FROM read_parquet(?)", [folder.run_id, str(path)])
            conn.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", [folder.run_id, index, json.dumps(meta.get("rows", {})), utc_now()])
            conn.execute(
                "UPDATE runs SET shards_done = (SELECT count(*) FROM shards WHERE run_id = ? AND shard >= 0) WHERE run_id = ?",
                [folder.run_id, folder.run_id],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def reopen_run(self, run_id: int) -> None:
        """Mark an interrupted, failed or cancelled run running again, owned by this process (resume).
        One statement claims it, so of two resumes started together exactly one gets it. What a
        cancel kept of a cut-short shard (shard PARTIAL, runner.keep_partial) is dropped: resume computes it whole."""
        with self.write() as conn:
            claimed = conn.execute(
                "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL, host = ?, pid = ? "
                "WHERE run_id = ? AND status IN ('interrupted', 'failed', 'cancelled') RETURNING run_id",
                [socket.gethostname(), os.getpid(), run_id],
            ).fetchall()
            if claimed:
                conn.execute("INSERT INTO run_events VALUES (?, ?, 'resumed', NULL)", [run_id, utc_now()])
        if not claimed:
            raise RunBusy(f"run {run_id} is being resumed or run by another process; wait for it, or `iwb runs` to see its status")
        self.drop_partial(run_id)  # a shard a cancel cut short is computed whole again

    def drop_partial(self, run_id: int) -> None:
        """Remove what a cancel kept of a cut-short shard (shard PARTIAL, runner.keep_partial): its rows (by the
        input ids it holds, which no computed shard holds), its shards row and its folder."""
        import pyarrow.parquet as pq

        folder = self.run_folder(run_id)
        tables = folder.shard_tables(PARTIAL) if folder.has_shard(PARTIAL) else {}
        with self.write() as conn:
            if conn.execute("SELECT shard FROM shards WHERE run_id = ? AND shard = ?", [run_id, PARTIAL]).fetchall():
                conn.execute("BEGIN TRANSACTION")
                try:
                    for name, path in tables.items():  # an analysis that keeps a partial shard has input_id in every table
                        ids = sorted(set(pq.read_table(path, columns=["input_id"]).column("input_id").to_pylist()))
                        if ids:
                            conn.execute(f"DELETE FROM {name} WHERE run_id = ? AND input_id IN (SELECT unnest(?))", [run_id, ids])
                    conn.execute("DELETE FROM shards WHERE run_id = ? AND shard = ?", [run_id, PARTIAL])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        folder.remove_shard(PARTIAL)

    def has_partial(self, run_id: int) -> bool:
        """Whether a stopped run holds the registered rows of a shard a cancel cut short."""
        return bool(self.query("SELECT count(*) FROM shards WHERE run_id = ? AND shard = ?", [run_id, PARTIAL]).rows[0][0])

    def end_run(self, run_id: int, status: str, error: str | None = None) -> None:
        if status not in RUN_STATUSES or status in ("running", "done"):
            raise ValueError(f"end_run takes failed, cancelled or interrupted, not {status!r}")
        now = utc_now()
        with self.write() as conn:
            ended = conn.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = ? WHERE run_id = ? AND status = 'running' RETURNING run_id",
                [status, error, now, run_id],
            ).fetchall()
            if ended:
                conn.execute("INSERT INTO run_events VALUES (?, ?, ?, ?)", [run_id, now, status, (error or "").splitlines()[0][:200] if error else None])

    def delete_run(self, run_id: int, result_tables: list[str]) -> None:
        """Remove a run and all its rows in one transaction (only ever on an explicit request)."""
        with self.write() as conn:
            existing = {row[0] for row in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
            conn.execute("BEGIN TRANSACTION")
            try:
                for name in ["inputs", "tokens", "shards", "run_checks", "run_events"] + [t for t in result_tables if t in existing]:
                    conn.execute(f"DELETE FROM {name} WHERE run_id = ?", [run_id])
                conn.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.run_folder(run_id).remove()

    # -- reading the store's own tables (the faces never write SQL on runs, shards or inputs) ------

    def run_inputs(self, run_id: int, limit: int | None = None, preview: int | None = None) -> list[tuple]:
        """(input_id, source, text, meta) of a run's inputs in order; text cut to ``preview``
        characters (newlines shown as spaces) when given."""
        text = "text" if preview is None else f"left(replace(text, chr(10), ' '), {int(preview)})"
        sql = f"SELECT input_id, source, {text}, meta FROM inputs WHERE run_id = ? ORDER BY input_id"
        values: list = [run_id]
        if limit is not None:
            sql += " LIMIT ?"
            values.append(int(limit))
        return self.query(sql, values).rows

    def input_text(self, run_id: int, input_id: int | None, preview: int | None = None) -> str | None:
        """One input's text (cut to ``preview`` characters, newlines as spaces); None when the run has no such input."""
        text = "text" if preview is None else f"left(replace(text, chr(10), ' '), {int(preview)})"
        rows = self.query(f"SELECT {text} FROM inputs WHERE run_id = ? AND input_id = ?", [run_id, input_id]).rows
        return rows[0][0] if rows else None

    def first_input_id(self, run_id: int) -> int | None:
        rows = self.query("SELECT min(input_id) FROM inputs WHERE run_id = ?", [run_id]).rows
        return rows[0][0] if rows else None

    def run_checks(self, run_id: int) -> list[tuple]:
        return self.query('SELECT "check", value, tolerance, ok, detail FROM run_checks WHERE run_id = ? ORDER BY rowid', [run_id]).rows

    def check_badges(self, run_ids: list[int]) -> dict[int, str]:
        """Per run: "ok" when every check passed, "skipped: NAME" when one was skipped, "FAILED:
        NAME" when one failed; runs with no record are left out."""
        if not run_ids:
            return {}
        marks = ", ".join("?" for _ in run_ids)
        rows = self.query(
            f'SELECT run_id, list("check" ORDER BY "check") FILTER (WHERE ok = false), list("check" ORDER BY "check") FILTER (WHERE ok IS NULL) '
            f"FROM run_checks WHERE run_id IN ({marks}) GROUP BY run_id", [int(r) for r in run_ids]).rows
        return {run_id: f"FAILED: {', '.join(failed)}" if failed else f"skipped: {', '.join(skipped)}" if skipped else "ok"
                for run_id, failed, skipped in rows}

    def run_errors(self, run_ids: list[int]) -> dict[int, str]:
        """The first line of each of these runs' stored error (runs without one are left out)."""
        if not run_ids:
            return {}
        marks = ", ".join("?" for _ in run_ids)
        rows = self.query(f"SELECT run_id, error FROM runs WHERE run_id IN ({marks}) AND error IS NOT NULL", [int(r) for r in run_ids]).rows
        return {run_id: error.splitlines()[0] for run_id, error in rows if error}

    def run_row(self, run_id: int) -> dict | None:
        result = self.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if not result.rows:
            return None
        return dict(zip(result.columns, result.rows[0]))

    def _events_source(self) -> str:
        """run_events, or for a store older than it opened read-only (not migrated) what its runs rows
        say, as the migration derives it."""
        if self._has_events:
            return "run_events"
        self._has_events = bool(self.query("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                                           "AND schema_name = 'main' AND table_name = 'run_events'").rows[0][0])
        if self._has_events:
            return "run_events"
        return ("(SELECT run_id, created_at AS happened_at, 'started' AS event, NULL AS detail FROM runs UNION ALL "
                "SELECT run_id, finished_at, CASE status WHEN 'done' THEN 'completed' ELSE status END, NULL FROM runs "
                "WHERE finished_at IS NOT NULL AND status <> 'running')")

    def run_events(self, run_id: int) -> list[tuple]:
        """A run's history, oldest first: (at, event, detail)."""
        return self.query(f"SELECT happened_at, event, detail FROM {self._events_source()} AS e WHERE run_id = ? ORDER BY happened_at, "
                          "CASE WHEN event IN ('started', 'resumed') THEN 0 ELSE 1 END", [run_id]).rows

    def run_times(self, run_ids: list[int]) -> dict[int, tuple[float | None, float | None]]:
        """run id -> (wall seconds, compute seconds): wall from its start to its last end (to now while
        it runs); compute only the stretches from a start or resume to the next end, so that the time
        a run sat cancelled or interrupted before its resume is not counted. None where unknown."""
        if not run_ids:
            return {}
        rows = self.query(f"SELECT run_id, happened_at, event FROM {self._events_source()} AS e WHERE run_id IN (SELECT unnest(?)) ORDER BY run_id, happened_at, "
                          "CASE WHEN event IN ('started', 'resumed') THEN 0 ELSE 1 END", [list(run_ids)]).rows
        now = utc_now()
        times: dict[int, tuple[float | None, float | None]] = {}
        by_run: dict[int, list[tuple[datetime, str]]] = {}
        for run_id, at, event in rows:
            by_run.setdefault(run_id, []).append((at, event))
        for run_id, events in by_run.items():
            compute, opened, first, last = 0.0, None, events[0][0], events[0][0]
            for at, event in events:
                if event in ("started", "resumed"):
                    opened = opened or at
                elif event in RUN_EVENTS:
                    if opened is not None:
                        compute += (at - opened).total_seconds()
                        opened = None
                    last = at
            if opened is not None:  # running now
                compute += max(0.0, (now - opened).total_seconds())
                last = now
            times[run_id] = (round((last - first).total_seconds(), 2), round(compute, 2))
        return times

    def list_runs(self, limit: int = 50, text_filter: str = "") -> QueryResult:
        sql = (
            "SELECT r.run_id, r.created_at, r.analysis, r.model, "
            "CASE WHEN r.status <> 'done' AND r.n_shards > 1 THEN r.status || ' ' || coalesce(r.shards_done, 0) || '/' || r.n_shards || ' shards' ELSE r.status END AS status, "
            "round(epoch(r.finished_at) - epoch(r.created_at), 2) AS seconds, "
            "(SELECT count(*) FROM inputs i WHERE i.run_id = r.run_id) AS n_inputs, "
            "(SELECT left(replace(i.text, chr(10), ' '), 60) FROM inputs i WHERE i.run_id = r.run_id ORDER BY i.input_id LIMIT 1) AS first_input "
            "FROM runs r"
        )
        values: list = []
        if text_filter:
            sql += " WHERE concat_ws(' ', r.analysis, r.model, r.status, r.params, (SELECT string_agg(i.text, ' ') FROM inputs i WHERE i.run_id = r.run_id)) ILIKE ?"
            values.append(f"%{text_filter}%")
        sql += " ORDER BY r.run_id DESC LIMIT ?"
        values.append(limit)
        result = self.query(sql, values)
        # Compute time beside the wall time ("seconds"): a resumed run's pause is not compute.
        times = self.run_times([row[0] for row in result.rows])
        at = result.columns.index("seconds") + 1
        columns, types = result.columns[:at] + ["compute_s"] + result.columns[at:], result.types[:at] + ["DOUBLE"] + result.types[at:]
        rows = [row[:at] + (times.get(row[0], (None, None))[1],) + row[at:] for row in result.rows]
        stale = self.stale_runs()
        if stale:
            rows = [tuple(f"{value} ({stale[row[0]]})" if column == "status" and row[0] in stale else value
                          for column, value in zip(columns, row)) for row in rows]
        return QueryResult(columns, types, rows)

    def latest_run_with(self, like_run: int, analysis: str, params: dict[str, int]) -> tuple[int, int] | None:
        """The newest finished run of ``analysis`` on the same model as run ``like_run`` whose integer
        params equal ``params`` (e.g. a neuron-contexts run for one layer and neuron), with its
        number of inputs; None where there is none."""
        if not all(name.isidentifier() for name in params):
            raise StoreError(f"not parameter names: {sorted(params)}")
        conditions = "".join(f" AND TRY_CAST(json_extract_string(c.params, '$.{name}') AS INTEGER) = ?" for name in params)
        found = self.query(
            "SELECT c.run_id, (SELECT count(*) FROM inputs i WHERE i.run_id = c.run_id) FROM runs c, runs r "
            "WHERE r.run_id = ? AND c.analysis = ? AND c.status = 'done' AND c.model = r.model" + conditions
            + " ORDER BY c.run_id DESC LIMIT 1", [like_run, analysis, *params.values()]).rows
        return (int(found[0][0]), int(found[0][1])) if found else None

    def query(self, sql: str, values: list | None = None, max_rows: int | None = None, stop: QueryStop | None = None) -> QueryResult:
        """Run SQL on a read-only connection; DuckDB's own message on an error, as StoreError. With
        ``stop``, another thread can stop it while it runs (QueryStopped)."""
        if not self.path.exists():
            raise StoreError(f"database {self.path} does not exist yet")

        def fetch(conn: duckdb.DuckDBPyConnection) -> QueryResult:
            cursor = conn.execute(sql, values or [])
            if cursor.description is None:
                return QueryResult([], [], [])
            columns = [d[0] for d in cursor.description]
            types = [str(d[1]) for d in cursor.description]
            rows = cursor.fetchmany(max_rows) if max_rows is not None else cursor.fetchall()
            return QueryResult(columns, types, rows)

        with self.read() as conn:
            return stop.run(conn, fetch) if stop is not None else interruptible(conn, fetch)

    @contextlib.contextmanager
    def stream(self, sql: str, values: list | None = None) -> Iterator[QueryStream]:
        """`query`, with the rows read a batch at a time while the block runs (`iwb sql`): the same
        read-only connection, the same values and errors (StoreError), Ctrl-C stops each fetch."""
        if not self.path.exists():
            raise StoreError(f"database {self.path} does not exist yet")
        with self.read() as conn:
            # DuckDB streams a DB-API result: execute runs the statement up to its first rows.
            description = interruptible(conn, lambda c: c.execute(sql, values or []).description)
            yield QueryStream(conn, description)

    def arrow(self, sql: str, values: list | None = None) -> Any:
        with self.read() as conn:
            # A relation's Arrow output, not the cursor's: that one copies the rows and warns.
            return interruptible(conn, lambda c: c.sql(sql, params=values or None).to_arrow_table())
