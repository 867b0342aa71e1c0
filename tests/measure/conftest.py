"""Tiny random Llama models for the measure tests: built from a config in well under a second."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Tiny models on a shared 2-core machine: one thread avoids OpenMP waiting for a busy core.
torch.set_num_threads(1)

VOCAB = 260  # >= 256 so the "bytes" tokenizer fits


def tiny_config(**overrides):
    cfg = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    return transformers.LlamaConfig(**cfg)


def make_models(n_experts: int = 4, seed: int = 0, scale: float = 0.02, **overrides):
    """A random base and ``n_experts`` experts = base + random perturbations."""
    torch.manual_seed(seed)
    base = transformers.LlamaForCausalLM(tiny_config(**overrides)).eval()
    experts = {}
    for i in range(n_experts):
        expert = transformers.LlamaForCausalLM(tiny_config(**overrides)).eval()
        expert.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(scale * torch.randn_like(p))
        experts[f"d{i}"] = expert
    return base, experts


def save_models(root, base, experts):
    """Save as safetensors checkpoint dirs; return (base_dir, {expert_id: dir})."""
    base_dir = root / "base"
    base.save_pretrained(base_dir, safe_serialization=True)
    dirs = {}
    for name, expert in experts.items():
        dirs[name] = root / name
        expert.save_pretrained(dirs[name], safe_serialization=True)
    return base_dir, dirs


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    base, experts = make_models(4)
    return save_models(root, base, experts)


class _Tiny:
    config = staticmethod(tiny_config)
    models = staticmethod(make_models)
    save = staticmethod(save_models)
    vocab = VOCAB


@pytest.fixture(scope="session")
def tiny():
    """Helpers to build tiny random models: tiny.models(n), tiny.save(root, base, experts)."""
    return _Tiny
