"""The Analysis contract: one typed base class, its Params fields, SPEC (tables, charts), inputs, results.

An analysis is a subclass of ``Analysis`` with a frozen ``Params`` dataclass and a ``spec``
(name, title, description, input kinds, result tables, default charts), registered as an entry
point of the group ``iwb.analyses`` (analyses/core/registry.py). The runner (app/run/runner.py)
drives every analysis the same way:

- ``check(model, inputs, params)``: everything a user can get wrong, before anything is stored;
- ``prepare(model, inputs, params, progress, cancel) -> state``: the run-level state every shard
  needs (plain arrays, saved in the run's folder, e.g. a mean over all inputs); default none;
- ``shards(inputs, shard_docs)``: the plan, input ids per shard; one shard unless the analysis is
  ``sharded`` (``compute`` on any subset of the inputs gives exactly the rows of those inputs, or
  partial aggregates over them that ``finalize`` merges);
- ``compute(model, inputs, params, state, progress, cancel) -> Result``: one shard's tables;
- ``finalize(params, state, read, progress, cancel) -> Result``: tables computed from every stored
  shard, where ``read(table, columns, where)`` returns a table over them as Arrow (no model) and
  ``read.quantiles``, ``read.lowest`` and ``read.count_distinct`` reduce rows that grow with the
  corpus where they are stored (``Reader``); default none;
- ``invariants(params, read, notes)``: exact checks on the stored numbers, added to the run's record.

``run(model, inputs, params)`` does all of it in memory, without a store (tests, notebooks).
Analysis modules never import torch at module level, so that listing analyses, building parameter
forms and drawing charts stay light.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

# The chart types (analyses/core/charts.py), re-exported: SPECs import them from the contract.
from analyses.core.charts import FILTER_OPS, Chart, Filter, Heatmap, Line, Mark, Order, RunValue, Table, check_chart  # noqa: F401

# "weights": the analysis reads the model only and takes no input; the first kind is the default.
INPUT_KINDS = ("weights", "prompt", "prompt_set", "pile", "entities")


def param(default: Any, doc: str, choices: tuple[str, ...] = (), empty_is_none: bool = True) -> Any:
    """A Params field with its default, a one-line doc (shown by the CLI and the TUI form) and,
    for a text field, the values it takes (checked as you type). An optional field reads an empty
    text as None unless ``empty_is_none`` is False (then an empty string is a value its check sees)."""
    return field(default=default, metadata={"doc": doc, "choices": choices, "empty_is_none": empty_is_none})


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


def check_cancel(cancel: CancelEvent | None) -> None:
    """Raise Cancelled when the run's cancel event is set: the one check engines make between
    small units of work (a forward, a block, a chunk), so that a cancel takes effect within about
    a second. Cheap (one Event.is_set); None means the caller cannot be cancelled."""
    if cancel is not None and cancel.is_set():
        from analyses.core.errors import Cancelled

        raise Cancelled("cancelled")


Runner = Callable[..., Result]


@dataclass(frozen=True)
class Invariant:
    """An exact check an analysis makes on its own numbers in every run (``Analysis.invariants``),
    declared so that its reference page can list it: the run_checks name, the tolerance, what holds."""

    name: str
    tolerance: float
    doc: str


class Reader(Protocol):
    """What ``finalize`` and ``invariants`` read a run's stored shards through. Called, it returns a
    table over every stored shard as Arrow (None when no shard stored it): fine for per-shard partial
    aggregates, never for rows that grow with the corpus. Those are reduced where they are stored
    (DuckDB over the shards' files in a run, store.shard_reader.ShardReader; numpy over in-memory
    tables in ``Analysis.run``, analyses.core.sharding.TableReader), with memory that does not grow
    with the number of shards. ``where`` keeps rows whose column equals a value or is in a list."""

    def __call__(self, table: str, columns: Sequence[str] | None = None, where: dict | None = None) -> Any: ...

    def quantiles(self, table: str, value: str, by: Sequence[str], quantiles: Mapping[str, float],
                  where: dict | None = None) -> Any:
        """Per distinct ``by`` (ascending) as Arrow: the ``by`` columns, n (int64), mean and each named
        quantile (float64) of ``value`` as float64; quantiles exact, as numpy.quantile ('linear') bit
        for bit; mean within about 1e-16 of numpy's. None when no shard stored the table."""
        ...

    def lowest(self, table: str, value: str, n: int, columns: Sequence[str], distinct: Sequence[str] = (),
               rows_per_key: int = 1, where: dict | None = None) -> Any:
        """The n rows with the lowest ``value`` (ascending, ties in stored order) as Arrow with
        ``columns``; with ``distinct``, only each key's first row in that order counts (at most
        ``rows_per_key`` rows per key). None when no shard stored the table."""
        ...

    def count_distinct(self, table: str, columns: Sequence[str], where: dict | None = None) -> int:
        """How many distinct tuples of ``columns`` the stored rows hold."""
        ...


