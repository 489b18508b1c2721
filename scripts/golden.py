"""Golden results: reference numbers of the embedded model that `make test` compares against
(tests/test_golden.py), so a dependency or code change that moves a number fails loudly.

    python scripts/golden.py            print today's numbers next to the stored ones
    python scripts/golden.py --write    store today's numbers (only for a change you mean: say why in the commit)
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOLDEN = ROOT / "tests" / "data" / "golden.json"
PROMPT = "The Eiffel Tower is located in the city of"

# (name, analysis, inputs, params, SQL over the run's rows giving one number)
CASES = [
    ("logit-lens: p(' Paris') at the final layer, last position", "logit-lens", "prompt", {"target": " Paris"},
     "SELECT target_prob FROM logit_lens WHERE layer = 30 AND pos = (SELECT max(pos) FROM logit_lens)"),
    ("logit-lens: entropy (bits) at layer 15, last position", "logit-lens", "prompt", {"target": " Paris"},
     "SELECT entropy_bits FROM logit_lens WHERE layer = 15 AND pos = (SELECT max(pos) FROM logit_lens)"),
    ("causal-trace: resid restoration at the subject's last token, layer 10", "causal-trace", "prompt",
     {"subject": "The Eiffel Tower", "samples": "3", "kinds": "resid"},
     "SELECT restoration FROM causal_trace t JOIN causal_trace_inputs c USING (input_id) WHERE kind = 'resid' AND layer = 10 AND pos = c.subject_end - 1"),
    ("truncation: mean cosine at layer 15, k = 3, all tokens (4 documents)", "truncation", "pile", {"k_max": "3"},
     "SELECT mean FROM truncation_summary WHERE layer = 15 AND context = 3 AND category = 'all'"),
    ("layer-interventions: KL of deleting block 5 (2 documents)", "layer-interventions", "pile", {"interventions": "block"},
     "SELECT kl FROM layer_interventions WHERE intervention = 'block' AND layer = 5"),
]


def measure() -> dict[str, float]:
    import duckdb

    from analyses.core.contract import Input, no_progress
    from analyses.model.loading import load_model
    from app.run.runner import RunRequest, execute, prepare
    from store import Store
    from tests.helpers.shards import pile_inputs

    model = load_model("smollm2-135m", device="cpu", dtype="float32")
    numbers = {}
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, analysis, kind, params, sql) in enumerate(CASES):
            db = Path(scratch) / f"golden-{index}.duckdb"
            n_docs = 4 if analysis == "truncation" else 2
            inputs = (Input(0, "prompt", PROMPT),) if kind == "prompt" else pile_inputs(n_docs)
            execute(Store(db), model, prepare(RunRequest(analysis, inputs, params)), no_progress)
            conn = duckdb.connect(str(db), read_only=True)
            try:
                numbers[name] = float(conn.execute(sql).fetchone()[0])
            finally:
                conn.close()
    return numbers


def main(argv: list[str]) -> int:
    numbers = measure()
    stored = json.loads(GOLDEN.read_text())["numbers"] if GOLDEN.exists() else {}
    for name, value in numbers.items():
        print(f"{value:.9g}\t(stored {stored.get(name)})\t{name}")
    if "--write" in argv:
        GOLDEN.write_text(json.dumps({"model": "smollm2-135m", "dtype": "float32", "rtol": 1e-4, "atol": 1e-6,
                                      "numbers": numbers}, indent=2) + "\n")
        print(f"wrote {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
