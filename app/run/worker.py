"""The background worker process and its typed message protocol.

The worker (spawned, never forked) owns torch and the model: it loads the model once, keeps it
warm and runs one job at a time through the session (``app.run.session.Session``). It talks to the host only through
the picklable frozen dataclasses below. The host side lives in ``app.run.worker_host``.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from analyses.core.contract import Input
from analyses.inputs.corpus import InputChoice


@dataclass(frozen=True)
class ModelChoice:
    name: str
    device: str = "auto"
    dtype: str = "auto"


@dataclass(frozen=True)
class SweepChoice:
    """Run a job as a sweep: its shards on Ray actors (address as `iwb sweep --ray`; actors None: Ray's default)."""

    address: str = "local"
    actors: int | None = None


@dataclass(frozen=True)
class Job:
    job_id: int
    analysis: str
    inputs: tuple[Input, ...]
    raw_params: dict = field(default_factory=dict)
    model: ModelChoice = ModelChoice("smollm2-135m")
    resume_run: int | None = None  # finish this interrupted, failed or cancelled run instead
    # A corpus sample travels as its reference (source, set, seed, count, sizes): the worker samples it
    # itself, so the documents' texts never cross the pipe (inputs is then empty).
    choice: InputChoice | None = None
    sweep: SweepChoice | None = None  # compute the shards on Ray actors; the worker writes the store


@dataclass(frozen=True)
class LoadModel:
    """Host -> worker: load (or switch to) a model now, before any job asks for it."""

    model: ModelChoice


@dataclass(frozen=True)
class Stop:
    """Host -> worker: finish and exit."""


@dataclass(frozen=True)
class Submitted:
    job_id: int
    analysis: str


@dataclass(frozen=True)
class Started:
    """The run's row exists: from here on the run has an id in the store."""

    job_id: int
    run_id: int
    analysis: str
    model: str


@dataclass(frozen=True)
class JobProgress:
    """Replaceable: only the latest one of a job matters."""

    job_id: int
    done: int
    total: int
    note: str = ""


@dataclass(frozen=True)
class Log:
    job_id: int | None
    level: str
    text: str


@dataclass(frozen=True)
class ModelStatus:
    """The worker's model: state is loading, ready or failed."""

    name: str
    state: str
    device: str = ""
    dtype: str = ""
    n_layers: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Finished:
    job_id: int
    run_id: int
    table_rows: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Failed:
    job_id: int
    run_id: int | None
    error_class: str
    message: str
    traceback: str = ""
    expected: bool = False
    title: str = ""  # the error tree's title for an expected failure ("Bad input", "Database busy")

    @property
    def heading(self) -> str:
        """What the TUI names the failure by: the tree's title, else (a bug) the class."""
        return self.title or self.error_class


@dataclass(frozen=True)
class JobCancelled:
    job_id: int
    run_id: int | None
    reason: str = "cancelled by the user"


@dataclass(frozen=True)
class Queued:
    """The waiting jobs' ids in the order they will run (after a job was moved in the queue)."""

    order: tuple[int, ...]


Event = Submitted | Started | JobProgress | Log | ModelStatus | Finished | Failed | JobCancelled | Queued
PROGRESS_INTERVAL_S = 0.05
WORKER_NICE = 10


def _silence(log_path: str | None) -> None:
    """Point the worker's stdout/stderr (file descriptors included) away from the TUI's screen."""
    target = os.open(log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)


class _WorkerLoop:
    def __init__(self, jobs: Any, events: Any, cancel: Any, db_path: str, lock_retry_s: float = 30.0) -> None:
        self.jobs, self.events, self.cancel = jobs, events, cancel
        self.db_path, self.lock_retry_s = db_path, lock_retry_s
        self._store: Any = None
        self.model = None
        self.model_choice: ModelChoice | None = None

    @property
    def store(self) -> Any:
        """Opened at the first job, so a database locked at start fails that job, not the worker."""
        if self._store is None:
            from store import Store

            self._store = Store(self.db_path, lock_retry_seconds=self.lock_retry_s)
        return self._store

    def ensure_model(self, choice: ModelChoice, job_id: int | None) -> Any:
        if self.model is not None and self.model_choice == choice:
            return self.model
        from analyses.model.loading import load_model

        self.model = None
        self.events.put(ModelStatus(choice.name, "loading"))
        self.events.put(Log(job_id, "info", f"loading model {choice.name}"))
        started = time.monotonic()
        try:
            model = load_model(choice.name, device=choice.device, dtype=choice.dtype)
        except Exception as error:
            self.model_choice = None
            self.events.put(ModelStatus(choice.name, "failed", detail=str(error)))
            raise
        self.model, self.model_choice = model, choice
        self.events.put(ModelStatus(choice.name, "ready", model.device, model.dtype, model.n_layers, f"loaded in {time.monotonic() - started:.1f} s"))
        return model

    def run_job(self, job: Job) -> None:
        from analyses.core.errors import Cancelled as CancelledError
        from analyses.core.errors import IwbError
        from app.run.session import Session

        started = time.monotonic()  # the host clears the cancel event before handing over a job
        run_ids: list[int] = []
        events, job_id = self.events, job.job_id

        def on_begin(run_id: int) -> None:
            run_ids.append(run_id)
            events.put(Started(job_id, run_id, job.analysis, job.model.name))

        last_sent = [0.0]

        def progress(done: int, total: int, note: str = "") -> None:
            now = time.monotonic()
            if now - last_sent[0] >= PROGRESS_INTERVAL_S or done >= total:
                last_sent[0] = now
                events.put(JobProgress(job_id, done, total, note))

        try:
            if job.resume_run is not None:
                run_id = self.resume_job(job, on_begin, progress)
            else:
                prepared = Session.prepare(job.analysis, self.job_inputs(job), job.raw_params)
                if job.sweep is not None:
                    run_id = self.sweep_job(job, prepared, on_begin, progress)
                else:
                    model = self.ensure_model(job.model, job_id)
                    run_id = Session(self.store).run(model, prepared, progress, self.cancel, on_begin=on_begin)
        except CancelledError as error:
            events.put(JobCancelled(job_id, run_ids[-1] if run_ids else None, str(error) or "cancelled by the user"))
            return
        except IwbError as error:
            events.put(Failed(job_id, run_ids[-1] if run_ids else None, type(error).__name__, str(error), "", expected=True, title=error.title))
            return
        except Exception as error:
            events.put(Failed(job_id, run_ids[-1] if run_ids else None, type(error).__name__, str(error), traceback.format_exc(limit=12)))
            return
        from analyses.core.registry import get_analysis

        events.put(Finished(job_id, run_id, self.count_rows(get_analysis(job.analysis).spec.tables, run_id), time.monotonic() - started))

    def sweep_job(self, job: Job, prepared: Any, on_begin: Any, progress: Any) -> int:
        """A new run whose shards the Ray actors compute (each loads the job's model); the actors' events
        go to the log, and each stored shard's progress line says how many shards every actor has done."""
        from app.run.ray_pool import PoolOptions
        from app.run.session import Session

        assert job.sweep is not None
        options = PoolOptions(address=job.sweep.address, actors=job.sweep.actors)

        def on_event(text: str) -> None:
            self.events.put(Log(job.job_id, "info", f"ray: {text}"))

        return Session(self.store).sweep(prepared, options, job.model.name, job.model.device, job.model.dtype, None, progress,
                                         on_event=on_event, cancel=self.cancel, on_begin=on_begin)

    @staticmethod
    def job_inputs(job: Job) -> tuple[Input, ...]:
        """The job's inputs: as sent, or sampled here from the corpus its choice names."""
        if job.choice is None:
            return job.inputs
        from analyses.core.registry import get_analysis
        from analyses.inputs.corpus import build_inputs

        return build_inputs(job.choice, tuple(get_analysis(job.analysis).spec.input_kinds))[0]

    def resume_job(self, job: Job, on_begin: Any, progress: Any) -> int:
        """Finish a stored run: its own model (device and dtype as chosen now), only its missing shards."""
        from app.run.session import Session

        session = Session(self.store)
        prepared = session.resumable(job.resume_run)  # refuses an unknown, done or running run before loading a model
        row = self.store.run_row(job.resume_run)
        model = self.ensure_model(ModelChoice(row["model"], job.model.device, job.model.dtype), job.job_id)
        on_begin(job.resume_run)
        return session.resume(model, job.resume_run, progress, self.cancel, prepared=prepared)

    def count_rows(self, tables: Any, run_id: int) -> dict:
        """Rows stored per result table; a store locked right now leaves the counts out, not the run."""
        try:
            return {table.name: self.store.query(f"SELECT count(*) FROM {table.name} WHERE run_id = ?", [run_id]).rows[0][0] for table in tables}
        except Exception:
            return {}

    def serve(self) -> None:
        while True:
            command = self.jobs.get()
            if isinstance(command, Stop):
                return
            if isinstance(command, LoadModel):
                try:
                    self.ensure_model(command.model, None)
                except Exception as error:
                    self.events.put(Log(None, "error", f"model {command.model.name}: {error}"))
                continue
            self.run_job(command)


def worker_main(jobs: Any, events: Any, cancel: Any, db_path: str, log_path: str | None = None, extra_analyses: dict | None = None,
                lock_retry_s: float = 30.0) -> None:
    """Entry point of the spawned worker process."""
    _silence(log_path)
    try:
        os.nice(WORKER_NICE)  # the worker yields the CPU to the app, so keys answer while a job runs
    except OSError:
        pass
    if extra_analyses:
        from analyses.core.registry import REGISTRY

        REGISTRY.update(extra_analyses)
    _WorkerLoop(jobs, events, cancel, db_path, lock_retry_s).serve()
