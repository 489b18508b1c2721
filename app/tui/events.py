"""Textual messages carrying the worker's protocol events into the app, and the job state they build."""
from __future__ import annotations

from dataclasses import dataclass, replace

from textual.message import Message

from app.run.worker import Event, Failed, Finished, JobCancelled, JobProgress, Log, ModelStatus, Queued, Started, Submitted


class JobEvent(Message):
    """One event from the worker host, posted from its relay thread."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


@dataclass(frozen=True)
class JobState:
    """What the UI shows about the current job and the worker's model."""

    job_id: int | None = None
    analysis: str = ""
    phase: str = "idle"
    run_id: int | None = None
    done: int = 0
    total: int = 0
    note: str = ""
    model: str = ""
    model_state: str = "starting"
    model_error: str = ""
    device: str = ""
    dtype: str = ""
    n_layers: int = 0
    waiting: tuple[tuple[int, str], ...] = ()  # (job id, analysis) of the jobs queued behind this one, first to run first
    pace: str = ""  # " · 3.1 layers/s · ~6 s left" (app.run.progress.Pace, set by the app: it needs a clock)

    @property
    def running(self) -> bool:
        return self.phase in ("submitted", "started")

    @property
    def busy(self) -> bool:
        """A job runs or waits."""
        return self.running or bool(self.waiting)


def apply(state: JobState, event: Event) -> JobState:
    """The state after one event (a pure function, so the sequence can be tested without a screen)."""
    if isinstance(event, ModelStatus):
        return replace(state, model=event.name, model_state=event.state, device=event.device or state.device,
                       dtype=event.dtype or state.dtype, n_layers=event.n_layers or state.n_layers,
                       model_error=event.detail if event.state == "failed" else "")
    if isinstance(event, Submitted):
        if state.busy:  # queued behind the running job (or behind others already waiting)
            return replace(state, waiting=state.waiting + ((event.job_id, event.analysis),))
        return replace(state, job_id=event.job_id, analysis=event.analysis, phase="submitted", run_id=None, done=0, total=0, note="waiting for the worker")
    if isinstance(event, Queued):
        rank = {job_id: index for index, job_id in enumerate(event.order)}
        return replace(state, waiting=tuple(sorted((job for job in state.waiting if job[0] in rank), key=lambda job: rank[job[0]])))
    job_id = getattr(event, "job_id", None)
    waiting = dict(state.waiting)
    if job_id is not None and job_id != state.job_id and job_id in waiting:
        rest = tuple(job for job in state.waiting if job[0] != job_id)
        if state.running and isinstance(event, (Finished, Failed, JobCancelled)):
            return replace(state, waiting=rest)  # cancelled while it waited
        # The worker took it: it is the current job from now on.
        state = replace(state, job_id=job_id, analysis=waiting[job_id], phase="submitted", run_id=None, done=0, total=0,
                        note="waiting for the worker", waiting=rest)
    if job_id != state.job_id:
        return state
    if not isinstance(event, (JobProgress, Log)):
        state = replace(state, pace="")
    if isinstance(event, Started):
        return replace(state, phase="started", run_id=event.run_id, note=f"run {event.run_id} started")
    if isinstance(event, JobProgress):
        return replace(state, done=event.done, total=event.total, note=event.note)
    if isinstance(event, Finished):
        return replace(state, phase="finished", run_id=event.run_id, done=state.total or 1, total=state.total or 1, note=f"run {event.run_id} done in {event.seconds:.1f} s")
    if isinstance(event, Failed):
        return replace(state, phase="failed", run_id=event.run_id, note=f"{event.heading}: {event.message}")
    if isinstance(event, JobCancelled):
        return replace(state, phase="cancelled", run_id=event.run_id, note=event.reason)
    return state
