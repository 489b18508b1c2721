"""`iwb`: the headless face. Never imports torch at module level (`iwb --help` stays fast).

Exit codes: 0 ok, 2 bad input (one line on stderr), 1 failure, 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys

try:
    from analyses.core.errors import BadInput, IwbError
    from analyses.core.params import param_infos
    from analyses.core.registry import analysis_names, get_analysis
    from app import charts
    from app.cli.generated import generated_text
    from app.cli.io import (
        MAX_CHART_HEIGHT,
        MAX_CHART_WIDTH,
        bounded_int,
        check_utf8,
        export_target,
        read_only_hint,
        silence_closed_stdout,
        single_statement,
        strict_json_pieces,
        write_export,
    )
    from app.errors import cli_line
    from store.db import StoreError
    from store.paths import resolve_db_path
except KeyboardInterrupt:
    # Ctrl-C while starting up (these imports take about half a second) exits like any other phase.
    sys.stderr.write("iwb: interrupted\n")
    raise SystemExit(130) from None



class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise BadInput(message)


def _parse_param_pairs(pairs: list[str]) -> dict[str, str]:
    raw = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise BadInput(f"--param takes key=value, not {pair!r}")
        key, value = pair.split("=", 1)
        raw[key.strip()] = value
    return raw


_OPENED: list = []


def open_store(args, read_only: bool = False):
    """The results database; read-only commands never create, migrate or alter the file."""
    from store import Store

    store = Store(resolve_db_path(args.db), read_only=read_only)
    _OPENED.append(store)
    return store


def print_notices() -> None:
    """Each store's one-line notices (run folders set aside, shards quarantined), once, on stderr."""
    for store in _OPENED:
        for notice in store.notices:
            print(f"iwb: note: {notice}", file=sys.stderr)
        store.notices.clear()
    _OPENED.clear()


def _use_colour() -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    # A dumb terminal (TERM=dumb: Emacs shells, some CI logs) shows escape codes as text.
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def _chart_size(args) -> tuple[int, int]:
    size = shutil.get_terminal_size((100, 32))
    width = args.width or max(60, min(size.columns, 160))
    height = args.height or max(16, min(size.lines - 4, 30))
    return width, height


def print_charts(store, analysis: str, run_id: int, args, input_id: int | None = None) -> None:
    module = get_analysis(analysis)
    width, height = _chart_size(args)
    if input_id is None:
        input_id = charts.first_input_id(store, run_id)
    status = (store.run_row(run_id) or {}).get("status")
    if charts.table_exists(store, "generation_steps") and (text := generated_text(store, run_id, input_id, _use_colour())):
        print(text)
        print()
    for chart in module.spec.charts:
        loaded = charts.load_charts(store, chart, run_id, input_id)
        if not loaded and status != "done":
            # A stopped run has its per-shard tables only; summaries are written when it finishes.
            print(f"{chart.title}: not drawn yet, {chart.table} has no rows for run {run_id} (`iwb resume {run_id}` finishes it)")
            print()
        for data in loaded:
            chart_height = height if args.height else charts.fitting_height(data, height)
            print(charts.render_text(data, width, chart_height, use_colour=_use_colour()))
            print()


def build_inputs(args) -> tuple:
    """The inputs of `iwb run`: one of --prompt, --prompts, --pile, --entities, or, with none, the analysis'
    first input kind (a corpus-first analysis samples the shipped default corpus)."""
    from analyses.inputs import corpus

    given = [name for name in ("prompt", "prompts", "pile", "entities") if getattr(args, name) is not None]
    if len(given) > 1:
        raise BadInput("give only one of --prompt, --prompts, --pile and --entities")
    kind = {"prompt": "prompt", "prompts": "prompt_set", "pile": "pile", "entities": "entities"}[given[0]] if given else None
    choice = corpus.InputChoice(
        kind, args.prompt, args.prompts or args.pile or args.entities, args.n_docs, args.max_tokens, args.seed, args.pile_set,
        store_texts=args.store_texts,
    )
    inputs, malformed = corpus.build_inputs(choice, tuple(get_analysis(args.analysis).spec.input_kinds))
    if malformed:
        print(f"iwb: skipped {malformed} malformed records in {corpus.corpus_source(args.pile)}", file=sys.stderr)
    return inputs


