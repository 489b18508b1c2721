"""The host side of the worker: owns the worker process, its queues and one relay thread.

The relay thread starts workers, hands them one job at a time, relays their events to a
callback (the TUI turns them into Textual messages), merges progress floods, and notices a
worker that died (kill -9, OOM, segfault) or ignores a cancel: its run is marked in the store
and the next job gets a fresh worker. Nothing here imports torch.
"""
from __future__ import annotations

import collections
import itertools
import multiprocessing
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from multiprocessing import resource_tracker
from typing import Any

from analyses.core.contract import Input
from analyses.inputs.corpus import InputChoice
from app.run.worker import (
    Event,
    Failed,
    Finished,
    Job,
    JobCancelled,
    JobProgress,
    LoadModel,
    Log,
    ModelChoice,
    ModelStatus,
    Queued,
    Started,
    Stop,
    Submitted,
    SweepChoice,
    worker_main,
)

CANCEL_GRACE_S = 3.0
POLL_S = 0.1


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def merge_progress(events: list[Event]) -> list[Event]:
    """Drop every JobProgress that a later JobProgress of the same job replaces."""
    latest = {id(e): True for e in events}
    seen_jobs: set[int] = set()
    for event in reversed(events):
        if isinstance(event, JobProgress):
            if event.job_id in seen_jobs:
                latest[id(event)] = False
            seen_jobs.add(event.job_id)
        elif not isinstance(event, Log) and hasattr(event, "job_id"):
            seen_jobs.discard(event.job_id)  # never merge progress across a state change
    return [e for e in events if latest[id(e)]]


