"""Seeded simulation of curves tables from known law parameters: a known truth to test against.

Each simulated row is one merged model evaluated on one domain. Its loss is the law's mean plus a
subset effect built the way real merges behave: every expert shifts the merged model's loss by its
own effect (the eval domain's own expert pulls it down hardest), the merged model averages the
effects of the experts it holds, and a smaller subset-specific interaction is added on top. With
effects centred over the pool, the mean over all C(M, k) subsets equals the law exactly, and the
variance across subsets is v1 * (M - k) / (k (M - 1)): it shrinks like 1/k with the finite-pool
factor, and is zero at k = M where only one subset exists.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mergelaw import __version__
from mergelaw.curves import (
    canonical_method_params,
    format_subset,
    subset_key,
    validate_curves,
)
from mergelaw.errors import MergelawError
from mergelaw.law import LAW_PARAM_NAMES, mean_loss
from mergelaw.paper import (
    PAPER_DOMAINS,
    PAPER_METHOD_PARAMS,
    PAPER_METHODS,
    PAPER_SIZES_B,
    paper_law_params,
    paper_spread_params,
)

SIMULATION_TIMESTAMP = "1970-01-01T00:00:00+00:00"  # fixed, so the same seed gives the same table
SIMULATED_TOKENS = 100_000
#: DARE's drop rate in ``with_dare_stand_in`` (the lab's sweeps use p = 0.2).
DARE_STAND_IN_P = 0.2
SIMULATED_METHOD_PARAMS = {**PAPER_METHOD_PARAMS, "dare": {"c": 0.8, "p": DARE_STAND_IN_P}}


def spread_at_k1(spread_params: pd.Series, size_b: float) -> float:
    """Across-subset variance of single-expert losses: the paper's variance-law form at k = 1."""
    p = spread_params
    return float(
        p["V_star"]
        + p["B_var"] * size_b ** (-p["beta_var"])
        + p["A0_var"] * size_b ** (-p["gamma_var"]) / (1.0 + p["b0_var"])
    )


def finite_pool_variance(v1: float | np.ndarray, k, pool_size: int):
    """Variance across k-subsets drawn from a pool of M: v1 * (M - k) / (k (M - 1))."""
    if pool_size == 1:
        return np.zeros_like(np.asarray(k, dtype=float))
    return v1 * (pool_size - k) / (k * (pool_size - 1.0))


