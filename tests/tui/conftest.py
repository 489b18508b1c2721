"""Pilot fixtures: the workbench on a fresh database with a fake worker host (the helpers that
build and drive the app are in tests/helpers/tui.py)."""
from __future__ import annotations

import pytest

from tests.helpers.fakes import seed_lens_run


@pytest.fixture(autouse=True)
def truecolour(monkeypatch):
    """Every Pilot app renders for a truecolour terminal, whatever TERM the tests run under (a
    16-colour TERM would turn heatmaps into shades); tests of that fallback ask for it."""
    import textual.constants

    monkeypatch.setattr(textual.constants, "COLOR_SYSTEM", "truecolor")


@pytest.fixture
def tui_store(tmp_path):
    from app.tui.store_access import SerialStore

    return SerialStore(tmp_path / "tui.duckdb")


@pytest.fixture
def seeded_store(tui_store):
    seed_lens_run(tui_store)
    return tui_store


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests on a fresh event loop (no asyncio plugin needed)."""
    import asyncio
    import inspect

    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True
