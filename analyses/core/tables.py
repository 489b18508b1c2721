"""Result-table helpers: the one Arrow builder of declared result tables, and the tokens table every run stores."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from analyses.core.contract import Input, ResultTable

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel


def tokens_table_of(sequences: Iterable[tuple[int, Sequence[int], Sequence[str]]]) -> Any:
    """The run's tokens table (input_id, pos, token_id, token) from (input_id, ids, token strings)."""
    import pyarrow as pa

    rows: dict[str, list] = {"input_id": [], "pos": [], "token_id": [], "token": []}
    for input_id, ids, strings in sequences:
        rows["input_id"].extend([input_id] * len(ids))
        rows["pos"].extend(range(len(ids)))
        rows["token_id"].extend(ids)
        rows["token"].extend(strings)
    types = {"input_id": pa.int32(), "pos": pa.int32(), "token_id": pa.int32(), "token": pa.string()}
    return pa.table({name: pa.array(values, type=types[name]) for name, values in rows.items()})


def tokens_table(model: LoadedModel, inputs: list[Input], token_rows: list) -> Any:
    """The tokens table for these inputs and their token tensors, decoded token by token."""
    sequences = []
    for item, tokens in zip(inputs, token_rows):
        ids = tokens.reshape(-1).tolist()
        sequences.append((item.input_id, ids, model.token_strings(ids)))
    return tokens_table_of(sequences)




ARROW_TYPES = {"INTEGER": "int32", "BIGINT": "int64", "DOUBLE": "float64", "FLOAT": "float32", "VARCHAR": "string", "BOOLEAN": "bool_"}


def arrow_table(table: ResultTable, columns: Mapping[str, Any], nan_is_null: bool = False) -> Any:
    """The one builder of result tables: an Arrow table of a declared ResultTable from its columns
    (lists or numpy arrays), typed and ordered as the declaration says. None is null; NaN stays NaN
    unless ``nan_is_null``."""
    import pyarrow as pa

    declared = [name for name, _ in table.columns]
    missing = [name for name in declared if name not in columns]
    extra = [name for name in columns if name not in declared]
    if missing or extra:
        raise ValueError(f"table {table.name}: columns missing {missing}, undeclared {extra}")
    arrays = {}
    for name, kind in table.columns:
        values = columns[name]
        values = values.tolist() if hasattr(values, "tolist") else list(values)
        arrays[name] = pa.array(values, type=getattr(pa, ARROW_TYPES[kind])(), from_pandas=nan_is_null)
    return pa.table(arrays)
