"""mergekit configs in and out, against mergekit itself (its Python API, tiny local models).

In: a mergekit YAML with a ``mergelaw:`` section is read as a sweep; the full pool's merge by
mergelaw's engine equals mergekit's ``run_merge`` of the very same file (mergekit ignores the
section), a k-subset equals mergekit's merge of the config cut to that subset, a measured k = M row
is the loss of mergekit's merged model, and everything else is refused in one line.
Out: a planned merge (k experts, one method) written as a mergekit config and run by mergekit gives
mergelaw's merged weights.

DARE is random. mergekit draws its masks from torch's global generator, one ``sparsify`` call per
(tensor, model); the tests wrap mergekit's ``merge_group`` and ``sparsify`` to seed that generator
with mergelaw's own per-(seed, expert, tensor) seed (``dare_seed``) before each draw, so the masks
are equal and mergekit's code runs unchanged: equal weights then check every other step of the
mapping exactly (density as keep rate, L1 rescaling, weights, lambda, normalize, consensus).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
yaml = pytest.importorskip("yaml")
pytest.importorskip("mergekit")

from mergelaw import __version__  # noqa: E402
from mergelaw.errors import MergelawError  # noqa: E402
from mergelaw.measure.experts import load_pool, unflatten  # noqa: E402
from mergelaw.measure.merge import dare_seed, merge  # noqa: E402
from mergelaw.measure.mergekit_config import (  # noqa: E402
    choose_experts,
    emit_mergekit,
    mergekit_config,
    planned_mergekit_config,
    read_mergekit,
)
from mergelaw.measure.methods import method_spec  # noqa: E402
from mergelaw.measure.sweep import read_sweep, run_sweep  # noqa: E402

IDS = ("d0", "d1", "d2")
TEXT = {
    "d0": "def add(a, b):\n    return a + b\n" * 3,
    "d1": "The court held that the contract was void for want of consideration. " * 3,
}
SECTION = {
    "name": "tiny",
    "tokenizer": "bytes",
    "eval": {"max_length": 48, "batch_tokens": 1024, "domains": {d: f"{d}.txt" for d in TEXT}},
}
SEED = 3
ATOL = 2e-6


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny) -> Path:
    """base, d0..d2 (full fine-tunes) and eval texts in one folder."""
    root = tmp_path_factory.mktemp("mergekit")
    base, experts = tiny.models(len(IDS), seed=7, scale=0.05)
    tiny.save(root, base, experts)
    for d, text in TEXT.items():
        (root / f"{d}.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def pool(root):
    return load_pool(root / "base", {e: root / e for e in IDS})


def _config(method: str, per_model=None, shared=None, ids=IDS, **top) -> dict:
    """A mergekit config over the experts ``ids`` (paths relative to the file's folder)."""
    conf = {"merge_method": method}
    if method != "linear":
        conf["base_model"] = "base"
    conf["models"] = [{"model": e, "parameters": dict(per_model or {})} for e in ids]
    if shared is not None:
        conf["parameters"] = dict(shared)
    conf["dtype"] = "float32"
    section = copy.deepcopy(SECTION)
    if method == "linear":
        section["base"] = "base"
    conf["mergelaw"] = section
    conf.update(top)
    return conf


def _write(root: Path, name: str, conf: dict) -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


def _ours(pool, spec, subset=IDS, seed=SEED) -> dict[str, torch.Tensor]:
    vs = [pool.task_vectors[pool.index(e)] for e in subset]
    flat = merge(pool.base_flat, vs, spec, pool.layout, expert_ids=subset, seed=seed)
    return unflatten(flat, pool.layout)


def _expert_of(ref) -> str:
    """The expert id of a mergekit ModelReference: its folder's (or its LoRA's) name."""
    return Path(str((ref.lora or ref.model).path)).name


def _seed_mergekit_dare(monkeypatch, seed: int) -> list[int]:
    """Seed torch's global generator before each of mergekit's DARE draws with mergelaw's seed
    for that (expert, tensor). Returns a list that counts the seeded draws."""
    from mergekit.merge_methods import generalized_task_arithmetic as gta

    queue: list[int] = []
    drawn: list[int] = []
    merge_group = gta.GeneralizedTaskArithmeticMerge.merge_group
    sparsify = gta.sparsify

    def seeded_merge_group(self, group, /, **parameters):
        name = group.metadata.name
        queue[:] = [dare_seed(seed, _expert_of(e.id), name) for e in group.non_base]
        out = merge_group(self, group, **parameters)
        assert not queue or self.sparsification_method is None, "a DARE draw was not made"
        return out

    def seeded_sparsify(*args, **kwargs):
        s = queue.pop(0)
        torch.manual_seed(s)
        if kwargs["method"] == gta.SparsificationMethod.random:
            drawn.append(s)
        return sparsify(*args, **kwargs)

    monkeypatch.setattr(gta.GeneralizedTaskArithmeticMerge, "merge_group", seeded_merge_group)
    monkeypatch.setattr(gta, "sparsify", seeded_sparsify)
    return drawn


def _run_mergekit(conf: dict, out: Path) -> dict[str, torch.Tensor]:
    """mergekit's own merge (run_merge, written to disk) of a parsed config."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_merge(
            MergeConfiguration.model_validate(conf),
            str(out),
            MergeOptions(
                copy_tokenizer=False,
                write_model_card=False,
                quiet=True,
                lora_merge_cache=str(out.parent / "lora_cache"),
            ),
        )
    return load_file(out / "model.safetensors")


def _mergekit_file(path: Path, out: Path, monkeypatch) -> dict[str, torch.Tensor]:
    """mergekit run on the file as written, from the file's folder (relative paths)."""
    monkeypatch.chdir(path.parent)
    return _run_mergekit(yaml.safe_load(path.read_text()), out)


def _assert_equal_weights(ours, ref, base, atol=ATOL):
    assert sorted(ours) == sorted(ref), "mergekit wrote other tensors"
    moved = 0.0
    for name, got in ours.items():
        diff = (got - ref[name]).abs().max().item()
        assert diff <= atol, f"{name}: max |mergelaw - mergekit| = {diff}"
        moved = max(moved, (got - base[name]).abs().max().item())
    assert moved > 1e-3, "the merge left the base unchanged: the comparison would prove nothing"


# ----------------------------------------------------------------------------- in: each method

# (merge_method, per-model parameters, top-level parameters, mergelaw method, its parameters)
IN_CASES = {
    "linear": ("linear", {"weight": 1.0}, None, "average", {"c": 1.0, "combine": "mean"}),
    "linear_weight_2": (
        "linear", {}, {"weight": 2.0, "normalize": True}, "average", {"c": 1.0, "combine": "mean"},
    ),
    "task_arithmetic": (
        "task_arithmetic", {"weight": 0.5}, {"lambda": 0.6}, "task_arithmetic",
        {"c": 0.3, "combine": "sum"},
    ),
    "task_arithmetic_normalize": (
        "task_arithmetic", {"weight": 2.0}, {"lambda": 0.8, "normalize": True},
        "task_arithmetic", {"c": 0.8, "combine": "mean"},
    ),
    "ties": (
        "ties", {"weight": 1.0, "density": 0.3}, {"lambda": 0.7}, "ties",
        {"c": 0.7, "density": 0.3, "combine": "disjoint_mean", "trim_min_one": True},
    ),
    "ties_no_normalize": (
        "ties", {"density": 0.4}, {"weight": 0.5, "normalize": False, "int8_mask": False},
        "ties", {"c": 0.5, "density": 0.4, "combine": "disjoint_sum"},
    ),
    "ties_tiny_density": (
        "ties", {"weight": 1.0, "density": 0.01}, None, "ties",
        {"c": 1.0, "density": 0.01, "trim_min_one": True},
    ),
    "dare_linear": (
        "dare_linear", {"weight": 1.0, "density": 0.4}, {"lambda": 0.9}, "dare",
        {"p": 0.6, "rescale": "l1", "combine": "sum", "c": 0.9},
    ),
    "dare_linear_plain": (
        "dare_linear", {"weight": 1.0, "density": 0.3}, {"rescale": False, "normalize": True},
        "dare", {"p": 0.7, "rescale": "none", "combine": "mean", "c": 1.0},
    ),
    "dare_ties": (
        "dare_ties", {"weight": 0.8, "density": 0.6}, None, "dare_ties",
        {"p": 0.4, "rescale": "l1", "combine": "disjoint_sum", "c": 0.8},
    ),
    "dare_ties_normalize": (
        "dare_ties", {"weight": 1.0, "density": 0.35}, {"normalize": True, "lambda": 1.2},
        "dare_ties", {"p": 0.65, "rescale": "l1", "combine": "disjoint_mean", "c": 1.2},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(IN_CASES))
def test_config_merge_equals_mergekit(case, root, pool, tmp_path, monkeypatch):
    mk_method, per_model, shared, name, expected = IN_CASES[case]
    path = _write(root, f"in_{case}.yaml", _config(mk_method, per_model, shared))
    spec = read_sweep(path)
    assert spec.experts == {e: root / e for e in IDS} and spec.base == root / "base"
    method = spec.methods[0]
    assert method.name == name
    assert {k: method.params[k] for k in expected} == expected  # the documented mapping
    drawn = _seed_mergekit_dare(monkeypatch, SEED)
    ref = _mergekit_file(path, tmp_path / "out", monkeypatch)
    base = unflatten(pool.base_flat, pool.layout)
    _assert_equal_weights(_ours(pool, method), ref, base)
    assert len(drawn) == (len(pool.layout) * len(IDS) if method.random else 0)


def test_dare_without_matched_seeds_differs(root, pool, tmp_path, monkeypatch):
    """The seeding is what makes DARE equal: with mergekit's own draws the weights differ."""
    _, per_model, shared, _, _ = IN_CASES["dare_linear"]
    path = _write(root, "in_dare_unseeded.yaml", _config("dare_linear", per_model, shared))
    ref = _mergekit_file(path, tmp_path / "out", monkeypatch)
    ours = _ours(pool, read_sweep(path).methods[0])
    assert max((ours[n] - ref[n]).abs().max().item() for n in ours) > 1e-3


def test_base_listed_among_models_is_the_base(root, pool, tmp_path, monkeypatch):
    """mergekit's usual ties layout lists the base (without parameters) among the models."""
    conf = _config("ties", {"weight": 1.0, "density": 0.5})
    conf["models"].insert(0, {"model": "base"})
    conf["models"].append({"model": "./d1/../d1x/../d2"})  # the same folder twice: refused
    path = _write(root, "in_base_listed_twice.yaml", conf)
    with pytest.raises(MergelawError, match=r"models\[4\]\.model '\./d1/\.\./d1x/\.\./d2': listed"):
        read_sweep(path)
    conf["models"].pop()
    path = _write(root, "in_base_listed.yaml", conf)
    spec = read_sweep(path)
    assert list(spec.experts) == list(IDS)
    ref = _mergekit_file(path, tmp_path / "out", monkeypatch)
    _assert_equal_weights(_ours(pool, spec.methods[0]), ref, unflatten(pool.base_flat, pool.layout))


@pytest.mark.parametrize("case", ["task_arithmetic", "ties_no_normalize", "dare_ties"])
def test_subset_merge_is_mergekit_of_the_config_cut_to_the_subset(
    case, root, pool, tmp_path, monkeypatch
):
    """A sweep's k-subset is what mergekit makes from the config with only those models."""
    mk_method, per_model, shared, _, _ = IN_CASES[case]
    spec = read_sweep(_write(root, f"sub_{case}.yaml", _config(mk_method, per_model, shared)))
    subset = ("d0", "d2")
    cut = _write(root, f"cut_{case}.yaml", _config(mk_method, per_model, shared, ids=subset))
    _seed_mergekit_dare(monkeypatch, SEED)
    ref = _mergekit_file(cut, tmp_path / "out", monkeypatch)
    ours = _ours(pool, spec.methods[0], subset=subset)
    _assert_equal_weights(ours, ref, unflatten(pool.base_flat, pool.layout))


def _adapter(base_dir: Path, out: Path) -> Path:
    """A PEFT LoRA adapter on the base with random (non-zero) factors."""
    peft = pytest.importorskip("peft")
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"])
        wrapped = peft.get_peft_model(model, lora)
        with torch.no_grad():
            for p in wrapped.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
        wrapped.save_pretrained(out)
    return out


def test_lora_expert_as_base_plus_adapter_equals_mergekit(root, tmp_path, monkeypatch):
    """mergekit's BASE+ADAPTER model reference: a LoRA expert on the base, in both tools."""
    _adapter(root / "base", root / "lora_a")
    conf = _config("ties", {"weight": 1.0, "density": 0.5}, {"lambda": 0.8}, ids=("d0",))
    conf["models"].append({"model": "base+lora_a", "parameters": {"weight": 1.0, "density": 0.5}})
    path = _write(root, "in_lora.yaml", conf)
    spec = read_sweep(path)
    assert spec.experts == {"d0": root / "d0", "lora_a": root / "lora_a"}
    lora_pool = load_pool(spec.base, spec.experts)
    ref = _mergekit_file(path, tmp_path / "out", monkeypatch)
    ours = _ours(lora_pool, spec.methods[0], subset=("d0", "lora_a"))
    _assert_equal_weights(ours, ref, unflatten(lora_pool.base_flat, lora_pool.layout), atol=5e-6)


# ----------------------------------------------------------------------------- in: measured


def test_measured_mergekit_config_row_is_the_loss_of_mergekits_model(root, tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    conf = _config("ties", {"weight": 1.0, "density": 0.3}, {"lambda": 0.7})
    conf["mergelaw"] |= {"k": {"min": 1, "max": 3}, "sampler": "exhaustive", "seeds": [0]}
    path = _write(root, "measured.yaml", conf)
    table = run_sweep(read_sweep(path), tmp_path / "measure", device="cpu", progress=False)
    assert len(table) == 7 * len(TEXT)  # subsets of 3 experts x eval domains
    assert set(table["method"]) == {"ties"}
    assert table["in_domain"].sum() == 4 * len(TEXT)  # d0 / d1 are domains and expert ids
    assert table["method_params"].iat[0] == (
        '{"c":0.7,"combine":"disjoint_mean","density":0.3,"divide_by":"count",'
        '"merge_embeddings":true,"sign_method":"sum","sign_tie":"positive",'
        '"trim_min_one":true,"trim_scope":"tensor"}'
    )
    _run_mergekit(_chdir_config(path, monkeypatch), tmp_path / "mk")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "mk", dtype=torch.float32).eval()
    for domain, text in TEXT.items():
        rows = table[table["eval_domain"] == domain]
        row = rows[rows["k"] == 3].iloc[0]
        ids = torch.tensor(list(text.encode()))
        total, count = 0.0, 0
        for start in range(0, len(ids) - 1, 47):  # windows of 48 overlapping by one token
            w = ids[start : start + 48][None]
            with torch.no_grad():
                total += model(input_ids=w, labels=w).loss.item() * (w.shape[1] - 1)
            count += w.shape[1] - 1
        assert row["n_tokens"] == count
        assert row["loss"] == pytest.approx(total / count, rel=1e-5)
        # fewer experts make other models: the k = 3 row's match is no coincidence
        assert (rows[rows["k"] < 3]["loss"] - row["loss"]).abs().min() > 1e-4


def _chdir_config(path: Path, monkeypatch) -> dict:
    monkeypatch.chdir(path.parent)
    return yaml.safe_load(path.read_text())


# ----------------------------------------------------------------------------- in: refused


def _drop_section_key(key):
    def edit(conf):
        del conf["mergelaw"][key]

    return edit


def _set(*keys, value):
    def edit(conf):
        target = conf
        for key in keys[:-1]:
            target = target.setdefault(key, {}) if isinstance(key, str) else target[key]
        target[keys[-1]] = value

    return edit


BAD = [
    # (id, method, edit, message fragment)
    ("int8_mask", "ties", _set("parameters", "int8_mask", value=True),
     "parameters.int8_mask = true is not supported"),
    ("breadcrumbs", "breadcrumbs", None, "merge_method 'breadcrumbs' is not supported (it also "
     "drops the largest magnitudes"),
    ("slerp", "slerp", None, "merge_method 'slerp' is not supported (mergelaw's merge engine has "
     "no such method; expected one of: linear, task_arithmetic, ties, dare_linear, dare_ties)"),
    ("gradient", "ties", _set("models", 0, "parameters", "density", value=[0.2, 0.5]),
     "models[0].parameters.density = [0.2, 0.5]: a gradient or filtered value"),
    ("filter", "ties", _set("parameters", "weight", value=[{"filter": "mlp", "value": 0.5}]),
     "parameters.weight = [{'filter': 'mlp', 'value': 0.5}]: a gradient or filtered value"),
    ("unequal_weights", "ties", _set("models", 2, "parameters", "weight", value=0.5),
     "models[2].parameters.weight = 0.5 differs from models[0].parameters.weight = 1.0"),
    ("unequal_density", "dare_ties", _set("models", 1, "parameters", "density", value=0.9),
     "models[1].parameters.density = 0.9 differs from models[0].parameters.density = 0.5"),
    ("per_model_lambda", "ties", _set("models", 0, "parameters", "lambda", value=0.5),
     "models[0].parameters.lambda: mergekit reads lambda from the top-level 'parameters' only"),
    ("density_zero", "dare_linear", _set("models", 0, "parameters", "density", value=0.0),
     "models[0].parameters.density = 0.0 (expected 0 < density <= 1, mergekit's kept fraction)"),
    ("density_ta", "task_arithmetic", _set("models", 0, "parameters", "density", value=0.5),
     "models[0].parameters.density = 0.5 has no effect with task_arithmetic"),
    ("ties_rescale", "ties", _set("parameters", "rescale", value=True),
     "parameters.rescale = true with ties is not supported"),
    ("gamma", "ties", _set("parameters", "gamma", value=0.01),
     "parameters.gamma is not a parameter of ties (expected some of: lambda, normalize, rescale, "
     "int8_mask, weight, density)"),
    ("linear_density", "linear", _set("models", 0, "parameters", "density", value=0.5),
     "models[0].parameters.density is not a parameter of linear (expected some of: weight)"),
    ("linear_base_model", "linear", _set("base_model", value="base"),
     "base_model with merge_method linear (mergekit averages it in as one more model"),
    ("linear_unnormalised", "linear", _set("parameters", "normalize", value=False),
     "parameters.normalize = false with linear"),
    ("no_base_model", "ties", _set("base_model", value=None), "missing 'base_model'"),
    ("missing_weight", "ties", _set("models", 1, "parameters", value={"density": 0.5}),
     "models[1]: no weight (mergekit requires one per model"),
    ("zero_weight", "ties", _set("models", 0, "parameters", "weight", value=0),
     "(expected a weight > 0)"),
    ("normalize_text", "ties", _set("parameters", "normalize", value="yes"),
     "parameters.normalize = 'yes' (expected true or false)"),
    ("no_section", "ties", lambda c: c.pop("mergelaw"), "no 'mergelaw:' section"),
    ("section_experts", "ties", _set("mergelaw", "experts", value={"a": "d0"}),
     "'mergelaw.experts' is not taken in a mergekit config"),
    ("section_exclude", "ties", _set("mergelaw", "exclude", value="norm"),
     "'mergelaw.exclude' is not taken in a mergekit config (mergekit merges every tensor"),
    ("section_base", "ties", _set("mergelaw", "base", value="base"),
     "'mergelaw.base' is not taken with merge_method 'ties'"),
    ("section_unknown", "ties", _set("mergelaw", "colour", value=1),
     "unknown setting 'mergelaw.colour'"),
    ("section_k", "ties", _set("mergelaw", "k", value=[1, 5]),
     "'mergelaw.k' = 5 (expected 1 <= k <= 3, the pool size)"),
    ("section_eval", "ties", _drop_section_key("eval"), "missing 'mergelaw.eval.domains'"),
    ("sweep_key_on_top", "ties", _set("seeds", value=[0]),
     "'seeds' at the top level of a mergekit config (expected the sweep's own keys under "
     "'mergelaw:'"),
    ("slices", "ties", _set("slices", value=[]), "'slices' is not taken"),
    ("tokenizer_cfg", "ties", _set("tokenizer", value={"source": "union"}),
     "'tokenizer' is not taken"),
    ("tokenizer_union", "ties", _set("tokenizer_source", value="union"),
     "tokenizer_source = 'union' is not taken"),
    ("unknown_top", "ties", _set("merge_options", value={}), "unknown setting 'merge_options'"),
    ("revision", "ties", _set("models", 0, "model", value="d0@main"),
     "models[0].model = 'd0@main': a revision names a hub model"),
    ("lora_elsewhere", "ties", _set("models", 0, "model", value="d1+d0"),
     "models[0].model = 'd1+d0': a LoRA on 'd1', not on the base"),
    ("same_name", "ties", _set("models", 0, "model", value="other/d1"),
     "models[1].model 'd1': a second model named 'd1'"),
    ("only_base", "ties", _set("models", value=[{"model": "base"}]), "lists only the base"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "method", "edit", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_unsupported_is_one_line_naming_file_and_key(root, case, method, edit, fragment):
    per_model = {"weight": 1.0} if method in ("linear", "task_arithmetic") else {
        "weight": 1.0, "density": 0.5,
    }  # fmt: skip
    conf = _config(method, per_model)
    if edit is not None:
        edit(conf)
    path = _write(root, f"bad_{case}.yaml", conf)
    with pytest.raises(MergelawError) as err:
        read_sweep(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path))
    assert fragment in message


def test_mergekit_facts_behind_two_refusals(root, pool, tmp_path, monkeypatch):
    """linear with a base_model averages the base in (refused: not a merge of the k experts);
    int8_mask changes no weight in mergekit 0.1.5 (refused only as the issue asks)."""
    monkeypatch.chdir(root)
    conf = _config("linear", {}, {"weight": 1.0})
    del conf["mergelaw"]
    conf["base_model"] = "base"
    ref = _run_mergekit(conf, tmp_path / "linear_base")
    thetas = [unflatten(pool.base_flat + pool.task_vectors[i], pool.layout) for i in range(3)]
    base = unflatten(pool.base_flat, pool.layout)
    for name, b in base.items():
        expected = (b + sum(t[name] for t in thetas)) / (len(thetas) + 1)
        assert (ref[name] - expected).abs().max().item() <= ATOL
    conf = _config("ties", {"weight": 1.0, "density": 0.3})
    plain = _run_mergekit(conf, tmp_path / "plain")
    conf["parameters"] = {"int8_mask": True}
    int8 = _run_mergekit(conf, tmp_path / "int8")
    assert all(torch.equal(plain[n], int8[n]) for n in plain)


def test_mergelaw_section_is_ignored_by_mergekit():
    """mergekit's config model drops the 'mergelaw:' section: one file serves both tools."""
    from mergekit.config import MergeConfiguration

    conf = _config("ties", {"weight": 1.0, "density": 0.5})
    parsed = MergeConfiguration.model_validate(conf)
    assert "mergelaw" not in parsed.model_dump(exclude_defaults=True)


# ----------------------------------------------------------------------------- out

NATIVE = """
base = "base"
tokenizer = "bytes"
[experts]
d0 = "d0"
d1 = "d1"
d2 = "d2"
[eval.domains]
d0 = "d0.txt"
[[methods]]
name = "average"
"""

# (mergelaw method, parameters, mergekit merge_method it becomes)
OUT_CASES = {
    "average": ("average", {}, "linear"),
    "average_scaled": ("average", {"c": 0.5}, "task_arithmetic"),
    "task_arithmetic_mean": ("task_arithmetic", {"c": 0.8}, "task_arithmetic"),
    "task_arithmetic_sum": ("task_arithmetic", {"c": 0.4, "combine": "sum"}, "task_arithmetic"),
    "ties": ("ties", {"c": 0.7, "density": 0.3}, "ties"),
    "ties_sum": ("ties", {"density": 0.3, "combine": "disjoint_sum"}, "ties"),
    "ties_by_weights": ("ties", {"density": 0.2, "divide_by": "weights"}, "ties"),
    "dare_l1": ("dare", {"p": 0.6, "rescale": "l1"}, "dare_linear"),
    "dare_plain_sum": ("dare", {"p": 0.7, "rescale": "none", "combine": "sum"}, "dare_linear"),
    "dare_ties": ("dare_ties", {"p": 0.4, "rescale": "l1"}, "dare_ties"),
    "dare_ties_sum": (
        "dare_ties", {"p": 0.65, "rescale": "l1", "combine": "disjoint_sum", "c": 0.6}, "dare_ties",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def native(root) -> Path:
    path = root / "native.toml"
    path.write_text(NATIVE)
    return path


@pytest.mark.parametrize("case", list(OUT_CASES))
def test_emitted_config_run_by_mergekit_is_our_merge(case, native, pool, tmp_path, monkeypatch):
    name, params, mk_method = OUT_CASES[case]
    spec = method_spec(name, params)
    target = tmp_path / "emitted" / "merge.yaml"
    note = "plan: stop at k = 2 (fit x.nc)"
    chosen = emit_mergekit(target, native, name, spec.params_json, 2, own="d1", note=note)
    assert chosen == ("d1", "d0")  # the eval domain's own expert first, then the pool's order
    text = target.read_text()
    assert text.startswith(f"# Written by mergelaw {__version__}: {name} {spec.params_json}")
    assert f"# {note}\n" in text
    config = yaml.safe_load(text)
    assert config["merge_method"] == mk_method
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # absolute paths: the config runs from any folder
    drawn = _seed_mergekit_dare(monkeypatch, SEED)
    ref = _run_mergekit(config, tmp_path / "out")
    base = unflatten(pool.base_flat, pool.layout)
    _assert_equal_weights(_ours(pool, spec, subset=chosen), ref, base)
    assert len(drawn) == (len(pool.layout) * 2 if spec.random else 0)
    # and back: the emitted config read as a sweep gives the same method
    section = SECTION | ({"base": str(native.parent / "base")} if mk_method == "linear" else {})
    back = read_mergekit({**config, "mergelaw": section}, target).method
    expected = spec.params | ({"divide_by": "count"} if "divide_by" in spec.params else {})
    assert back.params == expected


def test_emitted_lora_expert_is_base_plus_adapter(root, tmp_path, monkeypatch):
    _adapter(root / "base", root / "lora_b")
    config = mergekit_config(method_spec("task_arithmetic", {}), root / "base", [root / "lora_b"])
    assert config["models"][0]["model"] == f"{root / 'base'}+{root / 'lora_b'}"
    lora_pool = load_pool(root / "base", {"lora_b": root / "lora_b"})
    ref = _run_mergekit(config, tmp_path / "out")
    spec = method_spec("task_arithmetic", {})
    ours = _ours(lora_pool, spec, subset=("lora_b",))
    _assert_equal_weights(ours, ref, unflatten(lora_pool.base_flat, lora_pool.layout), atol=5e-6)


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("dare", {}, "rescale = 'inverse_keep' (mergekit rescales each tensor to its L1 norm"),
        ("ties", {"trim_scope": "global"}, "trim_scope = 'global' (mergekit trims per tensor)"),
        ("ties", {"sign_method": "count"}, "sign_method = 'count'"),
        ("dare_ties", {"sign_tie": "global", "rescale": "l1"}, "sign_tie = 'global'"),
        ("ties", {"trim_min_one": False}, "trim_min_one = false"),
        ("task_arithmetic", {"merge_embeddings": False}, "merge_embeddings = false"),
        ("ties", {"combine": "mean"}, "combine = 'mean' (mergekit's ties is a disjoint merge)"),
        ("dare", {"combine": "disjoint_mean", "rescale": "l1"}, "(use dare_ties)"),
    ],
)
def test_emit_refuses_what_mergekit_cannot_make(native, name, params, fragment):
    spec = method_spec(name, params)
    with pytest.raises(MergelawError) as err:
        planned_mergekit_config(read_sweep(native), name, spec.params_json, 2)
    message = str(err.value)
    assert "\n" not in message and fragment in message and "has no mergekit equivalent" in message
    assert message.startswith(f"method {name} {spec.params_json}")


def test_emit_refuses_a_sweep_that_excludes_tensors(root):
    path = root / "native_exclude.toml"
    path.write_text(NATIVE.replace('tokenizer = "bytes"', 'tokenizer = "bytes"\nexclude = "norm"'))
    with pytest.raises(MergelawError, match="exclude = 'norm' has no mergekit equivalent"):
        planned_mergekit_config(read_sweep(path), "average", "{}", 2)


def test_choose_experts():
    pool = ["a", "b", "c", "d"]
    assert choose_experts(pool, 2) == ("a", "b") == choose_experts(pool, 2.0)
    assert choose_experts(pool, 2, own="c") == ("c", "a")
    assert choose_experts(pool, 3, own="a", with_own=False) == ("b", "c", "d")
    assert choose_experts(pool, 2, experts=["d", "b"]) == ("d", "b")
    for kwargs, fragment in [
        ({"k": 5}, "k = 5: expected a whole number from 1 to the pool's 4"),
        ({"k": 2.5}, "k = 2.5: expected a whole number"),
        ({"k": 2, "experts": ["a", "x"]}, "expert 'x' is not in the pool"),
        ({"k": 3, "experts": ["a", "b"]}, "2 experts given for a merge of k = 3"),
        ({"k": 2, "experts": ["a", "a"]}, "an expert is named twice"),
        ({"k": 4, "own": "a", "with_own": False}, "the pool has only 3 others"),
    ]:
        with pytest.raises(MergelawError, match=fragment.replace("(", r"\(")):
            choose_experts(pool, **kwargs)
