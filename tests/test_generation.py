"""generate: decoding with the KV cache equals Hugging Face generate (greedy, no intervention) and
a full re-forward of the whole sequence with the same interventions at every step, on every
family's tiny model; sampling repeats with its seed; the stored tables hold what the steps made."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from analyses.core.contract import Input
from analyses.core.errors import BadInput
from analyses.generation import ANALYSIS, Params, build_plan, generate
from analyses.generation.engine import DOWN_PROJ, OUT_PROJ, _child
from analyses.model.families import family_of

PROMPT = "The quick brown fox jumps over"


@functools.cache
def _pure_hf(location):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(location, attn_implementation="eager", dtype=torch.float32).eval()


def pure_hf(model):
    """The model's own folder loaded by transformers alone (no bridge), eager attention; once per folder."""
    return _pure_hf(model.location)


def hf_layers(hf):
    for path in ("model.layers", "transformer.h", "gpt_neox.layers"):
        owner = hf
        try:
            for step in path.split("."):
                owner = getattr(owner, step)
        except AttributeError:
            continue
        return owner
    raise AssertionError(type(hf).__name__)


def run_generate(model, params):
    plan, _ = build_plan(model, params)
    ids = model.to_tokens(PROMPT, prepend_bos=params.prepend_bos)
    return ids, plan, generate(model, ids, params, plan, keep_logits=True)


def test_greedy_equals_hf_generate_on_every_family(family_model):
    params = Params(max_new_tokens=10, stop_at_eos=False)
    ids, _, gen = run_generate(family_model, params)
    hf = pure_hf(family_model)
    out = hf.generate(ids, max_new_tokens=10, do_sample=False, output_logits=True, return_dict_in_generate=True,
                      eos_token_id=None, pad_token_id=2)
    assert gen.new_ids == out.sequences[0, ids.shape[1]:].tolist()
    assert len(gen.final_logits) == len(out.logits) == 10
    for ours, theirs in zip(gen.final_logits, out.logits):
        torch.testing.assert_close(ours, theirs[0].float(), atol=2e-5, rtol=1e-5)


def _reference_logits(model, plan, sequence):
    """Logits at the last position of one forward of the whole sequence through the pure HF model
    (no cache), with the plan's interventions as torch hooks on its own modules."""
    hf = pure_hf(model)
    layers = hf_layers(hf)
    handles = []

    def resid_hook(layer):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if plan.steer is not None and plan.steer.layer == layer:
                add = plan.steer.vector.clone().expand_as(hidden).clone()
                if plan.steer.positions is not None:
                    mask = torch.zeros(hidden.shape[1], dtype=hidden.dtype)
                    mask[[p for p in plan.steer.positions if p < hidden.shape[1]]] = 1
                    add = add * mask[None, :, None]
                hidden = hidden + add
            if plan.clamp is not None and plan.clamp.layer == layer:
                u = plan.clamp.direction
                hidden = hidden + (plan.clamp.value - hidden @ u)[..., None] * u
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        return hook

    def head_hook(layer, heads, d_head):
        def hook(module, args):
            z = args[0].clone()
            for head in heads:
                span = slice(head * d_head, (head + 1) * d_head)
                z[..., span] = plan.means[("head", layer)][span] if plan.ablation_mode == "mean" else 0
            return (z,)
        return hook

    def neuron_hook(layer, neurons):
        def hook(module, args):
            acts = args[0].clone()
            acts[..., neurons] = plan.means[("neuron", layer)][neurons] if plan.ablation_mode == "mean" else 0
            return (acts,)
        return hook

    def mlp_hook(layer):
        def hook(module, args, output):
            return plan.means[("mlp", layer)].expand_as(output).clone() if plan.ablation_mode == "mean" else torch.zeros_like(output)
        return hook

    d_head = model.bridge.cfg.d_head
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(resid_hook(index), with_kwargs=True))
        attn = next(getattr(layer, name) for name in ("self_attn", "attn", "attention") if hasattr(layer, name))
        heads = [h for lay, h in plan.ablation.heads if lay == index]
        if heads:
            handles.append(_child(attn, OUT_PROJ, "").register_forward_pre_hook(head_hook(index, heads, d_head)))
        neurons = [n for lay, n in plan.ablation.neurons if lay == index]
        if neurons:
            handles.append(_child(layer.mlp, DOWN_PROJ, "").register_forward_pre_hook(neuron_hook(index, neurons)))
        if index in plan.ablation.mlps:
            # What the block adds to the residual: Gemma's MLP output goes through its post-norm first.
            target = getattr(layer, "post_feedforward_layernorm", None) or layer.mlp
            handles.append(target.register_forward_hook(mlp_hook(index)))
    try:
        with torch.inference_mode():
            return hf(torch.tensor([sequence]), use_cache=False).logits[0, -1].float()
    finally:
        for handle in handles:
            handle.remove()


