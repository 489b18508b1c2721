"""Keys in the order they were typed, each routed by the state the keys before it left behind.

Textual routes a key by posting it to the focused widget's message queue and returns at once; the
key then bubbles up (widget, containers, screen, app) one queue at a time, and the screen's
bindings (Tab moves the focus, Results' Tab shows the next chart) run only when it arrives. When
several keys come in one read (a fast typist, a paste of keys, SSH packing keystrokes into one
packet) the next key is routed before the previous one has arrived anywhere: ``5 Tab 3`` sends
all three to the first field (k_max = 53), two Tabs on Results both step from the same chart
(one is lost), and the Enter after a History filter goes to the filter while the table is still
being refilled.

``KeyOrder`` holds a key while the previous one, and the messages it set off, are still being
handled: a key that arrives while nothing is in flight goes on at once (the usual case, no added
latency); the others wait in a backlog and are handed on one at a time, each once every message
pump of the app and the screen has emptied its queue (repeated rounds, as a key bubbles one queue
per round) and the screen does not ask to hold keys (``holds_keys``: History while a filter it was
typed into is being applied). A round that does not finish within ``ROUND_S`` (a handler awaiting
a dialog) and a key held longer than ``HOLD_S`` go on anyway, so that input can never stall.
"""
from __future__ import annotations

import asyncio
import collections
from typing import Any

from textual import events

ROUND_S = 0.5  # one round: every pump handles what was queued when it began
MAX_ROUNDS = 24  # a key bubbles through one queue per round; the deepest chains here are ~10
HOLD_S = 3.0  # the longest a key waits for the screen (holds_keys) before it goes on anyway


class KeyOrder:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.backlog: collections.deque[events.Event] = collections.deque()
        self.in_flight = False
        self.releasing: events.Event | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="iwb-key-order")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def take(self, event: events.Event) -> bool:
        """True when the event is held back (the caller drops it now); False: handle it now."""
        if event is self.releasing:
            self.releasing = None
            return False
        if self._task is None:
            return False
        if self.in_flight or self.backlog:
            self.backlog.append(event)
            return True
        self.in_flight = True
        self._wake.set()
        return False

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                await self.settle()
                if not self.backlog:
                    self.in_flight = False
                    break
                event = self.backlog.popleft()
                self.releasing = event
                self.app.post_message(event)

    async def settle(self) -> None:
        """Wait until what the last key set off has been handled and the screen takes keys."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOLD_S
        while True:
            for round_number in range(MAX_ROUNDS):
                pumps = self._pumps()
                if round_number and all(pump._message_queue.empty() for pump in pumps):
                    break
                await self._round(pumps)
            holds = getattr(self._screen(), "holds_keys", None)
            if holds is None or not holds() or loop.time() > deadline:
                return
            await asyncio.sleep(0.01)

    def _screen(self) -> Any:
        try:
            return self.app.screen
        except Exception:  # no screen yet, or the app is closing
            return None

    def _pumps(self) -> list[Any]:
        screen = self._screen()
        return [self.app] + (list(screen.walk_children(with_self=True)) if screen is not None else [])

    async def _round(self, pumps: list[Any]) -> None:
        """Every pump handles what it had queued (the test pilot's wait-for-screen, with a bound)."""
        remaining = 0
        done = asyncio.Event()

        def handled() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                done.set()

        for pump in pumps:
            if pump.call_later(handled):
                remaining += 1
        if remaining:
            try:
                await asyncio.wait_for(done.wait(), ROUND_S)
            except asyncio.TimeoutError:
                pass
