"""The protocol without processes: progress floods merge, the job state follows the event chain."""
from __future__ import annotations

import pickle

from app.run.worker import Failed, Finished, JobCancelled, JobProgress, Log, ModelStatus, Started, Submitted
from app.run.worker_host import describe_exit, merge_progress
from app.tui.events import JobState, apply


def test_progress_flood_keeps_only_the_latest_per_job_and_the_order_of_the_rest():
    events = [Started(1, 5, "logit-lens", "m"), JobProgress(1, 0, 9), JobProgress(1, 1, 9), Log(1, "info", "x"), JobProgress(1, 2, 9),
              JobProgress(2, 0, 3), JobProgress(1, 3, 9), Finished(1, 5, {}, 1.0)]
    assert merge_progress(events) == [Started(1, 5, "logit-lens", "m"), Log(1, "info", "x"), JobProgress(2, 0, 3), JobProgress(1, 3, 9), Finished(1, 5, {}, 1.0)]


def test_messages_are_picklable_frozen_values():
    for event in (Submitted(1, "a"), Started(1, 2, "a", "m"), JobProgress(1, 1, 2, "n"), Log(None, "info", "t"), Finished(1, 2, {"t": 3}, 0.5),
                  Failed(1, None, "BadInput", "m", "tb", True), JobCancelled(1, 2), ModelStatus("m", "ready", "cpu", "float32", 30)):
        assert pickle.loads(pickle.dumps(event)) == event


def test_job_state_follows_the_chain_and_ignores_other_jobs():
    state = apply(JobState(), ModelStatus("m", "ready", "cpu", "float32", 30))
    state = apply(state, Submitted(4, "logit-lens"))
    assert state.running and state.phase == "submitted"
    state = apply(state, Started(4, 11, "logit-lens", "m"))
    state = apply(state, JobProgress(3, 9, 9, "another job"))
    state = apply(state, JobProgress(4, 1, 2, "forward"))
    assert (state.run_id, state.done, state.total, state.note) == (11, 1, 2, "forward")
    failed = apply(state, Failed(4, 11, "WorkerDied", "the worker process died (killed by signal SIGKILL)"))
    assert not failed.running and "SIGKILL" in failed.note and failed.device == "cpu"
    assert apply(state, Finished(4, 11, {}, 2.0)).phase == "finished"


def test_exit_descriptions():
    assert describe_exit(-9) == "killed by signal SIGKILL"
    assert describe_exit(1) == "exited with code 1"
