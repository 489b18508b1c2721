"""Exact patching of chosen nodes, batched: one row per (node, noise sample), each row the base
run with that node set to its source value through the bridge's hooks; the exact effect is the
mean over samples of M(patched) minus the base run's mean M."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analyses.attribution_patching.engine import Setup, forward, hook_name
from analyses.core.contract import CancelEvent, check_cancel

SITE_OF_KIND = {"resid": "resid", "attn": "attn", "mlp": "mlp", "mlp_total": "mlp", "head": "z", "head_total": "z", "neuron_sum": "neuron", "neuron_last": "neuron"}


@dataclass(frozen=True)
class Node:
    """kind and index: (layer, pos) for resid/attn/mlp, (layer,) for mlp_total (the MLP's output
    at every token), (layer, head, pos) for head,
    (layer, head) for head_total, (layer, neuron) for neuron_sum / neuron_last."""

    kind: str
    index: tuple[int, ...]

    @property
    def layer(self) -> int:
        return self.index[0]


def _patch_hook(rows: list, base_rows: Any, source_rows: Any, source: dict, z_patched: dict, layer: int, site: str):
    """A hook writing every row's node value for one (site, layer)."""

    def write(tensor: Any, hook: Any) -> Any:
        device = tensor.device
        for row, node, sample in rows:
            if node.kind in ("resid", "attn", "mlp"):
                pos = node.index[1]
                tensor[row, pos] = source[(site, layer)][source_rows[sample], pos].to(device)
            elif node.kind == "mlp_total":
                tensor[row] = source[(site, layer)][source_rows[sample]].to(device)
            elif node.kind == "head":
                _, head, pos = node.index
                tensor[row, :, head] = z_patched[layer][pos, sample, :, head].to(device, tensor.dtype)
            elif node.kind == "head_total":
                head = node.index[1]
                tensor[row, :, head] = source[(site, layer)][source_rows[sample], :, head].to(device)
            elif node.kind == "neuron_sum":
                tensor[row, :, node.index[1]] = source[(site, layer)][source_rows[sample], :, node.index[1]].to(device)
            else:
                tensor[row, -1, node.index[1]] = source[(site, layer)][source_rows[sample], -1, node.index[1]].to(device)
        return tensor

    return write


def exact_effects(model, setup: Setup, nodes: list[Node], source: dict, z_patched: dict, batch_rows: int = 64,
                  cancel: CancelEvent | None = None) -> list[float]:
    """The exact effect of patching each node: the mean over samples of M(patched) - M(base)."""
    import torch

    samples = setup.samples
    base_of, source_of = setup.base_rows(), setup.source_rows()
    jobs = [(node_index, sample) for node_index in range(len(nodes)) for sample in range(samples)]
    totals = [0.0] * len(nodes)
    per_chunk = max(1, batch_rows - samples)
    for start in range(0, len(jobs), per_chunk):
        check_cancel(cancel)
        # Every chunk carries the unpatched base rows: an effect is the difference of rows of one
        # forward, so that a node whose value does not change scores exactly 0.
        chunk = jobs[start : start + per_chunk] + [(-1, sample) for sample in range(samples)]
        by_hook: dict = {}
        for row, (node_index, sample) in enumerate(chunk):
            if node_index < 0:
                continue
            node = nodes[node_index]
            site = SITE_OF_KIND[node.kind]
            by_hook.setdefault((site, node.layer), []).append((row, node, sample))
        hooks = [(hook_name(site, layer), _patch_hook(rows, base_of, source_of, source, z_patched, layer, site)) for (site, layer), rows in by_hook.items()]
        with torch.inference_mode():
            logits = forward(model, setup.base, [base_of[sample] for _, sample in chunk], hooks)
            values = setup.metric(logits).cpu().tolist()
        unpatched = sum(values[-samples:])
        for (node_index, _), value in zip(chunk[:-samples], values[:-samples]):
            totals[node_index] += value - unpatched / samples
    return [total / samples for total in totals]
