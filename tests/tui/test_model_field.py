"""The probe form's model field: any embedded name, Hugging Face name or local folder, loaded on
enter; a load that fails says why in place, in one line, with the real loader's message."""
from __future__ import annotations

import pytest

from app.run.worker import ModelStatus
from tests.helpers.fakes import FakeHost
from tests.helpers.tui import screen_lines, settle, shown

pytestmark = pytest.mark.tui


class LoadingHost(FakeHost):
    """The fake worker, except that a model switch goes through the real loader's checks, as the
    worker's does (app.run.worker: ModelStatus loading, then ready or failed with the error)."""

    def set_model(self, model) -> None:
        from analyses.model.loading import ModelUnavailable, load_model

        self.model = model
        self.on_event(ModelStatus(model.name, "loading"))
        try:
            load_model(model.name)
        except ModelUnavailable as error:
            self.on_event(ModelStatus(model.name, "failed", detail=str(error)))
            return
        raise AssertionError("only names that cannot load are used here")


def workbench(store):
    from app.tui.app import Workbench
    from app.tui.settings import Settings

    settings = Settings(store.path, model="smollm2-135m")
    return Workbench(store, settings, host_factory=lambda s, on_event, model: LoadingHost(s, on_event, model))


async def type_model(app, pilot, name: str) -> None:
    field = app.screen.query_one("#model")
    field.focus()
    field.value = name
    await pilot.press("enter")
    await settle(app, pilot)


async def test_a_folder_that_is_not_a_model_says_so_in_place_in_one_line(tui_store, tmp_path):
    app = workbench(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        folder = tmp_path / "not-a-model"
        folder.mkdir()
        await type_model(app, pilot, str(folder))
        status = shown(app.screen.query_one("#status-line"))
        assert status == f"model failed: not a Hugging Face model folder (no config.json) ({folder})"
        assert any("model failed: not a Hugging Face model folder (no config.json)" in line for line in screen_lines(app))
        assert app.job_state.model_state == "failed"


async def test_any_name_typed_is_sent_to_the_worker_and_an_empty_one_is_refused(tui_store):
    from tests.helpers.tui import make_app

    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await type_model(app, pilot, "HuggingFaceTB/SmolLM2-360M")
        assert app.host.model.name == "HuggingFaceTB/SmolLM2-360M"
        assert "model HuggingFaceTB/SmolLM2-360M · cpu" in shown(app.screen.query_one("#status-line"))
        await type_model(app, pilot, "   ")
        assert app.host.model.name == "HuggingFaceTB/SmolLM2-360M"  # nothing sent
        assert "give an embedded model" in shown(app.screen.query_one("#status-line"))


async def test_the_field_completes_embedded_names(tui_store):
    from tests.helpers.tui import make_app

    app = make_app(tui_store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        field = app.screen.query_one("#model")
        field.focus()
        field.value = ""
        await pilot.press("g", "e", "m")
        await pilot.pause()
        await pilot.press("right")  # accepts the suggestion
        await pilot.pause()
        assert field.value == "gemma3-270m"
