"""The terminal's rendering of what the commands print: answers (one renderer for every planning
and comparison query, from the Answer alone), parameter tables, diagnostics. The HTML report
renders the same Answer in mergelaw.report."""

from __future__ import annotations

import math
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from mergelaw.cli.shared import console, stderr_console
from mergelaw.io import is_stdout

PROBABILITY_NAMES = {
    "p_best": "P(best)",
    "p_a_lower": "P(A<B)",
    "p_a_lower_beyond_rope": "P(A+)",
    "p_equivalent": "P(=)",
    "p_b_lower_beyond_rope": "P(B+)",
}


def print_answer(answer, json_out: Path | None, table=None, *, to_stderr: bool = False) -> None:
    """Print the answer's table, its decision in words, notes, flag and provenance; write JSON.
    Columns constant over the rows go to the title; with two or more varying settings, one table
    per quantity. With ``--json -`` (or ``to_stderr``) the printed part goes to stderr, so that
    stdout holds the JSON alone."""
    shown = stderr_console if to_stderr or is_stdout(json_out) else console
    table = answer.table if table is None else table
    level = float(answer.table["level"].iloc[0]) if len(answer.table) else 0.9
    probabilities = [c for c in table.columns if c.startswith("p_")]
    values = ("quantity", "stat", "estimate", "lower", "upper", "level", *probabilities)
    settings = [c for c in table.columns if c not in values]
    constant = [c for c in settings if table[c].astype(str).nunique() == 1]
    varying = [c for c in settings if c not in constant and c != "scope"]
    title = answer.query + "".join(
        f", {c} {fmt(table[c].iloc[0], column_stat(c))}" for c in constant
    )
    if len(varying) >= 2:
        for quantity, group in table.groupby("quantity", sort=False):
            stat = group["stat"].iloc[0]
            caption = f"{quantity} ({stat}) [{level:.0%} interval]"
            shown.print(_answer_table(caption, group, varying, probabilities, False))
        shown.print(title, markup=False)
    else:
        caption = f"{title}: estimate [{level:.0%} interval]"
        shown.print(_answer_table(caption, table, varying, probabilities, True))
    lines = list(answer.summary)
    if "p_equivalent" in probabilities:
        lines = [
            "P(A+): P(A < B - rope), P(=): P(|A - B| <= rope), P(B+): P(A > B + rope)",
            *lines,
        ]
    for line in [*lines, *(f"note: {n}" for n in answer.notes)]:
        shown.print(line, markup=False, soft_wrap=True)
    style = None if answer.ok else "bold red"
    shown.print(f"flag: {answer.flag}", markup=False, style=style, soft_wrap=True)
    provenance = ", ".join(f"{k} {v}" for k, v in answer.provenance.items())
    shown.print(f"provenance: {provenance}", markup=False, soft_wrap=True)
    if json_out is not None:
        answer.write_json(json_out)
        if not is_stdout(json_out):
            shown.print(f"wrote {json_out}", markup=False)


def column_stat(column: str) -> str:
    """How a setting column prints: base sizes in full (``n_b`` as given back to ``--size``)."""
    return "size" if column == "n_b" else "mean"


def fmt(value, stat: str = "mean") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "never" if value > 0 else "-inf"
    if stat == "probability":
        return f"{value:.2f}"
    if stat == "size":
        return f"{value:g}"
    if stat in ("median", "decision") and float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}"


