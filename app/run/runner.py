"""Run one analysis on a loaded model and store it: the path shared by the CLI and the worker.

Everything a user can get wrong is checked before the runs row is written, so bad input
leaves the database untouched; a failure after that is stored as a failed run.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from analyses.core.contract import Analysis, Input, Progress, Result, check_cancel
from analyses.core.errors import BadInput, Cancelled
from analyses.core.params import check_params, params_to_dict, parse_params
from analyses.core.registry import get_analysis
from analyses.inputs.corpus import DocumentReader, check_sources, with_texts
from store import Store
from store.runs import RunWriter
from store.shards import PARTIAL


@dataclass(frozen=True)
class RunRequest:
    analysis: str
    inputs: tuple[Input, ...]
    raw_params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    analysis: Analysis
    params: Any
    inputs: tuple[Input, ...]


def prepare(request: RunRequest) -> Prepared:
    """Check the analysis name, parameters and input kinds; no model needed, no torch imported."""
    analysis = get_analysis(request.analysis)
    params = parse_params(analysis.Params, request.raw_params)
    kinds_taken = analysis.spec.input_kinds
    if not request.inputs and "weights" not in kinds_taken:
        raise BadInput("no inputs to analyse")
    kinds = {item.source for item in request.inputs}
    refused = kinds - set(kinds_taken)
    if refused:
        raise BadInput(f"analysis {request.analysis!r} does not take {', '.join(sorted(refused))} inputs; it takes {', '.join(kinds_taken)}")
    return Prepared(analysis, params, request.inputs)


def check_context(model, prepared: Prepared) -> None:
    """BadInput when a typed input (BOS included) is longer than the model's context; needs only the
    tokenizer and n_ctx, so a sweep's driver makes it on the model's config (app.run.sweep)."""
    setting = getattr(prepared.params, "prepend_bos", "auto")
    bos = 1 if isinstance(setting, str) and model.bos(setting).prepend else 0
    for item in prepared.inputs:
        if item.source == "pile":
            continue
        n_tokens = len(model.tokenizer.encode(item.text, add_special_tokens=False)) + bos
        if n_tokens > model.n_ctx:
            raise BadInput(f"input {item.input_id} is {n_tokens} tokens; {model.name}'s context is {model.n_ctx}")


def check_with_model(model, prepared: Prepared) -> None:
    """Checks that need the model: a supported family, context length, the analysis' own check()."""
    from analyses.model.adapters import adapter_for

    adapter_for(model)
    check_context(model, prepared)
    # Reference inputs (a corpus sample stored without its texts) are read from their corpora as the check reaches them.
    prepared.analysis.check(model, with_texts(prepared.inputs), prepared.params)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def provenance(model, params: Any, notes: dict) -> dict:
    import torch

    from analyses.model.fidelity import library_versions
    from app import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformer_lens": _version("transformer-lens"),
        "transformers": _version("transformers"),
        "iwb": __version__,
        "libraries": library_versions(),  # every library the numbers depend on, from its installed distribution
        **model.provenance(),
        "seed": getattr(params, "seed", None),
        **notes,
    }


def inputs_table(inputs: tuple[Input, ...]) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "input_id": pa.array([item.input_id for item in inputs], type=pa.int32()),
            "source": pa.array([item.source for item in inputs], type=pa.string()),
            "text": pa.array([item.text for item in inputs], type=pa.string()),
            "meta": pa.array([json.dumps(item.meta) for item in inputs], type=pa.string()),
        }
    )


DEFAULT_SHARD_DOCS = 16
NEEDED = object()  # the run-level state is not on disk yet


def shard_plan(analysis: Analysis, inputs: tuple[Input, ...], shard_docs: int | None) -> list[list[int]]:
    """Input ids per shard, in input order (the analysis' own plan)."""
    return analysis.shards(inputs, shard_docs or DEFAULT_SHARD_DOCS)


