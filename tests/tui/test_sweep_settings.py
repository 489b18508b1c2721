"""The workbench starts a run as a sweep when its settings name a Ray address (`iwb --ray ADDRESS
--actors N`): the job goes to the worker with those settings, a corpus as its reference, and the
progress line shows what the worker reports per actor (tests/test_worker_sweep.py runs the real
worker on two local Ray actors)."""
from __future__ import annotations

import pytest

from analyses.inputs.corpus import InputChoice
from app.run.worker import JobProgress, SweepChoice
from tests.helpers.fakes import FakeHost
from tests.helpers.tui import settle

pytestmark = pytest.mark.tui


def _app(store, **settings):
    from app.tui.main import make_workbench
    from app.tui.settings import Settings

    chosen = Settings(store.path, model="smollm2-135m", **settings)
    return make_workbench(chosen, host_factory=lambda s, on_event, model: FakeHost(s, on_event, model))


async def test_a_run_goes_as_a_sweep_with_the_settings_address_and_actors(tui_store):
    app = _app(tui_store, ray_address="local", ray_actors=2)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        probe = app.screen
        probe.query_one("#source").value = "pile"
        await settle(app, pilot)
        probe.query_one("#n-docs").value = "3"
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.host.sweeps == [SweepChoice("local", 2)]
        analysis, sent, _ = app.host.jobs[0]
        assert analysis == "logit-lens" and isinstance(sent, InputChoice) and sent.n_docs == 3  # the reference, no texts
        await pilot.press("f2")
        await settle(app, pilot)
        app.post_job_event(JobProgress(1, 2, 3, "shard 2/3 stored; actor 0: 1 shard, actor 1: 1 shard"))
        await settle(app, pilot)
        shown = str(app.screen.query_one("#progress-note").render())
        assert "actor 0: 1 shard, actor 1: 1 shard" in shown


async def test_without_an_address_a_run_stays_in_the_worker(tui_store):
    app = _app(tui_store)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        app.screen.query_one("#prompt").insert("The Eiffel Tower is in")
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.host.sweeps == [None] and app.host.jobs[0][1][0].text == "The Eiffel Tower is in"


def test_the_worker_host_gives_every_job_its_sweep_settings(tui_store):
    from app.run.worker import ModelChoice
    from app.run.worker_host import WorkerHost

    host = WorkerHost(tui_store, lambda event: None, ModelChoice("smollm2-135m"))
    host.sweep = SweepChoice("auto", 4)
    host.submit("logit-lens", InputChoice("pile", n_docs=5), {})
    host.submit("logit-lens", InputChoice("pile", n_docs=5), {}, sweep=SweepChoice("local", 1))
    assert [job.sweep for job in host._pending] == [SweepChoice("auto", 4), SweepChoice("local", 1)]
    assert all(job.inputs == () and job.choice.n_docs == 5 for job in host._pending)
