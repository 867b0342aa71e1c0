"""Loading experts: task vectors, layout, and one-line errors naming the first mismatch."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from mergelaw.errors import MergelawError  # noqa: E402
from mergelaw.measure.experts import load_pool, unflatten  # noqa: E402


def test_task_vectors_are_expert_minus_base(tiny_checkpoints):
    from safetensors.torch import load_file

    base_dir, dirs = tiny_checkpoints
    pool = load_pool(base_dir, dirs)
    assert pool.expert_ids == tuple(dirs)
    assert pool.task_vectors.shape == (len(dirs), pool.base_flat.numel())
    base = load_file(base_dir / "model.safetensors")
    assert pool.n_params == sum(t.numel() for t in base.values())
    for i, e in enumerate(dirs):
        expert = load_file(dirs[e] / "model.safetensors")
        got = unflatten(pool.task_vectors[i], pool.layout)
        for name, t in got.items():
            assert torch.equal(t, expert[name] - base[name])
    # embeddings are laid out last; buffers (rotary inv_freq) never
    flags = [s.embedding for s in pool.layout]
    assert flags == sorted(flags) and any(flags)
    assert not any("rotary" in s.name for s in pool.layout)


def test_exclude_pattern_keeps_tensors_out(tiny_checkpoints):
    base_dir, dirs = tiny_checkpoints
    pool = load_pool(base_dir, dirs, exclude=r"norm")
    assert pool.layout and not any("norm" in s.name for s in pool.layout)


def _broken(tmp_path, tiny, **overrides):
    base, experts = tiny.models(1)
    base_dir, dirs = tiny.save(tmp_path, base, experts)
    bad_model = tiny.models(1, **overrides)[0]
    bad_dir = tmp_path / "bad"
    bad_model.save_pretrained(bad_dir, safe_serialization=True)
    return base_dir, {"d0": dirs["d0"], "bad": bad_dir}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"vocab_size": 300}, r"bad: config vocab_size is 300 but the base .* has 260"),
        (
            {"intermediate_size": 48},
            r"bad: tensor 'model.layers.0.mlp.down_proj.weight' has shape \(32, 48\) "
            r"but the base has \(32, 64\)",
        ),
        ({"num_hidden_layers": 1}, r"bad: tensor 'model.layers.1.\S+' is missing"),
        ({"num_hidden_layers": 3}, r"bad: tensor 'model.layers.2.\S+' is not in the base"),
    ],
)
def test_mismatched_expert_is_one_line_error(tmp_path, tiny, overrides, match):
    base_dir, dirs = _broken(tmp_path, tiny, **overrides)
    with pytest.raises(MergelawError, match=match) as err:
        load_pool(base_dir, dirs)
    assert "\n" not in str(err.value)


def test_other_architecture_is_one_line_error(tmp_path, tiny):
    base_dir, dirs = _broken(tmp_path, tiny)
    cfg = json.loads((dirs["bad"] / "config.json").read_text())
    cfg["model_type"] = "mistral"
    (dirs["bad"] / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MergelawError, match="config model_type is 'mistral' but the base"):
        load_pool(base_dir, dirs)


def test_missing_checkpoint_is_one_line_error(tmp_path, tiny_checkpoints):
    base_dir, dirs = tiny_checkpoints
    with pytest.raises(MergelawError, match="no such checkpoint directory"):
        load_pool(base_dir, {**dirs, "x": tmp_path / "nope"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergelawError, match=r"no \*.safetensors files"):
        load_pool(base_dir, {"x": tmp_path / "empty"})


def test_in_memory_models_match_checkpoint_dirs(tiny, tmp_path):
    base, experts = tiny.models(2, seed=9)
    base_dir, dirs = tiny.save(tmp_path, base, experts)
    a = load_pool(base_dir, dirs)
    b = load_pool(base, experts)
    assert [s.name for s in a.layout] == [s.name for s in b.layout]
    assert torch.equal(a.task_vectors, b.task_vectors)


def test_unknown_method_and_bad_values_are_one_line():
    from mergelaw.measure.methods import method_spec

    with pytest.raises(MergelawError, match="unknown merge method 'mean'"):
        method_spec("mean")
    with pytest.raises(MergelawError, match=r"'p' of 'dare' = 1.0 \(expected a drop rate"):
        method_spec("dare", {"p": 1.0})
    with pytest.raises(MergelawError, match="'trim_scope' of 'ties' = 'layer'"):
        method_spec("ties", {"trim_scope": "layer"})
