"""app.run.ray_pool on a real Ray cluster (tests/helpers/ray_cluster.py: a head started as
docs/cluster.md tells users, off the machine's network where namespaces allow, with token auth).

Each test's driver runs beside the head (inside its namespaces when isolated) and runs this file as
a script; the results come back as JSON on stdout.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

if __name__ != "__main__":
    import pytest

    pytest.importorskip("ray")

    from tests.helpers.ray_cluster import REPO, Head, running_head

MARK = "RESULT-JSON "
N_PAYLOADS = 12


# --- the toy workload (runs in the actors; pickled by value as this file is the driver's __main__) ---

def toy_init(seed: int, use_torch: bool = False):
    import numpy as np

    threads = None
    if use_torch:
        import torch

        threads = torch.get_num_threads()
    return {"matrix": np.random.default_rng(seed).standard_normal((3, 4)), "threads": threads}


def toy_work(state, payload):
    import numpy as np
    import pyarrow as pa

    if payload.get("sleep"):
        time.sleep(payload["sleep"])
    if payload.get("fail"):
        raise ValueError(f"payload {payload['i']} is refused")
    values = state["matrix"] @ np.arange(4, dtype=float) * payload["i"]
    return {
        "rows": pa.table({"i": pa.array([payload["i"]] * 3, pa.int64()), "v": pa.array(values)}),
        "meta": pa.table({"pid": [os.getpid()], "threads": [state["threads"] or 0]}),
    }


def _payloads(sleep: float = 0.0, fail_at: int | None = None) -> list:
    return [(i, {"i": i, "sleep": sleep, "fail": i == fail_at}) for i in range(N_PAYLOADS)]


def _expected() -> dict:
    state = toy_init(0)
    return {key: toy_work(state, payload)["rows"].to_pydict() for key, payload in _payloads()}


# --- the driver, run as `python tests/test_ray_pool.py SCENARIO ADDRESS` ---------------------------

def _drive(scenario: str, address: str) -> dict:
    from app.run.ray_pool import PoolOptions, run_on_actors

    started = time.monotonic()
    events: list[str] = []
    pids: dict[int, int] = {}
    results: dict[int, dict] = {}
    killed: list[int] = []

    def on_event(text: str) -> None:
        events.append(text)
        found = re.match(r"actor (\d+) (?:re)?started .*\(pid (\d+)", text)
        if found:
            pids[int(found.group(1))] = int(found.group(2))

    def on_result(key, tables):
        results[key] = tables["rows"].to_pydict() | {"meta": tables["meta"].to_pylist()[0]}
        if scenario == "kill" and len(results) == 3 and not killed:
            victim = pids[min(pids)]
            os.kill(victim, signal.SIGKILL)  # mid-run: the victim holds a payload or two in flight
            killed.append(victim)
        if scenario == "join" and key == 0:
            return later  # more payloads, queued on the same warm actors
        return None

    if scenario == "local":
        options = PoolOptions(address="local", local_cpus=2, local_gpus=0, actors=2)
        init_args, payloads = (0, True), _payloads(sleep=0.05)
    else:
        options = PoolOptions(address=address, actors=2, num_gpus=1)
        init_args = (0,)
        payloads = _payloads(sleep=0.3 if scenario == "kill" else 0.0, fail_at=5 if scenario == "fail" else None)
    later = []
    if scenario == "join":
        payloads, later = payloads[:6], payloads[6:]
    error = None
    try:
        run_on_actors(options, toy_init, init_args, toy_work, payloads, on_result, on_event)
    except Exception as caught:  # reported to the test
        error = {"type": type(caught).__name__, "mro": [c.__name__ for c in type(caught).__mro__], "message": str(caught)}
    return {
        "results": results, "events": events, "pids": pids, "killed": killed, "error": error,
        "seconds": round(time.monotonic() - started, 2),
    }


if __name__ != "__main__":

    @pytest.fixture(scope="module")
    def head():
        yield from running_head("iwb-ray-")

    def drive(head: Head, scenario: str, timeout: float = 120) -> dict:
        """Run this file as the driver of one scenario beside the head; its JSON report."""
        command = head.beside([sys.executable, str(Path(__file__).resolve()), scenario, head.address])
        done = subprocess.run(command, env=head.driver_env, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
        for line in done.stdout.splitlines():
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise AssertionError(f"driver exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}")

    def _rows(report: dict) -> dict:
        return {int(key): {"i": value["i"], "v": value["v"]} for key, value in report["results"].items()}

    def test_two_actors_on_logical_gpus_match_inline(head):
        """Half the payloads are returned by on_result for the first key: they run on the same actors."""
        report = drive(head, "join")
        assert report["error"] is None, report
        assert _rows(report) == _expected()
        started = [e for e in report["events"] if re.match(r"actor \d started", e)]
        assert len(started) == 2 and {"GPU 0", "GPU 1"} == {re.search(r"GPU \d", e).group(0) for e in started}
        assert len({r["meta"]["pid"] for r in report["results"].values()}) == 2  # both actors worked

    def test_killed_actor_is_restarted_and_its_payloads_retried(head):
        report = drive(head, "kill")
        assert report["error"] is None, report
        assert report["killed"], report["events"]
        assert _rows(report) == _expected()
        assert any(re.match(r"actor \d died", e) for e in report["events"]), report["events"]
        assert any(e.startswith("retrying payload") for e in report["events"]), report["events"]
        assert any(re.match(r"actor \d restarted", e) for e in report["events"]), report["events"]

    def test_work_error_surfaces_with_its_class(head):
        report = drive(head, "fail")
        assert report["error"] is not None and report["error"]["type"] == "ValueError", report
        assert "payload 5 is refused" in report["error"]["message"]

    def test_local_private_instance_one_thread_per_actor(head):
        report = drive(head, "local")
        assert report["error"] is None, report
        assert _rows(report) == _expected()
        assert {r["meta"]["threads"] for r in report["results"].values()} == {1}  # 2 cores, 2 actors


if __name__ == "__main__":
    print(MARK + json.dumps(_drive(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")), flush=True)
