"""Layer interventions: delete a block, its attention or its MLP, or swap two adjacent blocks,
and measure how far the next-token distribution moves (stages of inference).

Fast path: one clean run per batch caches the residual entering every block (and the residual
between attention and MLP); each intervention resumes from the cached residual and runs only
the blocks after it, through the model layer's adapter (every family; parallel blocks read
the same residual for attention and MLP); a swap runs the two blocks in the other order. Metrics are summed on the device in float64 and read back once per shard.
Sharded: every shard stores its sums per intervention (layer_interventions_sums); finalize merges
them (analyses.core.aggregates, math.fsum) into the means.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analyses.core.contract import Analysis, AnalysisSpec, CancelEvent, Input, Invariant, Line, Order, Progress, Result, ResultTable, Table, check_cancel, param
from analyses.core.errors import BadInput
from analyses.core.params import name_list
from analyses.model.tokens import bos_param

LOG2 = 0.6931471805599453
INTERVENTION_KINDS = ("block", "attn", "mlp", "swap")
# Sums kept per intervention: kl, top-1 agreements, entropy delta (nats), positions, loss delta, loss positions.
N_SUMS = 6


@dataclass(frozen=True)
class Params:
    interventions: str = param("block,attn,mlp,swap", "comma list of kinds: block (delete block), attn, mlp (delete that sublayer), swap (run L+1 then L)")
    prepend_bos: str = bos_param()
    batch_tokens: int = param(1024, "tokens per batch (documents of similar length are batched, right-padded)")

    def check(self) -> None:
        kinds_of(self.interventions)
        if self.batch_tokens < 1:
            raise BadInput(f"batch_tokens must be at least 1, not {self.batch_tokens}")


SPEC = AnalysisSpec(
    name="layer-interventions",
    title="Layer interventions (delete / swap blocks)",
    description=(
        "For every layer: delete the whole block, its attention only, its MLP only; for every "
        "adjacent pair: swap the two blocks. Per intervention, over all document positions: mean "
        "KL(original || intervened) in nats, top-1 agreement, change of entropy (bits) and of "
        "next-token loss (nats)."
    ),
    input_kinds=("pile", "prompt", "prompt_set"),
    tables=(
        ResultTable(
            "layer_interventions",
            (
                ("intervention", "VARCHAR"),
                ("layer", "INTEGER"),
                ("relative_depth", "DOUBLE"),
                ("kl", "DOUBLE"),
                ("top1_agreement", "DOUBLE"),
                ("entropy_delta_bits", "DOUBLE"),
                ("loss_delta", "DOUBLE"),
                ("n_tokens", "INTEGER"),
            ),
            "intervention block/attn/mlp deletes that part of block `layer`; swap runs layer+1 then layer; "
            "relative_depth = layer / (n_layers - 1); means over all real positions (loss: positions with a next token)",
        ),
        ResultTable(
            "layer_interventions_sums",
            (
                ("intervention", "VARCHAR"),
                ("layer", "INTEGER"),
                *((f"{name}", "DOUBLE") for name in ("kl_sum", "top1_sum", "entropy_delta_sum", "n_positions", "loss_delta_sum", "n_loss_positions")),
                ("noop_kl", "DOUBLE"),
            ),
            "per shard: the metrics summed over the shard's positions (KL and entropy delta in nats) and the position counts; "
            "noop_kl = the no-op intervention's mean KL on the shard's first batch; layer_interventions is their merge over every shard",
        ),
    ),
    charts=(
        Line("Mean KL(original || intervened), nats, by relative depth", "layer_interventions", "kl", x="relative_depth", series="intervention", per_input=False),
        Line("Top-1 agreement with the original, by relative depth", "layer_interventions", "top1_agreement", x="relative_depth", series="intervention", per_input=False),
        Table("Most damaging interventions", "layer_interventions", "kl", per_input=False, order=(Order("kl", descending=True),), limit=10),
    ),
)


@dataclass(frozen=True)
class Intervention:
    kind: str
    layer: int


def kinds_of(text: str) -> tuple[str, ...]:
    return name_list(text, "interventions", INTERVENTION_KINDS)


def list_interventions(n_layers: int, kinds: tuple[str, ...]) -> list[Intervention]:
    return [
        Intervention(kind, layer)
        for kind in kinds
        for layer in range(n_layers - 1 if kind == "swap" else n_layers)
    ]


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids [B, T] and the real length of every row."""

    tokens: object
    lengths: tuple[int, ...]


