"""`iwb sql` streams its rows: the bytes printing the whole result at once gave, for every type and
format, in memory that does not grow with the result; a closed pipe, Ctrl-C and an error half-way
end as they always did. Driven through the installed command, as a user meets it."""
from __future__ import annotations

import contextlib
import datetime
import decimal
import io
import os
import random
import signal
import subprocess
import sys
import time
import uuid
import zoneinfo
from pathlib import Path

import duckdb
import pytest

from tests.helpers.cli import default_sigint, iwb_command
from tests.helpers.old_sql import old_print_result

ROOT = Path(__file__).resolve().parent.parent

# Every type DuckDB hands to Python in its own way; 3000 rows of about 40 columns cross several
# batches of `iwb sql` (cli.SQL_BATCH_CELLS / columns rows each).
VARIED = """
CREATE TABLE varied AS SELECT
  range AS i, (range % 3 = 0) AS b, (range % 100)::TINYINT AS ti, (range * 7)::SMALLINT AS si, range::UBIGINT AS ub,
  range::HUGEINT * 170141183460469231731687303715884 AS hi, range::UHUGEINT AS uhi,
  range / 7 AS dbl, (range / 7)::FLOAT AS flt,
  CASE range % 6 WHEN 1 THEN 'nan'::DOUBLE WHEN 2 THEN 'inf'::DOUBLE WHEN 3 THEN '-inf'::DOUBLE WHEN 4 THEN -0.0
                 WHEN 5 THEN NULL ELSE range * 1e-300 END AS special,
  (range * 1.25)::DECIMAL(10, 2) AS dec2, (range * 1.5)::DECIMAL(38, 10) AS dec38, (range % 999)::DECIMAL(4, 1) AS dec4,
  CASE range % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'say "hi", then' || chr(10) || 'go' || chr(13)
                 WHEN 3 THEN 'ünï €😀 ' || chr(9) || chr(27) || '[2J' ELSE 'plain ' || range END AS s,
  DATE '2024-01-31' + range::INTEGER AS d,
  TIMESTAMP '2024-01-31 12:34:56.789012' + to_seconds(range) AS ts,
  TIMESTAMPTZ '2024-01-31 12:34:56+02' + to_minutes(range) AS tstz,
  TIMESTAMP_NS '2024-01-31 12:34:56.123456789' AS tsns, TIMESTAMP_MS '2024-01-31 12:34:56.123' AS tsms,
  TIMESTAMP_S '2024-01-31 12:34:56' AS tss, TIME '12:34:56.5' AS tm, TIMETZ '12:34:56+05:30' AS tmtz,
  to_days(range::INTEGER) + INTERVAL 3 MONTH + to_microseconds(range) AS iv,
  CASE range % 3 WHEN 0 THEN 'infinity'::DATE WHEN 1 THEN '-infinity'::DATE ELSE DATE '2000-02-29' END AS dinf,
  CASE range % 3 WHEN 0 THEN 'infinity'::TIMESTAMP WHEN 1 THEN '-infinity'::TIMESTAMP ELSE TIMESTAMP '2000-02-29' END AS tsinf,
  [range, NULL, range + 1] AS lst, ['a,b', NULL, '"q"'] AS slst, [1.5, 'nan'::DOUBLE, 'inf'::DOUBLE] AS flst,
  CASE WHEN range % 4 = 0 THEN [] ELSE [[range], []] END AS nested,
  {'k': range, 'v': 'x', 'n': {'z': [1, 2], 'f': 'nan'::DOUBLE}} AS st,
  MAP {'a': range, 'b': NULL} AS mp, [1, 2, 3]::INTEGER[3] AS arr,
  ('\\xAA\\xFF' || range::VARCHAR)::BLOB AS bl, '00000000-0000-0000-0000-00000000002a'::UUID AS uu,
  (['a', 'b'])[range % 2 + 1]::ENUM('a', 'b') AS en, union_value(num := range::INTEGER) AS un,
  '0101'::BIT AS bit, 123456789012345678901234567890::VARINT AS vi, '{"a": [1, null]}'::JSON AS js,
  NULL AS nul
FROM range(3000)
"""

QUERIES = [
    "SELECT * FROM varied ORDER BY i",
    "SELECT * FROM varied WHERE i < 0",  # no rows
    "SELECT 1 AS a, 2 AS a, 'x' AS b",  # a repeated column name
    "DESCRIBE varied",
    "SELECT i, s FROM varied ORDER BY i LIMIT 200",  # exactly --max-rows
]

# `iwb sql` before streaming: tests/helpers/old_sql.py, verbatim: what the output must stay.


def old_output(db, sql: str, fmt: str, max_rows: int = 200) -> bytes:
    from store import Store

    result = Store(db, read_only=True).query(sql)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        old_print_result(result, fmt, max_rows)
    return buffer.getvalue().encode("utf-8")


def child_env() -> dict:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    env.pop("IWB_DB", None)
    return env


