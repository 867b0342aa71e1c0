"""Which k-subsets of the expert pool to merge: seeded, pure functions (no torch).

Every sampler returns, for each requested k, a list of distinct subsets; each subset is a sorted
tuple of expert ids. The same (ids, ks, seed, parameters) always gives the same answer.

- ``exhaustive``  all C(M, k) subsets.
- ``uniform``     n distinct subsets per k drawn uniformly without replacement (all if fewer).
- ``nested``      prefixes of n random permutations: the k-subset of permutation j is its first k
                  experts, so each permutation traces one nested curve k = 1..M.
- ``diverse``     the paper's diverse-permutation sampler (Wang et al. 2025, Appendix E): start from
                  the identity and its reverse, then repeatedly add, among ``candidates`` random
                  shuffles, the one whose minimum Hamming distance to those already chosen is
                  largest; subsets are the permutations' prefixes, as in ``nested``.
- ``balanced``    stratified by membership: at each k, the M cyclic windows of k consecutive experts
                  in a seeded random order (n orders: n x M subsets). Every expert sits in exactly
                  k of the M windows, so every evaluated domain gets both strata (k subsets with its
                  own expert, M - k without) and a per-k mean is not tilted by which experts the
                  draw happened to favour (uniform draws shared by every domain are: on the lab's
                  first table they shifted the per-k means at k = 2..5 by 7-10 milli-nats rms).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from mergelaw.errors import MergelawError

SAMPLERS = ("exhaustive", "uniform", "nested", "diverse", "balanced")
Subset = tuple[str, ...]


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *stream]))


def _check(ids: Sequence[str], ks: Sequence[int]) -> list[str]:
    ids = [str(i) for i in ids]
    if not ids or len(set(ids)) != len(ids):
        raise MergelawError(f"expert ids {ids!r}: expected at least one id, all distinct")
    for k in ks:
        if not 1 <= int(k) <= len(ids):
            raise MergelawError(f"k = {k}: expected 1 <= k <= {len(ids)} (the pool size)")
    return ids


def exhaustive(ids: Sequence[str], ks: Sequence[int]) -> dict[int, list[Subset]]:
    """All C(M, k) subsets for each k, in lexicographic order of sorted ids."""
    ids = sorted(_check(ids, ks))
    return {int(k): list(itertools.combinations(ids, int(k))) for k in ks}


def uniform(ids: Sequence[str], ks: Sequence[int], n: int, seed: int) -> dict[int, list[Subset]]:
    """``n`` distinct k-subsets per k, uniformly without replacement (all C(M,k) if n >= that)."""
    ids = sorted(_check(ids, ks))
    out: dict[int, list[Subset]] = {}
    for k in ks:
        k = int(k)
        total = math.comb(len(ids), k)
        rng = _rng(seed, k)
        if n >= total:
            out[k] = list(itertools.combinations(ids, k))
        elif total <= 20_000:
            picks = rng.choice(total, size=n, replace=False)
            every = list(itertools.combinations(ids, k))
            out[k] = [every[i] for i in sorted(picks)]
        else:
            seen: set[Subset] = set()
            chosen: list[Subset] = []
            while len(chosen) < n:
                s = tuple(sorted(ids[i] for i in rng.choice(len(ids), size=k, replace=False)))
                if s not in seen:
                    seen.add(s)
                    chosen.append(s)
            out[k] = chosen
    return out


def random_permutations(m: int, n: int, seed: int) -> list[tuple[int, ...]]:
    """``n`` random permutations of range(m) (repeats possible when n > m!)."""
    rng = _rng(seed, 0)
    return [tuple(int(x) for x in rng.permutation(m)) for _ in range(n)]


def diverse_permutations(m: int, n: int, seed: int, candidates: int = 64) -> list[tuple[int, ...]]:
    """The paper's Appendix E: identity, reverse, then greedy max-min Hamming distance."""
    if n < 1:
        return []
    chosen = [tuple(range(m))]
    if n >= 2 and m > 1:
        chosen.append(tuple(reversed(range(m))))
    rng = _rng(seed, 1)
    limit = math.factorial(m) if m <= 12 else None
    while len(chosen) < n and (limit is None or len(chosen) < limit):
        best, best_d = None, -1
        for _ in range(max(1, candidates)):
            cand = tuple(int(x) for x in rng.permutation(m))
            if cand in chosen:
                continue
            d = min(hamming(cand, c) for c in chosen)
            if d > best_d:
                best, best_d = cand, d
        if best is None:  # every candidate was already chosen; draw again
            continue
        chosen.append(best)
    return chosen


