"""Run one analysis on a loaded model and store it: the path shared by the CLI and the worker.

Everything a user can get wrong is checked before the runs row is written, so bad input
leaves the database untouched; a failure after that is stored as a failed run.
"""
from __future__ import annotations

import platform
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

from analyses.core.contract import Input, Progress
from analyses.core.params import params_to_dict, parse_params
from analyses.core.registry import get_analysis
from analyses.core.errors import BadInput, Cancelled
from store import Store


@dataclass(frozen=True)
class RunRequest:
    analysis: str
    inputs: tuple[Input, ...]
    raw_params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    module: Any
    params: Any
    inputs: tuple[Input, ...]


def prepare(request: RunRequest) -> Prepared:
    """Check the analysis name, parameters and input kinds; no model needed, no torch imported."""
    module = get_analysis(request.analysis)
    params = parse_params(module.Params, request.raw_params)
    if not request.inputs and "weights" not in module.SPEC.input_kinds:
        raise BadInput("no inputs to analyse")
    kinds = {item.source for item in request.inputs}
    refused = kinds - set(module.SPEC.input_kinds)
    if refused:
        raise BadInput(f"analysis {request.analysis!r} does not take {', '.join(sorted(refused))} inputs; it takes {', '.join(module.SPEC.input_kinds)}")
    return Prepared(module, params, request.inputs)


def check_with_model(model, prepared: Prepared) -> None:
    """Checks that need the model: a supported family, context length, the analysis' own validate()."""
    from analyses.model.adapters import adapter_for

    adapter_for(model)
    setting = getattr(prepared.params, "prepend_bos", "auto")
    bos = 1 if isinstance(setting, str) and model.bos(setting).prepend else 0
    for item in prepared.inputs:
        if item.source == "pile":
            continue
        n_tokens = len(model.tokenizer.encode(item.text, add_special_tokens=False)) + bos
        if n_tokens > model.n_ctx:
            raise BadInput(f"input {item.input_id} is {n_tokens} tokens; {model.name}'s context is {model.n_ctx}")
    validate = getattr(prepared.module, "validate", None)
    if validate is not None:
        validate(model, list(prepared.inputs), prepared.params)


def provenance(model, params: Any, notes: dict) -> dict:
    import torch
    import transformer_lens

    from app import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformer_lens": getattr(transformer_lens, "__version__", "unknown"),
        "iwb": __version__,
        **model.provenance(),
        "seed": getattr(params, "seed", None),
        **notes,
    }


def inputs_table(inputs: tuple[Input, ...]) -> Any:
    import json

    import pyarrow as pa

    return pa.table(
        {
            "input_id": pa.array([item.input_id for item in inputs], type=pa.int32()),
            "source": pa.array([item.source for item in inputs], type=pa.string()),
            "text": pa.array([item.text for item in inputs], type=pa.string()),
            "meta": pa.array([json.dumps(item.meta) for item in inputs], type=pa.string()),
        }
    )


def execute(store: Store, model, prepared: Prepared, progress: Progress, cancel: threading.Event | None = None) -> int:
    """Store a running row, run the analysis, write its results atomically; return the run id.

    Cancelled and failed runs keep their runs row with the status and the cause.
    """
    check_with_model(model, prepared)
    cancel = cancel or threading.Event()
    spec = prepared.module.SPEC
    run_id = store.begin_run(
        spec.name, model.name, params_to_dict(prepared.params), model.device, model.dtype,
        provenance(model, prepared.params, {}), inputs=inputs_table(prepared.inputs),
    )
    try:
        result = prepared.module.run(model, list(prepared.inputs), prepared.params, progress, cancel)
        tables = {name: (spec.table(name).columns, table) for name, table in result.tables.items()}
        store.finish_run(run_id, None, result.tokens, tables, provenance(model, prepared.params, result.notes))
    except (Cancelled, KeyboardInterrupt):
        store.end_run(run_id, "cancelled", "cancelled by the user")
        raise
    except BaseException as error:
        cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        store.end_run(run_id, "failed", cause + "\n" + traceback.format_exc(limit=8))
        raise
    return run_id