def iwb_bytes(db, *args: str) -> subprocess.CompletedProcess:
    """`iwb`, its stdout as bytes (text mode would fold csv's \\r\\n)."""
    return subprocess.run(iwb_command() + ["--db", str(db), *args], capture_output=True, env=child_env(), timeout=300)


@pytest.fixture(scope="module")
def varied_db(tmp_path_factory):
    from store import Store

    path = tmp_path_factory.mktemp("streaming") / "results.duckdb"
    Store(path)
    conn = duckdb.connect(str(path))
    try:
        conn.execute(VARIED)
    finally:
        conn.close()
    return path


@pytest.mark.parametrize("sql", QUERIES)
@pytest.mark.parametrize("fmt, max_rows", [("csv", 200), ("json", 200), ("table", 200), ("table", 0), ("table", 5000)])
def test_streamed_output_is_the_old_output_byte_for_byte(varied_db, sql, fmt, max_rows):
    new = iwb_bytes(varied_db, "sql", sql, "--format", fmt, "--max-rows", str(max_rows))
    assert new.returncode == 0 and new.stderr == b"", new.stderr
    assert new.stdout == old_output(varied_db, sql, fmt, max_rows)


def test_the_varied_table_has_what_it_is_for(varied_db):
    """Guard the guard: the comparison above really sees every awkward value."""
    from store import Store

    result = Store(varied_db, read_only=True).query("SELECT * FROM varied ORDER BY i")
    assert len(result.rows) == 3000 and len(result.columns) > 30
    values = {type(value) for row in result.rows for value in row}
    for kind in (int, float, bool, str, bytes, decimal.Decimal, datetime.date, datetime.datetime, datetime.time,
                 datetime.timedelta, uuid.UUID, list, tuple, dict, type(None)):
        assert kind in values, kind
    specials = [row[result.columns.index("special")] for row in result.rows]
    assert any(v != v for v in specials) and {float("inf"), float("-inf"), None} <= set(specials)
    table = old_output(varied_db, "SELECT * FROM varied", "table").decode()
    assert "(3000 rows, first 200 shown; use --format csv for all)" in table


def test_stream_gives_querys_values_batch_by_batch(varied_db):
    from store import Store

    store = Store(varied_db, read_only=True)
    sql = "SELECT * FROM varied ORDER BY i"
    whole = store.query(sql)
    with store.stream(sql) as stream:
        assert (stream.columns, stream.types) == (whole.columns, whole.types)
        first = stream.fetch(7)
        rest = [row for batch in stream.batches(333) for row in batch]
        assert stream.fetch(5) == [] and stream.count_rest(10) == 0
    assert repr(first + rest) == repr(whole.rows)
    with store.stream(sql) as stream:
        assert len(stream.fetch(100)) == 100 and stream.count_rest(64) == 2900


def test_stream_is_as_read_only_as_query(varied_db, tmp_path):
    from store import Store, StoreError

    store = Store(varied_db, read_only=True)
    with pytest.raises(StoreError, match="read-only"):
        with store.stream("DELETE FROM varied"):
            pass
    with pytest.raises(StoreError, match="locked"):
        with store.stream("SET enable_external_access = true"):
            pass
    with store.stream("SELECT current_setting('enable_external_access'), current_setting('lock_configuration')") as stream:
        assert stream.fetch(10) == [(False, True)]
    gone = tmp_path / "gone.duckdb"
    gone.write_bytes(varied_db.read_bytes())
    vanished = Store(gone, read_only=True)
    gone.unlink()
    with pytest.raises(StoreError, match="does not exist"):
        with vanished.stream("SELECT 1"):
            pass


