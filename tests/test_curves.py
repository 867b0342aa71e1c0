"""The curves table: schema validation with one-line errors, atomic I/O, per-k aggregates."""

import math
import os

import numpy as np
import pandas as pd
import pytest

from mergelaw.curves import (
    COLUMNS,
    aggregate_curves,
    format_subset,
    keep_only,
    read_curves,
    read_fit_input,
    subset_key,
    table_hash,
    validate_curves,
    write_curves,
)
from mergelaw.errors import CurvesTableError
from mergelaw.simulate import simulate_curves


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    return simulate_curves(sizes_b=(0.5, 7.0), domains=("code", "biology"), methods=("average",))


def _set(column, row, value):
    def mutate(t):
        t = t.copy()
        if t[column].dtype != object:
            t[column] = t[column].astype(object)
        t.at[row, column] = value
        return t

    return mutate


def _swap_subset(t):
    t = t.copy()
    t.at[3, "subset"] = "code|algebra"  # k=1 row given two unsorted experts
    return t


def _duplicate(t):
    return pd.concat([t, t.iloc[[5]]], ignore_index=True)


def _k_above_pool(t):
    t = t.copy()
    t.at[2, "pool_size"] = 0
    return t


def _wrong_subset_size(t):
    t = t.copy()
    t.at[4, "k"] = 2
    return t


def _inconsistent_size(t):
    t = t.copy()
    t.at[7, "n_params"] = 123
    return t


