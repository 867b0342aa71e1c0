"""The measured curves shipped in data/curves: the shape the lab issue promises, and provenance."""

import json
from pathlib import Path

import pytest

from mergelaw.curves import read_curves

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