def pack_batches(token_rows: list, batch_tokens: int, pad_id: int) -> list[TokenBatch]:
    """Sequences of similar length in right-padded batches of at most batch_tokens tokens
    (the model layer's batching policy; a longer sequence gets a batch of its own)."""
    import torch

    from analyses.model.tokens import length_batches

    batches = []
    for group in length_batches([row.shape[-1] for row in token_rows], batch_tokens):
        width = token_rows[group[0]].shape[-1]
        tokens = torch.full((len(group), width), pad_id, dtype=torch.long, device=token_rows[group[0]].device)
        for row, index in enumerate(group):
            seq = token_rows[index].reshape(-1)
            tokens[row, : seq.shape[0]] = seq
        batches.append(TokenBatch(tokens, tuple(token_rows[i].shape[-1] for i in group)))
    return batches


@dataclass
class Reference:
    """The clean run's log-probabilities and what the metrics compare with, for one batch."""

    logp: object
    prob: object
    top: object
    entropy: object
    nll: object
    valid: object
    loss_valid: object
    next_tokens: object


def clean_reference(logits, batch: TokenBatch) -> Reference:
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    width = batch.tokens.shape[1]
    lengths = torch.tensor(batch.lengths, device=logits.device)
    positions = torch.arange(width, device=logits.device)
    valid = positions[None, :] < lengths[:, None]
    loss_valid = positions[None, :-1] < (lengths[:, None] - 1)
    next_tokens = batch.tokens[:, 1:]
    nll = -logp[:, :-1].gather(-1, next_tokens.unsqueeze(-1)).squeeze(-1)
    prob = logp.exp()
    entropy = -(prob * logp).sum(-1)
    return Reference(logp, prob, logp.argmax(-1), entropy, nll, valid, loss_valid, next_tokens)


def metric_sums(ref: Reference, logits):
    """[N_SUMS] float64 sums over the batch's real positions for one intervened run."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    kl = (ref.prob * (ref.logp - logp)).sum(-1)
    agree = (logp.argmax(-1) == ref.top).float()
    entropy_delta = -(logp.exp() * logp).sum(-1) - ref.entropy
    nll = -logp[:, :-1].gather(-1, ref.next_tokens.unsqueeze(-1)).squeeze(-1)
    valid, loss_valid = ref.valid, ref.loss_valid
    return torch.stack(
        [
            kl[valid].double().sum(),
            agree[valid].double().sum(),
            entropy_delta[valid].double().sum(),
            valid.double().sum(),
            (nll - ref.nll)[loss_valid].double().sum(),
            loss_valid.double().sum(),
        ]
    )


@dataclass
class CleanRun:
    """One batch's clean run: the residual entering every block (and after the last), the
    residual between attention and MLP of every block, and the final logits."""

    context: object
    resid_pre: list
    resid_mid: list
    logits: object


def clean_run(adapter, tokens, cancel: CancelEvent | None = None) -> CleanRun:
    """resid_mid is resid_pre + the attention output: the block with its MLP deleted, also for
    parallel blocks (whose MLP reads resid_pre). Cancel is checked before every block."""
    embeddings = adapter.embed(tokens)
    context = adapter.context(tokens.shape[1], hidden=embeddings)
    resid_pre, resid_mid = [embeddings], []
    for layer in range(adapter.n_layers):
        check_cancel(cancel)
        resid = resid_pre[-1]
        mid = resid + adapter.attn_out(layer, resid, context)
        resid_mid.append(mid)
        resid_pre.append(mid + adapter.mlp_out(layer, resid if adapter.parallel else mid))
    return CleanRun(context, resid_pre, resid_mid, adapter.logits(resid_pre[-1]))


def run_blocks(adapter, resid, layers, context, cancel: CancelEvent | None = None):
    """adapter.run (the blocks in the given order), with cancel checked before every block: one
    intervention on a batch of a thousand tokens is seconds of blocks on a CPU."""
    for layer in layers:
        check_cancel(cancel)
        resid = adapter.block(layer, resid, context)
    return resid


def intervened_logits(adapter, clean: CleanRun, item: Intervention, cancel: CancelEvent | None = None):
    """Logits with one intervention, resumed from the clean run's cached residual."""
    layer, context = item.layer, clean.context
    if item.kind == "block":
        resid = clean.resid_pre[layer]
    elif item.kind == "attn":
        resid = adapter.block(layer, clean.resid_pre[layer], context, attn=False)
    elif item.kind == "mlp":
        resid = clean.resid_mid[layer]
    else:
        resid = run_blocks(adapter, clean.resid_pre[layer], [layer + 1, layer], context, cancel)
        layer += 1
    return adapter.logits(run_blocks(adapter, resid, range(layer + 1, adapter.n_layers), context, cancel))