class InlineCompute:
    """Shards computed one after the other in this process, on a loaded model."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def run(self, prepared: Prepared, state: Any, todo: list, progress: Progress, progress_of: Any, cancel: Any,
            on_state: Any, on_done: Any) -> None:
        """Compute the run-level state when it is NEEDED (handing it to on_state), then each shard
        of todo [(index, inputs)] (handing its Result to on_done)."""
        if state is NEEDED:
            state = prepared.analysis.prepare(self.model, with_texts(prepared.inputs), prepared.params, progress, cancel)
            on_state(state)
        reader = DocumentReader()  # one forward pass over a corpus for the shards of a run, in order
        try:
            for index, shard_inputs in todo:
                check_cancel(cancel)
                inputs = reader.fill(shard_inputs)  # a reference input's text, read when its shard needs it
                try:
                    result = prepared.analysis.compute(self.model, inputs, prepared.params, state, progress_of(index), cancel)
                except Cancelled as stop:
                    stop.shard = index  # drive keeps stop.partial (the shard so far) apart from the computed shards
                    raise
                on_done(index, result)
        finally:
            reader.close()

    def provenance(self, params: Any, notes: dict) -> dict:
        return provenance(self.model, params, notes)


def begin(store: Store, model_name: str, device: str, dtype: str, base_provenance: dict, prepared: Prepared, shard_docs: int | None,
          on_begin: Any = None) -> RunWriter:
    """The runs row (with the inputs) and the run's shard folder with its manifest."""
    spec = prepared.analysis.spec
    params = params_to_dict(prepared.params)
    # The folder's identity: the runs row holds the same id, so a folder from another database
    # at this path (deleted, replaced) is never taken for this run's.
    identity = {
        "folder_id": uuid.uuid4().hex,
        "model_revision": base_provenance.get("model_revision"),
        "params_sha256": _digest(params),
        "inputs_sha256": _digest([[item.input_id, item.source, item.text, item.meta] for item in prepared.inputs]),
        "shard_docs": shard_docs or DEFAULT_SHARD_DOCS,
    }
    return RunWriter.begin(
        store, analysis=spec.name, model=model_name, params=params, device=device, dtype=dtype, provenance=base_provenance,
        inputs=inputs_table(prepared.inputs), plan=shard_plan(prepared.analysis, prepared.inputs, shard_docs), identity=identity,
        tables={table.name: [list(pair) for pair in table.columns] for table in spec.tables}, on_begin=on_begin,
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def execute(store: Store, model, prepared: Prepared, progress: Progress, cancel: threading.Event | None = None,
            shard_docs: int | None = None, on_begin: Any = None) -> int:
    """Store a running row, compute the run shard by shard (each on disk, then registered), mark
    it done; return the run id. Cancelled and failed runs keep their completed shards.
    ``on_begin(run_id)`` is called as soon as the runs row exists."""
    check_with_model(model, prepared)
    writer = begin(store, model.name, model.device, model.dtype, provenance(model, prepared.params, {}), prepared, shard_docs, on_begin)
    record_fidelity(writer, model, prepared)
    drive(writer, prepared, InlineCompute(model), progress, cancel or threading.Event())
    return writer.run_id


def record_invariants(writer: RunWriter, prepared: Prepared, notes: dict) -> None:
    """An analysis' exact invariants (``Analysis.invariants``), checked on the stored numbers and the
    shards' notes once every shard is on disk, added to the run's fidelity record."""
    checks = prepared.analysis.invariants(prepared.params, writer.read, notes)
    if checks:
        writer.add_checks(checks)


def fidelity_rows(model: Any, prepared: Prepared) -> list[tuple]:
    """The run's fidelity record (analyses.model.fidelity) on its first input, as run_checks rows."""
    from analyses.model.fidelity import model_checks

    first = with_texts(prepared.inputs[:1])[0].text if prepared.inputs else None
    setting = getattr(prepared.params, "prepend_bos", "auto")
    checks = model_checks(model, first, setting if isinstance(setting, str) else "auto")
    return [(c.name, c.value, c.tolerance, c.ok, c.detail) for c in checks]


def record_fidelity(writer: RunWriter, model: Any, prepared: Prepared) -> None:
    """Through the run folder, like a shard: registered with the first shard, and a lock only delays it."""
    writer.add_checks(fidelity_rows(model, prepared))


def drive(writer: RunWriter, prepared: Prepared, compute: Any, progress: Progress, cancel: Any) -> None:
    """Compute the shards of a run that are not on disk yet, then its final tables, and register
    everything. Raises store.errors.ResultsPending when only the registration is left."""
    plan = writer.plan
    by_id = {item.input_id: item for item in prepared.inputs}
    n_shards = writer.n_shards
    total = max(1, len(prepared.inputs))
    done_inputs = [sum(len(plan[i]) for i in range(n_shards) if writer.has_shard(i))]

    def progress_of(index: int) -> Progress:
        if n_shards == 1:
            return progress
        size = len(plan[index])

        def report(done: int, shard_total: int, note: str = "") -> None:
            part = int(size * done / shard_total) if shard_total else 0
            progress(min(total - 1, done_inputs[0] + part), total, f"shard {index + 1}/{n_shards}: {note}".rstrip(": "))

        return report

    def on_done(index: int, result: Result) -> None:
        tables = dict(result.tables)
        tables["tokens"] = result.tokens
        writer.write_shard(index, tables, result.notes)
        done_inputs[0] += len(plan[index])
        if n_shards > 1:
            per_actor = getattr(compute, "progress_note", lambda: "")()  # a Ray backend: shards per actor
            progress(min(total, done_inputs[0]), total, f"shard {index + 1}/{n_shards} stored" + (f"; {per_actor}" if per_actor else ""))
            writer.register_partial()  # shows partial results; a locked database only delays this

    saved = writer.load_state() if writer.has_state() else None
    states: list = [saved if saved is not None else NEEDED]

    def on_state(state: Any) -> None:
        if state is not None:  # an analysis without run-level state gets None again, for free
            writer.save_state(state)
        states[0] = state

    try:
        todo = [(i, [by_id[input_id] for input_id in plan[i]]) for i in writer.missing_shards()]
        # Every backend computes the state first when it is NEEDED and hands it to on_state.
        compute.run(prepared, states[0], todo, lambda d, t, note="": progress(0, total, f"preparing: {note}"), progress_of, cancel, on_state, on_done)
        # A backend whose model lives elsewhere (Ray actors) hands back the fidelity record it made there.
        remote_checks = getattr(compute, "checks", None)
        if remote_checks and not writer.has_model_checks():
            writer.add_checks(remote_checks)
        finalizing = not writer.has_final()
        if finalizing:
            final = prepared.analysis.finalize(prepared.params, states[0], writer.read, progress, cancel)
            writer.write_final(dict(final.tables), final.notes)
        notes = writer.notes()  # every shard's notes, read once for the invariants and the provenance
        if finalizing:
            record_invariants(writer, prepared, dict(notes))
        notes["shards"] = {"n_shards": n_shards, "docs_per_shard": writer.manifest.get("shard_docs")}
        placement = getattr(compute, "placement", dict)()
        writer.complete(compute.provenance(prepared.params, notes), placement)
    except (Cancelled, KeyboardInterrupt) as stop:
        kept = keep_partial(writer, stop)
        writer.stop("cancelled", "cancelled by the user" + (f"; {kept}" if kept else ""))
        raise
    except BaseException as error:
        cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        writer.stop("failed", cause + "\n" + traceback.format_exc(limit=8))
        raise
    progress(total, total, "registering results")
    writer.register()


def keep_partial(writer: RunWriter, stop: BaseException) -> str:
    """Write what a cancelled analysis made of its shard (Cancelled.partial, a Result) as the run's
    partial shard; what it kept in words ('' when nothing)."""
    partial, index = getattr(stop, "partial", None), getattr(stop, "shard", None)
    if not isinstance(partial, Result) or index is None:
        return ""
    tables = dict(partial.tables)
    tables["tokens"] = partial.tokens
    # Shard PARTIAL: registered with the stopped run so its rows can be read, never counted as shard
    # ``index`` (which stays missing, so a resume computes it whole; reopening the run drops PARTIAL).
    writer.write_shard(PARTIAL, tables, {**partial.notes, "partial_of": index})
    return str(partial.notes.get("partial", f"shard {index + 1} kept in part"))


def resumable(store: Store, run_id: int) -> Prepared:
    """What an interrupted, failed or cancelled run ran on (model, params, inputs), to finish it."""
    row = store.run_row(run_id)
    if row is None:
        raise BadInput(f"run {run_id} does not exist in {store.path}")
    if row["status"] == "done":
        raise BadInput(f"run {run_id} is done; there is nothing to resume")
    if row["status"] == "running":
        raise BadInput(f"run {run_id} is still running (process {row.get('pid')} on {row.get('host')})")
    folder = store.run_folder(run_id)
    if folder.manifest() is None:
        raise BadInput(f"run {run_id} has no shard folder ({folder.path}) to resume from; run it again")
    problem = store.run_folder_problem(run_id)
    if problem is not None:
        raise BadInput(f"run {run_id}: the folder {folder.path} is not this run's ({problem}); run the analysis again")
    prepared = stored_request(store, row)
    try:
        check_sources(prepared.inputs)  # a corpus that changed since the run is refused before anything is claimed
    except BadInput as error:
        raise BadInput(f"run {run_id}: {error}") from None
    return prepared


def stored_request(store: Store, row: dict) -> Prepared:
    """The analysis, parameters and inputs a stored run ran on (for resume and verify)."""
    from analyses.core.params import param_infos

    run_id = row["run_id"]
    analysis = get_analysis(row["analysis"])
    known = {info.name for info in param_infos(analysis.Params)}
    stored = json.loads(row["params"]) if row["params"] else {}
    params = analysis.Params(**{key: value for key, value in stored.items() if key in known})
    check_params(params)
    rows = store.run_inputs(run_id)
    inputs = tuple(Input(int(i), source, text, json.loads(meta) if meta else {}) for i, source, text, meta in rows)
    return Prepared(analysis, params, inputs)


def check_same_model(model: Any, row: dict) -> None:
    """A resumed run must use the model its shards were computed with."""
    stored = json.loads(row["provenance"]) if row.get("provenance") else {}
    mine = model.provenance()
    for key in ("model_name", "model_revision", "n_layers", "d_model"):
        if key in stored and stored[key] != mine.get(key):
            raise BadInput(f"run {row['run_id']} was computed with {key} {stored[key]!r}; this model has {mine.get(key)!r}")
    # A sweep records the dtype it was asked for; "auto" is what the loader resolves it to.
    recorded = "float32" if row.get("dtype") == "auto" else row.get("dtype")
    if recorded and recorded != model.dtype:
        raise BadInput(f"run {row['run_id']} was computed in {row['dtype']}; this model is loaded in {model.dtype} (use --dtype {row['dtype']})")


def resume(store: Store, model: Any, run_id: int, progress: Progress, cancel: threading.Event | None = None,
           prepared: Prepared | None = None) -> int:
    """Compute only the missing shards of a run and finish it with the same results an uninterrupted
    run gives; ``prepared`` is resumable(store, run_id) when the caller has it already."""
    prepared = prepared or resumable(store, run_id)
    check_same_model(model, store.run_row(run_id))
    check_with_model(model, prepared)
    drive(RunWriter.reopen(store, run_id), prepared, InlineCompute(model), progress, cancel or threading.Event())
    return run_id
