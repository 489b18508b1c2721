"""app.ray_pool on a real Ray cluster, started as docs/cluster.md tells users (`ray start --head`).

The head runs inside its own user, network and PID namespaces (`unshare -rnpf`): it sees only
loopback, so nothing listens on the machine's network, and killing the namespace's first process
takes every Ray process with it (never `ray stop`, which kills every Ray process on the machine).
Each test's driver joins that namespace with `nsenter` and runs this file as a script; the results
come back as JSON on stdout. Where namespaces are refused, the head runs on the host network
(Ray then listens on every interface: it has no loopback-only mode) and is stopped by its process group.

The head uses token auth with a throwaway token passed in RAY_AUTH_TOKEN and HOME pointed at a
temporary folder (no ~/.ray/auth_token is read or written); the drivers get the token but not
RAY_AUTH_MODE, so they also check that the pool picks token mode the way `ray start` does.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ != "__main__":
    import pytest

    pytest.importorskip("ray")

REPO = Path(__file__).resolve().parent.parent
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
    from app.ray_pool import PoolOptions, run_on_actors

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


# --- the head --------------------------------------------------------------------------------

def _namespaces_work() -> bool:
    if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
        return False
    probe = subprocess.run(
        ["unshare", "-rnpf", "--kill-child", "--mount-proc", "sh", "-c", "ip link set lo up"],
        capture_output=True, timeout=20, check=False,
    )
    return probe.returncode == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child_of(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    return int(entry.name)
        time.sleep(0.05)
    raise RuntimeError(f"unshare {pid} started no child")


class Head:
    def __init__(self, folder: Path):
        self.folder = folder
        self.isolated = _namespaces_work()
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = secrets.token_hex(32)
        home = folder / "home"
        home.mkdir()
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        base.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}:{base.get('PATH', '')}", RAY_AUTH_TOKEN=token)
        self.driver_env = dict(base)
        # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on SIGTERM, ray start --block stops at once (not after 30 s).
        head_env = dict(base, RAY_AUTH_MODE="token", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        start = (
            f"ray start --head --block --port {self.port} --num-cpus 2 --num-gpus 2 "
            f"--node-ip-address 127.0.0.1 --temp-dir {folder / 'ray'} --include-dashboard false "
            "--disable-usage-stats --object-store-memory 200000000"
        )
        self.log = open(folder / "head.log", "w+")
        if self.isolated:
            command = ["unshare", "-rnpf", "--kill-child", "--mount-proc", "sh", "-c", f"ip link set lo up && exec {start}"]
        else:
            command = ["sh", "-c", f"exec {start}"]
        self.process = subprocess.Popen(
            command, env=head_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
        )
        self.inner = _child_of(self.process.pid) if self.isolated else self.process.pid
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in (folder / "head.log").read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("ray start failed:\n" + (folder / "head.log").read_text()[-3000:])
            time.sleep(0.1)

    def run(self, scenario: str, timeout: float = 120) -> dict:
        enter = ["nsenter", "-t", str(self.inner), "--preserve-credentials", "-U", "-n", "-p", "-m", "--wd=" + str(REPO)]
        command = [*(enter if self.isolated else []), sys.executable, str(Path(__file__).resolve()), scenario, self.address]
        done = subprocess.run(command, env=self.driver_env, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)
        for line in done.stdout.splitlines():
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise AssertionError(f"driver exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            if self.isolated:
                # unshare ignores SIGTERM; SIGKILL makes it SIGKILL the namespace's first process,
                # and the kernel then kills every process in that PID namespace.
                self.process.kill()
            else:
                os.killpg(self.process.pid, signal.SIGTERM)  # ray start --block drains and stops its own processes
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def running_head(prefix: str):
    """A module fixture's body: a head in a fresh short temporary folder (Ray's socket paths must
    fit 107 bytes), stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    started = Head(folder)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ != "__main__":

    @pytest.fixture(scope="module")
    def head():
        yield from running_head("iwb-ray-")

    def _rows(report: dict) -> dict:
        return {int(key): {"i": value["i"], "v": value["v"]} for key, value in report["results"].items()}

    def test_two_actors_on_logical_gpus_match_inline(head):
        """Half the payloads are returned by on_result for the first key: they run on the same actors."""
        report = head.run("join")
        assert report["error"] is None, report
        assert _rows(report) == _expected()
        started = [e for e in report["events"] if re.match(r"actor \d started", e)]
        assert len(started) == 2 and {"GPU 0", "GPU 1"} == {re.search(r"GPU \d", e).group(0) for e in started}
        assert len({r["meta"]["pid"] for r in report["results"].values()}) == 2  # both actors worked

    def test_killed_actor_is_restarted_and_its_payloads_retried(head):
        report = head.run("kill")
        assert report["error"] is None, report
        assert report["killed"], report["events"]
        assert _rows(report) == _expected()
        assert any(re.match(r"actor \d died", e) for e in report["events"]), report["events"]
        assert any(e.startswith("retrying payload") for e in report["events"]), report["events"]
        assert any(re.match(r"actor \d restarted", e) for e in report["events"]), report["events"]

    def test_work_error_surfaces_with_its_class(head):
        report = head.run("fail")
        assert report["error"] is not None and report["error"]["type"] == "ValueError", report
        assert "payload 5 is refused" in report["error"]["message"]

    def test_local_private_instance_one_thread_per_actor(head):
        report = head.run("local")
        assert report["error"] is None, report
        assert _rows(report) == _expected()
        assert {r["meta"]["threads"] for r in report["results"].values()} == {1}  # 2 cores, 2 actors


if __name__ == "__main__":
    print(MARK + json.dumps(_drive(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")), flush=True)