def fast_batch_sums(adapter, batch: TokenBatch, interventions: list[Intervention], cancel: CancelEvent | None = None,
                    noop: list | None = None, on_step: Callable[[int, str], None] | None = None):
    """[len(interventions), N_SUMS] sums: one clean run caching every block's input, then each
    intervention resumes from its cached residual and runs only what comes after. With ``noop`` (a
    list), also the no-op intervention: every block resumed from the cached embeddings, whose mean KL
    to the clean run must be 0; it is appended to ``noop``. Cancel is checked before every block;
    on_step(i, what) is called before intervention i (and with -1 before the clean run)."""
    import torch

    if on_step:
        on_step(-1, "clean run")
    clean = clean_run(adapter, batch.tokens, cancel)
    ref = clean_reference(clean.logits, batch)
    if noop is not None:
        if on_step:
            on_step(-1, "no-op check")
        resumed = adapter.logits(run_blocks(adapter, clean.resid_pre[0], range(adapter.n_layers), clean.context, cancel))
        sums = metric_sums(ref, resumed)
        noop.append(float(sums[0] / sums[3]))
    sums = []
    for index, item in enumerate(interventions):
        check_cancel(cancel)
        if on_step:
            on_step(index, f"{item.kind} {item.layer}")
        sums.append(metric_sums(ref, intervened_logits(adapter, clean, item, cancel)))
    return torch.stack(sums)


def summarise(sums, interventions: list[Intervention], n_layers: int):
    """The result table (Arrow) from [len(interventions), N_SUMS] sums."""
    import pyarrow as pa

    values = sums.cpu().numpy() if hasattr(sums, "cpu") else sums
    depth_scale = max(1, n_layers - 1)
    return pa.table(
        {
            "intervention": [item.kind for item in interventions],
            "layer": pa.array([item.layer for item in interventions], type=pa.int32()),
            "relative_depth": [item.layer / depth_scale for item in interventions],
            "kl": values[:, 0] / values[:, 3],
            "top1_agreement": values[:, 1] / values[:, 3],
            "entropy_delta_bits": values[:, 2] / values[:, 3] / LOG2,
            "loss_delta": values[:, 4] / values[:, 5].clip(min=1),
            "n_tokens": pa.array(values[:, 3].astype("int64"), type=pa.int32()),
        }
    )


SUM_COLUMNS = ("kl_sum", "top1_sum", "entropy_delta_sum", "n_positions", "loss_delta_sum", "n_loss_positions")  # N_SUMS, in order


def sums_table(sums, interventions: list[Intervention], noop_kl: float | None):
    """One shard's partial aggregate: per intervention its N_SUMS sums, and the shard's no-op KL."""
    import numpy as np
    import pyarrow as pa

    values = sums.cpu().numpy().astype(np.float64)
    table = {"intervention": pa.array([item.kind for item in interventions], pa.string()),
             "layer": pa.array([item.layer for item in interventions], pa.int32())}
    table.update({name: pa.array(values[:, index]) for index, name in enumerate(SUM_COLUMNS)})
    table["noop_kl"] = pa.array([noop_kl] * len(interventions), pa.float64())
    return pa.table(table)


NOOP_KL_TOLERANCE = 1e-6