def hamming(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of positions where two permutations differ."""
    return sum(x != y for x, y in zip(a, b))


def prefixes(
    ids: Sequence[str], perms: Sequence[Sequence[int]], ks: Sequence[int]
) -> dict[int, list[Subset]]:
    """The distinct k-prefixes (sorted) of each permutation, in order of first appearance."""
    out: dict[int, list[Subset]] = {}
    for k in ks:
        k = int(k)
        seen: dict[Subset, None] = {}
        for perm in perms:
            seen.setdefault(tuple(sorted(ids[i] for i in perm[:k])), None)
        out[k] = list(seen)
    return out


def nested(ids: Sequence[str], ks: Sequence[int], n: int, seed: int) -> dict[int, list[Subset]]:
    """Prefixes of ``n`` random permutations."""
    ids = _check(ids, ks)
    return prefixes(ids, random_permutations(len(ids), n, seed), ks)


def diverse(
    ids: Sequence[str], ks: Sequence[int], n: int, seed: int, candidates: int = 64
) -> dict[int, list[Subset]]:
    """Prefixes of ``n`` diverse permutations (the paper's sampler)."""
    ids = _check(ids, ks)
    return prefixes(ids, diverse_permutations(len(ids), n, seed, candidates), ks)


def balanced_rounds(
    ids: Sequence[str], ks: Sequence[int], n: int, seed: int
) -> list[dict[int, list[Subset]]]:
    """Each round's M cyclic k-windows of its own seeded order of the pool, for every k: one
    round is a balanced design by itself (every expert in exactly k of its M windows; at k = M
    the M windows are the one full pool)."""
    ids = sorted(_check(ids, ks))
    m = len(ids)
    rounds = []
    for round_ in range(n):
        windows: dict[int, list[Subset]] = {}
        for k in map(int, ks):
            order = _rng(seed, 2, round_, k).permutation(m)
            windows[k] = [
                tuple(sorted(ids[order[(start + j) % m]] for j in range(k))) for start in range(m)
            ]
        rounds.append(windows)
    return rounds


def balanced(ids: Sequence[str], ks: Sequence[int], n: int, seed: int) -> dict[int, list[Subset]]:
    """Cyclic k-windows of ``n`` seeded orders of the pool (one order per round and k), distinct
    subsets in order of first appearance: each round's M windows hold every expert exactly k
    times (a window another round already drew is not repeated)."""
    rounds = balanced_rounds(ids, ks, n, seed)
    return {int(k): list(dict.fromkeys(w for r in rounds for w in r[int(k)])) for k in ks}


def sample_subsets(
    name: str,
    ids: Sequence[str],
    ks: Sequence[int],
    *,
    seed: int = 0,
    n: int | None = None,
    candidates: int = 64,
    source: str = "sampler",
) -> dict[int, list[Subset]]:
    """Dispatch by sampler name; ``n`` is the number of subsets (uniform) or permutations."""
    if name not in SAMPLERS:
        raise MergelawError(
            f"{source}: unknown sampler {name!r} (expected one of: {', '.join(SAMPLERS)})"
        )
    if name == "exhaustive":
        return exhaustive(ids, ks)
    if n is None or int(n) < 1:
        raise MergelawError(f"{source}: sampler {name!r} needs n >= 1, got {n!r}")
    if name == "uniform":
        return uniform(ids, ks, int(n), seed)
    if name == "nested":
        return nested(ids, ks, int(n), seed)
    if name == "balanced":
        return balanced(ids, ks, int(n), seed)
    return diverse(ids, ks, int(n), seed, candidates)
