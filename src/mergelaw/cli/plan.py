"""``mergelaw plan FIT target|stop|budget|forecast`` and ``mergelaw compare``: planning and
comparison queries on a saved fit.

Each prints the query's Answer (``mergelaw.cli.render.print_answer``: the table, the decision in
words, the fit's diagnostics flag and provenance) and with ``--json OUT`` writes the same answer
as JSON (atomically); with ``--json -`` the JSON goes to stdout and the rest to stderr, so that
``mergelaw plan FIT stop ... --json - | jq`` works. ``plan target`` and ``plan stop`` with
``--emit-mergekit FILE --sweep SWEEP`` also write the planned merge (k experts of the sweep's pool,
the family's method) as a mergekit config (``mergelaw.measure.mergekit_config.emit_mergekit``,
imported only then; it loads no torch). Importing this module loads only typer and rich; the
queries load numpy and pandas when a command runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mergelaw.cli.render import print_answer
from mergelaw.cli.shared import (
    POSITIVE,
    SEED,
    UNIT,
    FitArg,
    JsonOpt,
    LevelOpt,
    command,
    console,
    stderr_console,
)
from mergelaw.errors import LIST_SYNTAX, MergelawError, Range, first_line, parse_values
from mergelaw.io import is_stdout

#: Allowed values of the numeric options of plan and compare (by parameter name); the list
#: options (--fractions, --k, compare's --size, the costs) are checked as parsed.
RANGES: dict[str, Range] = {
    "size": POSITIVE,
    "loss": POSITIVE,
    "target": POSITIVE,
    "prob": UNIT,
    "level": UNIT,
    "k_max": Range(1),
    "k": Range(1),
    "pool_size": Range(2),
    "epsilon": POSITIVE,
    "cost_per_expert": POSITIVE,
    "fractions": UNIT,
    "seed": SEED,
    "limit": POSITIVE,
    "cost": Range(0),  # --base-costs, --expert-cost
    "merge_cost": Range(0),
    "n_subsets": Range(1),
    "rope": Range(0),
    "rope_experts": Range(0),
}


class PoolChoice(StrEnum):
    with_own = "with_own"
    without_own = "without_own"


app = typer.Typer()
plan_app = typer.Typer(
    help=(
        "Planning queries on a saved fit: experts for a target loss, when to stop adding "
        "experts, the best (base size, k) within a budget, and forecasts.\n\n"
        "Usage: mergelaw plan FIT.nc target|stop|budget|forecast [OPTIONS]"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SizeOpt = Annotated[
    float | None,
    typer.Option(
        "--size",
        help="Base size N in billions (any size). (default: the fit's base size, when it has one)",
    ),
]
FamilyOpt = Annotated[
    str | None,
    typer.Option(
        help="Family label (qwen2/ties/code) or a unique part of it (ties/code); 'new' for a "
        "domain or method the fit has not seen. (default: every family)"
    ),
]
PoolOpt = Annotated[
    float | None,
    typer.Option(help="Experts in the pool M (finite-pool spread). (default: the table's max k)"),
]
EmitOpt = Annotated[
    Path | None,
    typer.Option(
        "--emit-mergekit",
        metavar="FILE",
        help="Also write the planned merge (the answer's k experts of --sweep's pool, merged with "
        "the family's method) as a mergekit config: mergekit-yaml FILE OUT makes that model. "
        "Needs one family (--family).",
    ),
]
SweepOpt = Annotated[
    Path | None,
    typer.Option(
        help="With --emit-mergekit: the sweep file (native or mergekit) the curves were measured "
        "with; its pool gives the base and the expert folders."
    ),
]
ExpertsOpt = Annotated[
    list[str] | None,
    typer.Option(
        metavar="ID,...",
        help=f"With --emit-mergekit: the experts to merge, {LIST_SYNTAX} (k of them). (default: "
        "the family's own expert first, then the pool's order)",
    ),
]
PriorOpt = Annotated[
    str, typer.Option(help="Prior for a new pool's curve: 'new' (the population) or a family.")
]


app.add_typer(plan_app, name="plan")


@plan_app.callback()
def plan(ctx: typer.Context, fit: FitArg) -> None:
    """Planning queries on a saved fit."""
    ctx.obj = {"fit": fit}


@command(plan_app, RANGES, "target")
def target(
    ctx: typer.Context,
    loss: Annotated[float, typer.Option(help="Target expected loss (nats/token).")],
    size: SizeOpt = None,
    family: FamilyOpt = None,
    prob: Annotated[float, typer.Option(help="Required P(L(k) <= target).")] = 0.9,
    k_max: Annotated[float | None, typer.Option(help="Experts available. (default: M)")] = None,
    pool_size: PoolOpt = None,
    level: LevelOpt = 0.9,
    json_out: JsonOpt = None,
    emit: EmitOpt = None,
    sweep: SweepOpt = None,
    experts: ExpertsOpt = None,
) -> None:
    """Experts needed to reach a target loss.

    'Unreachable at this size' comes with the base size that would reach it. With
    --emit-mergekit, a reachable target's merge is written as a mergekit config."""
    from mergelaw.plan import experts_for_target

    if k_max is not None and pool_size is not None and k_max > pool_size:
        raise MergelawError(f"--k-max {k_max:g}: expected at most --pool-size ({pool_size:g})")
    planned = _emit_options(emit, sweep, experts, family)
    post = _posterior(ctx, pool_size, json_out)
    size = post.planning_size(size, "--size")
    if planned is not None:
        _one_family(post, family)
    answer = experts_for_target(
        post, loss, n_b=size, family=family, prob=prob, k_max=k_max, level=level
    )
    wrote = None
    if planned is not None:
        ((label, d),) = answer.decision.items()
        if d["status"] != "reachable":
            raise MergelawError(
                f"--emit-mergekit: {label} @ {size:g}B: the target loss {loss:g} is "
                f"{d['status']} (P >= {prob:g}); there is no planned merge to write"
            )
        wrote = _emit(planned, post, label, d["k"], answer.summary[0], ctx)
    print_answer(answer, json_out)
    _print_emitted(wrote, json_out)