def _random_value(rnd: random.Random, depth: int = 0):
    kind = rnd.randrange(22 if depth < 3 else 19)
    text = "".join(rnd.choice('ab"\\\n\t\x00\x1f\x7fé€😀\u2028 ,{}[]:') for _ in range(rnd.randrange(6)))
    simple = [
        None, rnd.random() < 0.5, rnd.randint(-10**38, 10**38), text, rnd.randint(-5, 5), None,
        rnd.choice([0.0, -0.0, 1e-300, 1e300, rnd.random() * 10 ** rnd.randint(-20, 20), float("nan"), float("inf"), -float("inf")]),
        decimal.Decimal(rnd.choice(["1.50", "-0.00", "1E+30", "NaN", "123456789012345678901234567890.1234567890", "Infinity"])),
        datetime.datetime(2024, 1, 2, 3, 4, 5, rnd.choice([0, 123456])),
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")), datetime.date(9999, 12, 31),
        datetime.time(12, 34, 56, 500000, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))),
        datetime.timedelta(days=rnd.randint(-400, 400), seconds=5), uuid.UUID(int=rnd.getrandbits(128)),
        bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(4))), 0.1 * rnd.randint(-100, 100), text, text, "",
    ]
    if kind < len(simple):
        return simple[kind]
    items = [_random_value(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    if kind == 19:
        return items
    if kind == 20:
        return tuple(items)
    return {rnd.choice(["k", "é", 'q"', 1, None]) if depth else text: item for item in items}


def test_json_pieces_join_into_strict_json():
    """The streamed JSON writer against strict_json itself, on values of every shape, cut into batches anywhere."""
    from app.cli.io import strict_json, strict_json_pieces

    rnd = random.Random(20260512)
    for _ in range(2000):
        n_columns = rnd.randrange(0, 6)
        columns = [rnd.choice(["a", "b", 'q"', "é", "", "x\ny"]) for _ in range(n_columns)]
        rows = [tuple(_random_value(rnd) for _ in range(n_columns)) for _ in range(rnd.randrange(0, 7))]
        cut_a, cut_b = sorted(rnd.randrange(0, len(rows) + 1) for _ in range(2))
        batches = [rows[:cut_a], [], rows[cut_a:cut_b], rows[cut_b:]]
        assert "".join(strict_json_pieces(columns, batches)) == strict_json(columns, rows), (columns, rows)


# -- bounded memory ---------------------------------------------------------------------------------

BIG = "SELECT range AS input_id, (range % 30)::INTEGER AS layer, ((range % 9973) / 9973)::DOUBLE AS value, 'tok ' || (range % 5000) AS token FROM range({n})"


# The command runs under a small launcher that waits for it: Linux carries a forking parent's
# peak RSS into the child's ru_maxrss across exec, and this test process may hold 1.5 GiB of models.
LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "sys.stderr.write(f'\\nIWB_PEAK_KIB {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}\\n')\n"
)


def peak_rss_mib(command: list[str], timeout: float = 300) -> tuple[int, float, str]:
    """Run a command with stdout to /dev/null; its exit code, its own peak RSS and its stderr."""
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=child_env(), cwd=ROOT)
    try:
        stderr = process.communicate(timeout=timeout)[1].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text, _, marker = stderr.rpartition("\nIWB_PEAK_KIB ")
    peak_kib, code = (int(part) for part in marker.split())
    return code, peak_kib / 1024, text.strip("\n") + ("\n" if text.strip("\n") else "")


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory):
    from store import Store

    path = tmp_path_factory.mktemp("big") / "results.duckdb"
    Store(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_two_million_rows_stream_in_the_memory_of_two_hundred_thousand(empty_db, fmt):
    # Measured (2 cores, DuckDB 2.0.1): csv 93 -> 103 MiB, json 99 -> 113 MiB, table 91 -> 96 MiB, while
    # the output grows from 8 to 78 MB (csv) and 19 to 194 MB (json); the old way peaked at 636 MiB (csv),
    # 2.7 GiB (json) and 492 MiB (table) for 2M rows (benchmarks/sql_streaming.py).
    peaks = {}
    for n in (200_000, 2_000_000):
        code, peaks[n], stderr = peak_rss_mib(iwb_command() + ["--db", str(empty_db), "sql", BIG.format(n=n), "--format", fmt])
        assert code == 0 and stderr == "", stderr
    assert peaks[2_000_000] < 1.5 * peaks[200_000], peaks
    assert peaks[2_000_000] - peaks[200_000] < 64, peaks


def test_the_memory_yardstick_sees_a_result_held_whole(empty_db):
    """The same measure on the old way (every row fetched, then printed) grows with the rows: the
    test above would catch streaming that quietly held the result."""
    snippet = "import sys; from store import Store; Store(sys.argv[1], read_only=True).query(sys.argv[2])"
    peaks = {}
    for n in (200_000, 2_000_000):
        code, peaks[n], stderr = peak_rss_mib([sys.executable, "-c", snippet, str(empty_db), BIG.format(n=n)])
        assert code == 0, stderr
    assert peaks[2_000_000] > 1.5 * peaks[200_000], peaks


# -- the ends of a stream ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_a_reader_that_stops_early_ends_it_quietly(empty_db, fmt):
    """`iwb sql ... | head`: the reader closes the pipe mid-stream; iwb ends with 0 and says nothing."""
    process = subprocess.Popen(iwb_command() + ["--db", str(empty_db), "sql", BIG.format(n=50_000_000), "--format", fmt, "--max-rows", "100000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    try:
        head = [process.stdout.readline() for _ in range(10)]
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert stderr == "" and all(head)


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_ctrl_c_mid_stream_exits_130(empty_db, fmt):
    # csv: rows flowing; table: its first rows shown, the rest being counted.
    process = subprocess.Popen(iwb_command() + ["--db", str(empty_db), "sql", BIG.format(n=500_000_000), "--format", fmt],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), preexec_fn=default_sigint)
    try:
        assert process.stdout.readline()  # under way
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        process.stdout.read()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 130, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert stderr == "iwb: interrupted\n"


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_an_error_half_way_is_one_line_and_exit_2(empty_db, fmt):
    """DuckDB meets the error only when it reaches that row: the rows before it may be out already."""
    sql = "SELECT CASE WHEN range = 150000 THEN error('bad row ' || range) ELSE range END AS x FROM range(200000)"
    result = iwb_bytes(empty_db, "sql", sql, "--format", fmt)
    assert result.returncode == 2 and result.stderr.decode() == "iwb: Invalid Input Error: bad row 150000\n"
