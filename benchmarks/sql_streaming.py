"""`iwb sql` streamed against the old way (every row fetched with fetchall, then printed whole).

For each row count and format, both run as their own process with stdout read and hashed here:
prints seconds, peak RSS (the process' own, from wait4) and output size, then the ratios old /
streamed. The old way runs under a RSS cap (killed there, as it would run out of memory: 30M rows
need well over 6 GiB); outputs are compared where both finished, and a difference exits 1, as does
a streamed run that fails. The rows come from range() inside the query, so no data is needed.
    python benchmarks/sql_streaming.py [--rows 2000000] [--30m] [--formats csv,json,table] [--old-cap-gib 6]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A result table's shape: ids, a layer, a float, a token.
QUERY = ("SELECT range AS input_id, (range % 30)::INTEGER AS layer, ((range % 9973) / 9973)::DOUBLE AS value, "
         "'tok ' || (range % 5000) AS token FROM range({n})")

# `iwb sql` before streaming (git f8f087e): tests/helpers/old_sql.py, the same code the tests compare with.
OLD = '''
import sys
from store import Store
from tests.helpers.old_sql import old_print_result

old_print_result(Store(sys.argv[1], read_only=True).query(sys.argv[2]), sys.argv[3], 200)
'''


@dataclass
class Outcome:
    seconds: float
    peak_mib: float
    out_bytes: int
    digest: str
    code: int
    capped: bool
    stderr: str


def iwb_command() -> list[str]:
    script = Path(sys.executable).parent / "iwb"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def measure(command: list[str], cap_mib: float | None) -> Outcome:
    """Run command, hashing its stdout as it comes; killed once its RSS passes cap_mib."""
    env = {**os.environ, "NO_COLOR": "1", "PYTHONIOENCODING": "utf-8"}
    env.pop("IWB_DB", None)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    capped = threading.Event()
    done = threading.Event()
    errors: list[bytes] = []

    def watch() -> None:
        while cap_mib is not None and not done.wait(0.05):
            if rss_mib(process.pid) > cap_mib:
                capped.set()
                process.kill()
                return

    def drain_stderr() -> None:
        errors.append(process.stderr.read())

    threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=drain_stderr, daemon=True)]
    for thread in threads:
        thread.start()
    digest, size = hashlib.sha256(), 0
    while chunk := process.stdout.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    threads[1].join()
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stdout.close()
    process.stderr.close()
    return Outcome(seconds, usage.ru_maxrss / 1024, size, digest.hexdigest(), process.returncode, capped.is_set(),
                   b"".join(errors).decode(errors="replace").strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="row counts (repeatable; default 2000000)")
    parser.add_argument("--30m", dest="thirty", action="store_true", help="also 30,000,000 rows (minutes; the old way hits the cap)")
    parser.add_argument("--formats", default="csv,json,table")
    parser.add_argument("--old-cap-gib", type=float, default=6.0, help="RSS at which the old way is killed (default 6)")
    args = parser.parse_args()
    counts = (args.rows or [2_000_000]) + ([30_000_000] if args.thirty else [])

    from store import Store

    failed = False
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "results.duckdb"
        Store(db)
        print(f"{'rows':>12}  {'format':6}  {'approach':8}  {'seconds':>8}  {'peak RSS MiB':>12}  {'output MB':>9}")
        for n in counts:
            sql = QUERY.format(n=n)
            for fmt in args.formats.split(","):
                old = measure([sys.executable, "-c", OLD, str(db), sql, fmt], cap_mib=args.old_cap_gib * 1024)
                new = measure(iwb_command() + ["--db", str(db), "sql", sql, "--format", fmt], cap_mib=None)
                for name, outcome in (("old", old), ("streamed", new)):
                    note = f"  KILLED at the {args.old_cap_gib:g} GiB cap" if outcome.capped else (
                        f"  exit {outcome.code}: {outcome.stderr.splitlines()[-1] if outcome.stderr else ''}" if outcome.code else "")
                    print(f"{n:>12,}  {fmt:6}  {name:8}  {outcome.seconds:8.2f}  {outcome.peak_mib:12.0f}  {outcome.out_bytes / 1e6:9.1f}{note}")
                if new.code != 0:
                    print(f"{'':>12}  FAILED: the streamed run exited {new.code}")
                    failed = True
                    continue
                ratio = f"ratio old/streamed: time {old.seconds / new.seconds:.2f}x, peak RSS {old.peak_mib / new.peak_mib:.1f}x"
                if old.capped or old.code != 0:
                    print(f"{'':>12}  old did not finish: peak RSS ratio at least {old.peak_mib / new.peak_mib:.1f}x; outputs not compared")
                elif old.digest != new.digest or old.out_bytes != new.out_bytes:
                    print(f"{'':>12}  {ratio}; OUTPUTS DIFFER (sha256 {old.digest[:12]} vs {new.digest[:12]})")
                    failed = True
                else:
                    print(f"{'':>12}  {ratio}; outputs identical (sha256 {new.digest[:12]})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