@command(plan_app, RANGES, "stop")
def stop(
    ctx: typer.Context,
    epsilon: Annotated[
        float,
        typer.Option(help="Smallest worthwhile loss drop per expert (nats), or per unit cost."),
    ],
    size: SizeOpt = None,
    cost_per_expert: Annotated[
        float | None, typer.Option(help="Cost of one expert: epsilon becomes nats per unit cost.")
    ] = None,
    family: FamilyOpt = None,
    fractions: Annotated[
        list[str] | None,
        typer.Option(
            metavar="F,...", help=f"Fractions of the gain, {LIST_SYNTAX}. (default: 0.8,0.9)"
        ),
    ] = None,
    k_max: Annotated[
        float | None, typer.Option(help="k the gain fractions are measured to. (default: max k)")
    ] = None,
    losses: Annotated[
        Path | None,
        typer.Option(
            help="Sequential form: losses measured so far on a new pool (.csv/.parquet with k "
            "and loss, plus subset and pool_size to correct each k's mean for the experts its "
            "subsets hold; or k, mean and se); prints stop or continue."
        ),
    ] = None,
    prior: PriorOpt = "new",
    pool_size: PoolOpt = None,
    level: LevelOpt = 0.9,
    seed: Annotated[int, typer.Option(help="Seed of the update's sampler.")] = 0,
    json_out: JsonOpt = None,
    emit: EmitOpt = None,
    sweep: SweepOpt = None,
    experts: ExpertsOpt = None,
) -> None:
    """When to stop adding experts: gain below epsilon, k80, k90; or stop/continue now.

    The first k whose expected gain drops below epsilon (per unit cost with --cost-per-expert),
    and k80/k90; with --losses, stop or continue for a pool being measured. With
    --emit-mergekit, the merge of that many experts is written as a mergekit config."""
    from mergelaw.plan import sequential_stop, stopping

    shares = parse_values(fractions, float, "--fractions", RANGES["fractions"]) or [0.8, 0.9]
    if emit is not None and losses is not None:
        raise MergelawError(
            "--emit-mergekit writes a fitted family's planned merge; it does not apply with "
            "--losses (a new pool's stop or continue)"
        )
    planned = _emit_options(emit, sweep, experts, family)
    measured = None if losses is None else _read_points(losses, "--losses")
    post = _posterior(ctx, pool_size, json_out)
    size = post.planning_size(size, "--size")
    if planned is not None:
        _one_family(post, family)
    if measured is not None:
        answer = sequential_stop(
            post,
            measured,
            n_b=size,
            epsilon=epsilon,
            prior=prior,
            cost_per_expert=cost_per_expert,
            level=level,
            seed=seed,
        )
    else:
        answer = stopping(
            post,
            n_b=size,
            epsilon=epsilon,
            family=family,
            cost_per_expert=cost_per_expert,
            fractions=shares,
            k_max=k_max,
            level=level,
        )
    wrote = None
    if planned is not None:
        ((label, d),) = answer.decision.items()
        k = 1.0 if d["adding_experts"] == "makes it worse" else d["stop_at_k"]
        wrote = _emit(planned, post, label, k, answer.summary[0], ctx)
    print_answer(answer, json_out)
    _print_emitted(wrote, json_out)