class WorkerHost:
    """Runs jobs in a spawned worker process; ``on_event`` is called from the relay thread."""

    def __init__(self, store: Any, on_event: Callable[[Event], None], model: ModelChoice, log_path: str | None = None,
                 cancel_grace_s: float = CANCEL_GRACE_S, extra_analyses: dict | None = None, lock_retry_s: float = 30.0) -> None:
        self.store = store
        self.on_event = on_event
        self.model = model
        self.log_path = log_path
        self.cancel_grace_s = cancel_grace_s
        self.extra_analyses = extra_analyses or {}
        self.lock_retry_s = lock_retry_s
        # Every job a sweep on Ray actors when set (the workbench's settings: `iwb --ray ADDRESS --actors N`).
        self.sweep: SweepChoice | None = None
        self._context = multiprocessing.get_context("spawn")
        # Start the resource tracker now: under Textual, sys.stderr has no file descriptor to pass it.
        resource_tracker.ensure_running()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._pending: collections.deque[Job] = collections.deque()
        self._job_ids = itertools.count(1)
        self._current: Job | None = None
        self._current_run_id: int | None = None
        self._cancel_deadline: float | None = None
        self._process: Any = None
        self._jobs: Any = None
        self._events: Any = None
        self._cancel: Any = None
        self._closing = False
        self._thread = threading.Thread(target=self._relay, name="iwb-worker-relay", daemon=True)

    def start(self, warm: bool = True) -> None:
        """Start the relay thread (and a worker that loads the model now, when warm)."""
        if warm:
            with self._lock:
                self._spawn()
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._pending)

    @property
    def worker_pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def submit(self, analysis: str, inputs: tuple[Input, ...] | InputChoice, raw_params: dict, sweep: SweepChoice | None = None) -> int:
        """Queue a job: its inputs, or for a corpus sample the choice that names it (the worker samples it);
        with sweep, its shards are computed on Ray actors."""
        choice = inputs if isinstance(inputs, InputChoice) else None
        job = Job(next(self._job_ids), analysis, () if choice is not None else tuple(inputs), dict(raw_params), self.model, choice=choice,
                  sweep=sweep if sweep is not None else self.sweep)
        with self._lock:  # Submitted goes out before the relay can hand the job over (it needs the lock)
            self._pending.append(job)
            self._emit(Submitted(job.job_id, analysis))
        self._wake.set()
        return job.job_id

    def submit_resume(self, run_id: int, analysis: str) -> int:
        """Queue a job that finishes a stored run (only its missing shards)."""
        job = Job(next(self._job_ids), analysis, (), {}, self.model, resume_run=run_id)
        with self._lock:  # Submitted goes out before the relay can hand the job over (it needs the lock)
            self._pending.append(job)
            self._emit(Submitted(job.job_id, analysis))
        self._wake.set()
        return job.job_id

    def cancel(self, job_id: int | None = None) -> None:
        """Cancel a queued job at once, or ask the running one to stop (terminated after the grace)."""
        with self._lock:
            for job in list(self._pending):
                if job_id is None or job.job_id == job_id:
                    self._pending.remove(job)
                    self._emit(JobCancelled(job.job_id, None, "cancelled before it started"))
            current = self._current
            if current is not None and (job_id is None or current.job_id == job_id) and self._cancel_deadline is None:
                self._cancel.set()
                self._cancel_deadline = time.monotonic() + self.cancel_grace_s
        self._wake.set()

    def move(self, job_id: int, step: int) -> bool:
        """Move a waiting job earlier (step < 0) or later in the queue; False when it is not waiting."""
        with self._lock:
            order = [job.job_id for job in self._pending]
            if job_id not in order:
                return False
            index = order.index(job_id)
            job = self._pending[index]
            del self._pending[index]
            self._pending.insert(max(0, min(len(order) - 1, index + step)), job)
            self._emit(Queued(tuple(job.job_id for job in self._pending)))
        return True

    @property
    def waiting(self) -> list[int]:
        """The waiting jobs' ids, first to run first."""
        with self._lock:
            return [job.job_id for job in self._pending]

    def set_model(self, model: ModelChoice) -> None:
        """Later jobs use this model; an idle worker starts loading it now."""
        with self._lock:
            self.model = model
            if self._process is not None and self._current is None:
                self._jobs.put(LoadModel(model))

    def close(self, timeout: float = 2.0) -> None:
        self._closing = True
        self._wake.set()
        with self._lock:
            process = self._process
            if process is not None:
                try:
                    self._cancel.set()
                    self._jobs.put(Stop())
                except (OSError, ValueError):
                    pass
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(1.0)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _emit(self, event: Event) -> None:
        try:
            self.on_event(event)
        except Exception as error:
            self._log_traceback(f"the listener refused {type(event).__name__}", error)  # it must not stop the relay

    def _log_traceback(self, title: str, error: BaseException) -> None:
        if self.log_path is None:
            return
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(f"--- {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC relay: {title}\n")
                log.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        except OSError:
            pass

    def _end_run(self, run_id: int | None, status: str, cause: str) -> str:
        """Mark the run in the store; what to add to the cause when the store cannot be written now."""
        if run_id is None:
            return ""
        try:
            self.store.end_run(run_id, status, cause)
        except Exception as error:
            return f" (run {run_id} could not be marked {status} now: {error}; the next open marks it interrupted)"
        return ""

    def _spawn(self) -> None:
        self._jobs, self._events, self._cancel = self._context.Queue(), self._context.Queue(), self._context.Event()
        self._process = self._context.Process(
            target=worker_main,
            args=(self._jobs, self._events, self._cancel, str(self.store.path), self.log_path, self.extra_analyses, self.lock_retry_s),
            name="iwb-worker",
            daemon=True,
        )
        self._process.start()
        self._jobs.put(LoadModel(self.model))

    def _dispatch(self) -> None:
        with self._lock:
            if self._current is not None or not self._pending or self._closing:
                return
            if self._process is None:
                self._spawn()
            job = self._pending.popleft()
            self._current, self._current_run_id, self._cancel_deadline = job, None, None
            self._cancel.clear()
            self._jobs.put(job)

    def _read(self, timeout: float) -> list[Event]:
        events_queue = self._events
        events: list[Event] = []
        try:
            events.append(events_queue.get(timeout=timeout))
            while len(events) < 500:
                events.append(events_queue.get_nowait())
        except (queue.Empty, OSError, EOFError, ValueError):
            pass
        return merge_progress(events)

    def _handle(self, event: Event) -> None:
        with self._lock:
            current = self._current
            if isinstance(event, Started) and current is not None and event.job_id == current.job_id:
                self._current_run_id = event.run_id
            if isinstance(event, (Finished, Failed, JobCancelled)) and current is not None and event.job_id == current.job_id:
                self._current, self._current_run_id, self._cancel_deadline = None, None, None
        self._emit(event)

    def _relay(self) -> None:
        while not self._closing:
            try:
                self._relay_once()
            except Exception as error:
                self._relay_failed(error)

    def _relay_failed(self, error: Exception) -> None:
        """The relay met an error: the job in hand fails with that cause, its worker is replaced, the relay goes on."""
        self._log_traceback("error in the relay loop", error)
        with self._lock:
            job, run_id = self._current, self._current_run_id
            self._current, self._current_run_id, self._cancel_deadline = None, None, None
            try:
                self._stop_process()
            except Exception as stop_error:
                self._log_traceback("could not stop the worker", stop_error)
                self._process = None
        cause = f"the worker host's relay failed ({type(error).__name__}: {error}); the worker was restarted"
        self._emit(ModelStatus(self.model.name, "stopped", detail="worker restarted after a relay error"))
        if job is not None:
            cause += self._end_run(run_id, "failed", cause)
            self._emit(Failed(job.job_id, run_id, "RelayError", cause, "".join(traceback.format_exception(type(error), error, error.__traceback__))))
        else:
            self._emit(Log(None, "error", cause))
        time.sleep(POLL_S)  # an error that repeats at once must not spin the CPU

    def _relay_once(self) -> None:
        self._dispatch()
        if self._process is None:
            self._wake.wait(POLL_S)
            self._wake.clear()
            return
        for event in self._read(POLL_S):
            self._handle(event)
        if self._closing:
            return
        self._check_cancel_deadline()
        self._check_alive()

    def _check_cancel_deadline(self) -> None:
        with self._lock:
            if self._cancel_deadline is None or time.monotonic() < self._cancel_deadline or self._current is None:
                return
            job, run_id = self._current, self._current_run_id
            self._stop_process()
            reason = f"cancelled by the user; the worker did not stop within {self.cancel_grace_s:.0f} s and was restarted"
            reason += self._end_run(run_id, "cancelled", reason)
            self._current, self._current_run_id, self._cancel_deadline = None, None, None
        self._emit(ModelStatus(self.model.name, "stopped", detail="worker restarted after a cancel"))
        self._emit(JobCancelled(job.job_id, run_id, reason))

    def _check_alive(self) -> None:
        process = self._process
        if process is None or process.is_alive():
            return
        for event in self._read(0):
            self._handle(event)
        with self._lock:
            job, run_id = self._current, self._current_run_id
            how = describe_exit(process.exitcode)
            self._process = None
            self._current, self._current_run_id, self._cancel_deadline = None, None, None
        self._emit(ModelStatus(self.model.name, "stopped", detail=f"worker {how}"))
        if job is None:
            self._emit(Log(None, "warning", f"the worker process died ({how}); a fresh one starts with the next job"))
            return
        cause = f"the worker process died ({how}) while running {job.analysis}"
        cause += self._end_run(run_id, "failed", cause)
        self._emit(Failed(job.job_id, run_id, "WorkerDied", cause))

    def _stop_process(self) -> None:
        process = self._process
        self._process = None
        if process is None:
            return
        process.terminate()
        process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join(1.0)
