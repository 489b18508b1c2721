"""Peak memory of a run does not grow with its number of inputs: `iwb run` over 20 and over 200
documents of the shipped sample, each in a fresh process, peak RSS read from the kernel (wait4).

Prints peak RSS of both runs and their ratio per analysis (the target: at most 1.3), and checks
that the results agree: logit-lens rows of every document both runs share are identical (each
input's rows depend on that input alone); for truncation, whose centring is a mean over the run's
own documents, the per-layer mean cosine curves of the two runs are compared and the difference
printed. Exits 1 when a ratio exceeds the target or the logit-lens rows differ.
    python benchmarks/run_memory.py [--small 20] [--large 200] [--max-tokens 32] [--shard-docs 16]

With ``--analyses all`` every analysis that takes a corpus is measured, on a synthetic corpus
(analyses.inputs.synthetic, written once into the temporary folder) so that any size can be asked
for; ``--target`` sets the ratio asked for (the issue's 1.2 for 10x the documents). Each run's
marginal CPU seconds per document (large minus small, over the extra documents: the model's load and
the fixed costs cancel; CPU time, as the wall clock of a shared machine measures its neighbours too)
give a projected time for 100,000 documents in core-hours (one core, or one 1-thread Ray actor;
N actors divide it by N); the store's bytes per million
result rows are read from the database file after the runs (checkpointed). ``--project-docs N``
and ``--threads 1`` (OMP_NUM_THREADS for the runs: one Ray actor's share of this machine) shape
that projection. ``--no-store-texts`` runs the corpora by reference. ``--analyses fact-lookup`` runs
over --small and --large entities of the shipped athletes table instead of documents (ENTITY_PARAMS).
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
CORPUS_ANALYSES = ("logit-lens", "truncation", "component-norms", "attention-locality", "layer-interventions",
                   "first-layer-heads", "contextual-neurons")
EXTRA_PARAMS = {"truncation": ["--param", "k_max=5"],
                # Destinations and class rows that fit documents of 16 tokens (the defaults ask for 100 and more).
                "first-layer-heads": ["--param", "dest_positions=8,15", "--param", "score_from=2"],
                "contextual-neurons": ["--param", "dest_positions=8,15"]}
# fact-lookup takes an entity table, not a corpus: --small and --large entities of the shipped athletes
# (values in turn), with few permutations and resamples and every tenth layer ablated and hidden.
ENTITY_ANALYSES = ("fact-lookup",)
ENTITY_PARAMS = [f"--param={item}" for item in ("folds=3", "n_permutations=10", "n_bootstrap=100", "layer_stride=10",
                                                "intervention_entities=12", "prompt=table", "concat_layer=4")]


def entity_table(folder: Path, n: int) -> str:
    """A CSV of the first n athletes of the shipped table, taking the attribute values in turn."""
    from analyses.inputs.entities import ALL_ATHLETES, load_entities

    by_value: dict[str, list] = {}
    for entity in load_entities(str(ALL_ATHLETES)):
        by_value.setdefault(entity.value, []).append(entity)
    rows = [group[i] for i in range(max(len(group) for group in by_value.values())) for group in by_value.values() if i < len(group)][:n]
    if len(rows) < n:
        raise SystemExit(f"the shipped athletes table has {len(rows)} rows, fewer than {n}")
    path = folder / f"entities-{n}.csv"
    path.write_text("entity,attribute\n" + "".join(f"{entity.name},{entity.value}\n" for entity in rows))
    return str(path)


def iwb() -> list[str]:
    script = Path(sys.executable).parent / "iwb"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def peak_rss_run(args: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """(peak RSS in MiB, wall seconds, CPU seconds) of one `iwb` process."""
    started = time.monotonic()
    process = subprocess.Popen(iwb() + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1", **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"iwb {' '.join(args)} failed: {process.stderr.read().decode()[-400:]}")
    return usage.ru_maxrss / 1024, time.monotonic() - started, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--large", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--shard-docs", type=int, default=16)
    parser.add_argument("--analyses", default="logit-lens,truncation", help="comma-separated, or all: every analysis that takes a corpus")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument("--corpus", help="the corpus to sample (default: the shipped sample; with --analyses all a synthetic one)")
    parser.add_argument("--project-docs", type=int, default=100_000)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the runs (1: one Ray actor's share)")
    parser.add_argument("--no-store-texts", action="store_true", help="run the corpora by reference (no texts in the inputs table)")
    parser.add_argument("--keep-db", help="copy the database here at the end (to inspect it)")
    parser.add_argument("--param", action="append", default=[], help="an analysis parameter KEY=VALUE for every run (repeatable)")
    args = parser.parse_args()
    import duckdb

    from analyses.inputs.corpus import DEFAULT_CORPUS

    analyses = list(CORPUS_ANALYSES) if args.analyses == "all" else args.analyses.split(",")
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    failed = False
    table: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "memory.duckdb"
        corpus_path = args.corpus
        if corpus_path is None and args.analyses == "all":
            from analyses.inputs.synthetic import write_corpus

            corpus_path = str(write_corpus(Path(tmp) / "synthetic.jsonl.zst", max(5 * args.large, 1000), seed=0, max_chars=2000).path)
        corpus_path = corpus_path or str(DEFAULT_CORPUS)
        for analysis in analyses:
            extra = (EXTRA_PARAMS.get(analysis, []) + [part for value in args.param for part in ("--param", value)]
                     + (["--no-store-texts"] if args.no_store_texts else []))
            measured = {}
            for n in (args.small, args.large):
                if analysis in ENTITY_ANALYSES:
                    run_args = ["--db", str(db), "run", analysis, "--entities", entity_table(Path(tmp), n), "--shard-docs", str(args.shard_docs),
                                "--no-chart", *ENTITY_PARAMS]
                else:
                    run_args = ["--db", str(db), "run", analysis, "--pile", corpus_path, "--n-docs", str(n), "--max-tokens", str(args.max_tokens),
                                "--shard-docs", str(args.shard_docs), "--no-chart", *extra]
                measured[n] = peak_rss_run(run_args, env)
                print(f"{analysis:11s} {n:4d} docs: peak RSS {measured[n][0]:7.1f} MiB in {measured[n][1]:6.1f} s ({measured[n][2]:.1f} CPU s)", flush=True)
            ratio = measured[args.large][0] / measured[args.small][0]
            # CPU seconds, not wall: on a shared machine the wall clock measures the neighbours too.
            per_doc = (measured[args.large][2] - measured[args.small][2]) / (args.large - args.small)
            hours = per_doc * args.project_docs / 3600
            print(f"{analysis:11s} peak RSS ratio {args.large}/{args.small} docs: {ratio:.3f} (target <= {args.target}); "
                  f"{per_doc:.3f} CPU s per extra document: {args.project_docs} documents in about {hours:.1f} core-hours", flush=True)
            table.append(f"| {analysis} | {measured[args.small][0]:.0f} | {measured[args.large][0]:.0f} | {ratio:.3f} | "
                         f"{measured[args.large][2]:.0f} | {per_doc:.3f} | {hours:.1f} |")
            failed |= ratio > args.target
            conn = duckdb.connect(str(db), read_only=True)
            small_run, large_run = [r[0] for r in conn.execute("SELECT run_id FROM runs WHERE analysis = ? ORDER BY run_id DESC LIMIT 2", [analysis]).fetchall()][::-1]
            if analysis not in ("logit-lens", "truncation"):
                conn.close()
                continue
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
        print(f"\n| analysis | peak MiB, {args.small} docs | peak MiB, {args.large} docs | ratio | CPU s, {args.large} docs | CPU s per extra doc | "
              f"core-hours for {args.project_docs} docs |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(table))
        print(store_size(db))
        if args.keep_db:
            import shutil

            shutil.copy(db, args.keep_db)
    return 1 if failed else 0


def store_size(db: Path) -> str:
    """The database file's bytes per million result rows (every table but the store's own), checkpointed."""
    import duckdb

    from store.schema import CORE_TABLES

    conn = duckdb.connect(str(db))
    try:
        conn.execute("CHECKPOINT")
        names = [row[0] for row in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()]
        rows = sum(conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names if name not in CORE_TABLES)
        token_rows = conn.execute("SELECT count(*) FROM tokens").fetchone()[0]
    finally:
        conn.close()
    size = db.stat().st_size
    per_million = size / max(1, rows + token_rows) * 1e6 / 2**20
    return (f"store: {size / 2**20:.1f} MiB for {rows} result rows and {token_rows} token rows: "
            f"{per_million:.1f} MiB per million rows (results and tokens together)")


if __name__ == "__main__":
    sys.exit(main())