@command(plan_app, RANGES, "budget")
def budget(
    ctx: typer.Context,
    limit: Annotated[float, typer.Option("--budget", help="Total budget, in your cost unit.")],
    base_costs: Annotated[
        list[str],
        typer.Option(
            metavar="SIZE=COST,...",
            help=f"Cost of each base size, SIZE=COST (sizes in billions), {LIST_SYNTAX}.",
        ),
    ],
    expert_cost: Annotated[
        list[str],
        typer.Option(
            metavar="COST|SIZE=COST,...",
            help=f"Cost to train one expert: COST, or SIZE=COST per base size, {LIST_SYNTAX}.",
        ),
    ],
    merge_cost: Annotated[float, typer.Option(help="Cost of merging, per expert.")] = 0.0,
    family: Annotated[
        list[str] | None,
        typer.Option(
            metavar="FAMILY,...",
            help=f"Families the loss is averaged over, {LIST_SYNTAX}; or 'new'.",
        ),
    ] = None,
    k_max: Annotated[int | None, typer.Option(help="Largest k considered. (default: M)")] = None,
    pool_size: PoolOpt = None,
    level: LevelOpt = 0.9,
    json_out: JsonOpt = None,
) -> None:
    """The (base size, k) with the lowest expected loss within a budget, with P(best)."""
    from mergelaw.plan import CostModel
    from mergelaw.plan import budget as run_budget

    by_size = any("=" in text for text in expert_cost)
    per_expert = _mapping(expert_cost, "--expert-cost") if by_size else None
    costs = CostModel(
        base=_mapping(base_costs, "--base-costs"),
        per_expert=per_expert if per_expert is not None else _cost(expert_cost, "--expert-cost"),
        per_merge=merge_cost,
    )
    families = parse_values(family, str, "--family")
    if families == ["new"]:
        families = "new"
    post = _posterior(ctx, pool_size, json_out)
    answer = run_budget(post, costs, limit, family=families, k_max=k_max, level=level)
    print_answer(answer, json_out)