def _answer_table(caption: str, rows, settings: list[str], probabilities: list[str],
                  with_quantity: bool) -> Table:  # fmt: skip
    shown = Table(title=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in settings:
        shown.add_column(column, no_wrap=True)
    if with_quantity:
        shown.add_column("quantity", overflow="fold", min_width=12)
    for column in ("estimate", "interval", *probabilities):
        shown.add_column(PROBABILITY_NAMES.get(column, column), justify="right", no_wrap=True)
    for row in rows.to_dict("records"):
        stat = row["stat"]
        interval = (
            ""
            if fmt(row["lower"]) == ""
            else f"[{fmt(row['lower'], stat)}, {fmt(row['upper'], stat)}]"
        )
        quantity = [f"{row['quantity']} ({stat})"] if with_quantity else []
        shown.add_row(
            *(fmt(row[c], column_stat(c)) for c in settings),
            *quantity,
            fmt(row["estimate"], stat),
            interval,
            *(fmt(row[c], "probability") for c in probabilities),
        )
    return shown


def print_law_summary(result) -> None:
    """A fit's law parameters per family: mean and 90% interval."""
    summary = result.law_summary().rename(columns={"mean": "estimate"})
    print_param_table("posterior: mean [90% interval]", summary, ["family"])


def print_diagnostics(result) -> None:
    """A fit's diagnostics in one line, then its flag."""
    d = result.diagnostics
    console.print(
        f"diagnostics: max R-hat {d.max_rhat:.3f}, min ESS bulk {d.min_ess_bulk:.0f} / tail "
        f"{d.min_ess_tail:.0f}, {d.divergences} divergences in {d.n_draws} draws, "
        f"{d.saturated_share:.1%} at max tree depth, mean tree steps {d.mean_tree_steps:.0f}, "
        f"min BFMI {d.min_bfmi:.2f}",
        markup=False,
    )
    console.print(f"flag: {d.flag}", markup=False, style=None if d.ok else "bold red")


def print_fits(fits, scope: str, level: float, to: Console | None = None) -> None:
    """The least-squares fits as one table, on ``to`` (default: stdout)."""
    from mergelaw.curves import CURVE_COLUMNS, FAMILY_COLUMNS

    to = to or console
    shown_always = {"method", "eval_domain", "base_model"}
    group_columns = [
        c
        for c in (FAMILY_COLUMNS if scope == "joint" else CURVE_COLUMNS)
        if c in shown_always or (c not in ("n_params", "method_params") and fits[c].nunique() > 1)
    ]
    if fits.groupby("method")["method_params"].nunique().max() > 1:
        group_columns.insert(group_columns.index("method") + 1, "method_params")
    print_param_table(
        f"least-squares fit ({scope}), {level:.0%} bootstrap intervals",
        fits,
        group_columns,
        to=to,
        extras=[
            ("bound", 5, lambda row, first: f"{row.boot_on_bound:.0%}"),
            ("R²", 5, lambda row, first: f"{row.r2:.3f}" if first else ""),
        ],
    )
    to.print(
        "bound: share of bootstrap fits with the parameter on its bound (beta, gamma, b >= 0).",
        markup=False,
    )


def print_param_table(
    title: str, rows, group_columns: list[str], extras=(), to: Console | None = None
) -> None:
    """One line per parameter (estimate and interval), one section per group: fits 80 columns
    on a terminal (cells cut with an ellipsis); in a pipe or file, nothing is cut."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in group_columns:
        table.add_column(column.removeprefix("eval_"), no_wrap=True, overflow="ellipsis")
    columns = [("param", 6), ("estimate", 8), ("interval", 19)]
    for column, width in [*columns, *((name, width) for name, width, _ in extras)]:
        table.add_column(column, justify="right", no_wrap=True, min_width=width)
    groups = list(rows.groupby(group_columns, sort=False))
    for g, (key, group) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        for i, row in enumerate(group.itertuples()):
            table.add_row(
                *(map(str, key) if i == 0 else [""] * len(key)),
                row.param,
                _number(row.estimate),
                f"[{_number(row.lower, 3)}, {_number(row.upper, 3)}]",
                *(render(row, i == 0) for _, _, render in extras),
                end_section=(i == len(group) - 1 and g < len(groups) - 1),
            )
    (to or console).print(table)


def print_loo(scores, comparison, unreliable_specs: list[str], max_pareto_k: float) -> None:
    """PSIS-LOO of fits of one table (``mergelaw.bayes.comparison.loo_scores``), their ranking
    where there are several, and the k-fold fallback where LOO is unreliable."""
    table = Table(title="PSIS-LOO", box=box.SIMPLE_HEAD)
    for column in ("fit", "spec", "elpd_loo", "se", "p_loo", "Pareto k > 0.7", "diagnostics"):
        table.add_column(column)
    for row in scores.itertuples():
        table.add_row(
            row.fit, row.spec, f"{row.elpd_loo:.1f}", f"{row.se:.1f}", f"{row.p_loo:.1f}",
            f"{row.n_high_pareto_k} of {row.n_points}", row.flag,
        )  # fmt: skip
    console.print(table)
    if comparison is not None:
        console.print(comparison[["rank", "elpd_loo", "elpd_diff", "dse", "weight"]].to_string())
    if unreliable_specs:
        specs = " ".join(f"--spec {name}" for name in unreliable_specs)
        console.print(
            f"Pareto k > {max_pareto_k} for some rows: PSIS-LOO is unreliable there. "
            f"Refit by grouped k-fold instead: mergelaw kfold TABLE {specs} --folds 5",
            markup=False,
        )


def _number(value: float, digits: int = 4) -> str:
    """Significant digits; below 1e-8 (an optimiser's rendering of a bound at 0) prints as 0."""
    return "0" if abs(value) < 1e-8 else f"{value:.{digits}g}"
