"""Causal tracing's result tables: per-prompt traces, the inputs' summary, the bucket averages by
category and the clean-run companions (attention of the last token, hidden-state norms/cosines).

The bucket averages are over every included prompt of the run: each shard stores its included
prompts' bucket means per layer (causal_trace_bucket_inputs), and the run's final step averages
them (math.fsum over the prompts), so the averages do not depend on how the prompts were sharded."""
from __future__ import annotations

from typing import Any

from analyses.core.contract import CancelEvent, Input, Progress, Result
from analyses.core.tables import tokens_table_of

BUCKETS = ("1:subj-first", "2:subj-mid", "3:subj-last", "4:next", "5:further", "6:last")


def noise_sigma(model, located: list, params) -> tuple[float, str]:
    """(sigma, what it is): explicit, the std of the whole embedding matrix, or of the subject
    tokens' embeddings pooled over all inputs (ROME's collect_embedding_std)."""
    import torch

    from analyses.model.adapters import adapter_for

    if params.sigma is not None:
        return float(params.sigma), "explicit"
    with torch.inference_mode():
        if params.sigma_source == "embedding":
            return float(adapter_for(model).embedding_matrix().double().std()), "embedding matrix"
        parts = []
        for where in located:
            tokens = torch.tensor([where.ids], device=model.device)
            begin, end = where.subject_range
            parts.append(adapter_for(model).token_embed(tokens)[0, begin:end].double().flatten())
        return float(torch.cat(parts).std()), "subject-token embeddings"


def bucket_rows(subject_range: tuple[int, int], seq_len: int) -> dict[str, list[int]]:
    """Token rows of each bucket; a one-token subject is both first and last subject token."""
    begin, end = subject_range
    last = seq_len - 1
    rows = {
        BUCKETS[0]: [begin],
        BUCKETS[1]: list(range(begin + 1, end - 1)),
        BUCKETS[2]: [end - 1],
        BUCKETS[3]: [end] if end < last else [],
        BUCKETS[4]: list(range(end + 1, last)),
        BUCKETS[5]: [last],
    }
    return {name: positions for name, positions in rows.items() if positions}


def companions(model, tokens: Any, subject_range: tuple[int, int]) -> tuple[dict, dict]:
    """Clean run: last token's attention to first / subject / itself per layer (mean over heads),
    block-output norms per (layer, pos) and the cosine of consecutive layers at the last token."""
    import numpy as np
    import torch

    n_layers = model.n_layers
    begin, end = subject_range
    names = {f"blocks.{layer}.{hook}" for layer in range(n_layers) for hook in ("attn.hook_pattern", "hook_resid_post")}
    with torch.inference_mode():
        _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in names)
        attention = {"input_layer": [], "target": [], "weight": []}
        for layer in range(n_layers):
            last_row = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1].float().mean(0)
            for target, weight in (("first", last_row[0]), ("subject", last_row[begin:end].sum()), ("self", last_row[-1])):
                attention["input_layer"].append(layer)
                attention["target"].append(target)
                attention["weight"].append(float(weight))
        resid = torch.stack([cache[f"blocks.{layer}.hook_resid_post"][0] for layer in range(n_layers)]).float()
        norms = resid.norm(dim=-1).cpu().numpy()
        last = resid[:, -1]
        cos = torch.nn.functional.cosine_similarity(last[:-1], last[1:], dim=-1).cpu().numpy()
    cos_next = np.full(norms.shape, np.nan)
    cos_next[:-1, -1] = cos
    return attention, {"norm": norms, "cos_next": cos_next}


