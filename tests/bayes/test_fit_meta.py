"""A fit's typed record: round trip through JSON, and fits saved before a field existed."""

import json

from mergelaw.bayes.fit_meta import FitMeta, SamplerSettings


def _meta() -> FitMeta:
    return FitMeta(
        backend="numpyro", sampler="numpyro NUTS (parallel chains)",
        settings=SamplerSettings(draws=10, tune=10, chains=2, seed=5, target_accept=0.95),
        data_hash="abc", data_form="subsets", n_obs=40, n_ref=1e9, k_anchor=9.0, pool_size=9.0,
        x_lo=-1.0, x_hi=1.0, families={"label": ["a/average/code"]},
        curves={"family": [0, 0], "n_params": [5e8, 2e9], "label": ["c0", "c1"]},
        wall_time_s=1.5, versions={"python": "3.11"}, n_sizes=2, size_law=False,
        notes=("no size law",),
    )  # fmt: skip


def test_a_record_survives_its_json():
    meta = _meta()
    assert FitMeta.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta
    assert list(meta.curve_table["label"]) == ["c0", "c1"]
    assert meta.settings.describe().startswith("draws 10, tune 10, chains 2, seed 5")


def test_an_older_record_takes_the_defaults_and_drops_what_is_gone():
    old = _meta().to_dict()
    for key in ("pool_size", "n_sizes", "size_law", "notes", "spec_source", "curve_checks"):
        old.pop(key)
    old["settings"]["progress"] = False  # no longer recorded
    old["retired_field"] = 1
    meta = FitMeta.from_dict(old)
    assert meta.pool_size == meta.k_anchor == 9.0  # measured on a pool of its largest k
    assert meta.n_sizes == 2 and meta.size_law and meta.notes == ()
    assert meta.curve_checks is None and meta.spec_source == ""
