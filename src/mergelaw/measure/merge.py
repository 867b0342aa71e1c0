"""The merge engine: sparsify -> consensus -> combine, as pure functions of flat task vectors.

Task vectors are flat 1-D tensors (all merged tensors of a model laid end to end, see
``Segment``); per-tensor operations (TIES trim, DARE drops and rescaling) work segment by segment.
``merge`` returns base + c * combine(Psi(v_i)) for one subset; ``merge_sparsified`` does the
consensus and combine stages alone for task vectors already sparsified (TIES trims and DARE drops
depend only on the expert, the tensor and the seed, never on the subset).
``MethodSpec`` (``mergelaw.measure.methods``) names every option; the registry of named methods,
each a configuration of these stages, is ``mergelaw.merge_methods``.

The stages are also exposed per tensor and per block of coordinates (``trim_mask``/``top_mask``,
``dare_mask``/``dare_apply``, ``combine``, ``magnitude_cut``): measuring runs them tensor by
tensor on what it reads from disk (``mergelaw.measure.streaming``), the flat functions here run
them over whole vectors; one engine, the same values.

DARE drops are drawn with a ``torch.Generator`` seeded from (seed, expert id, tensor name) by
``dare_seed``: the same seed gives bitwise the same merge, and an expert keeps the same drop mask
in every subset it belongs to (common random numbers across k). Masks are reproducible per device
type (CPU and CUDA generators differ).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from mergelaw.measure.methods import MethodSpec

#: Elements per chunk of the fused combine (measured: fewer, larger ops beat cache-sized ones).
CHUNK = 1 << 20


@dataclass(frozen=True)
class Segment:
    """One tensor's place in the flat task vector."""

    name: str
    offset: int
    shape: tuple[int, ...]
    embedding: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def stop(self) -> int:
        return self.offset + self.numel

    @property
    def per_row(self) -> int:
        """Coordinates per index of the first dimension (1 for a scalar): a block of rows."""
        return math.prod(self.shape[1:])


def merged_extent(layout: Sequence[Segment], spec: MethodSpec) -> int:
    """Length of the prefix of the flat vector that ``spec`` merges.

    Layouts put embedding tensors last, so leaving embeddings unmerged is a shorter prefix.
    """
    if not layout:
        return 0
    if spec.merge_embeddings:
        return layout[-1].stop
    plain = [s for s in layout if not s.embedding]
    return plain[-1].stop if plain else 0


