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
