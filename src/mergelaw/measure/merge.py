"""The merge engine: sparsify -> consensus -> combine, as pure functions of flat task vectors.

Task vectors are flat 1-D tensors (all merged tensors of a model laid end to end, see
``Segment``); per-tensor operations (TIES trim, DARE drops and rescaling) work segment by segment.
``merge`` returns base + c * combine(Psi(v_i)) for one subset; ``merge_sparsified`` does the
consensus and combine stages alone for task vectors already sparsified (TIES trims and DARE drops
depend only on the expert, the tensor and the seed, never on the subset, so a sweep sparsifies each
expert once and reuses it). ``MethodSpec`` (``mergelaw.measure.methods``) names every option.

DARE drops are drawn with a ``torch.Generator`` seeded from (seed, expert id, tensor name) by
``dare_seed``: the same seed gives bitwise the same merge, and an expert keeps the same drop mask
in every subset it belongs to (common random numbers across k). Masks are reproducible per device
type (CPU and CUDA generators differ).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
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


def _keep_top(x: torch.Tensor, density: float, min_one: bool) -> None:
    """Zero all but the int(density * n) largest magnitudes of ``x``, in place."""
    k = int(density * x.numel())
    if min_one and x.numel() > 0:
        k = max(1, k)
    if k >= x.numel():
        return
    mask = torch.zeros_like(x)
    if k > 0:
        mask[torch.topk(x.abs(), k, sorted=False).indices] = 1
    x.mul_(mask)


def dare(
    v: torch.Tensor, spec: MethodSpec, layout: Sequence[Segment], *, seed: int, expert_id: str
) -> torch.Tensor:
    """DARE: drop each coordinate with probability p, then rescale (``spec.rescale``)."""
    n = merged_extent(layout, spec)
    out = v.clone()
    keep = 1.0 - spec.p
    if spec.p <= 0.0:
        return out
    for seg in layout:
        if seg.stop > n:
            continue
        x = out[seg.offset : seg.stop]
        gen = torch.Generator(device=x.device).manual_seed(dare_seed(seed, expert_id, seg.name))
        mask = torch.bernoulli(torch.full_like(x, keep), generator=gen)
        if spec.rescale == "inverse_keep":
            x.copy_(x * mask / keep)
        elif spec.rescale == "l1":
            before = x.abs().sum()
            masked = x * mask
            after = masked.abs().sum()
            if before >= 1e-7 and after >= 1e-7:
                masked = masked * (before / after)
            x.copy_(masked)
        else:
            x.mul_(mask)
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
    if spec.combine in ("sum", "mean"):
        total = sum(w) if spec.combine == "mean" else 1.0
        alphas = [spec.c * wi / total for wi in w]
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            acc = out[a:b]
            acc.copy_(base[a:b])
            for psi, alpha in zip(psis, alphas):
                acc.add_(psi[a:b], alpha=alpha)
        return out
    wt = torch.tensor(w, dtype=base.dtype, device=base.device)[:, None]
    tie = 1.0
    if spec.sign_tie == "global":
        total = torch.zeros((), dtype=torch.float64, device=base.device)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            total += _election(torch.stack([p[a:b] for p in psis]), wt, spec).sign().sum()
        tie = 1.0 if total.item() >= 0 else -1.0
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        x = torch.stack([p[a:b] for p in psis])  # (k, chunk)
        elected = _election(x, wt, spec)
        sign = torch.where(elected > 0, 1.0, torch.where(elected < 0, -1.0, tie)).to(x.dtype)
        agree = (x.sign() == sign).to(x.dtype)
        mixed = (x * wt * agree).sum(0)
        if spec.combine == "disjoint_mean":
            divisor = agree.sum(0) if spec.divide_by == "count" else (wt * agree).sum(0)
            divisor[divisor == 0] = 1
            mixed = mixed / divisor
        torch.add(base[a:b], mixed, alpha=spec.c, out=out[a:b])
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
