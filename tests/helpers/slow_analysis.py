"""A test-only analysis whose units of work take a set time, to exercise cancel, crash and progress
paths of the worker without depending on how fast the model runs. Registered only in tests."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Analysis, AnalysisSpec, CancelEvent, Input, Line, Progress, Result, ResultTable, param
from analyses.core.errors import Cancelled


@dataclass(frozen=True)
class Params:
    steps: int = param(20, "units of work")
    step_seconds: float = param(0.05, "time each unit takes")
    ignore_cancel: bool = param(False, "never look at the cancel event (a stuck job)")


SPEC = AnalysisSpec(
    name="slow-steps",
    title="Slow steps (test)",
    description="Counts steps slowly.",
    input_kinds=("prompt",),
    tables=(ResultTable("slow_steps", (("input_id", "INTEGER"), ("step", "INTEGER"), ("value", "DOUBLE"))),),
    charts=(Line("Step value", "slow_steps", "value", x="step"),),
)


class SlowSteps(Analysis):
    Params = Params
    spec = SPEC

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        import pyarrow as pa

        for step in range(params.steps):
            if cancel.is_set() and not params.ignore_cancel:
                raise Cancelled("cancelled")
            progress(step, params.steps, f"step {step + 1}/{params.steps}")
            time.sleep(params.step_seconds)
        progress(params.steps, params.steps, "done")
        ids = model.to_tokens(inputs[0].text)[0].tolist()
        tokens = pa.table({"input_id": pa.array([0] * len(ids), pa.int32()), "pos": pa.array(range(len(ids)), pa.int32()),
                           "token_id": pa.array(ids, pa.int32()), "token": model.token_strings(ids)})
        table = pa.table({"input_id": pa.array([0] * params.steps, pa.int32()), "step": pa.array(range(params.steps), pa.int32()),
                          "value": pa.array([float(s * s) for s in range(params.steps)])})
        return Result(tables={"slow_steps": table}, tokens=tokens)


ANALYSIS = SlowSteps()