class Collector:
    """Traces inputs one at a time and accumulates every result table's columns."""

    def __init__(self, model, params) -> None:
        self.model, self.params = model, params
        self.kinds = params.kind_list()
        self.trace: dict = {k: [] for k in ("input_id", "kind", "layer", "pos", "prob", "restoration")}
        self.inputs: dict = {k: [] for k in ("input_id", "category", "subject", "subject_start", "subject_end", "answer_token_id", "answer_token", "expected_answer", "correct", "high_prob", "low_prob", "included", "noise_std", "samples")}
        self.attention: dict = {k: [] for k in ("input_id", "layer", "target", "weight")}
        self.hidden: dict = {k: [] for k in ("input_id", "layer", "pos", "norm", "cos_next_layer")}
        self.tokens: list = []
        self.per_prompt: list = []

    def add(self, item: Input, where, noise_std: float, progress: Progress, cancel: CancelEvent) -> None:
        import numpy as np
        import torch

        from analyses.causal_trace import engine as causal_engine

        model, params = self.model, self.params
        tokens = torch.tensor([where.ids], device=model.device)
        with torch.inference_mode():
            answer_id = int(model.bridge(tokens)[0, -1].argmax())
        begin, end = where.subject_range
        draws = causal_engine.noise_draws(params.samples, end - begin, model.d_model, params.rome_compatible, params.seed, item.input_id)
        setup = causal_engine.TraceSetup(tokens, where.subject_range, answer_id, torch.from_numpy(draws) * noise_std)
        output = causal_engine.trace_fast(model, setup, self.kinds, params.window, progress, cancel)
        expected = item.meta.get("answer") or params.answer
        correct = None
        if expected:
            expected_ids = model.tokenizer.encode(expected, add_special_tokens=False)
            correct = bool(expected_ids) and expected_ids[0] == answer_id
        spread = output.high - output.low
        included = correct is not False and spread >= params.threshold
        seq_len, n_layers = len(where.ids), model.n_layers
        restoration = {kind: (probs - output.low) / spread if spread != 0 else np.full(probs.shape, np.nan) for kind, probs in output.probs.items()}
        pos_grid, layer_grid = np.meshgrid(np.arange(seq_len), np.arange(n_layers), indexing="ij")
        for kind in self.kinds:
            self.trace["input_id"].append(np.full(seq_len * n_layers, item.input_id))
            self.trace["kind"].append(np.full(seq_len * n_layers, kind, dtype=object))
            self.trace["layer"].append(layer_grid.ravel())
            self.trace["pos"].append(pos_grid.ravel())
            self.trace["prob"].append(output.probs[kind].ravel())
            self.trace["restoration"].append(restoration[kind].ravel())
        category = str(item.meta.get("category", "prompt"))
        row = {
            "input_id": item.input_id, "category": category, "subject": where.subject, "subject_start": begin, "subject_end": end,
            "answer_token_id": answer_id, "answer_token": model.token_strings([answer_id])[0], "expected_answer": expected, "correct": correct,
            "high_prob": output.high, "low_prob": output.low, "included": included, "noise_std": noise_std, "samples": params.samples,
        }
        for key, value in row.items():
            self.inputs[key].append(value)
        if included:
            self.per_prompt.append((item.input_id, category, where.subject_range, seq_len, output, restoration))
        attention, hidden = companions(model, tokens, where.subject_range)
        self.attention["input_id"].extend([item.input_id] * len(attention["target"]))
        self.attention["layer"].extend(attention["input_layer"])
        self.attention["target"].extend(attention["target"])
        self.attention["weight"].extend(attention["weight"])
        layer_grid_h, pos_grid_h = np.meshgrid(np.arange(n_layers), np.arange(seq_len), indexing="ij")
        self.hidden["input_id"].append(np.full(n_layers * seq_len, item.input_id))
        self.hidden["layer"].append(layer_grid_h.ravel())
        self.hidden["pos"].append(pos_grid_h.ravel())
        self.hidden["norm"].append(hidden["norm"].ravel().astype(np.float64))
        self.hidden["cos_next_layer"].append(hidden["cos_next"].ravel())
        self.tokens.append((item.input_id, list(where.ids), model.token_strings(list(where.ids))))

    def bucket_inputs(self) -> Any:
        """Per included prompt, kind, bucket and layer: the prompt's mean normalised restoration and
        mean p(answer) over the bucket's tokens, and its low (the partial aggregate of the buckets)."""
        import numpy as np

        table: dict = {k: [] for k in ("input_id", "category", "kind", "bucket", "layer", "restoration", "prob", "low_prob")}
        for input_id, category, subject_range, seq_len, output, restoration in self.per_prompt:
            for bucket, rows in bucket_rows(subject_range, seq_len).items():
                for kind in self.kinds:
                    mean_r, mean_p = restoration[kind][rows].mean(0), output.probs[kind][rows].mean(0)
                    n_layers = len(mean_r)
                    table["input_id"].append(np.full(n_layers, input_id))
                    table["category"].append(np.full(n_layers, category, dtype=object))
                    table["kind"].append(np.full(n_layers, kind, dtype=object))
                    table["bucket"].append(np.full(n_layers, bucket, dtype=object))
                    table["layer"].append(np.arange(n_layers))
                    table["restoration"].append(np.asarray(mean_r, dtype=np.float64))
                    table["prob"].append(np.asarray(mean_p, dtype=np.float64))
                    table["low_prob"].append(np.full(n_layers, output.low, dtype=np.float64))
        import pyarrow as pa

        types = {"input_id": pa.int32(), "category": pa.string(), "kind": pa.string(), "bucket": pa.string(), "layer": pa.int32(),
                 "restoration": pa.float64(), "prob": pa.float64(), "low_prob": pa.float64()}
        return pa.table({k: pa.array(np.concatenate(v).tolist() if v else [], type=types[k]) for k, v in table.items()})

    def result(self, notes: dict) -> Result:
        import numpy as np
        import pyarrow as pa

        def flat(columns: dict) -> dict:
            return {k: (np.concatenate(v) if v and isinstance(v[0], np.ndarray) else v) for k, v in columns.items()}

        int32 = {"input_id", "layer", "pos", "subject_start", "subject_end", "answer_token_id", "samples"}

        def arrow(columns: dict) -> Any:
            return pa.table({k: pa.array(v, type=pa.int32()) if k in int32 else pa.array(v, from_pandas=True) for k, v in flat(columns).items()})

        tables = {
            "causal_trace": arrow(self.trace),
            "causal_trace_inputs": arrow(self.inputs),
            "causal_trace_bucket_inputs": self.bucket_inputs(),
            "trace_attention": arrow(self.attention),
            "trace_hidden": arrow(self.hidden),
        }
        return Result(tables=tables, tokens=tokens_table_of(self.tokens), notes={**notes, "kinds": list(self.kinds)})