def dare_seed(seed: int, expert_id: str, tensor: str) -> int:
    """Seed of one expert's DARE drops on one tensor: a stable 63-bit hash."""
    digest = hashlib.sha256(f"{int(seed)}|{expert_id}|{tensor}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def trim(v: torch.Tensor, spec: MethodSpec, layout: Sequence[Segment]) -> torch.Tensor:
    """TIES trim: keep the top-``density`` magnitudes per tensor or over the whole vector."""
    n = merged_extent(layout, spec)
    out = v.clone()
    if spec.density >= 1.0:
        return out
    if spec.trim_scope == "global":
        _keep_top(out[:n], spec.density, spec.trim_min_one)
    else:
        for seg in layout:
            if seg.stop <= n:
                _keep_top(out[seg.offset : seg.stop], spec.density, spec.trim_min_one)
    return out


def top_count(numel: int, density: float, min_one: bool) -> int:
    """How many coordinates a trim keeps of ``numel``: int(density * numel), at least one if
    ``min_one``."""
    k = int(density * numel)
    if min_one and numel > 0:
        k = max(1, k)
    return k


def trim_mask(x: torch.Tensor, density: float, min_one: bool) -> torch.Tensor | None:
    """Boolean mask of the ``top_count`` largest magnitudes of a 1-D ``x`` (None: keep all)."""
    k = top_count(x.numel(), density, min_one)
    return None if k >= x.numel() else top_mask(x.abs(), k)


def top_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest of a 1-D tensor of magnitudes: every value above the k-th
    largest and, of the values equal to it, the first ones in flat order (the global trim's rule,
    so a bf16 checkpoint's many equal magnitudes are kept the same way on every path and device).

    Works in blocks on the cut that ``magnitude_cut`` finds, so it needs the mask and a block's
    temporaries, not ``topk``'s (value, index) pair per coordinate (16 bytes each on the CPU).
    """
    flat = magnitudes.reshape(-1)
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    if k <= 0:
        return mask.reshape(magnitudes.shape)
    cut, ties_left = magnitude_cut(lambda: flat.split(CHUNK), k)
    for block, out in zip(flat.split(CHUNK), mask.split(CHUNK), strict=True):
        ties_left = keep_above_cut(block, cut, ties_left, out)
    return mask.reshape(magnitudes.shape)


def keep_above_cut(magnitudes: torch.Tensor, cut: float, ties_left: int, out: torch.Tensor) -> int:
    """Write into the bool ``out`` which of a block's ``magnitudes`` a trim keeps: those above
    ``cut`` and the first ``ties_left`` equal to it, in flat order; return the ties still left to
    keep in later blocks (the one tie rule of every trim, per tensor or global)."""
    torch.gt(magnitudes, cut, out=out)
    if ties_left > 0:
        first = torch.nonzero(magnitudes == cut).reshape(-1)[:ties_left]
        out[first] = True
        ties_left -= first.numel()
    return ties_left


def _keep_top(x: torch.Tensor, density: float, min_one: bool) -> None:
    """Zero all but the int(density * n) largest magnitudes of ``x``, in place."""
    mask = trim_mask(x, density, min_one)
    if mask is not None:
        x.mul_(mask)


def magnitude_cut(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> tuple[float, int]:
    """The k-th largest magnitude over a vector given in chunks, and how many values equal to it
    the top k hold: (t, r). The top k are every |x| > t and the first r with |x| = t.

    Exact, in two passes over the chunks (``chunks()`` is called twice) and fixed memory: a radix
    select on float32 bit patterns, which order non-negative floats as integers (high 16 bits,
    then the low 15 within the bin that holds the k-th). A global TIES trim of a vector too large
    to hold (``mergelaw.measure.streaming``); k <= 0 keeps nothing: (inf, 0).
    """
    if k <= 0:
        return float("inf"), 0
    high = torch.zeros(1 << 16, dtype=torch.int64)
    for x in chunks():
        bits = _magnitude_bits(x)
        high += torch.bincount(bits >> 15, minlength=1 << 16).cpu()
    top_bin, above = _bin_of_kth(high, k)
    low = torch.zeros(1 << 15, dtype=torch.int64)
    for x in chunks():
        bits = _magnitude_bits(x)
        low += torch.bincount(bits[(bits >> 15) == top_bin] & 0x7FFF, minlength=1 << 15).cpu()
    low_bin, greater = _bin_of_kth(low, k - above)
    pattern = torch.tensor([(top_bin << 15) | low_bin], dtype=torch.int32)
    return float(pattern.view(torch.float32).item()), k - above - greater


def _magnitude_bits(x: torch.Tensor) -> torch.Tensor:
    """|x| as float32 bit patterns (int32), on x's device: for non-negative floats their order."""
    return x.detach().abs().float().reshape(-1).view(torch.int32)


def _bin_of_kth(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest value of a histogram, and how many lie in higher bins."""
    from_top = hist.flip(0).cumsum(0)
    j = int(torch.searchsorted(from_top, torch.tensor([k])).item())
    j = min(j, hist.numel() - 1)
    b = hist.numel() - 1 - j
    return b, int(from_top[j].item() - hist[b].item())


def dare_mask(
    numel: int, spec: MethodSpec, *, seed: int, expert_id: str, tensor: str, device: torch.device
) -> torch.Tensor:
    """DARE's keep mask (float 0/1) for one expert's tensor, drawn from its own seeded generator."""
    gen = torch.Generator(device=device).manual_seed(dare_seed(seed, expert_id, tensor))
    keep = torch.full((numel,), 1.0 - spec.p, dtype=torch.float32, device=device)
    return torch.bernoulli(keep, generator=gen)


def l1_factor(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """DARE's ``l1`` rescaling of one tensor: |x|_1 / |x * mask|_1 (None when either is ~0)."""
    before = x.abs().sum()
    after = (x * mask).abs().sum()
    if before >= 1e-7 and after >= 1e-7:
        return before / after
    return None


def dare_apply(
    x: torch.Tensor,
    mask: torch.Tensor,
    spec: MethodSpec,
    factor: torch.Tensor | None = None,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """Psi of DARE on (a block of) one tensor: drop by ``mask``, then rescale per ``spec``.

    ``factor`` is ``l1_factor`` of the whole tensor (``rescale = "l1"``), so a block gives the
    same values as the whole tensor would. ``inplace`` overwrites ``x`` (same values).
    """
    masked = x.mul_(mask) if inplace else x * mask
    if spec.rescale == "inverse_keep":
        return masked.div_(1.0 - spec.p)
    if spec.rescale == "l1" and factor is not None:
        return masked.mul_(factor)
    return masked


def dare(
    v: torch.Tensor, spec: MethodSpec, layout: Sequence[Segment], *, seed: int, expert_id: str
) -> torch.Tensor:
    """DARE: drop each coordinate with probability p, then rescale (``spec.rescale``)."""
    n = merged_extent(layout, spec)
    out = v.clone()
    if spec.p <= 0.0:
        return out
    for seg in layout:
        if seg.stop > n:
            continue
        x = out[seg.offset : seg.stop]
        mask = dare_mask(
            x.numel(), spec, seed=seed, expert_id=expert_id, tensor=seg.name, device=x.device
        )
        factor = l1_factor(x, mask) if spec.rescale == "l1" else None
        x.copy_(dare_apply(x, mask, spec, factor))
    return out


def sparsify(
    v: torch.Tensor, spec: MethodSpec, layout: Sequence[Segment], *, seed: int, expert_id: str
) -> torch.Tensor:
    """Psi(v) for one expert's flat task vector (a new tensor; ``v`` is not changed)."""
    if spec.sparsify == "trim":
        return trim(v, spec, layout)
    if spec.sparsify == "dare":
        return dare(v, spec, layout, seed=seed, expert_id=expert_id)
    return v


def alphas(spec: MethodSpec, weights: Sequence[float]) -> list[float]:
    """Per-expert factors of a ``sum`` / ``mean`` combine: c * w_i (/ sum w for ``mean``)."""
    total = sum(weights) if spec.combine == "mean" else 1.0
    return [spec.c * w / total for w in weights]


def combine(
    base: torch.Tensor,
    psis: Sequence[torch.Tensor],
    spec: MethodSpec,
    weights: Sequence[float],
    out: torch.Tensor,
    *,
    tie: float = 1.0,
) -> None:
    """Write base + c * combine(psis) into ``out`` for one block of coordinates.

    Coordinate-wise, so any split of the vector into blocks gives the same values. ``tie`` is the
    sign elected where a vote is exactly 0 (``sign_tie``: +1, or the global sign: ``tie_sign``).
    """
    if not spec.elects:
        out.copy_(base)
        for psi, alpha in zip(psis, alphas(spec, weights)):
            out.add_(psi, alpha=alpha)
        return
    wt = torch.tensor(list(weights), dtype=base.dtype, device=base.device)[:, None]
    x = torch.stack(list(psis))  # (k, block)
    elected = _election(x, wt, spec)
    sign = torch.where(elected > 0, 1.0, torch.where(elected < 0, -1.0, tie)).to(x.dtype)
    agree = (x.sign() == sign).to(x.dtype)
    mixed = (x * wt * agree).sum(0)
    if spec.combine == "disjoint_mean":
        divisor = agree.sum(0) if spec.divide_by == "count" else (wt * agree).sum(0)
        divisor[divisor == 0] = 1
        mixed = mixed / divisor
    torch.add(base, mixed, alpha=spec.c, out=out)


def elected_sign_sum(
    psis: Sequence[torch.Tensor], spec: MethodSpec, weights: Sequence[float]
) -> torch.Tensor:
    """Sum of the elected signs over one block (float64): the global sign tie adds these up."""
    wt = torch.tensor(list(weights), dtype=psis[0].dtype, device=psis[0].device)[:, None]
    return _election(torch.stack(list(psis)), wt, spec).sign().sum(dtype=torch.float64)


def tie_sign(total: torch.Tensor | float) -> float:
    """The global sign tie: the sign of the summed elected signs (+1 at 0)."""
    return 1.0 if float(total) >= 0 else -1.0


def merge_sparsified(
    base: torch.Tensor,
    psis: Sequence[torch.Tensor],
    spec: MethodSpec,
    layout: Sequence[Segment],
    *,
    weights: Sequence[float] | None = None,
    out: torch.Tensor | None = None,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """base + c * combine(psis): the consensus and combine stages, fused and chunked.

    ``psis`` are sparsified flat task vectors (rows of a stack are fine: nothing is copied),
    ``weights`` relative per-expert weights (default equal). Writes into ``out`` if given.
    Coordinates past ``merged_extent`` (unmerged embeddings) keep the base value.
    """
    k = len(psis)
    if k == 0:
        raise ValueError("merge needs at least one expert")
    w = [1.0] * k if weights is None else [float(x) for x in weights]
    if out is None:
        out = torch.empty_like(base)
    n = merged_extent(layout, spec)
    if n < base.numel():
        out[n:].copy_(base[n:])
    tie = 1.0
    if spec.elects and spec.sign_tie == "global":
        total = torch.zeros((), dtype=torch.float64, device=base.device)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            total += elected_sign_sum([p[a:b] for p in psis], spec, w)
        tie = tie_sign(total)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        combine(base[a:b], [p[a:b] for p in psis], spec, w, out[a:b], tie=tie)
    return out


def _election(x: torch.Tensor, wt: torch.Tensor, spec: MethodSpec) -> torch.Tensor:
    """Per-coordinate vote: the weighted mass (``sum``) or the count of signs (``count``)."""
    if spec.sign_method == "sum":
        return (x * wt).sum(0)
    return x.sign().sum(0)


def merge(
    base: torch.Tensor,
    task_vectors: Sequence[torch.Tensor],
    spec: MethodSpec,
    layout: Sequence[Segment],
    *,
    expert_ids: Sequence[str],
    seed: int = 0,
    weights: Sequence[float] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The merged flat parameters: base + c * combine_i(w_i * Psi(v_i)) for the given experts."""
    if len(expert_ids) != len(task_vectors):
        raise ValueError("one expert id per task vector is needed")
    psis = [
        sparsify(v, spec, layout, seed=seed, expert_id=e) for v, e in zip(task_vectors, expert_ids)
    ]
    return merge_sparsified(base, psis, spec, layout, weights=weights, out=out)
