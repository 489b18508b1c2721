"""Peak and current RSS of one long `iwb run`, sampled over time, with the shards it has stored:
shows that a corpus run's memory stays flat while its shards accumulate, and measures its rate.

    python benchmarks/rss_over_time.py --analysis component-norms --docs 10000 --max-tokens 16 \
        --shard-docs 64 [--threads 1] [--every 30] [--out rss.tsv]

Writes a synthetic corpus of the asked size (analyses.inputs.synthetic) into a temporary folder
(or uses --corpus), runs `iwb run ANALYSIS --no-store-texts` on it, and every --every seconds
prints (and appends to --out) one line: elapsed seconds, the process' CPU seconds, current RSS and
peak RSS (VmRSS, VmHWM from /proc) in MiB, and the shards stored so far (shard folders in the
run's folder, plus the shards already registered). At the end: the documents per CPU second over
the stored shards and the peak RSS at each quarter of the run, the flatness (the last quarter's
peak over the first quarter's). A run stopped before its end (--max-seconds, or a kill) still
prints what it measured.
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


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MiB, and user + system CPU seconds, of a live process ({} once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    values["cpu"] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return values


def shards_stored(db: Path) -> int:
    """Shard folders on disk under the database's runs folder (whole ones: meta.json written)."""
    root = db.with_name(db.name + ".runs")
    return sum(1 for _ in root.glob("run-*/shard-[0-9]*/meta.json")) if root.is_dir() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analysis", default="component-norms")
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--shard-docs", type=int, default=64)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the run")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--max-seconds", type=float, help="stop the run after this long (what was measured is printed)")
    parser.add_argument("--corpus", help="a corpus to sample (default: a synthetic one of --docs documents)")
    parser.add_argument("--out", help="append the samples here as tab-separated lines")
    parser.add_argument("--param", action="append", default=[], help="an analysis parameter KEY=VALUE (repeatable)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "long.duckdb"
        corpus = args.corpus
        if corpus is None:
            from analyses.inputs.synthetic import write_corpus

            corpus = str(write_corpus(Path(tmp) / "synthetic.jsonl.zst", args.docs, seed=0, max_chars=2000).path)
        script = Path(sys.executable).parent / "iwb"
        command = [str(script) if script.exists() else sys.executable, *([] if script.exists() else ["-m", "app.cli"]),
                   "--db", str(db), "run", args.analysis, "--pile", corpus, "--n-docs", str(args.docs),
                   "--max-tokens", str(args.max_tokens), "--shard-docs", str(args.shard_docs), "--no-store-texts", "--no-chart",
                   *[part for value in args.param for part in ("--param", value)]]
        env = {**os.environ, "NO_COLOR": "1", **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
        out = open(args.out, "a") if args.out else None
        started = time.monotonic()
        # stderr to a file, never a pipe: a long run's progress lines would fill a pipe nobody reads and block it.
        errors = open(Path(tmp) / "stderr.txt", "w+b")
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        samples: list[tuple[float, float, float, float, int]] = []
        header = "elapsed_s\tcpu_s\trss_mib\tpeak_mib\tshards"
        print(header, flush=True)
        if out:
            out.write(f"# {' '.join(command)}\n{header}\n")
        try:
            while process.poll() is None:
                time.sleep(min(args.every, 1.0) if not samples else args.every)
                status = proc_status(process.pid)
                if "VmRSS" not in status:  # gone, or a zombie between its end and our wait
                    break
                # The run's folder goes once the run is registered: the count never goes back.
                stored = max(shards_stored(db), samples[-1][4] if samples else 0)
                sample = (time.monotonic() - started, status["cpu"], status["VmRSS"], status["VmHWM"], stored)
                samples.append(sample)
                line = f"{sample[0]:.0f}\t{sample[1]:.0f}\t{sample[2]:.0f}\t{sample[3]:.0f}\t{sample[4]}"
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()
                if args.max_seconds and sample[0] > args.max_seconds:
                    process.terminate()
                    break
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait()
            if out:
                out.close()
        finished = process.returncode == 0
        errors.seek(0)
        error = errors.read().decode(errors="replace")[-400:] if not finished else ""
        errors.close()
    report(samples, args, finished, error)
    return 0 if finished else 1


def report(samples: list[tuple[float, float, float, float, int]], args: argparse.Namespace, finished: bool, error: str) -> None:
    if not samples:
        print("no samples")
        return
    print(f"run {'finished' if finished else 'stopped before its end'}" + (f": {error.strip()}" if error else ""))
    with_shards = [s for s in samples if s[4] > 0]
    if len(with_shards) >= 2:
        first, last = with_shards[0], with_shards[-1]
        docs = (last[4] - first[4]) * args.shard_docs
        cpu, wall = last[1] - first[1], last[0] - first[0]
        if cpu > 0 and docs > 0:
            print(f"rate over shards {first[4]}..{last[4]}: {docs / cpu:.2f} documents per CPU second "
                  f"({cpu / docs:.3f} CPU s per document), {docs / wall:.2f} per wall second")
            print(f"projected: 100,000 documents in {100_000 * cpu / docs / 3600:.1f} CPU hours")
        quarter = max(1, len(with_shards) // 4)
        early, late = with_shards[:quarter], with_shards[-quarter:]
        early_rss, late_rss = max(s[2] for s in early), max(s[2] for s in late)
        print(f"current RSS, first quarter of the shards (to shard {early[-1][4]}): max {early_rss:.0f} MiB; "
              f"last quarter (from shard {late[0][4]}): max {late_rss:.0f} MiB; ratio {late_rss / early_rss:.3f}")
    print(f"peak RSS (VmHWM) at the last sample: {samples[-1][3]:.0f} MiB after {samples[-1][4]} shards")


if __name__ == "__main__":
    raise SystemExit(main())
