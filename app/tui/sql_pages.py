"""Read-only SQL for the console: refuse writes up front, fetch one page of rows at a time.

A page is a fresh short read-only query (``LIMIT page+1 OFFSET k`` around the user's SELECT),
so no connection stays open between pages and a huge result is never loaded whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.core.errors import BadInput
from app.cli.io import single_statement

READ_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "RELATION"}


@dataclass(frozen=True)
class Page:
    columns: list[str]
    types: list[str]
    rows: list[tuple]
    page: int
    page_rows: int
    has_more: bool
    pageable: bool

    @property
    def first_row(self) -> int:
        return self.page * self.page_rows + 1


def read_only_statement(sql: str) -> tuple[str, bool]:
    """The one statement to run and whether it can be paged; BadInput for writes or several statements."""
    statement = single_statement(sql)
    kind = statement.type.name
    if kind not in READ_STATEMENTS:
        raise BadInput(f"the SQL console is read-only: {kind} statements are refused and nothing was changed "
                       "(write with `iwb` commands or the duckdb CLI)")
    return statement.query.strip().rstrip(";"), kind == "SELECT"


def fetch_page(store, sql: str, page: int, page_rows: int, stop: Any = None) -> Page:
    """One page of a read-only query's rows (StoreError carries DuckDB's message); ``stop`` (a
    store QueryStop) lets the console cancel it while it runs."""
    text, pageable = read_only_statement(sql)
    if pageable:
        wrapped = f"SELECT * FROM ({text}) AS iwb_page LIMIT {page_rows + 1} OFFSET {page * page_rows}"
        result = store.query(wrapped, stop=stop)
    else:
        page = 0
        result = store.query(text, max_rows=page_rows + 1, stop=stop)
    return Page(result.columns, result.types, result.rows[:page_rows], page, page_rows, len(result.rows) > page_rows, pageable)


def fetch_for_chart(store, sql: str, value: str, x: str | None, series: str | None, max_rows: int = 20000) -> list[tuple]:
    """(series, x, value) rows of a query, for charting (at most max_rows)."""
    text, pageable = read_only_statement(sql)
    if not pageable:
        raise BadInput("only SELECT results can be charted")

    def quote(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    series_sql = quote(series) if series else "NULL"
    x_sql = quote(x) if x else "row_number() OVER ()"
    return store.query(f"SELECT {series_sql}, {x_sql}, {quote(value)} FROM ({text}) AS iwb_chart LIMIT {int(max_rows)}").rows
