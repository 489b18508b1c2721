"""What `iwb` reads from its arguments and writes to stdout or files, checked against hostile input.

Bounded numbers, UTF-8 text, one SQL statement, strict JSON, exports that never leave a half
file, and a closed stdout (`iwb runs | head`) that ends quietly.
"""
from __future__ import annotations

import argparse
import datetime
import decimal
import json
import math
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from analyses.core.errors import BadInput

# Wide enough for any real terminal; beyond this plotext spends minutes on a chart nobody can see.
MAX_CHART_WIDTH = 1000
MAX_CHART_HEIGHT = 500
TEXT_ARGUMENTS = ("prompt", "query", "filter", "pile_set", "param", "analysis", "table")


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (argparse turns the error into exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a whole number, not {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, not {value}")
        return value

    parse.__name__ = "integer"
    return parse


def check_utf8(args: argparse.Namespace) -> None:
    """Refuse text arguments that are not UTF-8 (Python keeps such bytes as lone surrogates)."""
    for name in TEXT_ARGUMENTS:
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str):
                continue
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                byte = value[error.start].encode("utf-8", "surrogateescape")
                raise BadInput(f"--{name.replace('_', '-')} is not valid UTF-8 (byte 0x{byte.hex()} at character {error.start})") from None


def single_statement(sql: str) -> Any:
    """The one statement in a query (DuckDB's own parse), for `iwb sql` and the SQL console: a
    friendlier message for none or several; the engine's read-only configuration is the guard."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise BadInput(str(error).strip()) from None
    if not statements:
        raise BadInput("there is no SQL statement to run (the query is empty or only a comment)")
    if len(statements) > 1:
        raise BadInput(f"one statement at a time, please (found {len(statements)})")
    return statements[0]


def read_only_hint(message: str) -> str:
    """DuckDB's refusal, with where writing is done instead."""
    lowered = message.lower()
    if "read-only" in lowered or "disabled by configuration" in lowered or "configuration has been locked" in lowered:
        return f"{message.splitlines()[0]} (iwb sql is read-only; `iwb export` writes files)"
    return message


def json_safe(value: Any) -> Any:
    """A value JSON can hold strictly: NaN and infinities become null, the rest plain types."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value))
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def strict_json(columns: list[str], rows: list[tuple]) -> str:
    records = [{column: json_safe(value) for column, value in zip(columns, row)} for row in rows]
    return json.dumps(records, indent=1, allow_nan=False, ensure_ascii=False)


# strict_json's encoder, for the values _json_field does not write itself.
_INDENTED_JSON = json.JSONEncoder(indent=1, allow_nan=False, ensure_ascii=False)
_AS_TEXT = (datetime.datetime, datetime.date, datetime.time, datetime.timedelta, uuid.UUID)


def _json_field(value: Any) -> str:
    """json_safe(value) as strict_json writes a record's field (two levels deep, indent 1): plain
    values as json's own encoder writes them, anything else through that encoder, shifted in."""
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float or kind is decimal.Decimal:
        number = float(value)
        return float.__repr__(number) if math.isfinite(number) else "null"
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind in _AS_TEXT:
        return encode_basestring(str(value))
    # JSON escapes newlines inside strings, so every newline here starts a line to indent.
    return _INDENTED_JSON.encode(json_safe(value)).replace("\n", "\n  ")


def strict_json_pieces(columns: list[str], batches: Iterable[list[tuple]]) -> Iterator[str]:
    """strict_json(columns, every row), a batch of rows at a time: the pieces join into exactly
    that text (a list of one object per row, indent 1), and no more than a batch is held.

    The records are written here rather than by json.dumps(indent=1), whose pure-Python encoder
    takes most of the time; tests/test_sql_streaming.py holds the two to the same bytes.
    """
    # As strict_json's dict: a repeated column name keeps its first place and its last value.
    last = {column: index for index, column in enumerate(columns)}
    fields = [(encode_basestring(column) + ": ", index) for column, index in last.items()]
    started = False
    for rows in batches:
        if not rows:
            continue
        if fields:
            records = ["{\n  " + ",\n  ".join([name + _json_field(row[index]) for name, index in fields]) + "\n }" for row in rows]
        else:
            records = ["{}"] * len(rows)
        yield (",\n " if started else "[\n ") + ",\n ".join(records)
        started = True
    yield "\n]" if started else "[]"


def export_target(text: str) -> Path:
    """A file path `iwb export` may write: its folder exists and is writable, it is no directory."""
    target = Path(text).expanduser()
    if target.is_dir():
        raise BadInput(f"--to {target} is a directory; give a file name")
    if target.suffix.lower() not in (".parquet", ".csv"):
        raise BadInput(f"--to must end in .parquet or .csv, not {target.name!r}")
    folder = target.parent
    if not folder.is_dir():
        raise BadInput(f"--to {target}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise BadInput(f"--to {target} is not writable by this user")
    return target


def write_export(arrow: Any, target: Path) -> None:
    """Write next to the target and rename, so a failure never leaves a half-written file."""
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        os.close(handle)
        if target.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(arrow, temporary)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(arrow, temporary)
        os.replace(temporary, target)
    except OSError as error:
        raise BadInput(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)


def silence_closed_stdout() -> None:
    """After a reader closed our stdout (`| head`), send what is left to /dev/null, so that
    neither the rest of the output nor the interpreter's final flush raises again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
