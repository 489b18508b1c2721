"""The TUI's serialised store keeps the Store's signatures: Store.register hands its lock-retry
window to write(), and the TUI's store took no argument there (a TypeError on register)."""
from __future__ import annotations

from app.tui.store_access import SerialStore


def test_serial_store_write_takes_the_retry_window(db_path):
    store = SerialStore(db_path, lock_retry_seconds=0.2)
    with store.write(0.1) as conn:
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    with store.write() as conn:
        assert conn.execute("SELECT x FROM t").fetchone() == (1,)
    with store.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