def with_dare_stand_in(
    law_params: pd.DataFrame, spread_params: pd.DataFrame, p: float = DARE_STAND_IN_P
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's tables plus a simulated 'dare' method, for benchmarks at the paper's scale
    (9 domains x 4 methods): the paper prints no DARE fits. DARE drops a share p of each task
    vector and rescales the rest by 1/(1-p) before a task-arithmetic merge, which keeps the mean
    task vector (so the floor) and inflates each vector's dispersion by 1/(1-p): the stand-in
    takes task arithmetic's floor and scales its tail amplitude and k=1 spread by 1/(1-p).
    A stand-in for scale tests, not a measurement."""
    inflate = 1.0 / (1.0 - p)
    law = law_params[law_params["method"] == "task_arithmetic"].copy()
    law["method"] = "dare"
    law["A0"] = law["A0"] * inflate
    spread = spread_params[spread_params["method"] == "task_arithmetic"].copy()
    spread["method"] = "dare"
    for column in ("V_star", "B_var", "A0_var"):
        spread[column] = spread[column] * inflate
    return (
        pd.concat([law_params, law], ignore_index=True),
        pd.concat([spread_params, spread], ignore_index=True),
    )


def expert_pool(pool_size: int) -> list[str]:
    """Expert ids: the paper's domain names first, then extra_10, extra_11, ..."""
    names = list(PAPER_DOMAINS[:pool_size])
    names += [f"extra_{i}" for i in range(len(names) + 1, pool_size + 1)]
    return names


def sample_subsets(
    pool: Sequence[str], k: int, count: int, rng: np.random.Generator
) -> list[tuple[str, ...]]:
    """``count`` distinct k-subsets drawn uniformly without replacement (all, if fewer exist)."""
    total = math.comb(len(pool), k)
    if total <= 20_000:
        combos = list(itertools.combinations(sorted(pool), k))
        if count >= total:
            return combos
        picks = rng.choice(total, size=count, replace=False)
        return [combos[i] for i in sorted(picks)]
    chosen: set[tuple[str, ...]] = set()
    while len(chosen) < count:
        chosen.add(tuple(sorted(rng.choice(np.asarray(pool), size=k, replace=False))))
    return sorted(chosen)


def base_model_name(size_b: float) -> str:
    return f"Qwen2.5-{size_b:g}B" if size_b in PAPER_SIZES_B else f"sim-{size_b:g}B"


def simulate_curves(
    *,
    sizes_b: Sequence[float] = PAPER_SIZES_B,
    domains: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    k_values: Sequence[int] | None = None,
    pool_size: int = 9,
    subsets_per_k: int = 5,
    seed: int = 0,
    law_params: pd.DataFrame | None = None,
    spread_params: pd.DataFrame | None = None,
    spread_scale: float = 1.0,
    in_domain_shift: float = 2.0,
    interaction_share: float = 0.2,
    eval_noise_sd: float = 0.003,
    arch: str = "qwen2",
) -> pd.DataFrame:
    """A validated curves table simulated from known per-(method, domain) law parameters.

    ``law_params`` has columns method, domain and LawParams' names (default: the paper's joint
    fits); ``spread_params`` has the paper's variance-fit columns (default: the paper's). With
    both defaults, ``methods`` defaults to the paper's three and may also name 'dare' (see
    ``with_dare_stand_in``). Subsets
    are shared by all methods and eval domains of one base size, as in a real sweep.
    ``in_domain_shift`` is how many (raw) standard deviations the eval domain's own expert sits
    below the others; ``interaction_share`` is the part of the variance not explained by additive
    expert effects. The same arguments and seed give the same table.
    """
    if law_params is None and spread_params is None:
        law_params, spread_params = with_dare_stand_in(paper_law_params(), paper_spread_params())
        methods = list(methods or PAPER_METHODS)
    law_params = paper_law_params() if law_params is None else law_params
    spread_params = paper_spread_params() if spread_params is None else spread_params
    methods = list(methods or law_params["method"].drop_duplicates())
    domains = list(domains or law_params["domain"].drop_duplicates())
    k_values = list(k_values or range(1, pool_size + 1))
    _check_request(law_params, spread_params, methods, domains, k_values, pool_size, sizes_b)
    if not 0.0 <= interaction_share < 1.0:
        raise MergelawError(f"interaction_share {interaction_share} is not in [0, 1)")
    if eval_noise_sd < 0:
        raise MergelawError(f"eval_noise_sd {eval_noise_sd} is negative")
    if not (math.isfinite(spread_scale) and spread_scale >= 0):
        raise MergelawError(f"spread_scale {spread_scale:g} is not a number >= 0")
    if subsets_per_k < 1:
        raise MergelawError(f"subsets_per_k {subsets_per_k} is below 1")

    rng = np.random.default_rng(seed)
    pool = expert_pool(pool_size)
    rows: list[dict] = []
    for size_b in sizes_b:
        subsets = {k: sample_subsets(pool, k, subsets_per_k, rng) for k in k_values}
        for method in methods:
            for domain in domains:
                law = _lookup(law_params, method, domain).loc[list(LAW_PARAM_NAMES)].astype(float)
                spread = _lookup(spread_params, method, domain)
                v1 = spread_scale * spread_at_k1(spread, size_b)
                effects = _expert_effects(pool, domain, v1, interaction_share, in_domain_shift, rng)
                for k in k_values:
                    mu = float(mean_loss(size_b, k, *law))
                    inter_sd = math.sqrt(interaction_share * finite_pool_variance(v1, k, pool_size))
                    for members in subsets[k]:
                        loss = mu + np.mean([effects[e] for e in members])
                        loss += inter_sd * rng.standard_normal()
                        loss += eval_noise_sd * rng.standard_normal()
                        rows.append(
                            _row(arch, size_b, method, pool_size, k, members, seed, domain, loss)
                        )
    return validate_curves(pd.DataFrame(rows), source="simulated table")


def _expert_effects(
    pool: list[str],
    eval_domain: str,
    v1: float,
    interaction_share: float,
    in_domain_shift: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    raw = rng.standard_normal(len(pool))
    raw[[i for i, e in enumerate(pool) if e == eval_domain]] -= in_domain_shift
    raw -= raw.mean()
    scale = math.sqrt((1.0 - interaction_share) * v1) / max(raw.std(), 1e-12)
    return dict(zip(pool, raw * scale))


def _row(arch, size_b, method, pool_size, k, members, seed, domain, loss) -> dict:
    subset = format_subset(members)
    return {
        "arch": arch,
        "base_model": base_model_name(size_b),
        "n_params": round(size_b * 1e9),
        "method": method,
        "method_params": canonical_method_params(SIMULATED_METHOD_PARAMS.get(method, {})),
        "pool_size": pool_size,
        "k": k,
        "subset": subset,
        "subset_id": subset_key(subset),
        "seed": seed,
        "eval_domain": domain,
        "in_domain": domain in members,
        "loss": max(float(loss), 0.0),
        "n_tokens": SIMULATED_TOKENS,
        "eval_set_hash": hashlib.sha1(f"simulated:{domain}".encode()).hexdigest()[:12],
        "package_version": __version__,
        "timestamp": SIMULATION_TIMESTAMP,
    }


def _lookup(params: pd.DataFrame, method: str, domain: str) -> pd.Series:
    hit = params[(params["method"] == method) & (params["domain"] == domain)]
    return hit.iloc[0]


def _check_request(law_params, spread_params, methods, domains, k_values, pool_size, sizes_b):
    for label, table in (("law", law_params), ("spread", spread_params)):
        have = set(zip(table["method"], table["domain"]))
        for method in methods:
            for domain in domains:
                if (method, domain) not in have:
                    raise MergelawError(
                        f"no {label} parameters for method {method!r}, domain {domain!r} "
                        f"(available methods: {', '.join(sorted({m for m, _ in have}))}; "
                        f"domains: {', '.join(sorted({d for _, d in have}))})"
                    )
    if pool_size < 2:
        raise MergelawError(f"pool size {pool_size} is below 2 (the spread needs M - 1 > 0)")
    bad_k = [k for k in k_values if not 1 <= k <= pool_size]
    if bad_k:
        raise MergelawError(f"k = {bad_k[0]} is outside 1..{pool_size} (the pool size)")
    bad_n = [n for n in sizes_b if not n > 0]
    if bad_n:
        raise MergelawError(f"base size {bad_n[0]} is not a positive number of billions")


#: The table structure simulation-based calibration (mergelaw.bayes.calibration) draws its tables
#: on: 3 sizes x 3 domains x 2 methods = 6 families, k = 1..9, up to 3 subsets per k (450 rows):
#: small enough to refit dozens of times.
SBC_TEMPLATE = {
    "sizes_b": (0.5, 3.0, 14.0),
    "domains": ("biology", "code", "physics"),
    "methods": ("average", "ties"),
    "subsets_per_k": 3,
}
#: The one base size of the one-size template, the middle one (what most teams have): there the
#: spec has no size laws, and floor, amplitude and b are per curve.
SBC_ONE_SIZE = 3.0


def sbc_template(one_size: bool = False) -> pd.DataFrame:
    """The SBC template table (its losses are replaced by prior draws); with ``one_size``, its
    curves at one base size alone."""
    template = {**SBC_TEMPLATE, "sizes_b": (SBC_ONE_SIZE,)} if one_size else SBC_TEMPLATE
    return simulate_curves(**template, seed=0)