def cmd_run(args) -> int:
    from app.run.progress import StderrProgress
    from app.run.session import Session
    from store import Store

    prepared = Session.prepare(args.analysis, build_inputs(args), _parse_param_pairs(args.param))
    Store.check_usable(resolve_db_path(args.db))  # a bad --db fails before the model loads, creating nothing
    progress = StderrProgress(prepared.analysis.spec.name)
    from analyses.model.loading import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    store = open_store(args)
    try:
        run_id = Session(store).run(model, prepared, progress, shard_docs=args.shard_docs)
    finally:
        progress.close()
    return _print_run(store, prepared.analysis.spec.name, run_id, args)


def _print_run(store, analysis: str, run_id: int, args) -> int:
    """The end of run, sweep and resume: the run's charts (unless --no-chart), then `run N`."""
    if not args.no_chart:
        print_charts(store, analysis, run_id, args)
    print(f"run {run_id}")
    return 0


def pool_options(args):
    from app.run.ray_pool import PoolOptions

    return PoolOptions(address=args.ray, actors=args.actors, num_gpus=args.gpus_per_actor, num_cpus=args.cpus_per_actor,
                       threads_per_actor=args.threads_per_actor)


def cmd_sweep(args) -> int:
    """`iwb run`, with the shards computed on Ray actors; this process writes the store."""
    from app.run.progress import StderrProgress
    from app.run.session import Session

    prepared = Session.prepare(args.analysis, build_inputs(args), _parse_param_pairs(args.param))
    store = open_store(args)
    progress = StderrProgress(f"sweep {prepared.analysis.spec.name}")
    try:
        run_id = Session(store).sweep(prepared, pool_options(args), args.model, args.device, args.dtype, args.shard_docs, progress,
                                      on_event=lambda text: progress.message(f"ray: {text}"))
    finally:
        progress.close()
    return _print_run(store, prepared.analysis.spec.name, run_id, args)


def cmd_resume(args) -> int:
    """Finish an interrupted, failed or cancelled run: only its missing shards are computed."""
    from app.run.progress import StderrProgress
    from app.run.session import Session

    _run_or_fail(open_store(args, read_only=True), args.run_id)  # no database or no such run: nothing is created
    store = open_store(args)  # opening registers results a finished run left on disk
    row = _run_or_fail(store, args.run_id)
    if row["status"] == "done":
        print(f"run {args.run_id} is done; its results are registered")
        return 0
    session = Session(store)
    prepared = session.resumable(args.run_id)
    missing, n_shards = session.shards_to_compute(args.run_id)
    print(f"run {args.run_id}: {row['analysis']} on {row['model']}, {len(missing)} of {n_shards} shards to compute", file=sys.stderr)
    progress = StderrProgress(f"resume {args.run_id}")
    try:
        if args.ray:
            session.resume_on_ray(args.run_id, pool_options(args), args.device, args.dtype, progress,
                                  on_event=lambda text: progress.message(f"ray: {text}"), prepared=prepared)
        else:
            from analyses.model.loading import load_model

            model = load_model(row["model"], device=args.device, dtype=args.dtype)
            session.resume(model, args.run_id, progress, prepared=prepared)
    finally:
        progress.close()
    return _print_run(store, prepared.analysis.spec.name, args.run_id, args)


def cmd_verify(args) -> int:
    """Exit 0 when every recomputed cell equals the stored one within tolerance, 1 listing the differences."""
    from analyses.model.loading import load_model
    from app.run.session import MAX_LISTED, Session

    if (args.run_id is None) == (not args.all):
        raise BadInput("give a run id or --all")
    store = open_store(args, read_only=True)
    run_ids = Session(store).done_runs() if args.all else [_run_or_fail(store, args.run_id)["run_id"]]
    models: dict = {}
    failed = 0
    for run_id in run_ids:
        row = store.run_row(run_id) or {}
        key = (row.get("model"), row.get("dtype"))
        if key not in models:
            models[key] = load_model(row["model"], device=args.device, dtype=row.get("dtype") if row.get("dtype") not in (None, "auto") else args.dtype)
        verdict = Session(store).verify(models[key], run_id, args.sample)
        if verdict.differences:
            failed += 1
            print(f"run {run_id}: {len(verdict.differences)} differences in {verdict.table} (inputs {verdict.inputs}):")
            for line in verdict.differences[:MAX_LISTED]:
                print(f"  {line}")
            if len(verdict.differences) > MAX_LISTED:
                print(f"  ... and {len(verdict.differences) - MAX_LISTED} more")
        else:
            print(f"run {run_id}: {verdict.table}: {verdict.cells} cells of inputs {verdict.inputs} recomputed, all equal within rtol 1e-4")
    return 1 if failed else 0


