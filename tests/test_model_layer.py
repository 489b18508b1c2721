"""The model layer: every family's adapter reproduces Hugging Face's own forward (whole, resumed
from a prefix KV cache, with blocks skipped or reordered), BOS follows the model's tokenizer,
batching keeps every row, and an unsupported architecture is refused before anything is stored."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analyses.model import tokens as tok

PROMPT = "The Eiffel Tower is located in the city of"


def _hf(model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model.location, attn_implementation="eager").eval()


def test_adapter_equals_hugging_face_whole_and_resumed(family_model):
    import torch

    from analyses.model.adapters import adapter_for
    from analyses.model.kv import PrefixCache

    adapter = adapter_for(family_model)
    torch.manual_seed(1)
    tokens = torch.randint(3, 40000, (2, 19))
    with torch.inference_mode():
        reference = _hf(family_model)(tokens).logits
        context = adapter.context(19)
        recorder = PrefixCache(record=True)
        hidden = adapter.embed(tokens)
        for layer in range(adapter.n_layers):
            hidden = adapter.block(layer, hidden, context, recorder)
        whole = adapter.logits(hidden)
        # Resume at position 11 with the earlier keys and values as a prefix.
        start = 11
        later = adapter.embed(tokens[:, start:], first_pos=start)
        later_context = adapter.context(19 - start, first_pos=start)
        for layer in range(adapter.n_layers):
            keys, values = recorder.recorded[layer]
            later = adapter.block(layer, later, later_context, PrefixCache({layer: (keys[:, :, :start], values[:, :, :start])}))
        resumed = adapter.logits(later)
    assert (whole - reference).abs().max().item() < 1e-5
    assert (resumed - reference[:, start:]).abs().max().item() < 1e-5


def test_skipping_and_reordering_blocks_equals_the_models_own_forward(family_model):
    import torch

    from analyses.model.adapters import adapter_for

    adapter = adapter_for(family_model)
    tokens = family_model.to_tokens(PROMPT)
    order = [1, 0, 2]
    with torch.inference_mode():
        context = adapter.context(tokens.shape[1])
        mine = adapter.logits(adapter.run(adapter.embed(tokens), order, context))
        with adapter.blocks_in_order(order):
            theirs = family_model.bridge(tokens, use_cache=False)
        plain = family_model.bridge(tokens, use_cache=False)
        skipped_mlp = adapter.block(0, adapter.embed(tokens), context, mlp=False)
        with_attn_only = adapter.embed(tokens) + adapter.attn_out(0, adapter.embed(tokens), context)
    assert (mine - theirs).abs().max().item() < 1e-5
    assert (mine - plain).abs().max().item() > 1e-4
    assert torch.equal(skipped_mlp, with_attn_only)


def test_edits_replace_a_sublayer_output_exactly(family_model):
    import torch

    from analyses.model.adapters import adapter_for

    adapter = adapter_for(family_model)
    tokens = family_model.to_tokens(PROMPT)
    with torch.inference_mode():
        context = adapter.context(tokens.shape[1])
        resid = adapter.embed(tokens)
        zeroed = adapter.block(1, resid, context, edits={"mlp_out": torch.zeros_like})
        no_mlp = adapter.block(1, resid, context, mlp=False)
        hooked = family_model.bridge.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_mlp_out", lambda act, hook: act * 0)], use_cache=False)
        mine = adapter.logits(adapter.run(adapter.block(0, resid, context, mlp=False), [1, 2], context))
    assert torch.equal(zeroed, no_mlp)
    assert (mine - hooked).abs().max().item() < 1e-5


def test_bos_follows_the_tokenizer_and_can_be_forced(tiny_model):
    import copy

    auto = tiny_model.bos("auto")
    assert auto.prepend is False and auto.setting == "auto"
    assert tiny_model.to_tokens(PROMPT)[0].tolist() == tiny_model.tokenizer(PROMPT)["input_ids"]
    forced = tiny_model.bos("true")
    assert forced.prepend and forced.token_id == tiny_model.tokenizer.bos_token_id
    assert tiny_model.to_tokens(PROMPT, prepend_bos="true")[0, 0].item() == forced.token_id
    adding = copy.copy(tiny_model)
    adding.hf_tokenizer = copy.deepcopy(tiny_model.tokenizer)
    adding.hf_tokenizer.add_bos_token = True
    assert tok.tokenizer_adds_bos(adding.tokenizer)
    assert adding.bos("auto").prepend and adding.to_tokens(PROMPT)[0].tolist() == adding.tokenizer(PROMPT)["input_ids"]
    assert adding.bos("false").prepend is False
    # SmolLM2's tokenizer adds no BOS: its pretraining document separator starts a context.
    assert tok.document_separator_id(tiny_model) == tiny_model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tok.document_separator_id(adding) == adding.tokenizer.bos_token_id
    with pytest.raises(Exception, match="takes one of auto, true, false"):
        tok.check_bos("perhaps")


def test_length_batches_keep_every_row_within_the_budget():
    lengths = [5, 9, 3, 9, 7, 30]
    batches = tok.length_batches(lengths, 18)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 18
        assert longest == lengths[batch[0]]


def test_pad_right_masks_the_padding(tiny_model):
    tokens, mask = tok.pad_right(tiny_model, [[5, 6, 7], [8]])
    assert tokens.tolist() == [[5, 6, 7], [8, tok.pad_id(tiny_model), tok.pad_id(tiny_model)]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_an_unsupported_architecture_is_refused_before_anything_is_stored(tmp_path):
    import duckdb

    from analyses.model.tiny import build_tiny

    folder = build_tiny("opt", tmp_path / "tiny-opt")
    db = tmp_path / "results.duckdb"
    iwb = Path(sys.executable).with_name("iwb")
    done = subprocess.run([str(iwb), "run", "logit-lens", "--model", str(folder), "--prompt", PROMPT, "--db", str(db)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "OPTForCausalLM" in lines[0] and "GPT-2" in lines[0] and "Gemma 3" in lines[0]
    if db.exists():
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
