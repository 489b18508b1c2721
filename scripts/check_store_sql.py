"""make lint: only store/ writes SQL on the store's own tables (runs, shards, inputs, run_checks,
schema_version); the faces and the engine go through the Store's methods. One line per finding.
A line that only shows SQL to the user (an example in the SQL console) says so with
`# store-sql: shown to the user`."""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN_TABLES = re.compile(r"\b(FROM|JOIN|INTO|UPDATE|TABLE)\s+(runs|shards|inputs|run_checks|schema_version)\b")  # SQL keywords are written in capitals here
MARK = "# store-sql: shown to the user"


def findings() -> list[str]:
    found = []
    for folder in ("app", "analyses"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if OWN_TABLES.search(line) and MARK not in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: SQL on the store's own tables outside store/; add a Store method")
    return found


if __name__ == "__main__":
    problems = findings()
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)
