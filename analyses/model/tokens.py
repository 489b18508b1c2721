"""Tokenising, BOS, batching and padding: one policy for every analysis.

BOS follows the model: ``auto`` does what the model's own tokenizer does (SmolLM2's and GPT-2's
add nothing; Gemma's adds ``<bos>``), ``true`` / ``false`` force it. Where an analysis needs a
start-of-context token (truncated contexts) it uses the document separator: the BOS where the
tokenizer adds one, else ``<|endoftext|>`` where the vocabulary has it, else the EOS token.
Batches group sequences of similar length under a token budget and are right-padded with an
attention mask (exact on a causal model: real positions never see a pad).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from analyses.core.errors import BadInput

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel

BOS_CHOICES = ("auto", "true", "false")
BOS_DOC = "BOS: auto (as the model's own tokenizer does), true or false"
CPU_BATCH_TOKENS = 4096


def bos_param() -> Any:
    """The ``prepend_bos`` Params field every analysis that tokenizes text declares: one declaration,
    its choices checked by analyses.core.params.check_params."""
    from analyses.core.contract import param

    return param("auto", BOS_DOC, BOS_CHOICES)


def check_bos(value: str) -> None:
    if str(value).strip().lower() not in BOS_CHOICES:
        raise BadInput(f"parameter 'prepend_bos' takes one of {', '.join(BOS_CHOICES)}, not {value!r}")


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts a BOS in front of a text by itself."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


@dataclass(frozen=True)
class BosChoice:
    """Whether a BOS goes in front of every input, which token, and why (recorded with the run)."""

    prepend: bool
    token_id: int | None
    setting: str
    reason: str

    def record(self) -> dict:
        return {"prepend_bos": self.prepend, "bos_token_id": self.token_id, "bos_setting": self.setting, "bos_reason": self.reason}


def bos_choice(model: LoadedModel, setting: str | bool = "auto") -> BosChoice:
    tokenizer = model.tokenizer
    text = str(setting).strip().lower()
    check_bos(text)
    adds = tokenizer_adds_bos(tokenizer)
    if text == "auto":
        prepend, reason = adds, "the model's tokenizer adds a BOS" if adds else "the model's tokenizer adds no BOS"
    else:
        prepend = text == "true"
        reason = "forced by the prepend_bos parameter"
    token_id = None
    if prepend:
        token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else document_separator_id(model)
    return BosChoice(prepend, None if token_id is None else int(token_id), text, reason)


def document_separator_id(model: LoadedModel) -> int:
    """The start-of-context token for truncated contexts."""
    tokenizer = model.tokenizer
    if tokenizer_adds_bos(tokenizer):
        return int(tokenizer.bos_token_id)
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(endoftext, int) and tokenizer.convert_ids_to_tokens(endoftext) == "<|endoftext|>":
        return int(endoftext)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise BadInput(f"model {model.name!r}: its tokenizer has no BOS, <|endoftext|> or EOS token to start a context with")


def encode(model: LoadedModel, text: str, bos: BosChoice, max_tokens: int | None = None) -> list[int]:
    """Token ids of a text as the model sees it: BOS by the choice, cut to max_tokens (BOS
    included) and to the model's context."""
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    if bos.prepend:
        ids = [bos.token_id] + ids
    limit = min(model.n_ctx, max_tokens) if max_tokens else model.n_ctx
    return ids[:limit]


def pad_id(model: LoadedModel) -> int:
    tokenizer = model.tokenizer
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def length_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped by similar length (longest first) so that rows x longest stays within
    the token budget; a sequence longer than the budget gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def pad_right(model: LoadedModel, rows: Sequence[Sequence[int]], width: int | None = None) -> tuple[Any, Any]:
    """Right-padded token ids [B, W] and the attention mask [B, W] on the model's device."""
    import torch

    width = width or max(len(row) for row in rows)
    tokens = torch.full((len(rows), width), pad_id(model), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, ids in enumerate(rows):
        tokens[index, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        mask[index, : len(ids)] = 1
    return tokens.to(model.device), mask.to(model.device)


def token_budget(model: LoadedModel, bytes_per_token: int, cpu_default: int = CPU_BATCH_TOKENS, fraction: float = 0.6) -> int:
    """Tokens per forward: a fixed default on the CPU, from free memory on CUDA."""
    import torch

    if not str(model.device).startswith("cuda"):
        return cpu_default
    free, _ = torch.cuda.mem_get_info(torch.device(model.device))
    return max(256, int(free * fraction) // max(1, bytes_per_token))


def activation_bytes_per_token(model: LoadedModel, extra_floats: int = 0) -> int:
    """Rough live bytes per token in one block (doubled for temporaries), plus the logits a full
    forward returns (d_vocab float32 per token, doubled for a softmax beside them). Without the
    logits a CUDA budget overcommitted: on an H200 SmolLM2's budget was ~1.2M tokens of 75 KB each,
    whose logits alone (196 KB a token) asked for 217 GiB."""
    cfg = model.bridge.cfg
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * model.d_model
    element = 2 if model.dtype in ("float16", "bfloat16") else 4
    return element * (8 * model.d_model + 3 * d_mlp + extra_floats) * 2 + 4 * model.d_vocab * 2
