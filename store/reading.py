"""How the store reads: a connection DuckDB itself keeps read-only, and queries Ctrl-C can stop."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import duckdb

from store.errors import StoreError

# Every read (the SQL console and `iwb sql` included) goes through this: the engine itself refuses
# writes, ATTACH, COPY TO, EXPORT, INSTALL/LOAD and reading other files, and SET cannot undo it.
READ_ONLY_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def interruptible(conn: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
    """work(conn), with DuckDB errors as StoreError and Ctrl-C stopping the query.

    DuckDB does not look at Python's signals while it runs, so on the main thread the query runs
    on a helper thread and a KeyboardInterrupt here interrupts the connection.
    """

    def guarded() -> Any:
        try:
            return work(conn)
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None
        except duckdb.Error as error:
            raise StoreError(str(error).strip()) from None

    if threading.current_thread() is not threading.main_thread():
        return guarded()
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = guarded()
        except BaseException as error:
            outcome["error"] = error
        finally:
            finished.set()

    threading.Thread(target=target, name="iwb-query", daemon=True).start()
    try:
        while not finished.wait(0.05):
            pass
    except KeyboardInterrupt:
        conn.interrupt()
        # An Event, not Thread.join (an interrupted join may return early); a second Ctrl-C waits too.
        while not finished.is_set():
            try:
                finished.wait(0.05)
            except KeyboardInterrupt:
                conn.interrupt()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class QueryStopped(StoreError):
    """The query was stopped on request (QueryStop.stop) before it finished."""

    title = "Query cancelled"


class QueryStop:
    """Stops a query in flight from another thread (the SQL console's cancel): ``stop`` interrupts the
    connection the query runs on (DuckDB's interrupt), and the query raises QueryStopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: duckdb.DuckDBPyConnection | None = None
        self.stopped = False

    def run(self, conn: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], Any]) -> Any:
        """work(conn) as ``interruptible`` runs it, stoppable by ``stop`` while it runs."""
        with self._lock:
            if self.stopped:
                raise QueryStopped("the query was cancelled before it started")
            self._conn = conn
        try:
            return interruptible(conn, work)
        except (KeyboardInterrupt, StoreError):
            if self.stopped:  # the interrupt was ours: say so, not DuckDB's "Interrupted!"
                raise QueryStopped("the query was cancelled") from None
            raise
        finally:
            with self._lock:
                self._conn = None

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            if self._conn is not None:
                self._conn.interrupt()