class Analysis:
    """The one analysis contract: subclass it, set ``Params`` and ``spec``, write ``compute``.

    Every method but ``compute`` has a default, so a one-shard analysis is a ``check`` (optional)
    and a ``compute``. Instances hold no run state: one instance serves every run.
    """

    Params: ClassVar[type]
    spec: ClassVar[AnalysisSpec]
    invariant_checks: ClassVar[tuple[Invariant, ...]] = ()
    """The exact invariants ``invariants`` checks, for the docs (names and tolerances as recorded)."""
    sharded: ClassVar[bool] = False
    """Capability: compute() on any subset of the inputs (given the run-level state) gives exactly the
    rows of those inputs, so a run over a corpus is split into shards of documents. An analysis that
    aggregates over its inputs is sharded too when each shard stores partial aggregates (sums and
    counts, or per-input rows) that ``finalize`` merges (analyses.core.aggregates)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in ("Params", "spec") if not hasattr(cls, name)]
        if missing:
            raise TypeError(f"analysis {cls.__qualname__} has no {', '.join(missing)}")
        if not isinstance(cls.spec, AnalysisSpec):
            raise TypeError(f"analysis {cls.__qualname__}: spec must be an AnalysisSpec, not {type(cls.spec).__name__}")
        if not dataclasses.is_dataclass(cls.Params):
            raise TypeError(f"analysis {cls.__qualname__}: Params must be a dataclass")

    @property
    def name(self) -> str:
        return self.spec.name

    def check(self, model: Any, inputs: list[Input], params: Any) -> None:
        """Raise BadInput for anything wrong with these inputs and parameters on this model."""

    def prepare(self, model: Any, inputs: list[Input], params: Any, progress: Progress, cancel: CancelEvent) -> Any:
        """The run-level state every shard needs (plain arrays and numbers), or None."""
        return None

    def shards(self, inputs: Sequence[Input], shard_docs: int) -> list[list[int]]:
        """Input ids per shard, in input order: one shard unless the analysis is ``sharded``."""
        ids = [item.input_id for item in inputs]
        if not self.sharded or not ids:
            return [ids]
        size = max(1, shard_docs)
        return [ids[start : start + size] for start in range(0, len(ids), size)]

    def compute(self, model: Any, inputs: list[Input], params: Any, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        """One shard's tables."""
        raise NotImplementedError(f"{type(self).__qualname__}.compute")

    def finalize(self, params: Any, state: Any, read: Reader, progress: Progress, cancel: CancelEvent) -> Result:
        """Tables computed from every stored shard (read them with ``read``); none by default."""
        return Result({}, None, {})

    def invariants(self, params: Any, read: Reader, notes: dict) -> list[tuple]:
        """Exact checks on the stored numbers (``read``) and on figures the shards noted while they
        ran (``notes``, merged over every shard): (name, value, tolerance, ok, detail) rows added to
        the run's fidelity record; ok None means skipped."""
        return []

    def run(self, model: Any, inputs: Sequence[Input], params: Any = None, progress: Progress | None = None,
            cancel: CancelEvent | None = None) -> Result:
        """The whole run in memory, as one shard, without a store: prepare, compute, finalize."""
        from analyses.core.sharding import table_reader

        params = self.Params() if params is None else params
        progress = progress or no_progress
        cancel = cancel or _NeverCancelled()
        items = list(inputs)
        state = self.prepare(model, items, params, progress, cancel)
        shard = self.compute(model, items, params, state, progress, cancel)
        stored = dict(shard.tables)
        stored["tokens"] = shard.tokens
        final = self.finalize(params, state, table_reader(stored), progress, cancel)
        return Result(tables={**shard.tables, **final.tables}, tokens=shard.tokens, notes={**shard.notes, **final.notes})

    def __repr__(self) -> str:
        return f"<analysis {self.spec.name} ({type(self).__module__}.{type(self).__qualname__})>"


class _NeverCancelled:
    def is_set(self) -> bool:
        return False
