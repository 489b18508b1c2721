"""attribution-patching's refusals through the installed `iwb` command: one line, exit 2, no run stored."""
from __future__ import annotations

import pytest

from tests.helpers.cli import assert_bad_input, iwb, runs_in

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from analyses.model.tiny import build_tiny

    return build_tiny("llama", tmp_path_factory.mktemp("atp-cli-llama"))


@pytest.mark.parametrize(("params", "fragment"), [
    (["corrupt_prompt=The Colosseum is in Rome"], "must have the same token length"),
    (["subject=Eiffel Tower", "target= Paris is"], "parameter 'target' must be one token"),
    (["subject=Eiffel Tower", "metric=logit_diff", "target= Paris", "foil= Paris"], "equals the target"),
    (["subject=Eiffel Tower", "metric=logit_diff"], "metric logit_diff needs a foil"),
    (["subject=Eiffel Tower", "metric=bogus"], "parameter 'metric' takes one of logprob, logit_diff, kl"),
    (["subject=Louvre"], "is not in the prompt"),
    (["subject=Eiffel Tower", "corrupt_prompt=The Colosseum is located in the city of"], "not both"),
    (["subject=Eiffel Tower", "top_edges=0"], "parameter 'top_edges' must be between 1 and 100000"),
    (["subject=Eiffel Tower", "edge_threshold=1.5"], "parameter 'edge_threshold' must be in [0, 1]"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(tiny_folder, db_path, params, fragment):
    args = ["run", "attribution-patching", "--model", str(tiny_folder), "--prompt", PROMPT]
    for item in params:
        args += ["--param", item]
    assert_bad_input(iwb(*args, db=db_path), fragment)
    assert runs_in(db_path) == 0


def test_show_prints_the_checks_under_the_charts(tiny_folder, db_path):
    ran = iwb("run", "attribution-patching", "--model", str(tiny_folder), "--prompt", PROMPT, "--param", "subject=Eiffel Tower",
              "--param", "samples=1", "--param", "graddrop=false", "--no-chart", db=db_path)
    assert ran.returncode == 0, ran.stderr
    shown = iwb("show", ran.stdout.split()[-1], "--width", "100", db=db_path)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "invariant_unchanged_nodes_zero" in text.split("AtP estimate, resid")[0]
    checks = text.index("Checks: estimate vs exact patching")
    assert checks > text.index("AtP estimate, resid") > 0 and checks > text.index("Top MLP neurons")
    table = text[checks:].splitlines()
    assert "spearman" in table[1] and "fn_estimate" in table[1]
    assert sorted(line.split()[1] for line in table[3:11]) == sorted(("attn", "edge", "head", "head_total", "mlp", "neuron_last", "neuron_sum", "resid"))
    # The circuit: a picture with every node of its node table as a box, then the nodes and edges.
    circuit = text[text.index("Circuit: the strongest edges"):checks]
    picture, _, rest = circuit.partition("\nNodes (")
    nodes_table = rest.split("\nEdges:")[0].splitlines()[3:]
    names = [line.split()[0] for line in nodes_table if line.strip()]
    assert "logits" in names and len(names) >= 3
    for name in names:
        assert picture.count(f"│{name}│") == 1, name
    assert "┴" in picture and "┬" in picture
    assert "invariant_edges_sum_to_input" in text.split("AtP estimate, resid")[0]
