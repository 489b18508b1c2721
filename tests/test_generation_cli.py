"""`iwb run generate` through the installed command on a tiny model folder: the generated text and
the lens charts, plain without colour; every bad input one line, exit 2, nothing stored."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.cli import assert_bad_input, iwb, runs_in


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from analyses.model.tiny import build_tiny

    return str(build_tiny("llama", tmp_path_factory.mktemp("gen-tiny")))


def test_generate_prints_the_text_and_the_lens(tiny_folder, db_path):
    result = iwb("run", "generate", "--model", tiny_folder, "--prompt", "I think that you are", "--param", "max_new_tokens=5",
                 "--param", "steer= Love| Hate", "--param", "steer_layer=1", "--width", "100", db=db_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out
    assert "Generated (input 0, 5 tokens" in out
    assert out.splitlines()[out.splitlines().index(next(line for line in out.splitlines() if line.startswith("Generated"))) + 1].startswith("I think that you are")
    assert "Lens: the chosen token's probability" in out and "Generated tokens" in out
    assert "Lens at the last step: the chosen token's probability by layer" in out and "not drawn" not in out
    assert runs_in(db_path) == 1


@pytest.mark.parametrize("params, fragment", [
    (["max_new_tokens=0"], "max_new_tokens' must be at least 1"),
    (["max_new_tokens=100000"], "above the context"),
    (["stop="], "'stop' is empty"),
    (["steer= a| b", "steer_coef=nan"], "finite"),
    (["steer= a| b", "steer_coef=inf"], "finite"),
    (["steer= a| b", "steer_layer=7"], "layers 0..2"),
    (["steer=WIDE"], "width 64"),
    (["steer=INTS"], "dtype int64"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(tiny_folder, db_path, tmp_path, params, fragment):
    wide, ints = tmp_path / "wide.npy", tmp_path / "ints.npy"
    np.save(wide, np.ones(65, dtype=np.float32))
    np.save(ints, np.ones(64, dtype=np.int64))
    params = [p.replace("WIDE", str(wide)).replace("INTS", str(ints)) for p in params]
    args = ["run", "generate", "--model", tiny_folder, "--prompt", "Hello there"]
    for item in params:
        args += ["--param", item]
    assert_bad_input(iwb(*args, db=db_path), fragment)
    assert runs_in(db_path) == 0


def test_compare_a_steered_and_an_unsteered_run_by_step(tiny_folder, db_path):
    base = ["run", "generate", "--model", tiny_folder, "--prompt", "I think that you are", "--param", "max_new_tokens=6", "--no-chart"]
    assert iwb(*base, db=db_path).returncode == 0
    steered = iwb(*base, "--param", "steer= Love| Hate", "--param", "steer_layer=1", "--param", "steer_coef=8", db=db_path)
    assert steered.returncode == 0, steered.stderr
    result = iwb("compare", "1", "2", "--width", "100", db=db_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "compare run 1 vs run 2 (generate)" in out
    assert "steer" in out.split("\n\n")[0]  # the parameters that differ are named
    assert "Probability of each generated token" in out and "run 1" in out and "run 2" in out
    assert "step" in out
