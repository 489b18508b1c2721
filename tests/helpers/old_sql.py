"""`iwb sql` before it streamed (git f8f087e, app/cli.py: _print_result), verbatim: the output the
streaming version must keep (tests/test_sql_streaming.py) and the memory it is measured against
(benchmarks/sql_streaming.py)."""
from __future__ import annotations

import csv
import io
import sys


def old_print_result(result, fmt: str, max_rows: int) -> None:
    from app import charts
    from app.cli.io import strict_json

    if fmt == "json":
        print(strict_json(result.columns, result.rows))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        sys.stdout.write(buffer.getvalue())
    else:
        print(charts.format_table(result.columns, result.rows[:max_rows]))
        if len(result.rows) > max_rows:
            print(f"({len(result.rows)} rows, first {max_rows} shown; use --format csv for all)")
