"""`iwb sweep` on a real local Ray cluster (2 CPUs, 2 logical GPUs, started with `ray start` as
docs/cluster.md says, off the machine's network where namespaces allow; see tests/helpers/ray_cluster.py):
the sweep equals the inline run, survives kill -9 of an actor, and `iwb resume --ray` finishes it
after kill -9 of the driver."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from store.shards import RunFolder  # noqa: E402
from tests.helpers.cli import iwb, iwb_command  # noqa: E402
from tests.helpers.ray_cluster import REPO, Head, child_of, running_head  # noqa: E402
from tests.helpers.shards import same_results  # noqa: E402

pytestmark = pytest.mark.integration

RUN = ["truncation", "--n-docs", "12", "--max-tokens", "16", "--param", "k_max=3", "--shard-docs", "2", "--no-chart"]
# The actors run torch on one thread (Ray's OMP_NUM_THREADS=1 for an actor with under 2 CPUs); the
# inline twin must too: with another thread count the BLAS sums round differently (1 float32 ulp).
ACTOR_THREADS = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def head():
    yield from running_head("iwb-sweep-")


def in_cluster(head: Head, args: list[str]) -> list[str]:
    """The command line of an `iwb` that runs beside the head (inside its namespaces when isolated)."""
    return head.beside([*iwb_command(), *args])


def cluster_env(head: Head) -> dict:
    return {**head.driver_env, "NO_COLOR": "1"}


def test_a_sweep_over_two_actors_equals_the_inline_run(head, tmp_path):
    db = tmp_path / "sweep.duckdb"
    inline = iwb("run", *RUN, db=db, env=ACTOR_THREADS)
    assert inline.returncode == 0, inline.stderr
    swept = subprocess.run(in_cluster(head, ["--db", str(db), "sweep", *RUN, "--ray", head.address, "--actors", "2"]),
                           env=cluster_env(head), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert swept.returncode == 0, swept.stderr[-3000:]
    started = re.findall(r"ray: actor \d started .*?GPU (\d)", swept.stderr)
    assert sorted(started) == ["0", "1"], swept.stderr  # one logical GPU each
    same_results(db, 1, 2)
    import duckdb

    conn = duckdb.connect(str(db), read_only=True)
    executor, device = conn.execute("SELECT provenance->'executor'->>'kind', device FROM runs WHERE run_id = 2").fetchone()
    conn.close()
    assert executor == "ray" and device == "cpu"
    # The fidelity record was made on an actor, with its model, as the inline run made its own.
    from store import Store

    store = Store(db, read_only=True)
    inline_checks, swept_checks = ({row[0]: row for row in store.run_checks(run_id)} for run_id in (1, 2))
    assert set(swept_checks) == set(inline_checks) and "model_vs_hf_max_kl" in swept_checks
    assert all(swept_checks[name][3] is True for name in ("model_vs_hf_max_kl", "model_vs_hf_top1_agreement", "tokenizer_fingerprint"))
    assert swept_checks["tokenizer_fingerprint"][4] == inline_checks["tokenizer_fingerprint"][4]
    assert store.check_badges([1, 2]) == {1: "ok", 2: "ok"}


def test_an_actor_killed_mid_sweep_and_a_killed_driver_lose_nothing(head, tmp_path):
    db = tmp_path / "kills.duckdb"
    inline = iwb("run", *RUN, db=db, env=ACTOR_THREADS)
    assert inline.returncode == 0, inline.stderr

    # 1. kill -9 of an actor once the first shard is stored: its shards go to the restarted actor.
    sweep = subprocess.Popen(in_cluster(head, ["--db", str(db), "sweep", *RUN, "--ray", head.address, "--actors", "2"]),
                             env=cluster_env(head), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines, killed = [], False
    for line in sweep.stderr:
        lines.append(line)
        if not killed and "stored" in line:
            pid = re.findall(r"ray: actor \d started .*?\(pid (\d+)", "".join(lines))[0]
            kill = ["nsenter", "-t", str(head.inner), "--preserve-credentials", "-U", "-p", "-m", "kill", "-9", pid] if head.isolated else ["kill", "-9", pid]
            subprocess.run(kill, check=True, env=cluster_env(head))
            killed = True
    assert sweep.wait(timeout=600) == 0, "".join(lines)[-3000:]
    assert killed and any("died" in line for line in lines), "".join(lines)
    same_results(db, 1, 2)

    # 2. kill -9 of the driver (the process that writes the store) part way: resume on Ray finishes it.
    driver = subprocess.Popen(in_cluster(head, ["--db", str(db), "sweep", *RUN, "--ray", head.address, "--actors", "2"]),
                              env=cluster_env(head), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
    target = child_of(driver.pid) if head.isolated else driver.pid  # nsenter forks the real driver
    folder = RunFolder(db, 3)
    deadline = time.monotonic() + 600
    while not [i for i in folder.shards_on_disk() if i >= 0]:
        assert driver.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.02)
    os.kill(target, signal.SIGKILL)
    driver.wait(timeout=60)
    assert folder.complete() is None
    resumed = subprocess.run(in_cluster(head, ["--db", str(db), "resume", "3", "--no-chart", "--ray", head.address, "--actors", "2"]),
                             env=cluster_env(head), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"\d of 6 shards to compute", resumed.stderr), resumed.stderr
    same_results(db, 1, 3)


@pytest.mark.parametrize("address, code, fragment", [
    ("[bold]x", 2, "a Ray address is local, auto, host:port or ray://host:port"),
    ("127.0.0.1:notaport", 2, "a Ray address is local, auto, host:port or ray://host:port"),
    ("127.0.0.1:1", 1, "nothing answers at 127.0.0.1:1"),
])
def test_a_bad_or_unreachable_ray_address_is_one_line_and_stores_nothing(tmp_path, address, code, fragment):
    db = tmp_path / "bad.duckdb"
    result = iwb("sweep", *RUN, "--ray", address, db=db)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not db.exists() or rows_of(db) == 0


def rows_of(db: Path) -> int:
    import duckdb

    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        conn.close()
