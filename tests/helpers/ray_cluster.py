"""A real local Ray cluster for the pool and sweep tests, started as docs/cluster.md tells users
(`ray start --head`, 2 CPUs and 2 logical GPUs).

The head runs inside its own user, network and PID namespaces (`unshare -rnpf`): it sees only
loopback, so nothing listens on the machine's network, and killing the namespace's first process
takes every Ray process with it (never `ray stop`, which kills every Ray process on the machine).
Drivers join that namespace with `nsenter` (Head.beside). Where namespaces are refused, the head
runs on the host network (Ray then listens on every interface: it has no loopback-only mode) and
is stopped by its process group.

The head uses token auth with a throwaway token passed in RAY_AUTH_TOKEN and HOME pointed at a
temporary folder (no ~/.ray/auth_token is read or written); the drivers get the token but not
RAY_AUTH_MODE, so they also check that the pool picks token mode the way `ray start` does.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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


def child_of(pid: int, timeout: float = 10.0) -> int:
    """The first child of a process (unshare and nsenter fork the real command)."""
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
        self.inner = child_of(self.process.pid) if self.isolated else self.process.pid
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in (folder / "head.log").read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("ray start failed:\n" + (folder / "head.log").read_text()[-3000:])
            time.sleep(0.1)

    def beside(self, command: list[str]) -> list[str]:
        """The command line that runs `command` beside the head (inside its namespaces when isolated),
        in the repository folder; run it with env=self.driver_env."""
        enter = ["nsenter", "-t", str(self.inner), "--preserve-credentials", "-U", "-n", "-p", "-m", "--wd=" + str(REPO)]
        return [*(enter if self.isolated else []), *command]

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
