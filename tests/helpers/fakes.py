"""A fake worker host for Pilot and CLI tests where the model is not the point, and synthetic stored runs.

The fake speaks the same protocol as app.run.worker_host.WorkerHost and stores real rows through the
real Store (a run shaped like a logit-lens run, with made-up numbers), so every screen reads
what it would read after a real run.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from app.run.worker import Finished, JobCancelled, JobProgress, ModelChoice, ModelStatus, Started, Submitted

TOKENS = ["<|endoftext|>", "The", " E", "iff", "el", " Tower", " is", " located", " in", " the", " city", " of"]
N_LAYERS = 4
FIXED_TIME = "2026-01-02 03:04:05"


def seed_lens_run(store: Any, prompt: str = "The Eiffel Tower is located in the city of", status: str = "done", n_layers: int = N_LAYERS,
                  tokens: list[str] | None = None) -> int:
    """A stored logit-lens-shaped run with deterministic values (no model involved), over TOKENS
    unless other ``tokens`` are given (e.g. a long prompt)."""
    words = tokens or TOKENS
    import pyarrow as pa

    from analyses.logit_lens import SPEC

    run_id = store.begin_run("logit-lens", "fake-model", {"target": " Paris", "prepend_bos": True}, "cpu", "float32", {"fake": True})
    if status != "done":
        store.end_run(run_id, status, "the worker process died (killed by signal SIGKILL) while running logit-lens")
    else:
        positions, rows = len(words), n_layers + 1
        cells = [(layer, pos) for layer in range(rows) for pos in range(positions)]
        table = pa.table({
            "input_id": pa.array([0] * len(cells), pa.int32()),
            "layer": pa.array([c[0] for c in cells], pa.int32()),
            "pos": pa.array([c[1] for c in cells], pa.int32()),
            "entropy_bits": [10.0 - 2.0 * layer + 0.1 * pos for layer, pos in cells],
            "kl_to_final": [float(rows - 1 - layer) for layer, pos in cells],
            "top_token_id": pa.array([pos for layer, pos in cells], pa.int32()),
            "top_token": [words[(pos + 1) % positions] for layer, pos in cells],
            "top_prob": [round((layer + 1) / rows * (0.5 + 0.5 * math.sin(pos) ** 2), 6) for layer, pos in cells],
            "target_prob": [layer / (rows - 1) * 0.8 if pos == positions - 1 else 0.0 for layer, pos in cells],
        })
        token_table = pa.table({"input_id": pa.array([0] * positions, pa.int32()), "pos": pa.array(range(positions), pa.int32()),
                                "token_id": pa.array(range(positions), pa.int32()), "token": words})
        inputs = pa.table({"input_id": pa.array([0], pa.int32()), "source": ["prompt"], "text": [prompt], "meta": ["{}"]})
        store.finish_run(run_id, inputs, token_table, {"logit_lens": (SPEC.tables[0].columns, table)})
    with store.write() as conn:
        conn.execute("UPDATE runs SET created_at = ?::TIMESTAMP, finished_at = ?::TIMESTAMP + INTERVAL 2 SECOND WHERE run_id = ?", [FIXED_TIME, FIXED_TIME, run_id])
        # the History's compute column is measured from run_events: fixed too, or a slow machine shows 0.1 s
        conn.execute("UPDATE run_events SET happened_at = CASE WHEN event = 'started' THEN ?::TIMESTAMP ELSE ?::TIMESTAMP + INTERVAL 2 SECOND END "
                     "WHERE run_id = ?", [FIXED_TIME, FIXED_TIME, run_id])
    return run_id


class FakeHost:
    """Answers each job with Submitted, Started, JobProgress x3, Finished over a seeded run.

    ``hold=True`` keeps a job running (after Started and one JobProgress) until cancel() or release().
    """

    def __init__(self, store: Any, on_event: Callable, model: ModelChoice, hold: bool = False) -> None:
        self.store, self.on_event, self.model, self.hold = store, on_event, model, hold
        self.jobs: list[tuple] = []
        self.sweeps: list[Any] = []
        self.sweep: Any = None  # every job's sweep settings when set, as WorkerHost.sweep
        self.cancelled: list[int] = []
        self.held: tuple[int, int] | None = None
        self.closed = False

    def start(self, warm: bool = True) -> None:
        self.on_event(ModelStatus(self.model.name, "ready", "cpu", "float32", N_LAYERS, "fake"))

    def submit(self, analysis: str, inputs: Any, raw_params: dict, sweep: Any = None) -> int:
        """inputs: Inputs, or a corpus choice (the worker samples it); sweep: the job's Ray settings, if any."""
        job_id = len(self.jobs) + 1
        self.jobs.append((analysis, inputs, raw_params))
        self.sweeps.append(sweep if sweep is not None else self.sweep)
        self.on_event(Submitted(job_id, analysis))
        run_id = seed_lens_run(self.store, inputs[0].text if isinstance(inputs, tuple) else "a corpus document")
        self.on_event(Started(job_id, run_id, analysis, self.model.name))
        self.on_event(JobProgress(job_id, 0, 3, "input 1/1: forward pass"))
        if self.hold:
            self.held = (job_id, run_id)
            return job_id
        self.on_event(JobProgress(job_id, 1, 3, "layer stack"))
        self.on_event(JobProgress(job_id, 2, 3, "statistics"))
        self.on_event(JobProgress(job_id, 3, 3, "done"))
        self.on_event(Finished(job_id, run_id, {"logit_lens": 60}, 1.5))
        return job_id

    def release(self) -> None:
        if self.held is not None:
            job_id, run_id = self.held
            self.held = None
            self.on_event(Finished(job_id, run_id, {"logit_lens": 60}, 1.5))

    def cancel(self, job_id: int | None = None) -> None:
        if self.held is not None:
            held_job, run_id = self.held
            self.held = None
            self.cancelled.append(held_job)
            self.on_event(JobCancelled(held_job, run_id, "cancelled by the user"))

    def set_model(self, model: ModelChoice) -> None:
        self.model = model
        self.on_event(ModelStatus(model.name, "ready", "cpu", "float32", N_LAYERS, "fake"))

    def close(self) -> None:
        self.closed = True