INTERVENTIONS = {
    "steer": {"steer": " Love| Hate", "steer_layer": 1, "steer_coef": 6.0},
    "steer-positions": {"steer": " Love| Hate", "steer_layer": 2, "steer_coef": 8.0, "steer_positions": "1,3,8,9"},
    "ablate-zero": {"ablate": "h0.1,h2.3,mlp1,n2.5,n2.17"},
    "ablate-mean-clamp": {"ablate": "h1.0,mlp2,n0.7", "ablation": "mean", "clamp": " good| bad", "clamp_layer": 1, "clamp_value": 3.0},
}


@pytest.mark.parametrize("name", list(INTERVENTIONS))
def test_kv_cache_with_an_intervention_equals_a_full_reforward(family_model, name):
    params = Params(max_new_tokens=6, stop_at_eos=False, **INTERVENTIONS[name])
    ids, plan, gen = run_generate(family_model, params)
    clean = generate(family_model, ids, Params(max_new_tokens=6, stop_at_eos=False), build_plan(family_model, Params())[0], keep_logits=True)
    sequence = ids[0].tolist()
    worst = 0.0
    for step, token in enumerate(gen.new_ids):
        reference = _reference_logits(family_model, plan, sequence)
        worst = max(worst, float((gen.final_logits[step] - reference).abs().max()))
        assert int(reference.argmax()) == token
        sequence.append(token)
    assert worst < 5e-5, f"{family_of(family_model)} {name}: max |logit difference| {worst}"
    # The intervention does something: the logits move away from the clean run's.
    assert float((gen.final_logits[0] - clean.final_logits[0]).abs().max()) > 1e-3


def test_sampling_repeats_with_its_seed(tiny_model):
    params = Params(max_new_tokens=12, decoding="sample", temperature=1.5, top_p=0.9, seed=7, stop_at_eos=False)
    _, _, first = run_generate(tiny_model, params)
    _, _, again = run_generate(tiny_model, params)
    _, _, other = run_generate(tiny_model, dataclasses.replace(params, seed=8))
    assert first.new_ids == again.new_ids
    assert first.new_ids != other.new_ids
    # Nucleus: every sampled token lies inside the smallest set of tokens holding top_p of the mass.
    for step, token in enumerate(first.new_ids):
        probs = torch.softmax(first.final_logits[step].double() / 1.5, -1)
        ordered = torch.sort(probs, descending=True).values
        before = torch.cumsum(ordered, 0) - ordered
        threshold = ordered[before < 0.9].min()
        assert probs[token] >= threshold


def test_lens_rows_match_a_straightforward_lens(tiny_model):
    """The stored per-step numbers against a plain recomputation: the residuals of a full forward
    (bridge hooks), final norm + unembedding per layer, softmax, top-k."""
    params = Params(max_new_tokens=4, top_k=3, stop_at_eos=False)
    result = ANALYSIS.run(tiny_model, [Input(0, "prompt", PROMPT)], params)
    steps = result.tables["generation_steps"].to_pydict()
    lens = result.tables["generation_lens"].to_pydict()
    topk = result.tables["generation_topk"].to_pydict()
    n_rows = tiny_model.n_layers + 1
    prompt = tiny_model.to_tokens(PROMPT)[0].tolist()
    sequence = prompt + steps["token_id"]
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(tiny_model.n_layers)] + [f"blocks.{tiny_model.n_layers - 1}.hook_resid_post"]
    with torch.inference_mode():
        _, cache = tiny_model.bridge.run_with_cache(torch.tensor([sequence]), names_filter=lambda name: name in names)
        hf = pure_hf(tiny_model)
        for step in range(4):
            at = len(prompt) + step - 1
            rows = torch.stack([cache[name][0, at] for name in names])
            probs = torch.softmax(hf.lm_head(hf.model.norm(rows)).float(), -1)
            chosen = steps["token_id"][step]
            got = np.array(lens["chosen_prob"][step * n_rows:(step + 1) * n_rows])
            np.testing.assert_allclose(got, probs[:, chosen].numpy(), atol=1e-5)
            assert steps["prob"][step] == pytest.approx(float(probs[-1, chosen]), abs=1e-5)
            assert steps["rank"][step] == 1 and int(probs[-1].argmax()) == chosen
            entropy = -(probs * probs.log()).sum(-1) / np.log(2)
            np.testing.assert_allclose(lens["entropy_bits"][step * n_rows:(step + 1) * n_rows], entropy.numpy(), atol=1e-4)
            top = probs.topk(3, -1)
            ids = np.array(topk["token_id"][step * n_rows * 3:(step + 1) * n_rows * 3]).reshape(n_rows, 3)
            np.testing.assert_array_equal(ids, top.indices.numpy())
            assert lens["top_token_id"][step * n_rows:(step + 1) * n_rows] == top.indices[:, 0].tolist()
    tokens = result.tokens.to_pydict()
    assert tokens["token_id"] == sequence and tokens["pos"] == list(range(len(sequence)))
    assert steps["pos"] == list(range(len(prompt), len(prompt) + 4))


