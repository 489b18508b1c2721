"""`iwb sweep`: a run's shards computed on Ray actors, one warm model per actor (per GPU).

This process alone writes the store: it starts the run row, hands each actor the run-level
prepare step or a shard (inputs + parameters + run state), receives each shard's Arrow tables,
writes them to the run's folder and registers them, exactly as an inline run does (app.run.runner.drive);
a shard whose actor died is sent again (app.run.ray_pool), and `iwb resume RUN_ID --ray ...` computes
only the missing shards of an interrupted sweep.

Nothing is stored before the request has passed every check an inline run makes before its run row:
first here, on the model's config and tokenizer (no weights: layer ranges, context lengths,
tokenization), then on the first actor with its loaded model (the checks that need the weights);
only then is the run row written, and the same warm actors compute the shards.
"""
from __future__ import annotations

import threading
from typing import Any

from analyses.core.contract import Result, no_progress
from analyses.core.errors import BadInput
from app.run.ray_pool import ActorPool, PoolOptions
from app.run.runner import NEEDED, Prepared, check_context, check_with_model, fidelity_rows, provenance

PREPARE = -1
CHECK = -2


def actor_init(model_name: str, device: str, dtype: str) -> dict:
    """Runs once in each actor: load the model and keep it warm."""
    from analyses.inputs.corpus import DocumentReader
    from analyses.model.loading import load_model

    # The reader keeps its place in a corpus: the shards an actor gets come in corpus order.
    return {"model": load_model(model_name, device=device, dtype=dtype), "reader": DocumentReader()}


def actor_work(state: dict, payload: tuple) -> dict:
    """One unit on an actor: ("check", analysis name, params, inputs), ("prepare", ...) or ("shard", ..., run state),
    then, on the unit asked to, the run's fidelity record made with the actor's model on the run's
    first input (one Prepared of that input)."""
    from analyses.core.registry import get_analysis
    from analyses.inputs.corpus import with_texts

    kind, analysis, params, inputs = payload[:4]
    chosen, model = get_analysis(analysis), state["model"]
    never = threading.Event()
    # Reference inputs (a corpus sample stored without texts) are read here, from the corpus: a shard's
    # texts at once, the whole run's (check, prepare) streamed as they are reached.
    if kind == "shard":
        inputs = state["reader"].fill(inputs)
    info = {"model": model.name, "device": model.device, "dtype": model.dtype, "provenance": provenance(model, params, {})}
    if kind == "check":
        # The whole request, once, before the run row (sweep, sweep_resume). Not again per shard: an
        # analysis' check may be about all its inputs (fact-lookup: enough entities per value for the folds).
        check_with_model(model, Prepared(chosen, params, tuple(inputs)))
        return info
    if len(payload) > 5:  # (the run's first input,) or () for a run without inputs
        info["checks"] = fidelity_rows(model, Prepared(chosen, params, tuple(payload[5])))
    if kind == "prepare":
        return {**info, "state": chosen.prepare(model, with_texts(inputs), params, no_progress, never)}
    return {**info, "result": chosen.compute(model, inputs, params, payload[4], no_progress, never)}