def cmd_runs(args) -> int:
    if args.mark_stale:
        marked = open_store(args).mark_stale()
        print(f"marked interrupted: {', '.join(f'run {run_id}' for run_id in marked)}" if marked else "no stale runs")
        return 0
    if args.strays or args.remove_strays:
        from store.shards import remove_strays, stray_folders

        path = resolve_db_path(args.db)
        found = remove_strays(path) if args.remove_strays else stray_folders(path)
        verb = "removed" if args.remove_strays else "stray"
        print("\n".join(f"{verb}: {folder}" for folder in found) if found else "no stray run folders")
        return 0
    store = open_store(args, read_only=True)
    result = store.list_runs(limit=args.limit, text_filter=args.filter or "")
    # The fidelity badge after the status: ok, skipped: CHECK, FAILED: CHECK (blank: no record).
    badges = store.check_badges([row[0] for row in result.rows])
    at = result.columns.index("status") + 1
    columns = result.columns[:at] + ["checks"] + result.columns[at:]
    rows = [row[:at] + (badges.get(row[0], ""),) + row[at:] for row in result.rows]
    print(charts.format_table(columns, rows, max_width=60))
    return 0


def _run_or_fail(store, run_id: int) -> dict:
    row = store.run_row(run_id)
    if row is None:
        raise BadInput(f"run {run_id} does not exist in {store.path}")
    return row


def cmd_show(args) -> int:
    store = open_store(args, read_only=True)
    row = _run_or_fail(store, args.run_id)
    print(f"run {row['run_id']}: {row['analysis']} on {row['model']} ({row['status']}), {row['created_at']:%Y-%m-%d %H:%M:%S} UTC, {row['device']}/{row['dtype']}")
    print(f"params: {row['params']}")
    events = store.run_events(args.run_id)
    if events:
        wall, compute = store.run_times([args.run_id]).get(args.run_id, (None, None))
        history = ", ".join(f"{event} {at:%H:%M:%S}" for at, event, _ in events)
        print(f"time: {compute:.1f} s computing, {wall:.1f} s from start to end ({history})" if compute is not None and wall is not None else f"history: {history}")
    checks = store.run_checks(args.run_id)
    if checks:
        badge = store.check_badges([args.run_id]).get(args.run_id, "")
        measured = ", ".join(f"{name} {value:.3g} (tolerance {tolerance:g})" for name, value, tolerance, ok, _ in checks if value is not None and tolerance is not None)
        print(f"checks: {badge}" + (f"; {measured}" if measured else ""))
    for input_id, source, text, meta in store.run_inputs(args.run_id, limit=5):
        print(f"input {input_id} ({source}): {_input_line(text, meta)}")
    if row["status"] != "done":
        print(f"{row['status']}: {(row['error'] or '').splitlines()[0] if row['error'] else row['status']}")
        kept_part = store.has_partial(args.run_id)  # a cancel's steps so far (generate)
        if not row.get("shards_done") and not kept_part:
            return 0
        print(f"partial results: {row['shards_done']} of {row['n_shards']} shards stored" + (" and one in part" if kept_part else ""))
    print()
    print_charts(store, row["analysis"], args.run_id, args, args.input)
    return 0


def _input_line(text: str, meta_json: str | None) -> str:
    """An input as `iwb show` lists it: its text's start, or where a corpus document stored by reference sits."""
    if text:
        return repr(text[:100])
    import json

    meta = json.loads(meta_json) if meta_json else {}
    if "corpus" in meta:
        return f"(text not stored: document {meta.get('doc_index')} of {meta['corpus']}, line {meta.get('line')}, {meta.get('n_chars')} characters)"
    return repr(text)


# Cells per batch of `iwb sql` output: about a megabyte or two of Python values and text at a time.
SQL_BATCH_CELLS = 50_000


