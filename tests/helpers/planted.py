"""A GPT-2 whose attention heads are planted by hand (every head's class is known in advance), and
documents of random common words long enough for its positional patterns."""
from __future__ import annotations

import math
import random

from analyses.core.contract import Input

WORDS = ("cat dog tree house river stone cloud bird fish road hill lake star moon sun rain snow wind fire door "
         "window table chair book paper pen light dark green blue red yellow black white small large old new").split()
OMEGA = 2 * math.pi / 8


def _linear_norm_gpt2(folder):
    """The one-layer GPT-2 every planted model starts from (d_model 64, 4 heads of 16, n_ctx 256, layer
    norms made linear by eps 1e8), as a Hugging Face model, and the seeded generator of its weights."""
    import torch
    from transformers import GPT2LMHeadModel

    from analyses.model.tiny import build_tiny

    build_tiny("gpt2", folder, seed=1, n_layers=1, d_model=64, n_heads=4, n_ctx=256, layer_norm_epsilon=1e8)
    return GPT2LMHeadModel.from_pretrained(folder), torch.Generator().manual_seed(3)


def _set_embeddings(body, wpe, generator):
    """Position embeddings wpe and random token dims 16..47, every row of zero mean (centring leaves
    the planted dims alone), and norms that only scale; returns block 0."""
    import torch

    wpe[:, 63] = -wpe[:, :63].sum(-1)
    wte = torch.zeros_like(body.wte.weight)
    wte[:, 16:48] = torch.randn(wte.shape[0], 32, generator=generator)
    wte[:, 62] = -wte[:, :62].sum(-1)
    body.wpe.weight.copy_(wpe)
    body.wte.weight.copy_(wte)
    block = body.h[0]
    for norm in (block.ln_1, block.ln_2, body.ln_f):
        norm.weight.fill_(1e4)
        norm.bias.zero_()
    return block


def planted_gpt2(folder):
    """A one-layer GPT-2 (d_model 64, 4 heads of 16) whose layer norms are linear (eps 1e8 swamps
    the variance in float32) and whose heads are set by hand:
    0 previous-token (score 50 cos(w(d - s - 1)) + s), 1 decaying with distance and blind to
    content (score 0.05 s), 2 duplicate-token (content only), 3 uniform. Only head 1 writes."""
    import torch

    from analyses.model.loading import load_model

    model, generator = _linear_norm_gpt2(folder)
    scale = 16 ** -0.5
    with torch.no_grad():
        body, d = model.transformer, 64
        positions = torch.arange(256, dtype=torch.float32)
        wpe = torch.zeros(256, d)
        wpe[:, 0] = positions / 256
        wpe[:, 1], wpe[:, 2] = torch.cos(OMEGA * positions), torch.sin(OMEGA * positions)
        block = _set_embeddings(body, wpe, generator)
        w = torch.zeros(d, 3 * d)
        bias = torch.zeros(3 * d)
        q, k, v = 0, d, 2 * d
        # Head 0: q . k = 50 cos(w (d - s - 1)); the ramp adds s (query bias on the key's ramp).
        w[1, q + 0], w[2, q + 1] = 50 / scale, 50 / scale
        w[1, k + 0], w[1, k + 1] = math.cos(OMEGA), math.sin(OMEGA)
        w[2, k + 0], w[2, k + 1] = -math.sin(OMEGA), math.cos(OMEGA)
        w[0, k + 2], bias[q + 2] = 256.0, 1 / scale
        # Head 1: score 0.05 s from the query bias and the ramp only.
        w[0, k + 16], bias[q + 16] = 256.0, 0.05 / scale
        # Head 2: q . k = 6 e_d . e_s over token dims 16..31.
        for i in range(16):
            w[16 + i, q + 32 + i] = w[16 + i, k + 32 + i] = 6 ** 0.5 / scale ** 0.5
        w[16:48, v + 16:v + 32] = torch.randn(32, 16, generator=generator) / 4
        block.attn.c_attn.weight.copy_(w)
        block.attn.c_attn.bias.copy_(bias)
        c_proj = torch.zeros(d, d)
        c_proj[16:32, 48:62] = torch.randn(16, 14, generator=generator)
        block.attn.c_proj.weight.copy_(c_proj)
        block.attn.c_proj.bias.copy_(0.1 * torch.randn(d, generator=generator))
    model.save_pretrained(folder)
    return load_model(str(folder), device="cpu", dtype="float32")


def word_documents(n_docs: int = 6, n_words: int = 230, seed: int = 0) -> list[Input]:
    rng = random.Random(seed)
    return [Input(i, "pile", " ".join(rng.choice(WORDS) for _ in range(n_words)), {"pile_set_name": "words" if i % 2 else "more words"})
            for i in range(n_docs)]


def planted_taxonomy_gpt2(folder):
    """The heads planted_gpt2 lacks, on the same linear-norm GPT-2 (4 heads of 16, content-blind,
    none writes): 0 local (score 3984 cos(w'(d - s - 1.5)), w' = 2 pi / 512: about -0.3 (offset -
    1.5)^2 near the peak, so weight spread over offsets 0..3 with at most a third on offset 1),
    1 attention sink (score 10 on position 0, uniform elsewhere), 2 uniform with a partial sink
    (score 4.7 on position 0: 30-50% of the attention at destinations 100-230), 3 uniform."""
    import torch

    from analyses.model.loading import load_model

    model, generator = _linear_norm_gpt2(folder)
    scale, slow, d = 16 ** -0.5, 2 * math.pi / 512, 64
    with torch.no_grad():
        body = model.transformer
        positions = torch.arange(256, dtype=torch.float32)
        wpe = torch.zeros(256, d)
        wpe[:, 3], wpe[:, 4] = torch.cos(slow * positions), torch.sin(slow * positions)
        wpe[0, 5] = 1.0
        block = _set_embeddings(body, wpe, generator)
        w, bias = torch.zeros(d, 3 * d), torch.zeros(3 * d)
        q, k = 0, d
        amplitude, turn = 0.6 / slow ** 2, slow * 1.5
        w[3, q + 0], w[4, q + 1] = amplitude / scale, amplitude / scale
        w[3, k + 0], w[3, k + 1] = math.cos(turn), math.sin(turn)
        w[4, k + 0], w[4, k + 1] = -math.sin(turn), math.cos(turn)
        w[5, k + 16], bias[q + 16] = 1.0, 10.0 / scale
        w[5, k + 32], bias[q + 32] = 1.0, 4.7 / scale
        block.attn.c_attn.weight.copy_(w)
        block.attn.c_attn.bias.copy_(bias)
        block.attn.c_proj.weight.zero_()
        block.attn.c_proj.bias.zero_()
    model.save_pretrained(folder)
    return load_model(str(folder), device="cpu", dtype="float32")
