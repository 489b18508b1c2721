"""Shared fixtures: a tiny random Llama booted through the same bridge (unit tier) and the
embedded SmolLM2 model (integration tier), both session-scoped; a fresh database per test."""
from __future__ import annotations

import threading

import pytest

from analyses.model.families import FAMILIES


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "results.duckdb"


@pytest.fixture
def store(db_path):
    from store import Store

    return Store(db_path)


@pytest.fixture
def cancel():
    return threading.Event()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A seeded random 3-layer Llama with the embedded tokenizer, loaded like any local model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from analyses.model.loading import load_model, prepare_embedded

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(prepare_embedded()).save_pretrained(folder)
    return load_model(str(folder), device="cpu", dtype="float32")



@pytest.fixture(scope="session", params=FAMILIES)
def family_model(request, tmp_path_factory):
    """A seeded random 3-layer model of each supported family, booted like any local model."""
    from analyses.model.loading import load_model
    from analyses.model.tiny import build_tiny

    folder = build_tiny(request.param, tmp_path_factory.mktemp(f"tiny-{request.param}"))
    return load_model(str(folder), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def embedded_model():
    from analyses.model.loading import load_model

    return load_model("smollm2-135m", device="cpu", dtype="float32")