def _sql_rows_per_batch(n_columns: int) -> int:
    return max(64, SQL_BATCH_CELLS // max(1, n_columns))


def _write_csv(columns: list[str], batches) -> None:
    """The header, then each batch as it comes; csv.writer's bytes (\\r\\n rows), batch by batch."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(columns)
    sys.stdout.write(buffer.getvalue())
    for rows in batches:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        sys.stdout.write(buffer.getvalue())


def _print_result(result, fmt: str, max_rows: int) -> None:
    """An open query's rows (a store QueryStream) on stdout, batch by batch: memory stays bounded
    however many rows there are. The text is what printing the whole result at once gave: csv and
    json whole, table the first max_rows rows and a line with the count of all of them."""
    size = _sql_rows_per_batch(len(result.columns))
    if fmt == "json":
        for piece in strict_json_pieces(result.columns, result.batches(size)):
            sys.stdout.write(piece)
        sys.stdout.write("\n")
    elif fmt == "csv":
        _write_csv(result.columns, result.batches(size))
    else:
        shown = result.fetch(max_rows)
        print(charts.format_table(result.columns, shown))
        if len(shown) < max_rows:
            return
        sys.stdout.flush()  # the rows are there to read while the rest is counted
        total = len(shown) + result.count_rest(size)
        if total > max_rows:
            print(f"({total} rows, first {max_rows} shown; use --format csv for all)")


def cmd_sql(args) -> int:
    single_statement(args.query)
    sql = args.query
    store = open_store(args, read_only=True)
    try:
        with store.stream(sql) as result:
            _print_result(result, args.format, args.max_rows)
    except StoreError as error:
        raise StoreError(read_only_hint(str(error))) from None
    return 0


def cmd_export(args) -> int:
    store = open_store(args, read_only=True)
    row = _run_or_fail(store, args.run_id)
    target = export_target(args.to)
    spec = get_analysis(row["analysis"]).spec
    table = args.table or spec.tables[0].name
    allowed = [t.name for t in spec.tables] + ["inputs", "tokens"]
    if table not in allowed:
        raise BadInput(f"run {args.run_id} has no table {table!r}; it has {', '.join(allowed)}")
    arrow = store.arrow(f"SELECT * FROM {table} WHERE run_id = ?", [args.run_id])
    write_export(arrow, target)
    print(f"wrote {arrow.num_rows} rows of {table} to {target}")
    return 0


def cmd_compare(args) -> int:
    from app.run.compare import compare_runs

    store = open_store(args, read_only=True)
    comparison = compare_runs(store, args.run_a, args.run_b, args.table, args.input, relative_depth=args.relative_depth)
    print(f"compare {comparison.heading}")
    for line in comparison.differences or ("same model, parameters and input",):
        print(f"  {line}")
    width, height = _chart_size(args)
    for data in comparison.charts:
        print()
        chart_height = height if args.height else charts.fitting_height(data, height)
        print(charts.render_text(data, width, chart_height, use_colour=_use_colour()))
    for note in comparison.skipped:
        print(f"not compared: {note}")
    return 0


def cmd_analyses(args) -> int:
    if args.markdown is not None:
        from pathlib import Path

        from app.cli import docs

        if args.markdown == "-":
            sys.stdout.write(docs.concatenated())
            return 0
        folder = Path(args.markdown)
        if folder.exists() and not folder.is_dir():
            raise BadInput(f"--markdown {args.markdown}: not a folder")
        try:
            written, removed = docs.write_pages(folder)
        except OSError as error:
            raise BadInput(f"--markdown {args.markdown}: {error.strerror or error}") from None
        for path in removed:
            print(f"removed {path} (no such analysis any more)")
        print(f"wrote {len(written)} pages to {folder} (the index: {folder / docs.INDEX})")
        return 0
    for name in analysis_names():
        try:
            module = get_analysis(name)
        except BadInput as error:  # a broken plugin is named, and the others still listed
            print(f"{name}: cannot be loaded: {error}")
            continue
        spec = module.spec
        print(f"{spec.name}: {spec.title}  (inputs: {', '.join(spec.input_kinds)}; tables: {', '.join(t.name for t in spec.tables)})")
        print(f"    {spec.description}")
        for info in param_infos(module.Params):
            print(f"    --param {info.name}=<{info.type_name}{' or none' if info.optional else ''}>  default {info.default!r}: {info.doc}")
    return 0


def cmd_models(args) -> int:
    from analyses.model.loading import DEFAULT_MODEL, EMBEDDED, available_models, prepare_embedded

    if args.prepare:
        name = args.model if args.model in EMBEDDED else DEFAULT_MODEL
        folder = prepare_embedded(name)
        print(f"{name}: ready in {folder}")
        return 0
    listings = available_models()
    print(charts.format_table(["name", "source", "status", "description"], [(m.name, m.source, m.status, m.description) for m in listings], max_width=90))
    print("Any Hugging Face name or a local HF folder also works when it can be reached.")
    return 0


def cmd_tui(args) -> int:
    try:
        from app.tui.main import run_tui
    except ImportError as error:
        # A broken install (Textual missing or mismatched) is said as such, never hidden.
        raise IwbError(f"the workbench cannot start: {error}; `make setup` installs what it needs") from None
    return run_tui(resolve_db_path(args.db), args.model, args.device, args.dtype, args.tui_ray, args.tui_actors)


def add_common_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted before and after the subcommand (`iwb --db X run ...` and `iwb run ... --db X`)."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--db", default=default(None), help="results database (default: $IWB_DB or ~/.local/share/iwb/results.duckdb)")
    parser.add_argument("--model", default=default("smollm2-135m"), help="model: embedded (smollm2-135m), a Hugging Face name or a local HF folder")
    parser.add_argument("--device", default=default("auto"), help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default=default("auto"), help="auto, float32, float16 or bfloat16")
    parser.add_argument("--width", type=bounded_int(20, MAX_CHART_WIDTH), default=default(None), help=f"chart width in columns (20..{MAX_CHART_WIDTH})")
    parser.add_argument("--height", type=bounded_int(8, MAX_CHART_HEIGHT), default=default(None), help=f"chart height in rows (8..{MAX_CHART_HEIGHT})")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"expected a number, not {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise BadInput(f"expected a finite number >= 0, not {text!r}")
    return value


def add_ray_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--ray", required=required, metavar="local|auto|ADDRESS",
                        help="where the actors run: local (a private Ray on this machine), auto (the running cluster, $RAY_ADDRESS) or host:port / ray://host:10001")
    parser.add_argument("--actors", type=bounded_int(1, 4096), help="actors (default: one per GPU, else one per CPU)")
    parser.add_argument("--gpus-per-actor", type=_positive_float, help="default 1 where the cluster has GPUs, else 0")
    parser.add_argument("--cpus-per-actor", type=_positive_float, help="default: 0 with GPUs, else a share that lets every actor fit")
    parser.add_argument("--threads-per-actor", type=bounded_int(1, 1024), help="torch threads in each actor")


def add_run_options(run: argparse.ArgumentParser) -> None:
    """What to run on: the options `iwb run` and `iwb sweep` share."""
    run.add_argument("analysis", help="analysis name (see `iwb analyses`)")
    run.add_argument("--prompt", help="a prompt to analyse")
    run.add_argument("--prompts", help="a prompt-set file (CSV or JSONL: prompt, subject, answer, category)")
    run.add_argument("--pile", help="a Pile-format corpus: .jsonl, .jsonl.gz, .jsonl.zst, .parquet or .txt file, or a Hugging Face dataset name (default for document-only analyses: the shipped sample)")
    run.add_argument("--entities", help="an entity table (CSV or JSONL: entity, attribute, optional template with {entity}); default for fact-lookup: the shipped athletes")
    run.add_argument("--pile-set", help="only documents whose meta.pile_set_name is this")
    run.add_argument("--n-docs", type=bounded_int(1), default=8, help="documents to sample from the corpus (default 8)")
    run.add_argument("--max-tokens", type=bounded_int(1), help="tokens kept per document")
    run.add_argument("--seed", type=int, default=0, help="corpus sampling seed (default 0)")
    run.add_argument("--param", action="append", metavar="KEY=VALUE", help="an analysis parameter (repeatable)")
    run.add_argument("--store-texts", action=argparse.BooleanOptionalAction, default=None,
                     help="keep the corpus documents' texts in the inputs table (default: yes up to 1000 documents; above, a run stores "
                          "where each document sits and its hash, and reads the texts from the corpus when a shard needs them)")
    run.add_argument("--shard-docs", type=bounded_int(1), help="inputs per shard for analyses computed shard by shard (default 16); each shard is stored as soon as it is done")
    run.add_argument("--no-chart", action="store_true", help="print only the run id")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="iwb", description="Interpretability workbench: run analyses on language models, store every result in DuckDB, chart them in the terminal.")
    add_common_options(parser, suppress=False)
    parser.add_argument("--ray", dest="tui_ray", metavar="local|auto|ADDRESS",
                        help="the workbench (iwb with no command) runs every job as a sweep on Ray actors here")
    parser.add_argument("--actors", dest="tui_actors", type=bounded_int(1, 4096),
                        help="actors of the workbench's sweeps (default: one per GPU, else one per CPU)")
    common = OneLineParser(add_help=False)
    add_common_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, parents=[common], **k)

    run = sub.add_parser("run", help="run an analysis, store it, draw its charts")
    add_run_options(run)
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser("sweep", help="like run, with the shards computed on Ray actors (one warm model per GPU); see docs/cluster.md")
    add_run_options(sweep)
    add_ray_options(sweep, required=True)
    sweep.set_defaults(func=cmd_sweep)

    resume = sub.add_parser("resume", help="finish an interrupted, failed or cancelled run: compute only its missing shards")
    resume.add_argument("run_id", type=bounded_int(0))
    resume.add_argument("--no-chart", action="store_true", help="print only the run id")
    add_ray_options(resume, required=False)
    resume.set_defaults(func=cmd_resume)

    verify = sub.add_parser("verify", help="recompute a done run's main table on sampled inputs and compare it with what is stored")
    verify.add_argument("run_id", nargs="?", type=bounded_int(0))
    verify.add_argument("--all", action="store_true", help="every done run of the database")
    verify.add_argument("--sample", type=bounded_int(1), default=3, help="inputs recomputed per run (default 3)")
    verify.set_defaults(func=cmd_verify)

    runs = sub.add_parser("runs", help="list stored runs, newest first")
    runs.add_argument("--limit", type=bounded_int(0), default=30)
    runs.add_argument("--filter", help="only runs whose analysis, model, params or inputs contain this text")
    runs.add_argument("--mark-stale", action="store_true",
                      help="mark running runs whose process is gone (killed, a reused pid, another host's) interrupted")
    runs.add_argument("--strays", action="store_true", help="list run folders set aside because they belonged to no run of this database")
    runs.add_argument("--remove-strays", action="store_true", help="delete those folders")
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="redraw a stored run's charts")
    show.add_argument("run_id", type=bounded_int(0))
    show.add_argument("--input", type=bounded_int(0), help="input id for per-input charts (default: the first)")
    show.set_defaults(func=cmd_show)

    sql = sub.add_parser("sql", help="query the results database (read-only)")
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument("--max-rows", type=bounded_int(0), default=200, help="rows shown in table format")
    sql.set_defaults(func=cmd_sql)

    export = sub.add_parser("export", help="write a run's result table to Parquet or CSV")
    export.add_argument("run_id", type=bounded_int(0))
    export.add_argument("--to", required=True, help="FILE.parquet or FILE.csv")
    export.add_argument("--table", help="which table (default: the analysis' main table)")
    export.set_defaults(func=cmd_export)

    compare = sub.add_parser("compare", help="compare two runs of one analysis: heatmaps as B - A, curves of both on one chart")
    compare.add_argument("run_a", type=bounded_int(0))
    compare.add_argument("run_b", type=bounded_int(0))
    compare.add_argument("--table", help="only the charts of this result table")
    compare.add_argument("--input", type=bounded_int(0), help="input id compared in both runs (default: each run's first)")
    compare.add_argument("--relative-depth", action="store_true",
                         help="align layers as fractions of each model's depth (0 = first, 1 = last): runs of models with different layer counts")
    compare.set_defaults(func=cmd_compare)

    analyses = sub.add_parser("analyses", help="list analyses and their parameters")
    analyses.add_argument("--markdown", metavar="DIR|-",
                          help="write one Markdown reference page per analysis and an index (README.md) into DIR (e.g. docs/analyses), or print them all with -")
    analyses.set_defaults(func=cmd_analyses)

    models = sub.add_parser("models", help="list models that can be loaded here")
    models.add_argument("--prepare", action="store_true", help="convert the embedded model into the cache now")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_utf8(args)
        if args.command is None:
            args.func = cmd_tui
        elif args.tui_ray is not None or args.tui_actors is not None:
            raise BadInput(f"--ray and --actors before a command are the workbench's; give them after `{args.command}`")
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader (`| head`) has what it wanted; a closed pipe is not an error.
        silence_closed_stdout()
        return 0
    except IwbError as error:
        line, code = cli_line(error)
        print(line, file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("iwb: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        # A full disk or a vanished folder mid-run: one line; what was stored stays, and the run
        # (failed, or interrupted at the next open) resumes once the cause is gone.
        where = f" ({error.filename})" if error.filename else ""
        print(f"iwb: {error.strerror or error}{where}; results stored so far are kept: see `iwb runs`, then `iwb resume RUN_ID` once it is fixed",
              file=sys.stderr)
        return 1
    finally:
        print_notices()


if __name__ == "__main__":
    sys.exit(main())