def bucket_table(read: Any) -> tuple[Any, int]:
    """(causal_trace_buckets, prompts in them) from every shard's causal_trace_bucket_inputs: per
    (category, kind, bucket, layer) the mean normalised restoration over the included prompts and
    ROME's AIE max(0, mean prob - mean low); sums merged with math.fsum."""
    import numpy as np
    import pyarrow as pa

    from analyses.core.aggregates import merged_sums

    merged = merged_sums(read, "causal_trace_bucket_inputs", ("category", "kind", "bucket", "layer"), ("restoration", "prob", "low_prob"))
    names = ("category", "kind", "bucket", "layer", "mean_restoration", "aie", "n_prompts")
    types = (pa.string(), pa.string(), pa.string(), pa.int32(), pa.float64(), pa.float64(), pa.int32())
    if merged is None:
        return pa.table({name: pa.array([], type=kind) for name, kind in zip(names, types)}), 0
    n = merged["n_rows"]
    columns = (merged["category"], merged["kind"], merged["bucket"], merged["layer"], merged["restoration"] / n,
               np.clip(merged["prob"] / n - merged["low_prob"] / n, 0.0, None), n)
    prompts = read("causal_trace_bucket_inputs", ["input_id"])
    return (pa.table({name: pa.array(np.asarray(values).tolist(), type=kind) for name, values, kind in zip(names, columns, types)}),
            len(set(prompts["input_id"].to_pylist())) if prompts is not None else 0)
