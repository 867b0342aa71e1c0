"""The unit of work: one base, one method (with its seed), a batch of subsets -> curves rows.

``run_unit(context, unit)`` is a function of its inputs: the same context and unit give the same
rows (DARE drops are seeded). It writes no files and draws no progress bars, so any executor can
map it over units (``mergelaw.measure.executors``). The rows carry every curves-table column except
``timestamp``, which the store adds when it writes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from mergelaw.curves import format_subset, subset_key
from mergelaw.measure.evaluate import Batch, EvalSet, evaluate, evaluate_stacked
from mergelaw.measure.experts import ExpertPool, bind_flat, unflatten
from mergelaw.measure.merge import merge_sparsified, sparsify
from mergelaw.measure.methods import MethodSpec

Subset = tuple[str, ...]


@dataclass(frozen=True)
class WorkUnit:
    """One method at one seed over a batch of subsets."""

    method: MethodSpec
    seed: int
    subsets: tuple[Subset, ...]

    @property
    def unit_id(self) -> str:
        text = "\n".join(
            [self.method.name, self.method.params_json, str(self.seed)]
            + [format_subset(s) for s in self.subsets]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class MeasureContext:
    """Everything a unit needs, built once per sweep: the pool, the eval batches, settings."""

    pool: ExpertPool
    eval_sets: tuple[EvalSet, ...]
    batches: list[Batch]
    dtype: str = "float32"
    models_per_forward: int = 1
    package_version: str = "0+unknown"
    _theta: torch.Tensor | None = field(default=None, repr=False)
    _stack: torch.Tensor | None = field(default=None, repr=False)
    _sparse_key: tuple | None = field(default=None, repr=False)
    _sparse: torch.Tensor | None = field(default=None, repr=False)

    def theta(self) -> torch.Tensor:
        """The flat merged-parameter buffer the model's merged tensors are views of."""
        if self._theta is None:
            self._theta = self.pool.base_flat.clone()
            bind_flat(self.pool.model, self._theta, self.pool.layout)
        return self._theta

    def stack(self, n: int) -> torch.Tensor:
        if self._stack is None or self._stack.shape[0] < n:
            self._stack = self.pool.base_flat.expand(n, -1).clone()
        return self._stack[:n]

    def sparsified(self, spec: MethodSpec, seed: int) -> torch.Tensor:
        """Psi(v_i) for every expert: trims and drops depend on the expert, never the subset."""
        if spec.sparsify is None:
            return self.pool.task_vectors
        key = (spec.sparsify, spec.density, spec.trim_scope, spec.trim_min_one, spec.p)
        key += (spec.rescale, spec.merge_embeddings, seed if spec.random else None)
        if key != self._sparse_key:
            self._sparse = None  # free the previous one first
            pool = self.pool
            self._sparse = torch.stack(
                [
                    sparsify(pool.task_vectors[i], spec, pool.layout, seed=seed, expert_id=e)
                    for i, e in enumerate(pool.expert_ids)
                ]
            )
            self._sparse_key = key
        return self._sparse


def merged_flat(
    context: MeasureContext, spec: MethodSpec, seed: int, subset: Subset, out: torch.Tensor
) -> torch.Tensor:
    """Write the merged parameters of ``subset`` into ``out``."""
    pool = context.pool
    psis = context.sparsified(spec, seed)
    rows = [psis[pool.index(e)] for e in subset]
    return merge_sparsified(pool.base_flat, rows, spec, pool.layout, out=out)


def run_unit(context: MeasureContext, unit: WorkUnit) -> pd.DataFrame:
    """Merge and evaluate every subset of ``unit``; one row per (subset, eval domain)."""
    losses: list = []
    n_tokens = None
    step = max(1, context.models_per_forward)
    n_domains = len(context.eval_sets)
    for start in range(0, len(unit.subsets), step):
        group = unit.subsets[start : start + step]
        if step == 1:
            merged_flat(context, unit.method, unit.seed, group[0], context.theta())
            loss, n_tokens = evaluate(
                context.pool.model, context.batches, n_domains, dtype=context.dtype
            )
            losses.append(loss)
        else:
            stack = context.stack(len(group))
            for j, subset in enumerate(group):
                merged_flat(context, unit.method, unit.seed, subset, stack[j])
            loss, n_tokens = evaluate_stacked(
                context.pool.model,
                unflatten(stack, context.pool.layout),
                context.batches,
                n_domains,
                dtype=context.dtype,
            )
            losses.extend(loss)
    return _rows(context, unit, losses, n_tokens)


def _rows(context: MeasureContext, unit: WorkUnit, losses: Sequence, n_tokens) -> pd.DataFrame:
    pool = context.pool
    rows = []
    for subset, loss in zip(unit.subsets, losses):
        text = format_subset(subset)
        for d, es in enumerate(context.eval_sets):
            rows.append(
                {
                    "arch": pool.arch,
                    "base_model": pool.base_name,
                    "n_params": pool.n_params,
                    "method": unit.method.name,
                    "method_params": unit.method.params_json,
                    "pool_size": len(pool.expert_ids),
                    "k": len(subset),
                    "subset": text,
                    "subset_id": subset_key(text),
                    "seed": int(unit.seed),
                    "eval_domain": es.domain,
                    "in_domain": es.domain in subset,
                    "loss": float(loss[d]),
                    "n_tokens": int(n_tokens[d]),
                    "eval_set_hash": es.hash,
                    "package_version": context.package_version,
                }
            )
    return pd.DataFrame(rows)