class LayerInterventions(Analysis):
    Params = Params
    spec = SPEC
    invariant_checks = (Invariant("invariant_noop_intervention_kl", NOOP_KL_TOLERANCE, "the no-op intervention (every block resumed from the cached embeddings, as each intervention resumes from its cached residual) has mean KL 0 to the clean run, on the first batch of every shard"),)
    sharded = True  # per-shard sums, merged by finalize

    def invariants(self, params: Params, read: Any, notes: dict) -> list[tuple]:
        """The exact invariant: the no-op intervention (every block resumed from the cached
        embeddings, as each intervention resumes from its cached residual) has KL 0 to the clean
        run, on the first batch of every shard (the largest |KL| over the shards; without stored
        shards, the notes')."""
        stored = read("layer_interventions_sums", ["noop_kl"]) if read is not None else None
        values = [abs(v) for v in stored["noop_kl"].to_pylist() if v is not None] if stored is not None else []
        value = max(values) if values else notes.get("noop_intervention_kl")
        if value is None:
            return [("invariant_noop_intervention_kl", None, NOOP_KL_TOLERANCE, None, "skipped: no batch")]
        return [("invariant_noop_intervention_kl", value, NOOP_KL_TOLERANCE, abs(value) <= NOOP_KL_TOLERANCE,
                 "mean KL(clean || resumed from the cached embeddings) over the first batch's positions of each shard, the largest")]

    def check(self, model, inputs: list[Input], params: Params) -> None:
        from analyses.model.adapters import adapter_for

        adapter_for(model)
        if model.n_layers < 2 and "swap" in kinds_of(params.interventions):
            raise BadInput("swap needs at least two layers")

    def compute(self, model, inputs: list[Input], params: Params, state: Any, progress: Progress, cancel: CancelEvent) -> Result:
        import torch

        from analyses.core.tables import tokens_table
        from analyses.model.adapters import adapter_for
        from analyses.model.hooks import document_tokens
        from analyses.model.tokens import pad_id

        adapter = adapter_for(model)
        interventions = list_interventions(model.n_layers, kinds_of(params.interventions))
        token_rows = document_tokens(model, inputs, params.prepend_bos)
        batches = pack_batches(token_rows, params.batch_tokens, pad_id(model))
        total = torch.zeros(len(interventions), N_SUMS, dtype=torch.float64, device=model.device)
        noop: list[float] = []
        n_steps = len(interventions)
        with torch.inference_mode():
            for index, batch in enumerate(batches):
                check_cancel(cancel)
                where = f"batch {index + 1}/{len(batches)} ({batch.tokens.shape[0]} x {batch.tokens.shape[1]} tokens)"

                def step(i: int, what: str, index: int = index, where: str = where) -> None:
                    # Progress in interventions over every batch: one unit is one intervention on one batch.
                    label = f"intervention {i + 1}/{n_steps} ({what})" if i >= 0 else what
                    progress(index * n_steps + max(i, 0), len(batches) * n_steps, f"{where}: {label}")

                # The first batch also runs the no-op intervention (one more forward per run).
                total += fast_batch_sums(adapter, batch, interventions, cancel, noop if index == 0 else None, step)
        progress(len(batches) * n_steps, len(batches) * n_steps, "done")
        notes = {
            **model.bos(params.prepend_bos).record(),
            "positions": "KL, agreement, entropy: every real position (BOS position included); loss: positions with a next token",
            "deletion": "the deleted block or sublayer contributes zero to the residual stream",
            "batches": [list(batch.tokens.shape) for batch in batches],
            "noop_intervention_kl": noop[0] if noop else None,
        }
        return Result(
            tables={"layer_interventions_sums": sums_table(total, interventions, noop[0] if noop else None)},
            tokens=tokens_table(model, inputs, token_rows),
            notes=notes,
        )

    def finalize(self, params: Params, state: Any, read, progress: Progress, cancel: CancelEvent) -> Result:
        """The means per intervention from every shard's sums (math.fsum: exact merge of the partial sums),
        in the order of the interventions."""
        import numpy as np

        from analyses.core.aggregates import merged_sums

        merged = merged_sums(read, "layer_interventions_sums", ("intervention", "layer"), SUM_COLUMNS)
        if merged is None:
            return Result({}, None, {})
        kinds = kinds_of(params.interventions)
        order = sorted(range(len(merged["layer"])), key=lambda i: (kinds.index(str(merged["intervention"][i])), int(merged["layer"][i])))
        interventions = [Intervention(str(merged["intervention"][i]), int(merged["layer"][i])) for i in order]
        sums = np.stack([merged[name][order] for name in SUM_COLUMNS], axis=1)
        n_layers = max(item.layer + (2 if item.kind == "swap" else 1) for item in interventions)  # every layer is listed
        return Result({"layer_interventions": summarise(sums, interventions, n_layers)}, None, {})


ANALYSIS = LayerInterventions()
