"""Training: exact resume from a checkpoint, data order, recipes, both architectures, experts."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from mergelaw.errors import MergelawError  # noqa: E402
from mergelaw.measure.lab.bpe import build_tokenizer, vocab_size_of  # noqa: E402
from mergelaw.measure.lab.corpora import write_jsonl  # noqa: E402
from mergelaw.measure.lab.training import (  # noqa: E402
    Batches,
    Recipe,
    count_params,
    finetune_expert,
    is_done,
    model_config,
    pretrain_base,
)

TEXTS = {
    "code": ["def add(a, b):\n    return a + b\n" * 20, "for i in range(10):\n    print(i)\n" * 20],
    "prose": ["It was a bright cold day in April, and the clocks were striking. " * 20] * 2,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = {}
    for d, docs in TEXTS.items():
        files[d] = root / d / "train.jsonl"
        write_jsonl([(f"{d}{i}", t) for i, t in enumerate(docs)], files[d])
    tok = build_tokenizer(list(files.values()), root / "tok", vocab_size=300)
    return files, tok


def _config(tok, arch="llama"):
    sizes = {
        "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64),
        "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64),
    }  # fmt: skip
    return model_config(arch, vocab_size_of(tok), **sizes[arch])


RECIPE = Recipe(token_budget=12 * 4 * 32, seq_len=32, batch_size=4, lr=3e-3, checkpoint_every=5)


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "model" / "model.safetensors")


def test_resume_gives_the_weights_of_an_uninterrupted_run(corpus, tmp_path):
    files, tok = corpus
    train = list(files.values())
    ref = pretrain_base(_config(tok), train, tok, RECIPE, tmp_path / "ref", progress=False)
    assert ref is not None and ref["steps"] == 12 and ref["tokens_seen"] == 12 * 4 * 32
    out = tmp_path / "stopped"
    assert (
        pretrain_base(_config(tok), train, tok, RECIPE, out, progress=False, stop_after=7) is None
    )
    assert (out / "checkpoint.pt").is_file() and not is_done(out)
    torch.manual_seed(1234)  # the resumed run must not depend on the caller's RNG state
    done = pretrain_base(_config(tok), train, tok, RECIPE, out, progress=False)
    assert done is not None and done["steps"] == 12
    assert not (out / "checkpoint.pt").exists()
    a, b = _weights(tmp_path / "ref"), _weights(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [x[1] for x in done["losses"]] == [x[1] for x in ref["losses"]]
    # finished: calling again returns the record and trains nothing
    again = pretrain_base(_config(tok), train, tok, RECIPE, out, progress=False)
    assert again == json.loads((out / "training.json").read_text())


def test_resume_with_another_recipe_is_refused(corpus, tmp_path):
    files, tok = corpus
    train = list(files.values())
    pretrain_base(_config(tok), train, tok, RECIPE, tmp_path, progress=False, stop_after=5)
    other = Recipe(**{**RECIPE.__dict__, "lr": 1e-2})
    with pytest.raises(MergelawError, match="another recipe"):
        pretrain_base(_config(tok), train, tok, other, tmp_path, progress=False)


def test_batches_visit_every_sequence_once_per_epoch_in_a_seeded_order():
    stream = np.arange(10 * 8, dtype=np.uint16)
    batches = Batches(stream, seq_len=8, batch_size=5, seed=3)
    epoch0 = torch.cat([batches(0), batches(1)])
    assert sorted(epoch0[:, 0].tolist()) == list(range(0, 80, 8))
    assert torch.equal(Batches(stream, 8, 5, 3)(1), batches(1))
    assert not torch.equal(Batches(stream, 8, 5, 4)(0), batches(0))
    epoch1 = torch.cat([batches(2), batches(3)])
    assert sorted(epoch1[:, 0].tolist()) == list(range(0, 80, 8))


def test_gpt2_base_and_an_expert_train_and_load_with_the_measure_layer(corpus, tmp_path):
    from mergelaw.measure.experts import load_pool

    files, tok = corpus
    base = pretrain_base(_config(tok, "gpt2"), list(files.values()), tok, RECIPE,
                         tmp_path / "base", progress=False)  # fmt: skip
    assert base["arch"] == "gpt2"
    total, non_embed = count_params(
        __import__("transformers").AutoModelForCausalLM.from_config(_config(tok, "gpt2"))
    )
    assert base["n_params"] == total and base["n_params_non_embedding"] == non_embed
    recipe = Recipe(token_budget=4 * 4 * 32, seq_len=32, batch_size=4, lr=1e-3)
    expert = finetune_expert(tmp_path / "base", [files["code"]], recipe, tmp_path / "code",
                             tokenizer_dir=tok, progress=False)  # fmt: skip
    assert expert["kind"] == "expert" and expert["steps"] == 4
    pool = load_pool(tmp_path / "base" / "model", {"code": tmp_path / "code" / "model"})
    assert pool.task_vectors.abs().sum() > 0
    assert (tmp_path / "base" / "model" / "tokenizer.json").is_file()


def test_recipe_from_dict_names_the_unknown_setting():
    with pytest.raises(MergelawError, match="unknown setting 'learning_rate'"):
        Recipe.from_dict({"token_budget": 10, "learning_rate": 1e-3}, source="p.toml")
    with pytest.raises(MergelawError, match="missing 'token_budget'"):
        Recipe.from_dict({}, source="p.toml")
    with pytest.raises(MergelawError, match="unknown"):
        model_config("mamba", 100)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"token_budget": 0},
         "'token_budget' = 0 (expected the tokens to train on, a whole number >= 1)"),
        ({"token_budget": 10.5},
         "'token_budget' = 10.5 has the wrong type (expected a whole number)"),
        ({"token_budget": 10, "dtype": "float16"},
         "'dtype' = 'float16' (expected one of: bfloat16, float32)"),
        ({"token_budget": 10, "warmup": 1.5}, "'warmup' = 1.5 (expected a number in [0, 1])"),
        ({"token_budget": 10, "lr": "3e-3"},
         "'lr' = '3e-3' has the wrong type (expected a number)"),
    ],
)  # fmt: skip
def test_recipe_values_are_checked_in_one_line(raw, message):
    with pytest.raises(MergelawError) as caught:
        Recipe.from_dict(raw, source="p.toml: [pretrain]")
    assert str(caught.value) == f"p.toml: [pretrain]: {message}"
