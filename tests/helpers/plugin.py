"""A throwaway analysis plugin: the example package of docs/plugins.md (its module and its
pyproject.toml, read from the doc so that the doc cannot rot), built and installed with pip into a
folder of its own, the way a package outside this repository is installed next to iwb."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
PLUGIN_NAME = "token-norms"
PLUGIN_MODULE = "iwb_token_norms"
PLUGIN_DIST = "iwb-token-norms"
PLUGIN_TABLE = "token_norms"


def doc_blocks(language: str, path: Path = DOC) -> list[str]:
    """The fenced code blocks of one language in a Markdown file, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)


def example_files() -> dict[str, str]:
    """The example package as the doc shows it: file name -> text."""
    (module,) = doc_blocks("python")
    (pyproject,) = doc_blocks("toml")
    return {f"{PLUGIN_MODULE}.py": module, "pyproject.toml": pyproject}


def write_package(folder: Path, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or example_files()).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def pip_install_target(package: Path, target: Path) -> Path:
    """``pip install --target`` without the network or build isolation (setuptools is in the venv)."""
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(package)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=package.parent, timeout=300)
    assert done.returncode == 0, f"pip install of {package} failed:\n{done.stdout}\n{done.stderr}"
    return target


def install_plugin(root: Path, files: dict[str, str] | None = None, name: str = "pkg") -> Path:
    """Build and install a plugin package under root; the folder to put on sys.path / PYTHONPATH."""
    return pip_install_target(write_package(root / name, files), root / f"{name}-site")


def with_pythonpath(site: Path, env: dict | None = None) -> dict:
    """An environment for a subprocess that sees the installed plugin (ahead of any PYTHONPATH)."""
    base = {**os.environ, **(env or {})}
    parts = [str(site)] + ([base["PYTHONPATH"]] if base.get("PYTHONPATH") else [])
    return {**base, "PYTHONPATH": os.pathsep.join(parts)}
