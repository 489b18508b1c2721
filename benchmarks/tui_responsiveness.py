"""How quickly the workbench answers keys, with the worker idle and while a long job runs.

Drives the real app (Pilot, headless) with the real worker and the embedded model: types into
the prompt, moves the heatmap cursor, switches screens and pages charts, timing each key press until the
screen shows its effect (timed at the first screen write after the key that shows it, so
Pilot's own idle-waiting is not counted). Prints p50/p95 per phase; exits 1 if a key was lost
(the typed text or the cursor position disagree with what was pressed).

    PYTHONPATH=. python benchmarks/tui_responsiveness.py [--keys 60] [--long-repeat 60]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "The Eiffel Tower is located in the city of"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def wait_until(pilot, condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not answer in time")
        await pilot.pause(0.1)


class RepaintClock:
    """Timestamps every screen write; a key's delay ends at the first write that shows its effect."""

    def __init__(self, app) -> None:
        self.app, self.original = app, app._display
        self.condition = lambda: False
        self.shown_at: float | None = None
        app._display = self.display

    def display(self, screen, renderable) -> None:
        self.original(screen, renderable)
        if self.shown_at is None and self.condition():
            self.shown_at = time.perf_counter()

    async def time_key(self, pilot, key: str, condition) -> float:
        self.condition, self.shown_at = condition, None
        started = time.perf_counter()
        await pilot.press(key)
        await pilot.pause()
        shown_at = self.shown_at if self.shown_at is not None else time.perf_counter()
        self.condition = lambda: False
        return (shown_at - started) * 1000


async def timed_keys(app, pilot, n_keys: int) -> tuple[list[float], bool, dict]:
    """n_keys presses spread over typing, cursor moves and screen switches; (delays in ms, all applied, by kind)."""
    clock = getattr(app, "_repaint_clock", None) or RepaintClock(app)
    app._repaint_clock = clock
    delays: list[float] = []
    by_kind: dict[str, list[float]] = {"type a character": [], "move the heatmap cursor": [], "switch screen": [], "next chart (tab)": []}
    typed = ""
    ok = True
    for index in range(n_keys):
        phase = index % 4
        if phase == 0:
            await pilot.press("f2")
            await pilot.pause()
            area = app.screen.query_one("#prompt")
            area.focus()
            key = "abcdefghij"[index % 10]
            area.cursor_blink = False
            before = area.text
            delays.append(await clock.time_key(pilot, key, lambda area=area, before=before: area.text != before))
            by_kind["type a character"].append(delays[-1])
            ok &= area.text == before + key if area.cursor_location[1] == len(before) else key in area.text
            typed += key
        elif phase == 1:
            await pilot.press("f3")
            await pilot.pause()
            app.screen.query_one("#chart-tabs").active = "chart-0"  # the heatmap (the tab phase pages away from it)
            await pilot.pause()
            view = app.screen.query_one("#chart")
            view.focus()
            before = view.cursor
            key = "left" if before[1] > 0 else "right"
            delays.append(await clock.time_key(pilot, key, lambda view=view, before=before: view.cursor != before and view.painted_cursor == view.cursor))
            by_kind["move the heatmap cursor"].append(delays[-1])
            ok &= view.cursor != before
        elif phase == 3:
            await pilot.press("f3")
            await pilot.pause()
            results = app.screen
            before = results.chart_index
            delays.append(await clock.time_key(pilot, "tab", lambda results=results, before=before: results.chart_index != before))
            by_kind["next chart (tab)"].append(delays[-1])
            ok &= results.chart_index != before
        else:
            target = "f4" if app.screen.name != "history" else "f5"
            wanted = {"f4": "history", "f5": "sql"}[target]
            delays.append(await clock.time_key(pilot, target, lambda wanted=wanted: app.screen.name == wanted))
            by_kind["switch screen"].append(delays[-1])
            ok &= app.screen.name == {"f4": "history", "f5": "sql"}[target]
    return delays, ok, by_kind


async def main(args: argparse.Namespace) -> int:
    from app.run.worker import Failed, Finished, JobCancelled, Started
    from app.tui.app import Workbench
    from app.tui.settings import Settings
    from app.tui.store_access import SerialStore

    folder = Path(tempfile.mkdtemp(prefix="iwb-bench-"))
    settings = Settings(folder / "bench.duckdb", model=args.model, device="cpu", dtype="float32", worker_log=folder / "worker.log")
    app = Workbench(SerialStore(settings.db_path), settings)
    results: dict[str, tuple[list[float], bool]] = {}
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: app.job_state.model_state == "ready")
        app.submit_job("logit-lens", _inputs(PROMPT), {})
        await wait_until(pilot, lambda: any(isinstance(e, (Finished, Failed)) for e in app.events_seen))
        results["worker idle"] = await timed_keys(app, pilot, args.keys)
        if args.idle_only:
            return report(results)
        app.submit_job("logit-lens", _inputs(" ".join([PROMPT] * args.long_repeat)), {})
        await wait_until(pilot, lambda: isinstance(app.events_seen[-1], Started) or app.job_state.phase == "started")
        job_started = time.monotonic()
        results["long job running"] = await timed_keys(app, pilot, args.keys)
        still_running = app.job_state.running
        print(f"long job still running after the timed keys: {still_running} ({time.monotonic() - job_started:.1f} s into it)")
        app.cancel_job()
        await wait_until(pilot, lambda: isinstance(app.events_seen[-1], (JobCancelled, Finished, Failed)) or not app.job_state.running)
    return report(results)


def report(results: dict) -> int:
    print(f"{'phase':<18} {'keys':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  keys applied")
    all_ok = True
    for phase, (delays, ok, by_kind) in results.items():
        all_ok &= ok
        print(f"{phase:<18} {len(delays):>5} {statistics.median(delays):>8.1f} {percentile(delays, 0.95):>8.1f} {max(delays):>8.1f}  {'yes' if ok else 'NO'}")
        for kind, values in by_kind.items():
            print(f"  {kind:<25} p50 {statistics.median(values):7.1f}  p95 {percentile(values, 0.95):7.1f}")
    if "long job running" in results:
        idle, busy = statistics.median(results["worker idle"][0]), statistics.median(results["long job running"][0])
        print(f"p50 ratio busy/idle: {busy / idle:.2f}")
    return 0 if all_ok else 1


def _inputs(text: str) -> tuple:
    from analyses.inputs.corpus import prompt_inputs

    return tuple(prompt_inputs(text))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=60, help="timed key presses per phase")
    parser.add_argument("--long-repeat", type=int, default=60, help="how many times the prompt is repeated for the long job")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--idle-only", action="store_true", help="skip the long-job phase")
    sys.exit(asyncio.run(main(parser.parse_args())))
