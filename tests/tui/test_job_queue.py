"""The job queue with the REAL worker host (a spawned worker, the tiny model, a slow test analysis):
ctrl+r while a job runs queues the next; the jobs view (F8) lists the running and the waiting jobs,
moves a waiting job earlier, cancels a waiting one and the running one; the worker then runs what is
left in the order shown, and the store holds exactly that."""
from __future__ import annotations

import pytest

from app.run.worker import Finished, JobCancelled, JobProgress, Queued, Started
from tests.helpers.tui import real_worker_app, settle, until

pytestmark = pytest.mark.tui


def job_column(screen) -> list[str]:
    table = screen.query_one("#jobs")
    return [str(table.get_row_at(row)[0]) for row in range(table.row_count)]


async def test_jobs_queue_reorder_and_cancel_with_the_real_worker(tmp_path, tiny_model, monkeypatch):
    app, store = real_worker_app(tmp_path, tiny_model, monkeypatch, "queue.duckdb")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        probe = app.screen
        probe.query_one("#analysis").value = "slow-steps"
        await settle(app, pilot)
        probe.query_one("#prompt").insert("The Eiffel Tower is in")
        probe.query_one("#param-step_seconds").value = "0.02"
        for steps in ("100000", "3", "4"):  # job 1 runs until cancelled; jobs 2 and 3 queue behind it
            probe.query_one("#param-steps").value = steps
            await pilot.press("ctrl+r")
            if steps == "100000":
                await until(lambda: any(isinstance(e, JobProgress) for e in app.events_seen), "job 1's first step")
            await settle(app, pilot)
        await until(lambda: len(app.job_state.waiting) == 2, "two queued jobs")
        assert app.job_state.running and app.job_state.job_id == 1
        assert [job_id for job_id, _ in app.job_state.waiting] == [2, 3]
        assert "2 queued (F8)" in str(probe.query_one("#progress-note").render())

        await pilot.press("f8")
        await settle(app, pilot)
        jobs = app.screen
        assert jobs.name == "jobs" and job_column(jobs) == ["1", "2", "3"]
        assert "running" in str(jobs.query_one("#jobs").get_row_at(0)[2])
        # The running job's progress: the table's last column, and whole in the line under the table.
        progress = str(jobs.query_one("#jobs").get_row_at(0)[4])
        assert "/100000" in progress
        assert progress.split(" · ")[0] in str(jobs.query_one("#jobs-detail").render())

        await pilot.press("down", "down")  # job 3
        await pilot.press("shift+up")  # job 3 now runs before job 2
        await until(lambda: any(isinstance(e, Queued) for e in app.events_seen), "the host's new order")
        await settle(app, pilot)
        assert app.host.waiting == [3, 2] and job_column(jobs) == ["1", "3", "2"]
        assert jobs.selected_job() == 3  # the cursor followed the job

        await pilot.press("down", "x")  # cancel job 2 while it waits
        await until(lambda: any(isinstance(e, JobCancelled) and e.job_id == 2 for e in app.events_seen), "job 2 cancelled")
        await settle(app, pilot)
        assert app.host.waiting == [3] and job_column(jobs) == ["1", "3"]

        await pilot.press("up", "up", "x")  # cancel the running job: the worker goes on to job 3
        await until(lambda: any(isinstance(e, Finished) and e.job_id == 3 for e in app.events_seen), "job 3 to finish")
        await settle(app, pilot)
        assert job_column(jobs) == [] and not app.job_state.busy

    started = [e.job_id for e in app.events_seen if isinstance(e, Started)]
    assert started == [1, 3]
    runs = {e.job_id: e.run_id for e in app.events_seen if isinstance(e, Started)}
    assert store.run_row(runs[1])["status"] == "cancelled"
    assert store.run_row(runs[3])["status"] == "done"
    assert store.query("SELECT count(*) FROM slow_steps WHERE run_id = ?", [runs[3]]).rows[0][0] == 4
    assert store.query("SELECT count(*) FROM runs").rows[0][0] == 2  # job 2 never became a run


def test_job_state_follows_the_queue():
    """The pure state the screens draw: queued behind the running job, reordered, dropped while waiting,
    and the next job current from its first event on."""
    from app.run.worker import Failed, Submitted
    from app.tui.events import JobState, apply

    state = JobState()
    for event in (Submitted(1, "a"), Started(1, 10, "a", "m"), Submitted(2, "b"), Submitted(3, "c"), Submitted(4, "d")):
        state = apply(state, event)
    assert state.job_id == 1 and state.running and [job for job, _ in state.waiting] == [2, 3, 4]
    state = apply(state, Queued((4, 2, 3)))
    assert [job for job, _ in state.waiting] == [4, 2, 3]
    state = apply(state, JobCancelled(2, None, "cancelled before it started"))
    assert state.job_id == 1 and [job for job, _ in state.waiting] == [4, 3]
    state = apply(state, Finished(1, 10, {}, 1.0))
    assert not state.running and state.busy and state.phase == "finished"
    state = apply(state, Started(4, 11, "d", "m"))
    assert (state.job_id, state.analysis, state.phase, state.run_id) == (4, "d", "started", 11)
    assert [job for job, _ in state.waiting] == [3]
    state = apply(state, Failed(4, 11, "X", "boom"))
    state = apply(state, Failed(3, None, "BadInput", "bad", expected=True))  # failed before its run began
    assert (state.job_id, state.phase, state.waiting, state.busy) == (3, "failed", (), False)


async def test_a_long_progress_note_shows_whole_under_the_table_at_80_columns(store):
    """The progress cell is cut at 80 columns; the line under the table wraps to show it whole."""
    from dataclasses import replace

    from app.tui.events import JobState
    from tests.helpers.tui import make_app, screen_lines

    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("f8")
        await settle(app, pilot)
        jobs = app.screen
        note = "input 1/1: node scores, then exact checks of the top nodes and a random sample of the rest"
        state = replace(JobState(), job_id=3, analysis="attribution-patching", phase="started", run_id=3, done=600, total=1000, note="base run")
        jobs.show_jobs(state)
        await settle(app, pilot)
        jobs.show_jobs(replace(state, note=note))  # a progress report: the same job, a longer note
        await settle(app, pilot)
        shown = " ".join(line.strip() for line in screen_lines(app)[-5:-1])
        assert "random sample of the rest" in shown, shown
