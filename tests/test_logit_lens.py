"""Logit lens: a straightforward reimplementation on the tiny model, invariants on the embedded one."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from analyses import logit_lens
from analyses.core.contract import Input, no_progress
from analyses.core.errors import BadInput, Cancelled

PROMPT = "The Eiffel Tower is located in the city of"


def _reference(model, text: str) -> dict:
    """Per layer: HF hidden states (resid_pre of each block), final norm, unembedding; float64 stats."""
    from analyses.model.adapters import adapter_for
    from analyses.model.families import unwrap

    hf = unwrap(model.bridge.original_model)
    head = adapter_for(model)
    tokens = model.to_tokens(text)
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
        # hidden_states[L] enters block L; the last entry is already normed, so use the logits there.
        rows = [head.logits(out.hidden_states[layer])[0] for layer in range(model.n_layers)]
        rows.append(out.logits[0])
    logp = torch.log_softmax(torch.stack(rows).double(), dim=-1)
    p = logp.exp()
    final_logp, final_p = logp[-1], p[-1]
    return {
        "entropy": (-(p * logp).sum(-1) / math.log(2)).numpy(),
        "kl": (final_p * (final_logp - logp)).sum(-1).numpy(),
        "top_id": p.argmax(-1).numpy(),
        "top_prob": p.max(-1).values.numpy(),
    }


def _run(model, text: str, **params):
    return logit_lens.ANALYSIS.run(model, [Input(0, "prompt", text)], logit_lens.Params(**params), no_progress, threading.Event())


def test_matches_a_straightforward_reimplementation(family_model):
    result = _run(family_model, "alpha beta gamma delta")
    table = result.tables["logit_lens"].to_pandas().sort_values(["layer", "pos"])
    reference = _reference(family_model, "alpha beta gamma delta")
    shape = reference["entropy"].shape
    assert table["layer"].max() == family_model.n_layers
    np.testing.assert_allclose(table["entropy_bits"].to_numpy().reshape(shape), reference["entropy"], atol=1e-4)
    np.testing.assert_allclose(table["kl_to_final"].to_numpy().reshape(shape), reference["kl"], atol=1e-4)
    np.testing.assert_allclose(table["top_prob"].to_numpy().reshape(shape), reference["top_prob"], atol=1e-5)
    assert (table["top_token_id"].to_numpy().reshape(shape) == reference["top_id"]).mean() > 0.99
    assert table["target_prob"].isna().all()
    assert result.tokens.num_rows == shape[1]


def test_target_must_be_one_token_and_cancel_stops(tiny_model):
    with pytest.raises(BadInput, match="not one token"):
        logit_lens.ANALYSIS.check(tiny_model, [], logit_lens.Params(target=" Eiffel Tower"))
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Cancelled):
        logit_lens.ANALYSIS.run(tiny_model, [Input(0, "prompt", "a b")], logit_lens.Params(), no_progress, cancelled)


@pytest.mark.integration
def test_invariants_on_the_embedded_model(embedded_model):
    result = _run(embedded_model, PROMPT, target=" Paris")
    table = result.tables["logit_lens"].to_pandas()
    n_layers = embedded_model.n_layers
    final = table[table.layer == n_layers].sort_values("pos")
    with torch.inference_mode():
        logits = embedded_model.bridge(embedded_model.to_tokens(PROMPT))[0]
    assert final["top_token_id"].tolist() == logits.argmax(-1).tolist()
    # The last row is the model's own output: its entropy is that of the logits computed here.
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    entropy_bits = (-(log_probs.exp() * log_probs).sum(-1) / np.log(2)).numpy()
    np.testing.assert_allclose(final["entropy_bits"].to_numpy(), entropy_bits, rtol=1e-4, atol=1e-4)
    assert final["kl_to_final"].abs().max() < 1e-6
    assert np.isfinite(table["entropy_bits"]).all() and (table["entropy_bits"] >= 0).all()
    assert (table["kl_to_final"] >= 0).all()
    last = final.iloc[-1]
    assert last["top_token"] == " Paris"
    assert last["target_prob"] == pytest.approx(last["top_prob"])
    assert len(table) == (n_layers + 1) * result.tokens.num_rows


@pytest.mark.integration
def test_defaults_report_the_models_own_probability(embedded_model):
    """With default parameters the final row is what Hugging Face gives for the prompt as the
    model's own tokenizer encodes it (no chat marker in front): P(" Paris") about 0.70."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model.location)
    hf = AutoModelForCausalLM.from_pretrained(embedded_model.location, attn_implementation="eager")
    encoded = tokenizer(PROMPT, return_tensors="pt")
    with torch.inference_mode():
        probs = torch.softmax(hf(**encoded).logits[0, -1].double(), dim=-1)
    paris = tokenizer.encode(" Paris", add_special_tokens=False)[0]
    result = _run(embedded_model, PROMPT, target=" Paris")
    table = result.tables["logit_lens"].to_pandas()
    last = table[(table.layer == embedded_model.n_layers)].sort_values("pos").iloc[-1]
    assert result.tokens.column("token_id").to_pylist() == encoded["input_ids"][0].tolist()
    assert last["target_prob"] == pytest.approx(float(probs[paris]), abs=1e-5)
    assert last["target_prob"] > 0.6
    assert result.notes["prepend_bos"] is False and result.notes["bos_setting"] == "auto"