MALFORMED = {
    "empty table": (lambda t: t.iloc[0:0], "the table is empty"),
    "no columns": (lambda t: pd.DataFrame(), "the table is empty"),
    "missing column": (lambda t: t.drop(columns=["loss"]), "missing column 'loss'"),
    "two missing columns": (lambda t: t.drop(columns=["k", "seed"]), "missing columns 'k', 'seed'"),
    "text in loss": (_set("loss", 3, "abc"), "column 'loss' row 3: 'abc' is not a number"),
    "fractional k": (_set("k", 1, 2.5), "column 'k' row 1: 2.5 is not a whole number"),
    "number as method": (_set("method", 0, 7), "column 'method' row 0: 7 is not text"),
    "bad bool": (
        _set("in_domain", 2, "maybe"),
        "column 'in_domain' row 2: 'maybe' is not true or false",
    ),
    "NaN loss": (_set("loss", 4, float("nan")), "column 'loss' row 4: missing value (NaN)"),
    "inf loss": (_set("loss", 5, float("inf")), "column 'loss' row 5: inf is not a finite loss"),
    "negative loss": (_set("loss", 6, -0.1), "column 'loss' row 6: -0.1 is negative"),
    "k below 1": (_set("k", 0, 0), "column 'k' row 0: 0 is below 1"),
    "k above pool": (_set("k", 8, 12), "column 'k' row 8: 12 exceeds the pool size 9"),
    "pool size 0": (_k_above_pool, "column 'pool_size' row 2: 0 is not a pool size >= 1"),
    "subset size != k": (_wrong_subset_size, "holds 1 experts but k is 2"),
    "two experts at k=1": (
        _swap_subset,
        "column 'subset' row 3: 'code|algebra' holds 2 experts but k is 1",
    ),
    "duplicate key": (_duplicate, "repeats the key of row 5"),
    "unknown method": (_set("method", 1, "slerp"), "'slerp' is not a known merge method"),
    "params not JSON": (
        _set("method_params", 0, "c=0.8"),
        "column 'method_params' row 0: 'c=0.8' is not a JSON object",
    ),
    "zero n_params": (
        _set("n_params", 0, 0),
        "column 'n_params' row 0: 0 is not a positive parameter count",
    ),
    "no tokens": (_set("n_tokens", 9, 0), "column 'n_tokens' row 9: 0 is not a token count"),
    "empty text": (_set("eval_domain", 1, ""), "column 'eval_domain' row 1: empty text"),
    "wrong subset_id": (
        _set("subset_id", 2, "deadbeef"),
        "column 'subset_id' row 2: 'deadbeef' does not match",
    ),
    "two sizes, one base": (_inconsistent_size, "column 'n_params' row 7: 123 differs from"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_table_gives_one_line_error(good, case):
    mutate, expected = MALFORMED[case]
    with pytest.raises(CurvesTableError) as caught:
        validate_curves(mutate(good), source="curves.parquet")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("curves.parquet: ")
    assert expected in message


def test_unsorted_subset_of_right_size(good):
    t = good.copy()
    row = int(np.flatnonzero(t["k"] == 2)[0])
    t.at[row, "subset"] = "code|algebra"
    t.at[row, "subset_id"] = subset_key("code|algebra")
    with pytest.raises(CurvesTableError, match=r"row \d+: 'code\|algebra' is not canonical"):
        validate_curves(t)


def test_valid_table_passes_and_normalises(good):
    out = validate_curves(good)
    assert list(out.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert out["k"].dtype == np.int64 and out["loss"].dtype == np.float64
    assert out["in_domain"].dtype == bool


def test_csv_strings_are_coerced(good, tmp_path):
    path = tmp_path / "curves.csv"
    good.to_csv(path, index=False)
    back = read_curves(path)
    pd.testing.assert_frame_equal(back, validate_curves(good), check_dtype=False)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip(good, tmp_path, suffix):
    path = tmp_path / f"curves{suffix}"
    write_curves(good, path)
    back = read_curves(path)
    assert table_hash(back) == table_hash(good)
    np.testing.assert_allclose(back["loss"], good["loss"], rtol=1e-15)


def test_write_is_atomic_and_refuses_bad_tables(good, tmp_path):
    path = tmp_path / "curves.parquet"
    write_curves(good, path)
    before = path.read_bytes()
    bad = good.copy()
    bad.loc[0, "loss"] = -1.0
    with pytest.raises(CurvesTableError):
        write_curves(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.parquet"]  # no temp left behind


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(CurvesTableError, match=r"nope\.parquet: no such file"):
        read_curves(tmp_path / "nope.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(CurvesTableError, match=r"junk\.parquet: cannot be read as parquet"):
        read_curves(junk)
    other = tmp_path / "table.xlsx"
    other.write_text("x")
    with pytest.raises(CurvesTableError, match=r"unknown file type '\.xlsx'"):
        read_curves(other)


def test_table_hash_ignores_row_order_but_not_values(good):
    shuffled = good.sample(frac=1.0, random_state=0)
    assert table_hash(shuffled) == table_hash(good)
    changed = good.copy()
    changed.loc[0, "loss"] += 1e-6
    assert table_hash(changed) != table_hash(good)


def test_subset_helpers():
    assert format_subset(["code", "algebra", "code"]) == "algebra|code"
    assert subset_key("algebra|code") == subset_key(format_subset(["code", "algebra"]))
    with pytest.raises(CurvesTableError):
        format_subset(["a|b"])


def test_aggregate_against_numpy(good):
    agg = aggregate_curves(good)
    for _, row in agg.sample(10, random_state=1).iterrows():
        cell = good[
            (good.base_model == row.base_model)
            & (good.eval_domain == row.eval_domain)
            & (good.method == row.method)
            & (good.k == row.k)
        ]["loss"].to_numpy()
        assert row["count"] == len(cell)
        assert row["mean"] == pytest.approx(cell.mean())
        if len(cell) > 1:
            assert row["var"] == pytest.approx(cell.var(ddof=1))
            assert row["se"] == pytest.approx(cell.std(ddof=1) / math.sqrt(len(cell)))
            possible = math.comb(9, int(row.k))
            fpc = (possible - len(cell)) / (possible - 1)
            assert row["se_fpc"] == pytest.approx(row["se"] * math.sqrt(fpc))
    full = agg[agg.k == 9]
    assert (full["count"] == 1).all() and full["var"].isna().all() and (full["se_fpc"] == 0).all()


def test_written_files_get_the_usual_permissions(good, tmp_path):
    path = tmp_path / "curves.parquet"
    write_curves(good, path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_keep_only_keeps_the_named_rows_and_refuses_unknown_values():
    table = simulate_curves(sizes_b=[0.5], domains=["code", "biology"], methods=["average"],
                            seed=3)  # fmt: skip
    kept = keep_only(table, "eval_domain", ["code"], "t.parquet")
    assert set(kept["eval_domain"]) == {"code"}
    assert len(kept) == int((table["eval_domain"] == "code").sum()) > 0
    assert keep_only(table, "method", None, "t.parquet") is table
    with pytest.raises(CurvesTableError, match=r"t.parquet: column 'method' has no value 'tiez' "
                       r"\(values: average\)"):  # fmt: skip
        keep_only(table, "method", ["tiez"], "t.parquet")


def test_fit_input_is_a_curves_table_or_per_k_means(tmp_path):
    table = simulate_curves(sizes_b=[0.5], domains=["code"], methods=["average"], seed=3)
    write_curves(table, tmp_path / "c.csv")
    assert len(read_fit_input(tmp_path / "c.csv")) == len(table)
    means = pd.DataFrame({"k": [1, 2], "mean": [3.0, 2.9], "se": [0.01, 0.01]})
    means.to_csv(tmp_path / "m.csv", index=False)
    pd.testing.assert_frame_equal(read_fit_input(tmp_path / "m.csv"), means)
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00k,mean\n")
    with pytest.raises(CurvesTableError, match=r"bad\.csv: cannot be read as CSV"):
        read_fit_input(tmp_path / "bad.csv")
