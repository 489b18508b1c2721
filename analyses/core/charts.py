"""Chart types of an analysis' SPEC: Heatmap, Line, Table and Graph, with their rows (Filter, RunValue),
marks (Mark) and order (Order) as data, never SQL.

Each type carries only the fields its kind uses; app/charts/__init__.py, the one renderer, writes
the SQL (identifiers quoted) and dispatches on the type. ``check_chart`` is what AnalysisSpec runs
when it is built: every table a chart reads is declared and every column it names is in that table.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from analyses.core.errors import BadInput

FILTER_OPS = ("=", "<>", "<", "<=", ">", ">=", "in")

# The store's own per-run table of tokens (written for every run from Result.tokens): a chart may
# read it, and last_pos and Mark do, without an analysis declaring it.
TOKENS_TABLE = "tokens"
TOKENS_COLUMNS = ("input_id", "pos", "token_id", "token")


@dataclass(frozen=True)
class RunValue:
    """A value looked up in the same run: the max of ``column`` over the rows of ``table`` (the
    chart's own table when None) that pass ``filters``; e.g. the largest destination position."""

    column: str
    table: str | None = None
    filters: tuple[Filter, ...] = ()


@dataclass(frozen=True)
class Filter:
    """A chart's row condition as data: ``column op value`` (``in`` takes a tuple; the value may
    be a RunValue). app/charts/__init__.py writes the SQL."""

    column: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in FILTER_OPS:
            raise BadInput(f"chart filter on {self.column!r}: op {self.op!r} is not one of {', '.join(FILTER_OPS)}")


@dataclass(frozen=True)
class Order:
    """One key of a table chart's row order: a column of its table, ascending unless ``descending``."""

    column: str
    descending: bool = False


@dataclass(frozen=True)
class Mark:
    """Heatmap columns to mark with ``*``: positions in [start, end) read from a per-input table."""

    table: str
    start: str
    end: str


@dataclass(frozen=True)
class Chart:
    """What every default chart has, drawn by the one renderer shared by the CLI and the TUI.

    ``value`` is the column drawn (a table chart's main column); ``filters`` keep rows by column
    values (data, not SQL); ``per_input`` draws one chart per input (else all inputs together);
    ``last_pos`` keeps only each input's last position; ``facet`` draws one chart per distinct
    value of that column (``load_charts``). ``kind`` names the type in docs and messages.
    """

    kind: ClassVar[str] = ""

    title: str
    table: str
    value: str
    filters: tuple[Filter, ...] = ()
    per_input: bool = True
    last_pos: bool = False
    facet: str | None = None

    def columns_read(self) -> tuple[tuple[str, str | None], ...]:
        """(role, column) of every column of ``table`` the chart names; None where unset."""
        return (("value", self.value), ("facet", self.facet))


@dataclass(frozen=True)
class Heatmap(Chart):
    """Colour = ``value`` over ``x`` (columns; labelled with the tokens when x is "pos") and ``y``
    (rows), one input at a time unless per_input is False; ``vmin``/``vmax`` fix the colour
    scale's ends; ``mark`` marks columns (positions) with a ``*`` before their label."""

    kind: ClassVar[str] = "heatmap"

    x: str = "pos"
    y: str = "layer"
    vmin: float | None = None
    vmax: float | None = None
    mark: Mark | None = None

    def columns_read(self) -> tuple[tuple[str, str | None], ...]:
        return (*super().columns_read(), ("x", self.x), ("y", self.y))


@dataclass(frozen=True)
class Line(Chart):
    """``value`` over ``x``, one curve per ``series`` value (one curve without)."""

    kind: ClassVar[str] = "line"

    x: str = "pos"
    series: str | None = None

    def columns_read(self) -> tuple[tuple[str, str | None], ...]:
        return (*super().columns_read(), ("x", self.x), ("series", self.series))


@dataclass(frozen=True)
class Table(Chart):
    """The first ``limit`` rows of ``table`` (every column), ordered by ``order``."""

    kind: ClassVar[str] = "table"

    order: tuple[Order, ...] = ()
    limit: int = 20

    def columns_read(self) -> tuple[tuple[str, str | None], ...]:
        return (*super().columns_read(), *(("order", item.column) for item in self.order))


@dataclass(frozen=True)
class Graph(Chart):
    """A circuit: the edges of ``table`` (rows: ``source`` node -> ``target`` node, ``value`` the
    edge's score, ``label`` which input of the target it enters) drawn with nodes as boxes placed
    by layer (``source_layer`` / ``target_layer``), lowest at the bottom; ``nodes`` names a table
    with one row per node (column ``node``) whose other columns are what the cursor shows; the
    ``limit`` strongest edges (by |value|) are drawn, every one is listed."""

    kind: ClassVar[str] = "graph"

    source: str = "source"
    target: str = "target"
    source_layer: str = "source_layer"
    target_layer: str = "target_layer"
    label: str | None = None
    nodes: str | None = None
    limit: int = 24

    def columns_read(self) -> tuple[tuple[str, str | None], ...]:
        return (*super().columns_read(), ("source", self.source), ("target", self.target), ("source_layer", self.source_layer),
                ("target_layer", self.target_layer), ("label", self.label))


CHART_TYPES: tuple[type[Chart], ...] = (Heatmap, Line, Table, Graph)


def check_chart(chart: Chart, table_columns: Callable[[str], tuple[str, ...] | None], owner: str = "") -> None:
    """Refuse (BadInput naming the analysis, the chart and the column) a chart that reads an
    undeclared table or a column that is not in its table. ``table_columns(name)`` gives a declared
    table's columns, None for a table that is not declared."""
    where = (f"{owner}: " if owner else "") + f"chart {chart.title!r}"
    if not isinstance(chart, CHART_TYPES):
        raise BadInput(f"{where} is a {type(chart).__name__}; a chart is one of {', '.join(t.__name__ for t in CHART_TYPES)}")
    if isinstance(chart, Table) and (isinstance(chart.order, (str, Order)) or not all(isinstance(item, Order) for item in chart.order)):
        raise BadInput(f"{where}: order takes a tuple of Order(column, descending=...), not {chart.order!r}")
    columns = _columns_of(where, chart.table, table_columns)
    for role, column in chart.columns_read():
        if column is not None:
            _check_column(where, role, column, chart.table, columns)
    for item in chart.filters:
        _check_filter(where, item, chart.table, columns, table_columns)
    if chart.per_input:
        _check_column(where, "per_input", "input_id", chart.table, columns)
    if chart.last_pos:
        _check_column(where, "last_pos", "input_id", chart.table, columns)
        _check_column(where, "last_pos", "pos", chart.table, columns)
    if isinstance(chart, Graph) and chart.nodes is not None:
        node_columns = _columns_of(where, chart.nodes, table_columns)
        for role, column in (("nodes", "node"), *((("nodes per_input", "input_id"),) if chart.per_input else ())):
            _check_column(where, role, column, chart.nodes, node_columns)
    if isinstance(chart, Heatmap) and chart.mark is not None:
        mark_columns = _columns_of(where, chart.mark.table, table_columns)
        for role, column in (("mark", "input_id"), ("mark start", chart.mark.start), ("mark end", chart.mark.end)):
            _check_column(where, role, column, chart.mark.table, mark_columns)


def _columns_of(where: str, table: str, table_columns: Callable[[str], tuple[str, ...] | None]) -> tuple[str, ...]:
    columns = TOKENS_COLUMNS if table == TOKENS_TABLE else table_columns(table)
    if columns is None:
        raise BadInput(f"{where} reads table {table!r}, which the SPEC does not declare")
    return ("run_id", *columns)


def _check_column(where: str, role: str, column: str, table: str, columns: tuple[str, ...]) -> None:
    if column not in columns:
        raise BadInput(f"{where}: {role} column {column!r} is not a column of {table!r} ({', '.join(columns)})")


def _check_filter(where: str, item: Filter, table: str, columns: tuple[str, ...],
                  table_columns: Callable[[str], tuple[str, ...] | None]) -> None:
    _check_column(where, "filter", item.column, table, columns)
    value = item.value
    if isinstance(value, RunValue):
        inner_table = value.table or table
        inner_columns = _columns_of(where, inner_table, table_columns)
        _check_column(where, "run value", value.column, inner_table, inner_columns)
        for nested in value.filters:
            _check_filter(where, nested, inner_table, inner_columns, table_columns)
    elif item.op == "in" and not isinstance(value, tuple):
        raise BadInput(f"{where}: filter {item.column} in takes a tuple of values, not {value!r}")