@command(plan_app, RANGES, "forecast")
def forecast(
    ctx: typer.Context,
    size: SizeOpt = None,
    family: FamilyOpt = None,
    k: Annotated[
        list[str] | None,
        typer.Option(metavar="K,...", help=f"k values, {LIST_SYNTAX}. (default: 1..max k)"),
    ] = None,
    points: Annotated[
        Path | None,
        typer.Option(
            help="Few-point forecast: losses measured on a new setting at a few k (.csv/.parquet "
            "with k and loss, plus subset and pool_size to correct each k's mean for the "
            "experts its subsets hold; or k, mean and se), e.g. k = 1, 2, 4."
        ),
    ] = None,
    prior: PriorOpt = "new",
    n_subsets: Annotated[
        int, typer.Option(help="Predictive interval for the mean of this many merges.")
    ] = 1,
    pool_size: PoolOpt = None,
    level: LevelOpt = 0.9,
    seed: Annotated[int, typer.Option(help="Seed of the predictive draws.")] = 0,
    pool: Annotated[
        PoolChoice | None,
        typer.Option(
            help="Merges that hold the evaluated domain's own expert (with_own) or not "
            "(without_own), at a fitted size. (default: the average over all subsets)"
        ),
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """Posterior predictive curve at a base size; few-point forecast with --points.

    Any base size (fitted or not), for a family of the fit or a new one; with --points, the
    curve of a new setting forecast from a few measured k."""
    from mergelaw.plan import forecast as run_forecast
    from mergelaw.plan import forecast_from_points

    ks = parse_values(k, float, "--k", RANGES["k"])
    if points is not None and pool is not None:
        raise MergelawError("--pool applies to a fitted family's curve, not to --points")
    measured = None if points is None else _read_points(points, "--points")
    post = _posterior(ctx, pool_size, json_out)
    size = post.planning_size(size, "--size")
    if measured is not None:
        answer = forecast_from_points(
            post,
            measured,
            n_b=size,
            k=ks,
            prior=prior,
            n_subsets=n_subsets,
            level=level,
            seed=seed,
        )
    else:
        answer = run_forecast(
            post, n_b=size, family=family, k=ks, n_subsets=n_subsets, level=level, seed=seed,
            pool=None if pool is None else pool.value,
        )  # fmt: skip
    print_answer(answer, json_out)


@command(app, RANGES)
def compare(
    fit: FitArg,
    methods: Annotated[
        list[str],
        typer.Option(
            metavar="A,B", help=f"Two methods A and B, {LIST_SYNTAX} (e.g. average,ties)."
        ),
    ],
    size: Annotated[
        list[str] | None,
        typer.Option(metavar="N,...", help=f"Base sizes, {LIST_SYNTAX}. (default: the fit's)"),
    ] = None,
    k: Annotated[
        list[str] | None,
        typer.Option(metavar="K,...", help=f"k values for the loss contrasts, {LIST_SYNTAX}."),
    ] = None,
    target: Annotated[
        float | None, typer.Option(help="Also contrast the experts needed for this loss.")
    ] = None,
    rope: Annotated[float, typer.Option(help="Region of practical equivalence (nats).")] = 0.005,
    rope_experts: Annotated[float, typer.Option(help="ROPE for experts needed.")] = 0.0,
    prob: Annotated[float, typer.Option(help="Probability a verdict needs.")] = 0.95,
    pooled_only: Annotated[
        bool, typer.Option("--pooled-only", help="Print only the pooled rows.")
    ] = False,
    null: Annotated[
        Path | None,
        typer.Option(
            help="A fit of the same rows with methods pooled (mergelaw.compare.pool_methods): "
            "adds the LOO comparison of method effects against none."
        ),
    ] = None,
    level: LevelOpt = 0.9,
    json_out: JsonOpt = None,
) -> None:
    """Compare two merge methods by posterior contrasts, P(A < B) and a ROPE.

    Contrasts A - B of the floor, tail amplitude, loss at k and experts for a target, per domain
    and size and pooled; with --null, PSIS-LOO of method effects against none."""
    from mergelaw.bayes.fit import Fit
    from mergelaw.bayes.posterior import Posterior
    from mergelaw.compare import contrasts, method_effects_loo
    from mergelaw.io import check_writable

    names = parse_values(methods, str, "--methods")
    if len(names) != 2 or names[0] == names[1]:
        raise MergelawError(f"--methods {','.join(methods)!r}: expected two different methods, A,B")
    sizes_b = parse_values(size, float, "--size", RANGES["size"])
    ks = parse_values(k, float, "--k", RANGES["k"])
    if null is not None and not null.is_file():
        raise MergelawError(f"--null {null}: no such fit file")
    if json_out is not None and not is_stdout(json_out):
        check_writable(json_out)
    loaded = Fit.load(fit)
    answer = contrasts(
        Posterior.from_fit(loaded),
        names[0],
        names[1],
        sizes_b=sizes_b,
        k=ks,
        target=target,
        rope=rope,
        rope_experts=rope_experts,
        prob=prob,
        level=level,
    )
    shown = answer.table
    if pooled_only:
        shown = shown[shown["scope"] != "domain"]
    print_answer(answer, json_out, table=shown)
    if null is not None:
        loo_answer = method_effects_loo(loaded, Fit.load(null))
        print_answer(
            loo_answer,
            None,
            to_stderr=is_stdout(json_out),  # stdout holds the contrasts' JSON alone
        )


# ---- helpers -----------------------------------------------------------------------------------


def _posterior(ctx: typer.Context, pool_size: float | None, json_out: Path | None):
    """The fit's posterior, once ``--json`` (if given) is known to be writable."""
    from mergelaw.bayes.fit import Fit
    from mergelaw.bayes.posterior import Posterior
    from mergelaw.io import check_writable

    if json_out is not None and not is_stdout(json_out):
        check_writable(json_out)
    return Posterior.from_fit(Fit.load(ctx.obj["fit"]), pool_size=pool_size)


@dataclass(frozen=True)
class _Planned:
    """What --emit-mergekit writes: the target file, the read sweep, the experts asked for."""

    target: Path
    sweep: object  # mergelaw.measure.sweep.SweepSpec
    experts: list[str] | None


def _emit_options(
    emit: Path | None, sweep: Path | None, experts: list[str] | None, family: str | None
) -> _Planned | None:
    """Check --emit-mergekit, --sweep and --experts before any work: the file is writable and
    the sweep file reads (no torch is imported: the sweep is only parsed)."""
    from mergelaw.io import check_writable

    ids = parse_values(experts, str, "--experts")
    if emit is None:
        for given, option in ((sweep, "--sweep"), (ids, "--experts")):
            if given is not None:
                raise MergelawError(f"{option}: only with --emit-mergekit FILE")
        return None
    if is_stdout(emit):
        raise MergelawError("--emit-mergekit -: expected a file path (mergekit-yaml reads a file)")
    if sweep is None:
        raise MergelawError(
            f"--emit-mergekit {emit}: needs --sweep SWEEP (the sweep file whose pool the curves "
            "were measured on)"
        )
    if family == "new":
        raise MergelawError(
            "--emit-mergekit needs a family of the fit: 'new' has no method or pool to merge"
        )
    check_writable(emit)
    from mergelaw.measure.mergekit_config import choose_experts
    from mergelaw.measure.sweep import read_sweep

    spec = read_sweep(sweep)
    if ids is not None:  # in the pool, none twice; their number is checked against k later
        choose_experts(list(spec.experts), len(ids), experts=ids)
    return _Planned(emit, spec, ids)


def _one_family(post, family: str | None) -> None:
    """Refuse, before the query, an --emit-mergekit answer that would cover several families."""
    if family is None and len(post.labels) != 1:
        raise MergelawError(
            f"--emit-mergekit needs one family (--family; this fit has {len(post.labels)}: "
            f"{', '.join(post.labels)})"
        )


def _emit(planned: _Planned, post, label: str, k: float, line: str, ctx: typer.Context):
    """Write the family's planned merge of k experts as a mergekit config; return (file, k,
    chosen ids, a note or None). k beyond the pool (the rule says more experts are still worth
    it) merges the whole pool, and says so."""
    from mergelaw.measure.mergekit_config import emit_mergekit

    row = post.families[post.families["label"] == label].iloc[0]
    pool = list(planned.sweep.experts)
    note = None
    if math.isinf(k) or k > len(pool):
        asked = "more than any k" if math.isinf(k) else f"k = {k:.0f}"
        note = (
            f"the answer asks for {asked} but {planned.sweep.source}'s pool has {len(pool)} "
            f"experts: the config merges all {len(pool)}"
        )
        k = float(len(pool))
    if planned.experts is not None and len(planned.experts) != k:
        raise MergelawError(
            f"--experts {','.join(planned.experts)}: {len(planned.experts)} experts, but the "
            f"answer merges k = {k:.0f}"
        )
    data = post.provenance.get("data_hash")
    header = f"{line}\nfit: {ctx.obj['fit']} (data {data}, flag: {post.flag})"
    if note is not None:
        header += f"\nnote: {note}"
    chosen = emit_mergekit(
        planned.target,
        planned.sweep,
        row["method"],
        row["method_params"],
        int(k),
        experts=planned.experts,
        own=row["eval_domain"],
        note=header,
    )
    return planned.target, chosen, note


def _print_emitted(wrote, json_out: Path | None) -> None:
    if wrote is None:
        return
    target, chosen, note = wrote
    shown = stderr_console if is_stdout(json_out) else console
    if note is not None:
        shown.print(f"note: {note}", markup=False, soft_wrap=True)
    shown.print(
        f"wrote {target}: mergekit config of {len(chosen)} experts ({', '.join(chosen)})",
        markup=False,
        soft_wrap=True,
    )


def _read_points(path: Path, option: str):
    """Measured points of one curve (k and loss, or k, mean and se), checked before the fit is
    loaded; unreadable files are named with the option that gave them."""
    import pandas as pd

    if not path.is_file():
        raise MergelawError(f"{option} {path}: no such file")
    if path.suffix not in (".parquet", ".csv"):
        raise MergelawError(f"{option} {path}: expected a .csv or .parquet file")
    try:
        points = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pyarrow / pandas parse errors of all kinds
        first = first_line(exc)
        raise MergelawError(f"{option} {path}: cannot be read ({first})") from None
    for column in ("n_params", "eval_domain", "method"):
        if column in points.columns and points[column].nunique() > 1:
            raise MergelawError(
                f"{path}: column '{column}' has several values; give the points of one curve"
            )
    from mergelaw.bayes.update import Points

    return Points.from_frame(points, source=str(path))


def _cost(texts: Sequence[str], option: str) -> float:
    values = parse_values(texts, float, option, RANGES["cost"])
    if len(values) != 1:
        raise MergelawError(f"{option} {','.join(texts)!r}: expected one cost, or SIZE=COST,...")
    return values[0]


def _mapping(texts: Sequence[str], option: str) -> dict[float, float]:
    """SIZE=COST items (comma-separated or repeated) as {size: cost}: sizes > 0, costs >= 0."""
    out = {}
    for item in parse_values(texts, str, option):
        size, _, cost = item.partition("=")
        try:
            out[float(size)] = float(cost)
        except ValueError:
            raise MergelawError(f"{option}: cannot read {item!r} (expected SIZE=COST)") from None
        RANGES["size"].check(f"{option} size", float(size))
        RANGES["cost"].check(f"{option} cost", float(cost))
    return out
