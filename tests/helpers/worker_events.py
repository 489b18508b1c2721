"""Waiting on a real worker host's events in tests (no sleeps): every event up to the one asked for."""
from __future__ import annotations

WAIT_S = 120


def wait_for(host, kinds: tuple, job_id: int) -> list:
    """Every event up to and including the first of `kinds` for this job."""
    seen = []
    while True:
        event = host.events.get(timeout=WAIT_S)
        seen.append(event)
        if isinstance(event, kinds) and getattr(event, "job_id", None) == job_id:
            return seen
