"""Tables summarising the captured states: name attention, MLP norms, AND-like neurons and the
heads that move the attribute to the final token."""
from __future__ import annotations

from typing import Any

from analyses.fact_lookup import probes
from analyses.fact_lookup.tables import arrow_table


def concat_table(concat: Any, multi_token: Any) -> Any:
    """Mean over multi-token names of the attention [L, N, H] from the last name token to the earlier ones."""
    import numpy as np

    n_layers, _, n_heads = concat.shape
    count = int(multi_token.sum())
    means = concat[:, multi_token].mean(1) if count else np.full((n_layers, n_heads), np.nan)
    return arrow_table("fact_lookup_concat", {
        "layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers),
        "attention": means.ravel().astype(float), "n_entities": [count] * (n_layers * n_heads),
    })


def norms_table(known: Any, made_up: Any | None) -> Any:
    """Per layer, the mean and std of the MLP output norm [L, N, d] of known and made-up names."""
    columns: dict[str, list] = {key: [] for key in ("layer", "names", "mean_norm", "std_norm", "n_names")}
    groups = [("known", known)] + ([("made_up", made_up)] if made_up is not None else [])
    for layer in range(known.shape[0]):
        for label, states in groups:
            norms = states[layer].double().norm(dim=-1)
            for key, item in zip(columns, (layer, label, float(norms.mean()), float(norms.std()) if len(norms) > 1 else 0.0, len(norms))):
                columns[key].append(item)
    return arrow_table("fact_lookup_norms", columns)


def and_scores(real: Any, fake: Any, made_up: list) -> tuple[Any, Any, Any, Any]:
    """Per neuron: mean activation on "First Last", "First Other", "Other Last" and the AND score,
    over the entities that have both made-up partners. real [N, k], fake [M, k] (numpy)."""
    import numpy as np

    n = real.shape[0]
    first_other = np.full(real.shape, np.nan)
    other_last = np.full(real.shape, np.nan)
    for index, item in enumerate(made_up):
        first_other[item.first_of] = fake[index]
        other_last[item.last_of] = fake[index]
    both = ~np.isnan(first_other[:, 0]) & ~np.isnan(other_last[:, 0]) if n else np.zeros(0, bool)
    if not both.any():
        nan = np.full(real.shape[1], np.nan)
        return nan, nan, nan, 0
    fl, fo, ol = real[both].mean(0), first_other[both].mean(0), other_last[both].mean(0)
    return fl, fo, ol, int(both.sum())


def neuron_table(model, clean: dict, fake: dict, made_up: list, labels: Any, params: Any) -> Any:
    """Per layer, the n_neurons whose output weights align best with the probe directions, with
    their activations on real and recombined names and the AND score."""
    import numpy as np

    from analyses.fact_lookup.lookup import neuron_out_weights

    columns: dict[str, list] = {key: [] for key in ("layer", "neuron", "alignment", "act_first_last", "act_first_other", "act_other_last", "and_score", "n_entities")}
    for layer in range(model.n_layers):
        directions = probes.directions(clean["resid_post"][layer].numpy(), labels, params.c, params.seed)
        weights = neuron_out_weights(model, layer).numpy()
        unit = weights / np.linalg.norm(weights, axis=1, keepdims=True).clip(1e-12)
        alignment = np.abs(unit @ directions.T).max(1)
        top = np.argsort(-alignment, kind="stable")[: params.n_neurons]
        real = clean["neurons"][layer][:, top].double().numpy()
        fake_acts = fake["neurons"][layer][:, top].double().numpy() if "neurons" in fake else np.zeros((0, len(top)))
        fl, fo, ol, count = and_scores(real, fake_acts, made_up)
        score = fl - (fo + ol) / 2
        for slot, neuron in enumerate(top):
            row = (layer, int(neuron), float(alignment[neuron]), float(fl[slot]), float(fo[slot]), float(ol[slot]), float(score[slot]), count)
            for key, item in zip(columns, row):
                columns[key].append(item)
    return arrow_table("fact_lookup_neurons", columns)


def head_outputs(model, z_layer: Any, layer: int) -> Any:
    """Each head's output [N, H, d] from its z [N, H, d_head] and the output projection (bias left out)."""
    import torch

    from analyses.fact_lookup.lookup import head_out_weights

    return torch.einsum("nhk,hkd->nhd", z_layer, head_out_weights(model, layer, z_layer.shape[1]))


def answer_margin(model, resid: Any, labels: Any, answer_ids: list[int]) -> Any:
    """The correct answer's logit minus the mean of the other answers' logits, from final residuals [..., N, d]."""
    import torch

    from analyses.model.weights import apply_norm, model_weights

    weights = model_weights(model)
    unembed = weights.W_U[:, answer_ids].cpu()  # [d, A]
    scores = apply_norm(weights.ln_final, resid.cpu()) @ unembed  # [..., N, A]
    if weights.b_U is not None:
        scores = scores + weights.b_U[answer_ids].cpu()
    correct = scores.gather(-1, torch.as_tensor(labels).reshape(-1, 1).expand(*scores.shape[:-1], 1)).squeeze(-1)
    others = (scores.sum(-1) - correct) / max(1, len(answer_ids) - 1)
    return correct - others


def heads_table(model, clean: dict, labels: Any, answer_ids: list[int]) -> Any:
    """Per head: attention from the final token to the name and the direct effect on the answer margin."""
    import numpy as np
    import torch

    final_resid = clean["final_resid"]
    n_layers, _, n_heads = clean["final_attn"].shape
    effects = np.zeros((n_layers, n_heads))
    with torch.inference_mode():
        base = answer_margin(model, final_resid, labels, answer_ids)
        for layer in range(n_layers):
            outputs = head_outputs(model, clean["z"][layer], layer)  # [N, H, d]
            without = final_resid[None, :, :] - outputs.permute(1, 0, 2)  # [H, N, d]
            effects[layer] = (base[None, :] - answer_margin(model, without, labels, answer_ids)).mean(1).double().numpy()
    attention = clean["final_attn"].mean(1).double().numpy()
    return arrow_table("fact_lookup_heads", {
        "layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers),
        "attn_to_name": attention.ravel(), "direct_effect": effects.ravel(),
    })
