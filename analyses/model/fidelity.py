"""A run's fidelity record: the model layer against a plain Hugging Face forward on the run's
first input, and the fingerprints of what produced the numbers (tokenizer, weights, libraries).

Each check is (name, value, tolerance, ok, detail): ``ok`` None means skipped (with the reason in
detail), a fingerprint has its hash in detail and ok True. The cost is one adapter forward and
one Hugging Face forward over at most MAX_TOKENS tokens.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from analyses.model.loading import LoadedModel

MAX_TOKENS = 64
# float32 logits of the same weights along two code paths (fused vs unfused ops) differ by ~1e-5.
LOGIT_TOLERANCE = {"float32": 1e-3, "float16": 5e-2, "bfloat16": 2e-1}
KL_TOLERANCE = {"float32": 1e-6, "float16": 1e-3, "bfloat16": 1e-2}
LIBRARIES = ("torch", "transformers", "transformer-lens", "numpy", "scikit-learn", "pyarrow", "duckdb", "plotext", "textual", "iwb")


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    tolerance: float | None
    ok: bool | None
    detail: str = ""


def tokenizer_fingerprint(model: LoadedModel) -> str:
    """sha256 of the vocabulary (token -> id) and the special tokens the tokenizer declares;
    computed once per tokenizer of a loaded model."""
    key = id(model.tokenizer)
    if key not in model._tokenizer_fingerprints:
        model._tokenizer_fingerprints[key] = _vocabulary_hash(model.tokenizer)
    return model._tokenizer_fingerprints[key]


def _vocabulary_hash(tokenizer: Any) -> str:
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    special = {name: str(value) for name, value in sorted(getattr(tokenizer, "special_tokens_map", {}).items())}
    return hashlib.sha256(json.dumps([vocabulary, special], ensure_ascii=False).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def model_checks(model: LoadedModel, text: str | None, prepend_bos: str = "auto") -> list[Check]:
    """The adapter's clean logits against a plain Hugging Face forward on the same token ids, and
    the fingerprints; with no text (an analysis of the weights only) the forward check is skipped."""
    bos = model.bos(prepend_bos)
    checks = [
        Check("tokenizer_fingerprint", None, None, True, tokenizer_fingerprint(model)),
        Check("bos", float(bos.prepend), None, True, bos.reason),
        Check("weights_fingerprint", None, None, model.revision is not None, model.revision or "no revision or hash known for this source"),
        Check("library_versions", None, None, True, json.dumps(library_versions(), sort_keys=True)),
    ]
    if not text:
        return checks + [Check("model_vs_hf", None, None, None, "skipped: the run has no text input")]
    return checks + _forward_checks(model, text, bos.setting)


def _forward_checks(model: LoadedModel, text: str, prepend_bos: str) -> list[Check]:
    import torch

    from analyses.model.adapters import adapter_for
    from analyses.model.families import hf_model

    tokens = model.to_tokens(text, prepend_bos, max_tokens=MAX_TOKENS)
    adapter = adapter_for(model)
    with torch.inference_mode():
        hidden = adapter.embed(tokens)
        ours = adapter.logits(adapter.run(hidden, range(model.n_layers), adapter.context(tokens.shape[1], hidden=hidden))).double()
        theirs = hf_model(model)(tokens, use_cache=False).logits.double()
    log_ours, log_theirs = torch.log_softmax(ours, -1), torch.log_softmax(theirs, -1)
    max_diff = float((ours - theirs).abs().max())
    agreement = float((ours.argmax(-1) == theirs.argmax(-1)).double().mean())
    kl = float((log_theirs.exp() * (log_theirs - log_ours)).sum(-1).max())
    logit_tolerance, kl_tolerance = LOGIT_TOLERANCE.get(model.dtype, 1e-3), KL_TOLERANCE.get(model.dtype, 1e-6)
    where = f"{tokens.shape[1]} tokens of the first input"
    return [
        Check("model_vs_hf_max_abs_logit_diff", max_diff, logit_tolerance, max_diff <= logit_tolerance, where),
        Check("model_vs_hf_top1_agreement", agreement, 1.0, agreement == 1.0, where),
        Check("model_vs_hf_max_kl", kl, kl_tolerance, kl <= kl_tolerance, where),
    ]
