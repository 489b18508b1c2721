"""Logit lens: the final norm and unembedding applied to the residual stream at every depth.

Rows ``layer`` 0..n_layers-1 are ``resid_pre`` of block L (layer 0 = the embeddings);
row ``layer = n_layers`` is the final ``resid_post``, i.e. the model's own logits. The
final norm is recomputed for every row (a "proper" lens), not divided by the final
layer's cached scale. Reductions run in float32 whatever the model dtype.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import (
    Analysis,
    AnalysisSpec,
    CancelEvent,
    Filter,
    Heatmap,
    Input,
    Invariant,
    Line,
    Progress,
    Result,
    ResultTable,
    check_cancel,
    param,
)
from analyses.core.errors import BadInput
from analyses.model.tokens import bos_param

LOG2 = 0.6931471805599453
# Upper bound on floats held by one chunk of lens logits (rows x positions x vocab).
CHUNK_ELEMENTS = 32 * 1024 * 1024


@dataclass(frozen=True)
class Params:
    target: str | None = param(None, 'target token string whose probability is tracked, e.g. " Paris"')
    prepend_bos: str = bos_param()


SPEC = AnalysisSpec(
    name="logit-lens",
    title="Logit lens",
    description=(
        "Decode the residual stream before every block and after the last one with the final "
        "norm and unembedding: per layer and position, the entropy of the next-token "
        "distribution, its KL from the final one, the top token and the target's probability."
    ),
    input_kinds=("prompt", "prompt_set", "pile"),
    tables=(
        ResultTable(
            "logit_lens",
            (
                ("input_id", "INTEGER"),
                ("layer", "INTEGER"),
                ("pos", "INTEGER"),
                ("entropy_bits", "DOUBLE"),
                ("kl_to_final", "DOUBLE"),
                ("top_token_id", "INTEGER"),
                ("top_token", "VARCHAR"),
                ("top_prob", "DOUBLE"),
                ("target_prob", "DOUBLE"),
            ),
            "layer 0..n_layers-1 = resid_pre of that block, layer n_layers = final resid_post",
        ),
    ),
    charts=(
        Heatmap("Top-token probability (layer x token)", "logit_lens", "top_prob", vmin=0.0, vmax=1.0),
        Line("Target probability at the last position", "logit_lens", "target_prob", x="layer", last_pos=True),
        Line("Entropy (bits) at the last position", "logit_lens", "entropy_bits", x="layer", last_pos=True),
        # Over a corpus: per-layer means over every input and position but the first.
        Line("Mean entropy (bits) over all inputs, first position excluded", "logit_lens", "entropy_bits", x="layer", filters=(Filter("pos", ">", 0),), per_input=False),
        Line("Mean KL to final (nats) over all inputs, first position excluded", "logit_lens", "kl_to_final", x="layer", filters=(Filter("pos", ">", 0),), per_input=False),
    ),
)


def resolve_target(model, target: str | None) -> int | None:
    """The token id of the target string; it must be exactly one token."""
    if target is None:
        return None
    if target == "":
        raise BadInput("parameter 'target' is empty; give a token string such as ' Paris'")
    ids = model.tokenizer.encode(target, add_special_tokens=False)
    if len(ids) != 1:
        pieces = model.token_strings(ids)
        raise BadInput(f"target {target!r} is {len(ids)} tokens {pieces}, not one token")
    return int(ids[0])


def lens_rows(model, tokens, cancel: CancelEvent | None = None) -> tuple:
    """(lens logits source stack [n_layers+1, T, d], model logits [T, V]) for one sequence;
    cancel is checked after every block of the forward."""
    import torch

    from analyses.model.hooks import block_checks

    n_layers = model.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    wanted = set(names)
    with model.bridge.hooks(fwd_hooks=block_checks(n_layers, cancel) if cancel is not None else []):
        logits, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    stack = torch.stack([cache[name][0] for name in names])
    return stack, logits[0]


def lens_statistics(model, stack, target_id: int | None, cancel: CancelEvent | None = None,
                    on_chunk: Callable[[int, int, int], None] | None = None) -> dict:
    """Per (row, pos) statistics of the lens over a residual stack [R, T, d]; the last row is final.
    Cancel is checked and on_chunk(first row, last row, rows) called before every chunk of rows."""
    import torch

    from analyses.model.adapters import adapter_for

    adapter = adapter_for(model)
    rows, positions, _ = stack.shape
    chunk_rows = max(1, CHUNK_ELEMENTS // max(1, positions * model.d_vocab))
    final_logits = adapter.logits(stack[-1:]).float()[0]
    final_logp = torch.log_softmax(final_logits, dim=-1)
    final_p = final_logp.exp()
    out = {key: [] for key in ("entropy", "kl", "top_id", "top_prob", "target_prob")}
    for start in range(0, rows, chunk_rows):
        check_cancel(cancel)
        if on_chunk:
            on_chunk(start, min(rows, start + chunk_rows), rows)
        chunk = stack[start : start + chunk_rows]
        logp = torch.log_softmax(adapter.logits(chunk).float(), dim=-1)
        if start + chunk.shape[0] == rows:
            # The final row is the reference itself: use the very same tensor so KL is exactly 0.
            logp[-1] = final_logp
        p = logp.exp()
        out["entropy"].append(-(p * logp).sum(-1) / LOG2)
        out["kl"].append((final_p * (final_logp - logp)).sum(-1).clamp_min(0.0))
        top_prob, top_id = p.max(-1)
        out["top_id"].append(top_id)
        out["top_prob"].append(top_prob)
        if target_id is not None:
            out["target_prob"].append(p[..., target_id])
    return {key: torch.cat(parts).cpu().numpy() for key, parts in out.items() if parts}


class LogitLens(Analysis):
    Params = Params
    spec = SPEC
    invariant_checks = (Invariant("invariant_final_layer_kl", 1e-6, "at the final row (the model's own resid_post through the lens) the KL to the model's logits is 0, for every input and position"),)
    sharded = True  # each input's rows depend on that input alone

    def check(self, model, inputs: list[Input], params: Params) -> None:
        resolve_target(model, params.target)

    def invariants(self, params: Params, read: Any, notes: dict) -> list[tuple]:
        """The exact invariant on the stored numbers: at the final row (the model's own resid_post
        through the lens) the KL to the model's logits is 0, for every input and position."""
        table = read("logit_lens", ["layer", "kl_to_final"])
        if table is None or table.num_rows == 0:
            return [("invariant_final_layer_kl", None, 1e-6, None, "skipped: no rows")]
        layers, kls = table.column("layer").to_pylist(), table.column("kl_to_final").to_pylist()
        last = max(layers)
        worst = max(abs(kl) for layer, kl in zip(layers, kls) if layer == last)
        return [("invariant_final_layer_kl", worst, 1e-6, worst <= 1e-6, f"max |KL| at layer {last} over every input and position")]

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        import numpy as np
        import pyarrow as pa
        import torch

        from analyses.core.tables import tokens_table

        target_id = resolve_target(model, params.target)
        columns = {name: [] for name, _ in SPEC.tables[0].columns}
        token_rows = []
        n_rows = model.n_layers + 1
        with torch.inference_mode():
            for index, item in enumerate(inputs):
                check_cancel(cancel)
                # Progress in lens rows (layers) over every input: the forward, then the rows in chunks.
                progress(index * n_rows, len(inputs) * n_rows, f"input {index + 1}/{len(inputs)}: forward pass")
                tokens = model.to_tokens(item.text, prepend_bos=params.prepend_bos, max_tokens=item.meta.get("max_tokens"))
                stack, _ = lens_rows(model, tokens, cancel)

                def chunk(first: int, last: int, rows: int, index: int = index, positions: int = int(tokens.shape[-1])) -> None:
                    progress(index * n_rows + first, len(inputs) * n_rows,
                             f"input {index + 1}/{len(inputs)}: lens rows {first + 1}-{last}/{rows} ({positions} tokens)")

                stats = lens_statistics(model, stack, target_id, cancel, chunk)
                ids = tokens[0].tolist()
                token_rows.append(tokens)
                positions = len(ids)
                layer_grid, pos_grid = np.meshgrid(np.arange(n_rows), np.arange(positions), indexing="ij")
                columns["input_id"].append(np.full(n_rows * positions, item.input_id, dtype=np.int32))
                columns["layer"].append(layer_grid.ravel().astype(np.int32))
                columns["pos"].append(pos_grid.ravel().astype(np.int32))
                columns["entropy_bits"].append(stats["entropy"].ravel().astype(np.float64))
                columns["kl_to_final"].append(stats["kl"].ravel().astype(np.float64))
                top_ids = stats["top_id"].ravel()
                columns["top_token_id"].append(top_ids.astype(np.int32))
                vocab_strings = dict(zip(np.unique(top_ids).tolist(), model.token_strings(np.unique(top_ids).tolist())))
                columns["top_token"].append(np.array([vocab_strings[i] for i in top_ids.tolist()], dtype=object))
                columns["top_prob"].append(stats["top_prob"].ravel().astype(np.float64))
                if target_id is None:
                    columns["target_prob"].append(np.full(n_rows * positions, np.nan))
                else:
                    columns["target_prob"].append(stats["target_prob"].ravel().astype(np.float64))
        progress(len(inputs) * n_rows, len(inputs) * n_rows, "done")
        arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
        table = pa.table(
            {
                name: pa.array(values, from_pandas=True) if name == "target_prob" else pa.array(values)
                for name, values in arrays.items()
            }
        )
        notes = {**model.bos(params.prepend_bos).record(), "target_token_id": target_id, "lens": "proper (final norm recomputed per layer)"}
        return Result(tables={"logit_lens": table}, tokens=tokens_table(model, inputs, token_rows), notes=notes)


ANALYSIS = LogitLens()
