"""Peak memory of a run does not grow with its number of inputs: `iwb run` over 20 and over 200
documents of the shipped sample, each in a fresh process, peak RSS read from the kernel (wait4).

Prints peak RSS of both runs and their ratio per analysis (the target: at most 1.3), and checks
that the results agree: logit-lens rows of every document both runs share are identical (each
input's rows depend on that input alone); for truncation, whose centring is a mean over the run's
own documents, the per-layer mean cosine curves of the two runs are compared and the difference
printed. Exits 1 when a ratio exceeds the target or the logit-lens rows differ.
    python benchmarks/run_memory.py [--small 20] [--large 200] [--max-tokens 32] [--shard-docs 16]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = 1.3


def iwb() -> list[str]:
    script = Path(sys.executable).parent / "iwb"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def peak_rss_run(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one `iwb` process."""
    started = time.monotonic()
    process = subprocess.Popen(iwb() + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"iwb {' '.join(args)} failed: {process.stderr.read().decode()[-400:]}")
    return usage.ru_maxrss / 1024, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--large", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--shard-docs", type=int, default=16)
    parser.add_argument("--analyses", default="logit-lens,truncation")
    args = parser.parse_args()
    import duckdb

    from analyses.inputs.corpus import DEFAULT_CORPUS

    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "memory.duckdb"
        for analysis in args.analyses.split(","):
            extra = ["--param", "k_max=5"] if analysis == "truncation" else []
            measured = {}
            for n in (args.small, args.large):
                run_args = ["--db", str(db), "run", analysis, "--pile", str(DEFAULT_CORPUS), "--n-docs", str(n), "--max-tokens", str(args.max_tokens),
                            "--shard-docs", str(args.shard_docs), "--no-chart", *extra]
                measured[n] = peak_rss_run(run_args)
                print(f"{analysis:11s} {n:4d} docs: peak RSS {measured[n][0]:7.1f} MiB in {measured[n][1]:6.1f} s", flush=True)
            ratio = measured[args.large][0] / measured[args.small][0]
            print(f"{analysis:11s} peak RSS ratio {args.large}/{args.small} docs: {ratio:.3f} (target <= {TARGET})")
            failed |= ratio > TARGET
            conn = duckdb.connect(str(db), read_only=True)
            small_run, large_run = [r[0] for r in conn.execute("SELECT run_id FROM runs WHERE analysis = ? ORDER BY run_id DESC LIMIT 2", [analysis]).fetchall()][::-1]
            if analysis == "logit-lens":
                shared, differing = conn.execute(
                    "WITH a AS (SELECT i.text, l.* EXCLUDE (run_id, input_id) FROM logit_lens l JOIN inputs i USING (run_id, input_id) WHERE run_id = ?), "
                    "b AS (SELECT i.text, l.* EXCLUDE (run_id, input_id) FROM logit_lens l JOIN inputs i USING (run_id, input_id) WHERE run_id = ?) "
                    "SELECT (SELECT count(DISTINCT text) FROM a WHERE text IN (SELECT text FROM b)), "
                    "(SELECT count(*) FROM (SELECT * FROM a WHERE text IN (SELECT text FROM b) EXCEPT ALL SELECT * FROM b))",
                    [small_run, large_run]).fetchone()
                print(f"logit-lens  documents in both runs: {shared}; rows that differ: {differing}")
                failed |= differing != 0 or shared == 0
            else:
                worst = conn.execute(
                    "SELECT max(abs(a.mean - b.mean)) FROM truncation_summary a JOIN truncation_summary b USING (layer, context, category) "
                    "WHERE a.run_id = ? AND b.run_id = ? AND category = 'all'", [small_run, large_run]).fetchone()[0]
                print(f"truncation  largest difference of the mean-cosine curves (different document samples): {worst:.4f}")
            conn.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
