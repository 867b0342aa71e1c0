"""The unit of work: one base, one method (with its seed), a batch of subsets -> curves rows.

``run_unit(context, unit)`` is a function of its inputs: the same context and unit give the same
rows (DARE drops are seeded). It writes no files and draws no progress bars, so any executor can
map it over units (``mergelaw.measure.executors``). The rows carry every curves-table column except
``timestamp``, which the store adds when it writes them.

Each merged model is written tensor by tensor into the evaluated model's parameters (or a stack
of them), reading the base and the subset's experts from disk as it goes
(``mergelaw.measure.streaming``): host memory holds one model, not the pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from mergelaw.curves import format_subset, subset_key
from mergelaw.measure.evaluate import Batch, EvalSet, evaluate, evaluate_stacked
from mergelaw.measure.experts import ExpertPool, bind_flat
from mergelaw.measure.methods import MethodSpec
from mergelaw.measure.streaming import StreamingMerger

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
    """Everything a unit needs, built once per sweep: the pool, the eval batches, settings.

    Merges stream (``mergelaw.measure.streaming``): each merged model is written tensor by
    tensor into the evaluated model's parameters (or into a stack of them for
    ``models_per_forward > 1``), reading the base and the subset's experts as it goes.
    """

    pool: ExpertPool
    eval_sets: tuple[EvalSet, ...]
    batches: list[Batch]
    dtype: str = "float32"
    models_per_forward: int = 1
    package_version: str = "0+unknown"
    _merger: StreamingMerger | None = field(default=None, repr=False)
    _theta: torch.Tensor | None = field(default=None, repr=False)
    _stack: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def merger(self) -> StreamingMerger:
        """The pool's streaming merger (it keeps each expert's global-trim cut)."""
        if self._merger is None:
            self._merger = StreamingMerger(self.pool)
        return self._merger

    def theta(self) -> torch.Tensor:
        """A flat buffer (P floats) the model's merged tensors are made views of: for callers
        that want one merged model as a flat vector (``merged_flat``); measuring does not."""
        if self._theta is None:
            self._theta = self.pool.base_flat.clone()
            bind_flat(self.pool.model, self._theta, self.pool.layout)
        return self._theta

    def stack(self, n: int) -> dict[str, torch.Tensor]:
        """n models' merged tensors: name -> (n, *shape), allocated once for the largest n."""
        if self._stack is None or next(iter(self._stack.values())).shape[0] < n:
            self._stack = None  # free the smaller one first
            self._stack = {
                s.name: torch.empty((n, *s.shape), device=self.pool.device)
                for s in self.pool.layout
            }
        return {name: t[:n] for name, t in self._stack.items()}


def merged_flat(
    context: MeasureContext, spec: MethodSpec, seed: int, subset: Subset, out: torch.Tensor
) -> torch.Tensor:
    """Write the merged parameters of ``subset`` into the flat vector ``out``."""
    context.merger().merge_into(spec, subset, lambda s: out[s.offset : s.stop], seed=seed)
    return out


def merge_into_model(context: MeasureContext, spec: MethodSpec, seed: int, subset: Subset) -> None:
    """Make the evaluated model the merged model of ``subset`` (its merged tensors, in place)."""
    params = dict(context.pool.model.named_parameters())
    context.merger().merge_into(spec, subset, lambda s: params[s.name].data.view(-1), seed=seed)


def run_unit(context: MeasureContext, unit: WorkUnit) -> pd.DataFrame:
    """Merge and evaluate every subset of ``unit``; one row per (subset, eval domain)."""
    losses: list = []
    n_tokens = None
    step = max(1, context.models_per_forward)
    n_domains = len(context.eval_sets)
    for start in range(0, len(unit.subsets), step):
        group = unit.subsets[start : start + step]
        if step == 1:
            merge_into_model(context, unit.method, unit.seed, group[0])
            loss, n_tokens = evaluate(
                context.pool.model, context.batches, n_domains, dtype=context.dtype
            )
            losses.append(loss)
        else:
            stack = context.stack(len(group))
            for j, subset in enumerate(group):
                context.merger().merge_into(unit.method, subset, _row_of(stack, j), seed=unit.seed)
            loss, n_tokens = evaluate_stacked(
                context.pool.model,
                stack,
                context.batches,
                n_domains,
                dtype=context.dtype,
            )
            losses.extend(loss)
    return _rows(context, unit, losses, n_tokens)


def _row_of(stack: dict[str, torch.Tensor], j: int):
    """Destination of the j-th model of a stack: row j of each tensor, flat."""
    return lambda seg: stack[seg.name][j].view(-1)


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
