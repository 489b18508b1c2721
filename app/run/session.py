"""The session: what a face does with runs on one store, in one place.

The CLI (app/cli/commands.py), the worker (app/run/worker.py) and the TUI's form (which checks a
request before it is sent to the worker) all go through this facade: check a request, run it inline
or on Ray, see what a stopped run still needs, resume it, verify a done run. Underneath, the runner
(app/run/runner.py) drives the analysis (analyses/core/contract.py) and the run writer
(store/runs.py) owns the run's row and folder.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from analyses.core.contract import Input, Progress
from app.run.runner import Prepared, RunRequest, execute, prepare, resumable, resume
from app.run.verify import MAX_LISTED, Verdict, done_runs, verify

if TYPE_CHECKING:
    from app.run.ray_pool import PoolOptions
    from store import Store


class Session:
    """Runs on one store. Every method checks what a user can get wrong before anything is stored."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def prepare(analysis: str, inputs: tuple[Input, ...], raw_params: dict) -> Prepared:
        """The analysis, its parsed parameters and the inputs, checked without a model or a store."""
        return prepare(RunRequest(analysis, tuple(inputs), dict(raw_params)))

    def run(self, model: Any, prepared: Prepared, progress: Progress, cancel: threading.Event | None = None,
            shard_docs: int | None = None, on_begin: Any = None) -> int:
        """A new run computed here on a loaded model; its id."""
        return execute(self.store, model, prepared, progress, cancel, shard_docs=shard_docs, on_begin=on_begin)

    def sweep(self, prepared: Prepared, options: PoolOptions, model_name: str, device: str, dtype: str,
              shard_docs: int | None, progress: Progress, on_event: Any = None, cancel: Any = None, on_begin: Any = None) -> int:
        """A new run with its shards computed on Ray actors (this process writes the store); its id.
        ``on_begin(run_id)`` is called as soon as the runs row exists (after the request's checks)."""
        from app.run.sweep import sweep

        return sweep(self.store, prepared, options, model_name, device, dtype, shard_docs, progress, on_event, cancel, on_begin)

    def resumable(self, run_id: int) -> Prepared:
        """What a stopped run ran on; BadInput for an unknown, done or running run, or a foreign folder."""
        return resumable(self.store, run_id)

    def shards_to_compute(self, run_id: int) -> tuple[list[int], int]:
        """A stopped run's missing shards and its number of shards."""
        from store.runs import shards_to_compute

        return shards_to_compute(self.store, run_id)

    def resume(self, model: Any, run_id: int, progress: Progress, cancel: threading.Event | None = None,
               prepared: Prepared | None = None) -> int:
        """Finish a stopped run here: only its missing shards."""
        return resume(self.store, model, run_id, progress, cancel, prepared=prepared)

    def resume_on_ray(self, run_id: int, options: PoolOptions, device: str, dtype: str, progress: Progress,
                      on_event: Any = None, cancel: Any = None, prepared: Prepared | None = None) -> int:
        """Finish a stopped run on Ray actors: only its missing shards."""
        from app.run.sweep import sweep_resume

        return sweep_resume(self.store, run_id, options, device, dtype, progress, on_event, cancel, prepared=prepared)

    def done_runs(self) -> list[int]:
        """The ids of every done run (``iwb verify --all``)."""
        return done_runs(self.store)

    def verify(self, model: Any, run_id: int, sample: int, seed: int = 0) -> Verdict:
        """Recompute sampled rows of a done run's first table and compare them with what is stored."""
        return verify(self.store, model, run_id, sample, seed)


__all__ = ["MAX_LISTED", "Session"]
