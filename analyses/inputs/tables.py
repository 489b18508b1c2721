"""Rows of a user's table file: CSV (header first) or JSONL (one object a line); lines starting
with '#' are comments. Shared by prompt sets and entity tables."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from analyses.core.errors import BadInput


def table_rows(path: Path, text: str, whole_rows: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, row dict) per row of the file's text; BadInput naming the line for a JSONL
    line that is not an object and, with whole_rows, for a CSV row without the header's fields."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
        for line_no, row in enumerate(reader, start=2):
            if whole_rows and (None in row or any(value is None for value in row.values())):
                raise BadInput(f"{path}:{line_no}: the row does not have the header's {len(reader.fieldnames or [])} fields")
            yield line_no, row
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadInput(f"{path}:{line_no}: not a JSON object ({error.msg})") from None
        if not isinstance(row, dict):
            raise BadInput(f"{path}:{line_no}: not a JSON object")
        yield line_no, row
