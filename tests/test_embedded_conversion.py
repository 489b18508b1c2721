"""Two processes converting the embedded model at once (Ray actors on a fresh machine) both get a
whole folder: the first rename wins and nothing another process reads is removed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CONVERT = "from analyses.model.loading import prepare_embedded; import json, sys; f = prepare_embedded(); print(json.load(open(f / 'iwb-source.json'))['gguf_sha256'])"


@pytest.mark.integration
def test_two_concurrent_conversions_both_get_a_whole_folder(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    processes = [subprocess.Popen([sys.executable, "-c", CONVERT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert outputs[0][0] == outputs[1][0] and len(outputs[0][0].strip()) == 64
    folder = tmp_path / "cache" / "iwb" / "models" / "smollm2-135m"
    assert json.loads((folder / "iwb-source.json").read_text())["gguf_sha256"] == outputs[0][0].strip()
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no staging left behind


@pytest.mark.integration
def test_a_leftover_folder_without_its_record_is_replaced_and_concurrent_conversions_still_agree(tmp_path):
    """A folder without iwb-source.json (an interrupted conversion) is set aside and replaced, even
    with three processes converting at once; none of them ever reads a folder another removed."""
    folder = tmp_path / "cache" / "iwb" / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # the leftover: no record
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    processes = [subprocess.Popen([sys.executable, "-c", CONVERT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    outputs = [process.communicate(timeout=900) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert json.loads((folder / "iwb-source.json").read_text())["gguf_sha256"] == outputs[0][0].strip()
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []
