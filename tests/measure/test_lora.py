"""PEFT LoRA adapters as experts: task vectors equal to PEFT's own merge_and_unload, mismatches
named in one line, and a sweep over a pool of adapters measured end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from mergelaw.errors import MergelawError  # noqa: E402
from mergelaw.measure.experts import load_pool, unflatten  # noqa: E402
from mergelaw.measure.sweep import read_sweep, run_sweep  # noqa: E402


def _llama(tiny, root: Path, name: str = "base", seed: int = 0, **overrides) -> Path:
    """A tiny random Llama with attention biases (for lora_bias and bias = "all"), saved."""
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(tiny.config(attention_bias=True, **overrides))
    model.save_pretrained(root / name, safe_serialization=True)
    return root / name


def _gpt2(root: Path) -> Path:
    torch.manual_seed(1)
    cfg = transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=260, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    transformers.GPT2LMHeadModel(cfg).save_pretrained(root / "gpt2", safe_serialization=True)
    return root / "gpt2"


def _adapter(base_dir: Path, out: Path, seed: int = 0, **lora) -> Path:
    """Save a PEFT adapter on ``base_dir`` whose every trainable tensor is random (not PEFT's
    zero init): lora_A/B, lora_B biases, modules_to_save copies, biases trained with bias="all"."""
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's notes on fan_in_fan_out, rslora with patterns
        wrapped = peft.get_peft_model(model, peft.LoraConfig(init_lora_weights=False, **lora))
        with torch.no_grad():
            for p in wrapped.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
        wrapped.save_pretrained(out)  # PEFT warns of saved embeddings and 1-D lora_B biases
    return out


def _peft_merged(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    """The reference: PEFT loads the saved adapter on a fresh base and merges it."""
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = peft.PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    return {n: p.detach() for n, p in merged.named_parameters()}


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory, tiny) -> Path:
    return _llama(tiny, tmp_path_factory.mktemp("lora"))


CASES = {
    "plain": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "rslora": dict(r=4, lora_alpha=6, use_rslora=True, target_modules=["o_proj", "gate_proj"]),
    "patterns": dict(
        r=4,
        lora_alpha=8,
        target_modules="all-linear",
        rank_pattern={"down_proj": 2},
        alpha_pattern={"layers.1.self_attn.v_proj": 3},
    ),
    "embedding_saved_modules_biases": dict(
        r=3, lora_alpha=5, target_modules=["embed_tokens", "k_proj"], modules_to_save=["lm_head"]
    )
    | {"bias": "all"},
    "lora_bias": dict(r=2, lora_alpha=4, target_modules=["q_proj", "k_proj"], lora_bias=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_task_vector_equals_peft_merge_and_unload(llama_base, tmp_path, case):
    adapter = _adapter(llama_base, tmp_path / case, **CASES[case])
    pool = load_pool(llama_base, {"a": adapter})
    reference = _peft_merged(llama_base, adapter)
    base = unflatten(pool.base_flat, pool.layout)
    merged = unflatten(pool.base_flat + pool.task_vectors[0], pool.layout)
    changed = set()
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=2e-6, msg=name)
        if not torch.equal(reference[name], base[name]):
            changed.add(name)
        else:  # untouched tensors carry an exactly zero task vector
            assert not unflatten(pool.task_vectors[0], pool.layout)[name].any(), name
    assert changed, "the adapter changed nothing: the test would prove nothing"
    spec = CASES[case]
    targets = spec["target_modules"]
    if isinstance(targets, list):
        for module in targets:
            assert any(f".{module}.weight" in n or n.endswith(f"{module}.weight") for n in changed)
    if spec.get("bias") == "all":  # a trained bias of a module LoRA does not target
        assert "model.layers.0.self_attn.q_proj.bias" in changed
    if spec.get("lora_bias"):
        assert "model.layers.0.self_attn.k_proj.bias" in changed
    if spec.get("modules_to_save"):
        assert "lm_head.weight" in changed


def test_rank_pattern_is_applied_per_module(llama_base, tmp_path):
    """The 'patterns' adapter's down_proj has rank 2 and v_proj of layer 1 alpha 3: check the
    delta of each against the factors in the file by hand."""
    from safetensors.torch import load_file

    adapter = _adapter(llama_base, tmp_path / "p", **CASES["patterns"])
    pool = load_pool(llama_base, {"a": adapter})
    factors = load_file(adapter / "adapter_model.safetensors")
    vector = unflatten(pool.task_vectors[0], pool.layout)
    for module, scaling in [
        ("model.layers.0.mlp.down_proj", 8 / 2),
        ("model.layers.1.self_attn.v_proj", 3 / 4),
        ("model.layers.1.self_attn.q_proj", 8 / 4),
    ]:
        a = factors[f"base_model.model.{module}.lora_A.weight"]
        b = factors[f"base_model.model.{module}.lora_B.weight"]
        torch.testing.assert_close(vector[f"{module}.weight"], scaling * b @ a)


def test_gpt2_conv1d_adapter_is_transposed_as_peft_does(tmp_path):
    """GPT-2's Conv1D weights are (in, out): delta W = (s * B @ A)^T. PEFT decides by the module's
    type even when the saved config says fan_in_fan_out = false, and so does mergelaw."""
    base_dir = _gpt2(tmp_path)
    lora = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True)
    adapter = _adapter(base_dir, tmp_path / "a", **lora)
    pool = load_pool(base_dir, {"a": adapter})
    reference = _peft_merged(base_dir, adapter)
    merged = unflatten(pool.base_flat + pool.task_vectors[0], pool.layout)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=2e-6, msg=name)
    assert pool.task_vectors[0].abs().sum() > 0
    cfg_file = adapter / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["fan_in_fan_out"] = False
    cfg_file.write_text(json.dumps(cfg))
    again = load_pool(base_dir, {"a": adapter})
    assert torch.equal(again.task_vectors, pool.task_vectors)
    reference = _peft_merged(base_dir, adapter)["transformer.h.0.mlp.c_fc.weight"]
    merged = unflatten(again.base_flat + again.task_vectors[0], again.layout)
    torch.testing.assert_close(
        merged["transformer.h.0.mlp.c_fc.weight"], reference, rtol=0, atol=2e-6
    )


@pytest.mark.parametrize("target", ["lm_head", "wte"])
def test_lora_on_a_tied_embedding_changes_the_shared_tensor(tmp_path, target):
    """GPT-2 ties lm_head to wte: the pool lays the shared tensor out once, and a LoRA on either
    name changes it as PEFT's merge does."""
    base_dir = _gpt2(tmp_path)
    adapter = _adapter(base_dir, tmp_path / "a", r=2, lora_alpha=4, target_modules=[target])
    pool = load_pool(base_dir, {"a": adapter})
    reference = _peft_merged(base_dir, adapter)
    merged = unflatten(pool.base_flat + pool.task_vectors[0], pool.layout)
    assert "lm_head.weight" not in merged
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=2e-6, msg=name)
    assert unflatten(pool.task_vectors[0], pool.layout)["transformer.wte.weight"].abs().sum() > 0


def test_adapters_and_full_checkpoints_mix_in_one_pool(llama_base, tmp_path, tiny):
    from safetensors.torch import load_file

    full = _llama(tiny, tmp_path, "full", seed=5)  # a full checkpoint of the same architecture
    adapter = _adapter(llama_base, tmp_path / "a", **CASES["plain"])
    pool = load_pool(llama_base, {"a": adapter, "full": full})
    assert pool.expert_ids == ("a", "full")
    base = load_file(llama_base / "model.safetensors")
    expert = load_file(full / "model.safetensors")
    got = unflatten(pool.task_vectors[1], pool.layout)
    for name, tensor in got.items():
        assert torch.equal(tensor, expert[name] - base[name])
    solo = load_pool(llama_base, {"a": adapter})
    assert torch.equal(pool.task_vectors[0], solo.task_vectors[0])


def test_excluded_tensors_keep_the_base_values(llama_base, tmp_path):
    adapter = _adapter(llama_base, tmp_path / "a", **CASES["plain"])
    pool = load_pool(llama_base, {"a": adapter}, exclude=r"v_proj")
    assert not any("v_proj" in s.name for s in pool.layout)
    assert pool.task_vectors[0].abs().sum() > 0  # q_proj still merged


# ----------------------------------------------------------------------------- mismatches


def _edit_config(adapter: Path, **changes) -> None:
    file = adapter / "adapter_config.json"
    cfg = json.loads(file.read_text())
    cfg.update(changes)
    file.write_text(json.dumps(cfg))


def test_adapter_for_a_wider_base_names_module_and_shapes(llama_base, tmp_path, tiny):
    other = _llama(tiny, tmp_path, "other", intermediate_size=48)
    adapter = _adapter(other, tmp_path / "a", r=2, lora_alpha=4, target_modules=["down_proj"])
    with pytest.raises(MergelawError) as err:
        load_pool(llama_base, {"a": adapter})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{adapter / 'adapter_model.safetensors'}: module ")
    assert "'model.layers.0.mlp.down_proj' (s * B @ A) has shape (32, 48)" in message
    assert "'model.layers.0.mlp.down_proj.weight' of the base" in message
    assert "has (32, 64)" in message


def test_adapter_for_a_deeper_base_names_the_missing_module(llama_base, tmp_path, tiny):
    other = _llama(tiny, tmp_path, "deeper", num_hidden_layers=3)
    adapter = _adapter(other, tmp_path / "a", r=2, lora_alpha=4, target_modules=["q_proj"])
    match = (
        r"module 'model.layers.2.self_attn.q_proj' is not in the base .*base "
        r"\(expected an adapter trained on this base model\)"
    )
    with pytest.raises(MergelawError, match=match):
        load_pool(llama_base, {"a": adapter})