def test_stop_string_and_eos(tiny_model):
    params = Params(max_new_tokens=12, stop_at_eos=False)
    _, _, full = run_generate(tiny_model, params)
    text = tiny_model.tokenizer.decode(full.new_ids[:3])
    stop = text[-3:] if len(text) >= 3 else text
    _, _, stopped = run_generate(tiny_model, dataclasses.replace(params, stop=stop))
    assert stopped.stop_reason == "stop"
    assert stop in tiny_model.tokenizer.decode(stopped.new_ids)
    assert stop not in tiny_model.tokenizer.decode(stopped.new_ids[:-1])
    assert stopped.new_ids == full.new_ids[: len(stopped.new_ids)]


@pytest.mark.parametrize("raw, fragment", [
    ({"max_new_tokens": "0"}, "max_new_tokens"),
    ({"stop": ""}, "'stop' is empty"),
    ({"steer_coef": "nan"}, "finite"),
    ({"steer_coef": "inf"}, "finite"),
    ({"steer": "no bar here"}, "contrast pair"),
    ({"ablate": "h1"}, "ablate item"),
    ({"top_p": "0"}, "top_p"),
])
def test_bad_parameters_are_refused(raw, fragment):
    from analyses.core.params import parse_params

    with pytest.raises(BadInput, match=fragment):
        parse_params(Params, raw)


def test_bad_input_on_the_model(tiny_model, tmp_path):
    inputs = [Input(0, "prompt", PROMPT)]
    wide = tmp_path / "wide.npy"
    np.save(wide, np.ones(tiny_model.d_model + 1, dtype=np.float32))
    ints = tmp_path / "ints.npy"
    np.save(ints, np.ones(tiny_model.d_model, dtype=np.int64))
    nan = tmp_path / "nan.pt"
    vector = torch.ones(tiny_model.d_model)
    vector[3] = float("nan")
    torch.save(vector, nan)
    cases = [
        (Params(steer=str(wide)), "width"),
        (Params(steer=str(ints)), "dtype int64"),
        (Params(steer=str(nan)), "NaN"),
        (Params(steer=str(tmp_path / "missing.npy")), "no such file"),
        (Params(steer=" a| b", steer_layer=3), "layers 0..2"),
        (Params(clamp=" a| b", clamp_layer=-1), "layers 0..2"),
        (Params(ablate="h0.4"), "heads 0..3"),
        (Params(ablate="n9.1"), "layers 0..2"),
        (Params(max_new_tokens=tiny_model.n_ctx), "above the context"),
    ]
    for params, fragment in cases:
        with pytest.raises(BadInput, match=fragment):
            ANALYSIS.check(tiny_model, inputs, params)
    good = tmp_path / "good.npy"
    np.save(good, np.ones(tiny_model.d_model, dtype=np.float16))
    ANALYSIS.check(tiny_model, inputs, Params(steer=str(good), steer_layer=2))


@pytest.mark.integration
def test_embedded_model_greedy_equals_hf_generate_and_steering_holds_under_the_cache(embedded_model):
    params = Params(max_new_tokens=8, stop_at_eos=False)
    ids, _, gen = run_generate(embedded_model, params)
    out = pure_hf(embedded_model).generate(ids, max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True,
                                           eos_token_id=None, pad_token_id=embedded_model.tokenizer.eos_token_id)
    assert gen.new_ids == out.sequences[0, ids.shape[1]:].tolist()
    for ours, theirs in zip(gen.final_logits, out.logits):
        torch.testing.assert_close(ours, theirs[0].float(), atol=1e-3, rtol=1e-4)
    steered = Params(max_new_tokens=3, stop_at_eos=False, steer=" Love| Hate", steer_layer=6, steer_coef=4.0, ablate="h3.1")
    ids, plan, gen = run_generate(embedded_model, steered)
    sequence = ids[0].tolist()
    for step, token in enumerate(gen.new_ids):
        reference = _reference_logits(embedded_model, plan, sequence)
        torch.testing.assert_close(gen.final_logits[step], reference, atol=1e-3, rtol=1e-4)
        sequence.append(token)
    assert gen.new_ids != out.sequences[0, ids.shape[1]:ids.shape[1] + 3].tolist()


def test_shards_of_prompts_give_the_rows_of_the_whole_run(tiny_model, cancel):
    """Sharded: compute on any subset of the prompts gives exactly those prompts' rows, sampled
    ones included (the sampler is seeded per prompt), so a resumed run repeats what it stored."""
    import pyarrow as pa

    from analyses.core.contract import no_progress

    params = Params(max_new_tokens=4, decoding="sample", temperature=1.2, seed=3, stop_at_eos=False)
    inputs = [Input(0, "prompt", "Hello there"), Input(1, "prompt", PROMPT), Input(2, "prompt", "One two three")]
    whole = ANALYSIS.compute(tiny_model, inputs, params, None, no_progress, cancel)
    parts = [ANALYSIS.compute(tiny_model, subset, params, None, no_progress, cancel) for subset in (inputs[:1], inputs[1:])]
    for name in whole.tables:
        joined = pa.concat_tables([part.tables[name] for part in parts])
        assert joined.equals(whole.tables[name]), name
    assert ANALYSIS.sharded