def seed_spec_run(store: Any, analysis: str, rows: dict[str, dict[str, list]]) -> int:
    """A stored run of any analysis with the given columns of the given tables (other columns of
    those tables: 0, 0.0 or NULL; other tables: empty), made up, no model involved."""
    import pyarrow as pa

    from analyses.core.registry import get_analysis

    arrow = {"INTEGER": pa.int32(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "VARCHAR": pa.string(), "BOOLEAN": pa.bool_(),
             "FLOAT[]": pa.list_(pa.float32())}
    tables = {}
    for table in get_analysis(analysis).spec.tables:
        given = rows.get(table.name, {})
        count = len(next(iter(given.values()))) if given else 0
        values = {}
        for name, kind in table.columns:
            default = 0 if kind in ("INTEGER", "BIGINT") else 0.0 if kind == "DOUBLE" else None
            values[name] = pa.array(given.get(name, [default] * count), arrow[kind])
        tables[table.name] = (table.columns, pa.table(values))
    run_id = store.begin_run(analysis, "fake-model", {}, "cpu", "float32", {"fake": True})
    tokens = pa.table({"input_id": pa.array([0], pa.int32()), "pos": pa.array([0], pa.int32()), "token_id": pa.array([0], pa.int32()), "token": ["x"]})
    inputs = pa.table({"input_id": pa.array([0], pa.int32()), "source": ["prompt"], "text": ["x"], "meta": ["{}"]})
    store.finish_run(run_id, inputs, tokens, tables)
    with store.write() as conn:
        conn.execute("UPDATE runs SET created_at = ?::TIMESTAMP WHERE run_id = ?", [FIXED_TIME, run_id])
    return run_id