def test_saved_full_tensor_of_another_shape_is_named(llama_base, tmp_path, tiny):
    other = _llama(tiny, tmp_path, "vocab", vocab_size=300)
    lora = dict(r=2, lora_alpha=4, target_modules=["q_proj"], modules_to_save=["lm_head"])
    adapter = _adapter(other, tmp_path / "a", **lora)
    match = r"tensor 'lm_head.weight' has shape \(300, 32\) but 'lm_head.weight' of the base .* "
    with pytest.raises(MergelawError, match=match + r"has \(260, 32\)"):
        load_pool(llama_base, {"a": adapter})


def test_lora_bias_on_a_module_without_bias_is_named(tmp_path, tiny):
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(tiny.config()).save_pretrained(tmp_path / "nobias")
    with_bias = _llama(tiny, tmp_path, "bias")
    lora = dict(r=2, lora_alpha=4, target_modules=["q_proj"], lora_bias=True)
    adapter = _adapter(with_bias, tmp_path / "a", **lora)
    match = (
        r"module 'model.layers.0.self_attn.q_proj' has a lora_B bias but the base .* has no "
        r"'model.layers.0.self_attn.q_proj.bias'"
    )
    with pytest.raises(MergelawError, match=match):
        load_pool(tmp_path / "nobias", {"a": adapter})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"r": 8}, r"module 'model.layers.0.self_attn.q_proj' has factors of rank 4 x 4 but "
                   r"adapter_config.json gives r = 8"),
        ({"peft_type": "IA3"}, r"peft_type is 'IA3' \(expected 'LORA'\)"),
        ({"use_dora": True}, r"use_dora is True: DoRA adapters are not supported"),
        ({"init_lora_weights": "pissa"}, r"init_lora_weights is 'pissa', which changes the base"),
        ({"lora_alpha": 0}, r"lora_alpha is 0 \(expected a positive number\)"),
    ],
)  # fmt: skip
def test_bad_adapter_config_is_one_line(llama_base, tmp_path, changes, match):
    adapter = _adapter(llama_base, tmp_path / "a", **CASES["plain"])
    _edit_config(adapter, **changes)
    with pytest.raises(MergelawError, match=match) as err:
        load_pool(llama_base, {"a": adapter})
    assert "\n" not in str(err.value)
    assert str(adapter) in str(err.value)


def test_adapter_without_safetensors_or_as_base_is_one_line(llama_base, tmp_path):
    adapter = _adapter(llama_base, tmp_path / "a", **CASES["plain"])
    with pytest.raises(MergelawError, match="a PEFT adapter cannot be the base"):
        load_pool(adapter, {"a": adapter})
    weights = adapter / "adapter_model.safetensors"
    weights.rename(adapter / "adapter_model.bin")
    match = (
        r"adapter_model.safetensors: no such file \(expected the adapter's weights in "
        r"safetensors; found adapter_model.bin\)"
    )
    with pytest.raises(MergelawError, match=match):
        load_pool(llama_base, {"a": adapter})


# ----------------------------------------------------------------------------- a sweep


def test_sweep_over_a_lora_pool_matches_peft_merged_models(llama_base, tmp_path):
    """k = 1 with the average method is the expert itself: its row is PEFT's merged model's own
    loss; k = 2 is measured too."""
    text = "The court held that the contract was void for want of consideration. " * 3
    (tmp_path / "law.txt").write_text(text)
    adapters = {
        "law": _adapter(llama_base, tmp_path / "law", seed=1, **CASES["plain"]),
        "code": _adapter(llama_base, tmp_path / "code", seed=2, **CASES["rslora"]),
    }
    (tmp_path / "sweep.toml").write_text(
        f'base = "{llama_base}"\nname = "tiny"\ntokenizer = "bytes"\n'
        '[experts]\nlaw = "law"\ncode = "code"\n'
        '[eval]\nmax_length = 48\nbatch_tokens = 1024\n[eval.domains]\nlaw = "law.txt"\n'
        '[[methods]]\nname = "average"\n'
    )
    spec = read_sweep(tmp_path / "sweep.toml")
    table = run_sweep(spec, tmp_path / "out", device="cpu", progress=False)
    assert sorted(table["subset"]) == ["code", "code|law", "law"]
    ids = torch.tensor(list(text.encode()))
    for expert, adapter in adapters.items():
        model = transformers.AutoModelForCausalLM.from_pretrained(llama_base, dtype=torch.float32)
        model = peft.PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()
        total, count = 0.0, 0
        for start in range(0, len(ids) - 1, 47):  # windows of 48 overlapping by one token
            w = ids[start : start + 48][None]
            with torch.no_grad():
                total += model(input_ids=w, labels=w).loss.item() * (w.shape[1] - 1)
            count += w.shape[1] - 1
        row = table[table["subset"] == expert].iloc[0]
        assert row["n_tokens"] == count
        assert row["loss"] == pytest.approx(total / count, rel=1e-5)
        assert row["in_domain"] == (expert == "law")
