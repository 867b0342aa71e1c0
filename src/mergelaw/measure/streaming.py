"""Merge one subset tensor by tensor, reading the base and the experts as it goes.

For each merged tensor of the layout, in blocks of whole rows: the base's values and each
expert's task vector there (``ExpertPool.base_tensor`` / ``task_vector``: read in the
checkpoint's dtype, subtracted in float32), sparsified and combined by the engine's own stages
(``mergelaw.measure.merge``), written into the destination: the evaluated model's parameter, or
one row of a stack. A trim or drop mask needs the whole tensor: it is made from one expert's
whole task vector at a time and kept (as bits, for TIES-like merges) while the blocks pass. So
a merge holds, beyond its destination, about one tensor's worth of work per step and a mask per
expert of the subset: a few tensors per expert, never a model per expert. The largest step is a
per-tensor trim of the largest tensor: its whole float32 task vector and a mask.

It gives the values of the flat path (``merge.merge`` on ``ExpertPool.task_vectors``):

- Every combine takes blocks of about ``block / k`` coordinates per expert of the subset (the
  base read once per block) and runs the engine's ``combine`` on them, coordinate by coordinate
  as the flat path does (``sum`` / ``mean``: the base, then each expert's share in the subset's
  order), so blocks change nothing. ``sign_tie = "global"`` first sums the elected signs over every
  tensor (a first pass that reads the subset twice).
- A trim keeps every |v| above the k-th largest magnitude and, of the values equal to it, the
  first in the flat order (``merge.top_mask``, as in the flat path): per tensor, of the tensor's
  whole task vector; globally, over the expert's whole vector (the cut found once per expert and
  kept: ``merge.magnitude_cut``).
- DARE's masks come from the same generator, seeded by (seed, expert, tensor), drawn on the
  same device for the whole tensor.

The price of not holding M task vectors: every merged model reads its k experts and the base
again (from the page cache once read), and remakes its drop masks (the flat path made them once
per expert and sweep); per-tensor trim masks are kept, as bits, on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from mergelaw.measure.experts import ExpertPool
from mergelaw.measure.merge import (
    CHUNK,
    Segment,
    combine,
    dare_apply,
    dare_mask,
    elected_sign_sum,
    keep_above_cut,
    l1_factor,
    magnitude_cut,
    merged_extent,
    tie_sign,
    top_count,
    top_mask,
)
from mergelaw.measure.methods import MethodSpec

Destination = Callable[[Segment], torch.Tensor]
Blocks = Iterator[tuple[tuple[int, int], torch.Tensor, list[torch.Tensor]]]


class StreamingMerger:
    """Merges subsets of one pool tensor by tensor; keeps each expert's global-trim cut and, on
    the CPU, its per-tensor trim masks as bits (a bit per coordinate: 17 MB for a 135M-parameter
    expert; remaking them took most of a TIES merge of SmolLM2-135M, ~15 s an expert)."""

    def __init__(self, pool: ExpertPool, *, block: int = CHUNK):
        self.pool = pool
        self.block = block
        self._cuts: dict[tuple, tuple[float, int] | None] = {}
        self._trim_masks: dict[tuple, _Mask] = {}

    def merge_into(
        self,
        spec: MethodSpec,
        subset: Sequence[str],
        dest: Destination,
        *,
        seed: int = 0,
        weights: Sequence[float] | None = None,
    ) -> None:
        """Write base + c * combine_i(w_i * Psi(v_i)) for ``subset`` into ``dest(seg)`` for every
        tensor of the layout (a flat float32 tensor of ``seg.numel`` on the pool's device);
        tensors the method does not merge (``merge_embeddings = false``) get the base's values.
        """
        if not subset:
            raise ValueError("merge needs at least one expert")
        w = [1.0] * len(subset) if weights is None else [float(x) for x in weights]
        if len(w) != len(subset):
            raise ValueError("one weight per expert is needed")
        pool = self.pool
        n = merged_extent(pool.layout, spec)
        psis = [_Psi(self, pool.index(e), e, spec, seed, n) for e in subset]
        tie = 1.0
        if spec.elects and spec.sign_tie == "global":
            total = torch.zeros((), dtype=torch.float64, device=pool.device)
            for seg in pool.layout:
                if seg.stop <= n:
                    for _, _, block in self._blocks(seg, psis):
                        total += elected_sign_sum(block, spec, w)
            tie = tie_sign(total)
            for psi in psis:
                psi.restart()
        for seg in pool.layout:
            out = dest(seg)
            if seg.stop > n:
                out.copy_(pool.base_tensor(seg))
                continue
            for (lo, hi), base, block in self._blocks(seg, psis):
                combine(base, block, spec, w, out[lo:hi], tie=tie)

    def _blocks(self, seg: Segment, psis: Sequence[_Psi]) -> Blocks:
        """((lo, hi), the base there, [Psi(v_i) there]) over a tensor, in blocks of whole rows:
        about ``block`` coordinates in all, so k experts' blocks of ``block / k`` each (an
        election stacks them and makes a few temporaries of that size)."""
        pool = self.pool
        size = max(1, self.block // len(psis))
        per_row = seg.per_row
        if seg.numel <= size or not seg.shape:
            base = pool.base_tensor(seg)
            yield (0, seg.numel), base, [psi.whole(seg, base) for psi in psis]
            return
        for psi in psis:
            psi.prepare(seg, pack=len(psis) > 1)
        step = max(1, size // per_row)
        for a in range(0, seg.shape[0], step):
            b = min(a + step, seg.shape[0])
            lo, hi = a * per_row, b * per_row
            base = pool.base_tensor(seg, (a, b))
            yield (lo, hi), base, [psi.block(seg, base, (a, b), lo, hi) for psi in psis]
        for psi in psis:
            psi.release()

    def cut(self, index: int, spec: MethodSpec, extent: int) -> tuple[float, int] | None:
        """Expert ``index``'s global-trim cut over the first ``extent`` coordinates (None: keep
        all): found once (two passes over its task vector) and kept."""
        key = (index, spec.density, spec.trim_min_one, extent)
        if key not in self._cuts:
            k = top_count(extent, spec.density, spec.trim_min_one)
            self._cuts[key] = None if k >= extent else magnitude_cut(self._vector(index, extent), k)
        return self._cuts[key]

    def _vector(self, index: int, extent: int) -> Callable[[], Iterator[torch.Tensor]]:
        pool = self.pool

        def chunks() -> Iterator[torch.Tensor]:
            for seg in pool.layout:
                if seg.stop <= extent:
                    yield pool.task_vector(index, seg, pool.base_tensor(seg))

        return chunks


class _Mask:
    """A boolean mask of one tensor kept as bits (on the CPU; a byte per coordinate elsewhere):
    TIES-like merges hold one per expert of the subset at once."""

    def __init__(self, mask: torch.Tensor):
        self.packed = mask.device.type == "cpu"
        self.data = np.packbits(mask.numpy()) if self.packed else mask

    def __getitem__(self, span: slice) -> torch.Tensor:
        if not self.packed:
            return self.data[span]
        lo, hi = span.start, span.stop
        bits = np.unpackbits(self.data[lo // 8 : (hi + 7) // 8])  # 0/1 bytes: valid bools
        return torch.from_numpy(bits[lo % 8 : lo % 8 + hi - lo]).view(torch.bool)


class _Psi:
    """One expert's sparsified task vector in one merge, tensor by tensor (and block by block)."""

    def __init__(
        self,
        merger: StreamingMerger,
        index: int,
        expert_id: str,
        spec: MethodSpec,
        seed: int,
        n: int,
    ):
        self.merger, self.pool, self.index, self.expert_id = merger, merger.pool, index, expert_id
        self.spec, self.seed = spec, seed
        self.trim = spec.sparsify == "trim" and spec.density < 1.0
        self.drop = spec.sparsify == "dare" and spec.p > 0.0
        self.cut = None
        if self.trim and spec.trim_scope == "global":
            self.cut = merger.cut(index, spec, n)
        self.mask: _Mask | torch.Tensor | None = None
        self.factor: torch.Tensor | None = None
        self.restart()

    def restart(self) -> None:
        """Start the flat order again (the global trim's ties still to keep)."""
        self.ties_left = self.cut[1] if self.cut is not None else 0

    def whole(self, seg: Segment, base: torch.Tensor) -> torch.Tensor:
        """Psi(v) on the whole tensor (masks stay unpacked)."""
        v = self.pool.task_vector(self.index, seg, base)
        per_tensor_trim = self.trim and self.spec.trim_scope == "tensor"  # consumes its copy
        self.prepare(seg, v.clone() if per_tensor_trim else v, pack=False)
        out = self._apply(v, 0, seg.numel)
        self.release()
        return out

    def prepare(self, seg: Segment, v: torch.Tensor | None = None, *, pack: bool = True) -> None:
        """What the tensor's blocks need from the whole tensor: the trim's or the drops' mask and
        DARE's l1 factor. A trim's ``v`` is consumed (its magnitudes, in place)."""
        spec = self.spec
        self.mask = self.factor = None
        mask = None
        if self.trim and spec.trim_scope == "tensor":
            key = (self.index, seg.name, spec.density, spec.trim_min_one)
            kept = self.merger._trim_masks.get(key)
            if kept is not None:  # a trim depends on the expert and the tensor alone
                self.mask = kept
                return
            k = top_count(seg.numel, spec.density, spec.trim_min_one)
            if k < seg.numel:
                mask = top_mask(self._whole(seg, v).abs_(), k)
                if self.pool.device.type == "cpu":
                    self.mask = self.merger._trim_masks[key] = _Mask(mask)
                    return
        elif self.drop:
            drops = dare_mask(
                seg.numel,
                spec,
                seed=self.seed,
                expert_id=self.expert_id,
                tensor=seg.name,
                device=self.pool.device,
            )
            if spec.rescale == "l1":
                self.factor = l1_factor(self._whole(seg, v), drops)
            mask = drops.bool()
            del drops
        if mask is not None:
            self.mask = _Mask(mask) if pack else mask

    def _whole(self, seg: Segment, v: torch.Tensor | None) -> torch.Tensor:
        if v is not None:
            return v
        return self.pool.task_vector(self.index, seg, self.pool.base_tensor(seg))

    def block(self, seg: Segment, base: torch.Tensor, rows: tuple[int, int], lo: int, hi: int):
        """Psi(v) on rows ``[a, b)`` of the tensor, coordinates ``[lo, hi)`` (after ``prepare``)."""
        return self._apply(self.pool.task_vector(self.index, seg, base, rows), lo, hi)

    def release(self) -> None:
        self.mask = self.factor = None

    def _apply(self, v: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        if self.mask is not None:
            mask = self.mask[lo:hi]
            if self.drop:
                return dare_apply(v, mask, self.spec, self.factor, inplace=True)
            return v.mul_(mask)
        if self.cut is not None:
            return v.mul_(self._cut_mask(v))
        return v

    def _cut_mask(self, v: torch.Tensor) -> torch.Tensor:
        """The global trim on one block: |v| above the cut, and the next ties in flat order."""
        keep = torch.empty(v.shape, dtype=torch.bool, device=v.device)
        self.ties_left = keep_above_cut(v.abs(), self.cut[0], self.ties_left, keep)
        return keep
