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
])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(tiny_folder, db_path, params, fragment):
    args = ["run", "attribution-patching", "--model", str(tiny_folder), "--prompt", PROMPT]
    for item in params:
        args += ["--param", item]
    assert_bad_input(iwb(*args, db=db_path), fragment)
    assert runs_in(db_path) == 0
