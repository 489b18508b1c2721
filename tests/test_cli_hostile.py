"""`iwb` against hostile input: each case ends with one line and the documented exit code, and
stores or changes nothing. Driven through the installed command, as a user meets it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.cli import assert_bad_input, default_sigint, iwb, iwb_command, runs_in
from tests.helpers.fakes import seed_lens_run


def env(**extra: str) -> dict:
    values = {**os.environ, **extra}
    values.pop("IWB_DB", None)
    return values


@pytest.fixture
def seeded_db(db_path):
    from store import Store

    seed_lens_run(Store(db_path))
    return db_path


@pytest.mark.parametrize("args", [
    ["runs"], ["show", "1"], ["sql", "SELECT * FROM logit_lens", "--format", "json"], ["sql", "SELECT * FROM range(100000)", "--format", "csv"],
])
def test_a_closed_pipe_ends_quietly(seeded_db, args):
    # Closing our end before iwb writes is `iwb ... | head -0`: every write meets a closed pipe.
    process = subprocess.Popen(iwb_command() + ["--db", str(seeded_db)] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(NO_COLOR="1"))
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert stderr == ""


@pytest.mark.parametrize("extra", [{"NO_COLOR": "1"}, {}])
def test_no_escape_codes_outside_a_terminal_or_with_no_color(seeded_db, extra):
    base = env(**extra)
    if not extra:
        base.pop("NO_COLOR", None)
    result = subprocess.run(iwb_command() + ["--db", str(seeded_db), "show", "1"], capture_output=True, text=True, env=base)
    assert result.returncode == 0 and "Top-token probability" in result.stdout
    assert "\x1b" not in result.stdout


def test_export_to_a_missing_folder_a_directory_or_an_unwritable_path(seeded_db, tmp_path):
    assert_bad_input(iwb("export", "1", "--to", str(tmp_path / "no" / "such" / "x.parquet"), db=seeded_db), "does not exist")
    assert_bad_input(iwb("export", "1", "--to", str(tmp_path), db=seeded_db), "is a directory")
    (tmp_path / "folder.csv").mkdir()
    assert_bad_input(iwb("export", "1", "--to", str(tmp_path / "folder.csv"), db=seeded_db), "is a directory")
    if os.geteuid() == 0:
        unwritable = "/proc/iwb-export.csv"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        unwritable = str(locked / "x.csv")
    result = iwb("export", "1", "--to", unwritable, db=seeded_db)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv", "results.duckdb"]


def test_export_writes_quietly(seeded_db, tmp_path):
    import pyarrow.parquet as pq

    result = iwb("export", "1", "--to", str(tmp_path / "lens.parquet"), db=seeded_db)
    assert result.returncode == 0 and result.stderr == ""
    assert pq.read_table(tmp_path / "lens.parquet").num_rows == 60


@pytest.mark.parametrize("query", ["", "   ", "-- only a comment", "/* nothing */ ;"])
def test_empty_sql(seeded_db, query):
    assert_bad_input(iwb("sql", query, db=seeded_db), "no SQL statement")


def test_json_output_is_strict(seeded_db):
    result = iwb("sql", "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, ['-inf'::DOUBLE, 1.5] AS c, 2 AS d", "--format", "json", db=seeded_db)
    assert result.returncode == 0, result.stderr

    def refuse(name: str) -> None:
        raise ValueError(f"bare {name} in JSON output")

    assert json.loads(result.stdout, parse_constant=refuse) == [{"a": None, "b": None, "c": [None, 1.5], "d": 2}]


def test_a_prompt_that_is_not_utf8(db_path):
    command = [os.fsencode(part) for part in iwb_command()]
    result = subprocess.run(command + [b"--db", os.fsencode(db_path), b"run", b"logit-lens", b"--prompt", b"caf\xe9 \xff"],
                            capture_output=True, text=True, env=env(NO_COLOR="1"))
    assert_bad_input(result, "not valid UTF-8 (byte 0xe9")
    assert not db_path.exists()


def test_a_prompt_set_that_is_not_utf8_names_line_and_byte(db_path, tmp_path):
    latin = tmp_path / "prompts.csv"
    latin.write_bytes(b"prompt,subject\nThe capital of France is,France\nCaf\xe9 au lait is,coffee\n")
    assert_bad_input(iwb("run", "logit-lens", "--prompts", str(latin), db=db_path), "prompts.csv:3: not UTF-8 (byte 0xe9 at byte 4")
    assert runs_in(db_path) == 0


def test_a_prompt_set_with_a_byte_order_mark_is_read():
    import tempfile
    from pathlib import Path

    from analyses.inputs import corpus

    with tempfile.TemporaryDirectory() as folder:
        excel = Path(folder) / "excel.csv"
        excel.write_bytes("prompt,subject\r\nThe Eiffel Tower is in,Eiffel Tower\r\n".encode("utf-8-sig"))
        inputs = corpus.load_prompt_set(str(excel))
    assert [(item.text, item.meta) for item in inputs] == [("The Eiffel Tower is in", {"subject": "Eiffel Tower"})]


@pytest.mark.parametrize("args, fragment", [
    (["show", "1", "--width", "100000"], "--width: must be from 20 to 1000"),
    (["show", "1", "--width", "-3"], "--width: must be from 20 to 1000"),
    (["show", "1", "--height", "0"], "--height: must be from 8 to 500"),
    (["sql", "SELECT 1", "--max-rows", "-1"], "--max-rows: must be at least 0"),
    (["runs", "--limit", "-1"], "--limit: must be at least 0"),
    (["run", "attention-locality", "--n-docs", "0"], "--n-docs: must be at least 1"),
    (["run", "causal-trace", "--prompt", "The Eiffel Tower is in", "--param", "noise=nan"], "finite float"),
    (["run", "causal-trace", "--prompt", "The Eiffel Tower is in", "--param", "noise=-inf"], "finite float"),
])
def test_sizes_and_numbers_out_of_bounds(seeded_db, args, fragment):
    assert_bad_input(iwb(*args, db=seeded_db), fragment)
    assert runs_in(seeded_db) == 1


def test_a_truncated_zst_corpus_is_damaged(tmp_path, db_path):
    from analyses.inputs.corpus import DEFAULT_CORPUS

    cut = tmp_path / "cut.jsonl.zst"
    data = DEFAULT_CORPUS.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert_bad_input(iwb("run", "attention-locality", "--pile", str(cut), db=db_path), "cannot be read")
    assert runs_in(db_path) == 0


def test_a_zst_file_of_several_frames_reads_every_frame(tmp_path):
    import zstandard

    from analyses.inputs.corpus_sources import iter_records

    lines = [json.dumps({"text": f"document {i}", "meta": {"pile_set_name": "Test"}}) + "\n" for i in range(50)]
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(compressor.compress("".join(lines[i:i + 7]).encode()) for i in range(0, 50, 7)))
    assert [record.text for record in iter_records(path)] == [f"document {i}" for i in range(50)]


def test_non_finite_floats_are_refused_at_parsing():
    from analyses.core.errors import BadInput
    from analyses.core.params import ParamInfo, coerce_value

    info = ParamInfo("noise", "float", 3.0, "", False)
    for text in ("nan", "NaN", "inf", "-Infinity", "1e999"):
        with pytest.raises(BadInput, match="finite float"):
            coerce_value(info, text)
    assert coerce_value(info, "2.5") == 2.5


@pytest.mark.parametrize("window", [1_000_000, 100_000, 12])
def test_attention_window_bounded_by_the_longest_input(tiny_model, window):
    from analyses.core.contract import Input
    from analyses.core.errors import BadInput
    from app.run.runner import RunRequest, check_with_model, prepare

    prompt = "The Eiffel Tower is located in the city of"
    n_tokens = tiny_model.to_tokens(prompt).shape[-1]  # as the run tokenises it: BOS by the model
    prepared = prepare(RunRequest("attention-locality", (Input(0, "prompt", prompt),), {"window": str(window)}))
    with pytest.raises(BadInput, match=f"at most window={n_tokens - 1}"):
        check_with_model(tiny_model, prepared)
    fitting = prepare(RunRequest("attention-locality", (Input(0, "prompt", prompt),), {"window": str(n_tokens - 1)}))
    check_with_model(tiny_model, fitting)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_ctrl_c_during_a_query_exits_130(seeded_db):
    process = subprocess.Popen(
        iwb_command() + ["--db", str(seeded_db), "sql", "SELECT sum(a.range * b.range) FROM range(10000000) a, range(10000000) b"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(NO_COLOR="1"), preexec_fn=default_sigint,
    )
    try:
        # Inside the query (which would run for hours), whatever the machine's load: start-up costs
        # about a second of CPU, the query burns every core.
        deadline = time.monotonic() + 120
        while _cpu_seconds(process.pid) < 3.0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # a query Ctrl-C did not stop must not outlive the test
            process.kill()
            process.wait()
    assert process.returncode == 130 and stderr == "iwb: interrupted\n" and stdout == ""


@pytest.mark.integration
def test_ctrl_c_during_a_run_exits_130_and_stores_it_cancelled(db_path):
    process = subprocess.Popen(
        iwb_command() + ["--db", str(db_path), "run", "attention-locality", "--n-docs", "64", "--max-tokens", "256"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(NO_COLOR="1"), preexec_fn=default_sigint,
    )
    seen = []
    for line in process.stderr:  # the progress line appears once the analysis is under way
        seen.append(line)
        if "attention-locality [" in line:
            break
    process.send_signal(signal.SIGINT)
    try:
        rest = process.stderr.read()
        assert process.wait(timeout=120) == 130, seen + [rest]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert rest.strip().splitlines()[-1] == "iwb: interrupted" and "Traceback" not in rest
    from store import Store

    assert Store(db_path, read_only=True).query("SELECT status FROM runs").rows == [("cancelled",)]


def test_stored_text_cannot_drive_the_terminal(db_path):
    from store import Store

    seed_lens_run(Store(db_path), "clear \x1b[2J\x1b]0;pwned\x07 the screen")
    for args in (["runs"], ["sql", "SELECT text FROM inputs"], ["show", "1"]):
        result = iwb(*args, db=db_path)
        assert result.returncode == 0 and "\x1b" not in result.stdout and "\x07" not in result.stdout, args
    assert "clear ␛[2J" in iwb("runs", db=db_path).stdout
