"""The Analysis contract: Params fields, SPEC (tables, charts), inputs, results, progress, cancel.

An analysis module exposes a frozen ``Params`` dataclass, a ``SPEC`` and
``run(model, inputs, params, progress, cancel) -> Result``; optionally
``validate(model, inputs, params)`` that raises BadInput before anything is stored.
Analysis modules never import torch at module level, so that listing analyses,
building parameter forms and drawing charts stay light.

Runs are computed in shards (batches of inputs), each stored on disk as soon as it is done, so a
run over a corpus keeps bounded memory and can be resumed or spread over several machines:
- ``SHARD_BY_INPUT = True``: ``run`` on any subset of the inputs gives exactly the rows of those
  inputs (no table depends on several inputs), so the runner calls it shard by shard;
- or the three-step form: ``prepare_run(model, inputs, params, progress, cancel) -> state`` (the
  run-level state every shard needs, picklable, e.g. a mean over all inputs), ``run_shard(model,
  inputs, params, state, progress, cancel) -> Result`` and ``finalize(params, state, read, progress,
  cancel) -> Result`` for the tables computed from every shard, where ``read(table, columns,
  where)`` returns a table over the stored shards as Arrow (no model needed);
- otherwise the whole run is one shard.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# The chart types (analyses/core/charts.py), re-exported: SPECs import them from the contract.
from analyses.core.charts import FILTER_OPS, Chart, Filter, Heatmap, Line, Mark, Order, RunValue, Table, check_chart  # noqa: F401

# "weights": the analysis reads the model only and takes no input; the first kind is the default.
INPUT_KINDS = ("weights", "prompt", "prompt_set", "pile", "entities")


def param(default: Any, doc: str, choices: tuple[str, ...] = ()) -> Any:
    """A Params field with its default, a one-line doc (shown by the CLI and the TUI form) and,
    for a text field, the values it takes (checked as you type)."""
    return field(default=default, metadata={"doc": doc, "choices": choices})


def columns(*pairs: str) -> tuple[tuple[str, str], ...]:
    """ResultTable columns from "name:TYPE" strings."""
    split = [pair.split(":", 1) for pair in pairs]
    return tuple((name, column_type) for name, column_type in split)


@dataclass(frozen=True)
class ResultTable:
    """A result table: name and (column, DuckDB type) pairs; run_id is added by the store."""

    name: str
    columns: tuple[tuple[str, str], ...]
    doc: str = ""


@dataclass(frozen=True)
class AnalysisSpec:
    name: str
    title: str
    description: str
    input_kinds: tuple[str, ...]
    tables: tuple[ResultTable, ...]
    charts: tuple[Chart, ...]

    def __post_init__(self) -> None:
        # A chart reads declared tables and columns only: a typo fails when the SPEC is built.
        declared = {table.name: tuple(column for column, _ in table.columns) for table in self.tables}
        for chart in self.charts:
            check_chart(chart, declared.get, owner=self.name)

    def table(self, name: str) -> ResultTable:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)


@dataclass(frozen=True)
class Input:
    """One thing to analyse: a typed prompt, a prompt-set row or a corpus document."""

    input_id: int
    source: str
    text: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """What run() returns: Arrow tables keyed by result-table name (without run_id),
    the tokens table (input_id, pos, token_id, token) and notes for the provenance."""

    tables: dict[str, Any]
    tokens: Any
    notes: dict = field(default_factory=dict)


class Progress(Protocol):
    def __call__(self, done: int, total: int, note: str = "") -> None: ...


class CancelEvent(Protocol):
    def is_set(self) -> bool: ...


def no_progress(done: int, total: int, note: str = "") -> None:
    """A progress callback that ignores everything."""


Runner = Callable[..., Result]