class RayCompute:
    """The compute backend of app.run.runner.drive on a pool of Ray actors."""

    def __init__(self, options: PoolOptions, model_name: str, device: str, dtype: str, on_event: Any = None,
                 pool: ActorPool | None = None) -> None:
        self.options, self.model_name, self.device, self.dtype = options, model_name, device, dtype
        self.pool = pool
        self.on_event = on_event or (lambda text: None)
        self.info: dict = {}
        self.actors_seen: set[str] = set()
        self.per_actor: dict[int, int] = {}  # shards computed by each actor, for the progress line
        self.checks: list[tuple] = []

    def run(self, prepared: Prepared, state: Any, todo: list, progress: Any, progress_of: Any, cancel: Any,
            on_state: Any, on_done: Any) -> None:
        name = prepared.analysis.spec.name
        current = [state]

        # The first unit sent also makes the run's fidelity record on the actor, with the run's first input.
        check_input = tuple(prepared.inputs[:1])

        def shard_payloads() -> list[tuple[int, tuple]]:
            payloads = [(index, ("shard", name, prepared.params, list(inputs), current[0])) for index, inputs in todo]
            if payloads and state is not NEEDED:
                index, payload = payloads[0]
                payloads[0] = (index, (*payload, check_input))
            return payloads

        def on_result(key: int, value: dict) -> list | None:
            self.info = {k: value[k] for k in ("model", "device", "dtype", "provenance")}
            self.checks.extend(value.get("checks") or [])
            if key == PREPARE:
                current[0] = value["state"]
                on_state(current[0])
                return shard_payloads()
            result: Result = value["result"]
            on_done(key, result)
            return None

        payloads = [(PREPARE, ("prepare", name, prepared.params, list(prepared.inputs), None, check_input))] if state is NEEDED else shard_payloads()
        if state is NEEDED:
            progress(0, 1, "preparing on an actor")
        if self.pool is not None:
            self.pool.run(payloads, on_result, self.count_unit)
            return
        with ActorPool(self.options, actor_init, (self.model_name, self.device, self.dtype), actor_work, self.on_event, cancel) as pool:
            pool.run(payloads, on_result, self.count_unit)

    def count_unit(self, actor: int, key: int) -> None:
        if key >= 0:
            self.per_actor[actor] = self.per_actor.get(actor, 0) + 1

    def progress_note(self) -> str:
        """Per-actor progress for drive's progress line: "actor 0: 3 shards, actor 1: 2 shards"."""
        return ", ".join(f"actor {actor}: {count} shard{'s' if count != 1 else ''}" for actor, count in sorted(self.per_actor.items()))

    def placement(self) -> dict:
        """Where the shards ran, for the runs row (known once an actor has answered)."""
        return {key: self.info[key] for key in ("device", "dtype") if key in self.info}

    def provenance(self, params: Any, notes: dict) -> dict:
        base = dict(self.info.get("provenance") or {})
        return {**base, **notes, "executor": {"kind": "ray", "address": self.options.address, "actors": self.options.actors}}


def check_on_config(model_name: str, prepared: Prepared) -> bool:
    """The request's checks that the model's config and tokenizer can answer, before any actor starts:
    BadInput for a bad parameter or input; False when a check needs the weights (the first actor
    makes it, still before the run row), True when every check ran here."""
    from analyses.model.config_only import config_model

    model = config_model(model_name)
    if model is None:
        return False
    try:
        check_context(model, prepared)
        prepared.analysis.check(model, list(prepared.inputs), prepared.params)
    except BadInput:
        raise
    except Exception:  # the check reached for the weights or the bridge, which are not loaded here
        return False
    return True


def _check_on_actor(pool: ActorPool, prepared: Prepared) -> None:
    """Every check of an inline run (check_with_model), on an actor's loaded model; raises what it raises."""
    payload = ("check", prepared.analysis.spec.name, prepared.params, list(prepared.inputs))
    pool.run([(CHECK, payload)], lambda key, value: None)


def sweep(store: Any, prepared: Prepared, options: PoolOptions, model_name: str, device: str, dtype: str,
          shard_docs: int | None, progress: Any, on_event: Any = None, cancel: Any = None, on_begin: Any = None) -> int:
    """A new run computed on Ray; returns its id (raises ResultsPending like an inline run). Nothing
    is stored until the request has passed its checks (here on the config, then on an actor)."""
    from app.run.ray_pool import check_address
    from app.run.runner import begin, drive

    check_address(options.address.strip())  # a bad or unreachable address stores nothing
    check_on_config(model_name, prepared)
    cancel = cancel or threading.Event()
    progress(0, 1, "checking the request on an actor")
    with ActorPool(options, actor_init, (model_name, device, dtype), actor_work, on_event, cancel) as pool:
        _check_on_actor(pool, prepared)
        compute = RayCompute(options, model_name, device, dtype, on_event, pool=pool)
        writer = begin(store, model_name, f"ray ({options.address})", dtype, {"executor": "ray"}, prepared, shard_docs, on_begin)
        drive(writer, prepared, compute, progress, cancel)
    return writer.run_id


def sweep_resume(store: Any, run_id: int, options: PoolOptions, device: str, dtype: str, progress: Any,
                 on_event: Any = None, cancel: Any = None, prepared: Prepared | None = None) -> int:
    """Finish a stored run on Ray: only its missing shards (the run is claimed again only once an
    actor has checked the request)."""
    from app.run.ray_pool import check_address
    from app.run.runner import drive, resumable
    from store.runs import RunWriter

    check_address(options.address.strip())
    prepared = prepared or resumable(store, run_id)
    row = store.run_row(run_id)
    cancel = cancel or threading.Event()
    with ActorPool(options, actor_init, (row["model"], device, dtype), actor_work, on_event, cancel) as pool:
        _check_on_actor(pool, prepared)
        writer = RunWriter.reopen(store, run_id)
        compute = RayCompute(options, row["model"], device, dtype, on_event, pool=pool)
        drive(writer, prepared, compute, progress, cancel)
    return run_id
