"""Bad input to every command: one line `error: ...` naming what is at fault, the expected exit
code, no traceback, no numpy repr, no library chatter, nothing left in the working folder.

Each case is (category, command line, exit code, fragment of the message). Paths in a command
line: {d} is a folder of small input files built once (tables, specs, sweep and pipeline files),
{fit} a real saved fit (the session's ``fake_fit_path``, only for the few cases that must load
one), {nofit} a file that is not a fit. Outputs are written relative to the case's own empty
working folder, which must still be empty afterwards. Nearly every case fails before any
loading or sampling, so the suite runs in seconds.
"""

# ruff: noqa: E501  (the case table keeps one case per line)
from __future__ import annotations

import collections
import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mergelaw.cli import app
from mergelaw.io import LOCK_NAME, atomic_path, folder_lock, remove_stale_temporaries

runner = CliRunner()
HAS_TORCH = importlib.util.find_spec("torch") is not None and (
    importlib.util.find_spec("transformers") is not None
)


def _cuda() -> bool:
    if not HAS_TORCH:
        return False
    import torch

    return torch.cuda.is_available()


PLAN = "plan {nofit}"
BUDGET = "--budget 10 --base-costs 0.5=1,14=4"

# fmt: off
CASES: list[tuple[str, str, int, str]] = [
    # ---- usage (typer): one line too --------------------------------------------------------
    ("usage", "nosuch", 2, "No such command 'nosuch'"),
    ("usage", "--nosuch", 2, "No such option"),
    ("usage", "fit {d}/table.parquet", 2, "Missing option '--out'"),
    ("usage", "fit {d}/table.parquet --out f.nc --chains x", 2, "Invalid value for '--chains'"),
    ("usage", "fit {d}/table.parquet --out f.nc --backend stan", 2, "'--backend'"),
    ("usage", "fit {d}/table.parquet --out f.nc --sampler hmc --backend pymc", 2, "'--sampler'"),
    ("usage", "fit-ls {d}/table.parquet --scope all", 2, "'--scope'"),
    ("usage", "fit-ls {d}/table.parquet --weighting k2", 2, "'--weighting'"),
    ("usage", "fit-ls {d}/table.parquet --interval bca", 2, "'--interval'"),
    ("usage", "simulate --out x.parquet --pool-size 4.5", 2, "'--pool-size'"),
    ("usage", PLAN + " target --size 3", 2, "Missing option '--loss'"),
    ("usage", PLAN + " forecast --size 3 --pool mine", 2, "'--pool'"),
    ("usage", PLAN + " nosuch", 2, "No such command 'nosuch'"),
    ("usage", "compare {nofit}", 2, "Missing option '--methods'"),
    ("usage", "measure {d}/sweep.toml --out m --executor slurm", 2, "'--executor'"),
    ("usage", "lab run {d}/pipeline.toml --until everything", 2, "'--until'"),
    ("usage", "loo", 2, "Missing argument"),
    # ---- numeric ranges, named by option ------------------------------------------------------
    ("range", "simulate --out x.parquet --spread-scale -1", 2, "--spread-scale -1: expected a number >= 0"),
    ("range", "simulate --out x.parquet --spread-scale nan", 2, "--spread-scale nan: expected"),
    ("range", "simulate --out x.parquet --spread-scale inf", 2, "--spread-scale inf: expected"),
    ("range", "simulate --out x.parquet --pool-size 1", 2, "--pool-size 1: expected a whole number >= 2"),
    ("range", "simulate --out x.parquet --pool-size -3", 2, "--pool-size -3"),
    ("range", "simulate --out x.parquet --k-max 0", 2, "--k-max 0: expected a whole number >= 1"),
    ("range", "simulate --out x.parquet --pool-size 4 --k-max 5", 2, "--k-max 5: expected at most --pool-size (4)"),
    ("range", "simulate --out x.parquet --subsets-per-k 0", 2, "--subsets-per-k 0"),
    ("range", "simulate --out x.parquet --seed -1", 2, "--seed -1: expected a whole number in [0, "),
    ("range", "simulate --out x.parquet --sizes 0.5,-3", 2, "--sizes -3: expected a number > 0"),
    ("range", "simulate --out x.parquet --sizes 0", 2, "--sizes 0: expected a number > 0"),
    ("range", "simulate --out x.parquet --sizes nan", 2, "--sizes nan"),
    ("range", "fit-ls {d}/table.parquet --level 2", 2, "--level 2: expected a number in (0, 1)"),
    ("range", "fit-ls {d}/table.parquet --level 0", 2, "--level 0: expected a number in (0, 1)"),
    ("range", "fit-ls {d}/table.parquet --level 1", 2, "--level 1: expected"),
    ("range", "fit-ls {d}/table.parquet --n-boot 0", 2, "--n-boot 0: expected a whole number >= 1"),
    ("range", "fit-ls {d}/table.parquet --n-boot 10", 2, "bias-corrected intervals need"),
    ("range", "fit-ls {d}/table.parquet --seed -5", 2, "--seed -5"),
    ("range", "fit {d}/table.parquet --out f.nc --chains 0", 2, "--chains 0: expected a whole number >= 1"),
    ("range", "fit {d}/table.parquet --out f.nc --chains -1", 2, "--chains -1"),
    ("range", "fit {d}/table.parquet --out f.nc --draws 0", 2, "--draws 0: expected a whole number >= 1"),
    ("range", "fit {d}/table.parquet --out f.nc --draws -10", 2, "--draws -10"),
    ("range", "fit {d}/table.parquet --out f.nc --tune -1", 2, "--tune -1: expected a whole number >= 0"),
    ("range", "fit {d}/table.parquet --out f.nc --target-accept 1.5", 2, "--target-accept 1.5: expected a number in (0, 1)"),
    ("range", "fit {d}/table.parquet --out f.nc --target-accept 0", 2, "--target-accept 0"),
    ("range", "fit {d}/table.parquet --out f.nc --seed -1", 2, "--seed -1"),
    ("range", "kfold {d}/table.parquet --folds 1", 2, "--folds 1: expected a whole number >= 2"),
    ("range", "kfold {d}/table.parquet --folds 0", 2, "--folds 0"),
    ("range", "kfold {d}/table.parquet --chains 0", 2, "--chains 0"),
    ("range", "kfold {d}/table.parquet --draws 0", 2, "--draws 0"),
    ("range", "kfold {d}/table.parquet --tune -2", 2, "--tune -2"),
    ("range", "report {nofit} --level 2", 2, "--level 2: expected a number in (0, 1)"),
    ("range", "report {nofit} --level 0", 2, "--level 0"),
    ("range", "report {nofit} --epsilon 0", 2, "--epsilon 0: expected a number > 0"),
    ("range", "report {nofit} --epsilon -0.01", 2, "--epsilon -0.01"),
    ("range", "report {nofit} --size -1", 2, "--size -1: expected a number > 0"),
    ("range", "report {nofit} --target 2.1 --target -0.1", 2, "--target -0.1: expected a number > 0"),
    ("range", "report {nofit} --rope -0.1", 2, "--rope -0.1: expected a number >= 0"),
    ("range", PLAN + " target --loss -0.1 --size 3", 2, "--loss -0.1: expected a number > 0"),
    ("range", PLAN + " target --loss 0 --size 3", 2, "--loss 0: expected a number > 0"),
    ("range", PLAN + " target --loss nan --size 3", 2, "--loss nan"),
    ("range", PLAN + " target --loss 0.3 --size 0", 2, "--size 0: expected a number > 0"),
    ("range", PLAN + " target --loss 0.3 --size -3", 2, "--size -3"),
    ("range", PLAN + " target --loss 0.3 --size inf", 2, "--size inf"),
    ("range", PLAN + " target --loss 0.3 --size 3 --prob 1.5", 2, "--prob 1.5: expected a number in (0, 1)"),
    ("range", PLAN + " target --loss 0.3 --size 3 --prob 0", 2, "--prob 0"),
    ("range", PLAN + " target --loss 0.3 --size 3 --level 1", 2, "--level 1"),
    ("range", PLAN + " target --loss 0.3 --size 3 --k-max 0", 2, "--k-max 0: expected a number >= 1"),
    ("range", PLAN + " target --loss 0.3 --size 3 --pool-size 1", 2, "--pool-size 1: expected a number >= 2"),
    ("range", PLAN + " target --loss 0.3 --size 3 --k-max 10 --pool-size 4", 2, "--k-max 10: expected at most --pool-size (4)"),
    ("range", PLAN + " stop --size 3 --epsilon 0", 2, "--epsilon 0: expected a number > 0"),
    ("range", PLAN + " stop --size 3 --epsilon -0.01", 2, "--epsilon -0.01"),
    ("range", PLAN + " stop --size 3 --epsilon 0.01 --cost-per-expert 0", 2, "--cost-per-expert 0"),
    ("range", PLAN + " stop --size 3 --epsilon 0.01 --fractions 0.8,1.5", 2, "--fractions 1.5: expected a number in (0, 1)"),
    ("range", PLAN + " stop --size 3 --epsilon 0.01 --fractions 0", 2, "--fractions 0"),
    ("range", PLAN + " stop --size 3 --epsilon 0.01 --seed -1", 2, "--seed -1"),
    ("range", PLAN + " budget " + BUDGET + " --expert-cost -1", 2, "--expert-cost -1: expected a number >= 0"),
    ("range", PLAN + " budget --budget 0 --base-costs 3=1 --expert-cost 1", 2, "--budget 0: expected a number > 0"),
    ("range", PLAN + " budget --budget -5 --base-costs 3=1 --expert-cost 1", 2, "--budget -5"),
    ("range", PLAN + " budget --budget 10 --base-costs 3=-1 --expert-cost 1", 2, "--base-costs cost -1: expected a number >= 0"),
    ("range", PLAN + " budget --budget 10 --base-costs -3=1 --expert-cost 1", 2, "--base-costs size -3: expected a number > 0"),
    ("range", PLAN + " budget " + BUDGET + " --expert-cost 3=-2", 2, "--expert-cost cost -2"),
    ("range", PLAN + " budget " + BUDGET + " --expert-cost 1 --merge-cost -1", 2, "--merge-cost -1"),
    ("range", PLAN + " budget " + BUDGET + " --expert-cost 1 --k-max 0", 2, "--k-max 0"),
    ("range", PLAN + " forecast --size 3 --n-subsets 0", 2, "--n-subsets 0: expected a whole number >= 1"),
    ("range", PLAN + " forecast --size 3 --k 0,1,2", 2, "--k 0: expected a number >= 1"),
    ("range", PLAN + " forecast --size 3 --k 1 --k 0.5", 2, "--k 0.5: expected a number >= 1"),
    ("range", PLAN + " stop --size 3 --epsilon 0.01 --fractions 0.8 --fractions 1", 2, "--fractions 1: expected a number in (0, 1)"),
    ("range", "report {nofit} --target 2.1,-0.1", 2, "--target -0.1: expected a number > 0"),
    ("value", "report {nofit} --target x", 2, "--target 'x': cannot read it"),
    ("range", PLAN + " forecast --size 0", 2, "--size 0"),
    ("range", PLAN + " forecast --size 3 --seed -2", 2, "--seed -2"),
    ("range", "compare {nofit} --methods average,ties --rope -1", 2, "--rope -1: expected a number >= 0"),
    ("range", "compare {nofit} --methods average,ties --rope-experts -1", 2, "--rope-experts -1"),
    ("range", "compare {nofit} --methods average,ties --prob 2", 2, "--prob 2"),
    ("range", "compare {nofit} --methods average,ties --level 0", 2, "--level 0"),
    ("range", "compare {nofit} --methods average,ties --size 3,0", 2, "--size 0: expected a number > 0"),
    ("range", "compare {nofit} --methods average,ties --k 0.5", 2, "--k 0.5: expected a number >= 1"),
    ("range", "compare {nofit} --methods average,ties --target -1", 2, "--target -1"),
    ("range", "measure {d}/sweep.toml --out m --threads 0", 2, "--threads 0: expected a whole number >= 1"),
    ("range", "measure {d}/sweep.toml --out m --executor ray --workers 0", 2, "--workers 0"),
    ("range", "measure {d}/sweep.toml --out m --executor ray --cpus-per-worker 0", 2, "--cpus-per-worker 0"),
    ("range", "measure {d}/sweep.toml --out m --executor ray --gpus-per-worker -1", 2, "--gpus-per-worker -1"),
    ("range", "lab run {d}/pipeline.toml --threads 0", 2, "--threads 0"),
    ("range", "lab tokenizer --corpora {d}/none --out tok --vocab-size 10", 2, "--vocab-size 10"),
    # ---- values that cannot be read, or that contradict each other ----------------------------
    ("value", "simulate --out x.parquet --sizes a,b", 2, "--sizes 'a,b': cannot read it"),
    ("value", "simulate --out x.parquet --sizes ,", 2, "--sizes ',': empty list"),
    ("value", "simulate --out x.parquet --sizes 0.5 --sizes a", 2, "--sizes 'a': cannot read it (expected numbers, comma-separated or repeated)"),
    ("range", "simulate --out x.parquet --sizes 0.5 --sizes 3,-1", 2, "--sizes -1: expected a number > 0"),
    ("value", "simulate --out x.parquet --domains code --domains nosuch", 2, "domain 'nosuch'"),
    ("value", "simulate --out x.parquet --methods dare_ties", 2, "no law parameters for method 'dare_ties'"),
    ("value", "simulate --out x.parquet --domains nosuch", 2, "domain 'nosuch'"),
    ("value", "fit {d}/table.parquet --out f.nc --sampler nutpie", 2, "--sampler nutpie: needs --backend pymc"),
    ("value", "fit {d}/table.parquet --out f.nc --method nosuch", 2, "column 'method' has no value 'nosuch'"),
    ("value", "fit {d}/table.parquet --out f.nc --arch gpt", 2, "column 'arch' has no value 'gpt'"),
    ("value", "fit {d}/table.parquet --out f.nc --domain math", 2, "no value 'math'"),
    ("value", PLAN + " stop --size 3 --epsilon 0.01 --fractions a", 2, "--fractions 'a': cannot read it"),
    ("value", PLAN + " budget --budget 10 --base-costs 3:1 --expert-cost 1", 2, "--base-costs: cannot read '3:1' (expected SIZE=COST)"),
    ("value", PLAN + " budget " + BUDGET + " --expert-cost 1,2", 2, "--expert-cost '1,2': expected one cost"),
    ("value", PLAN + " budget " + BUDGET + " --expert-cost x", 2, "--expert-cost 'x': cannot read it"),
    ("value", PLAN + " forecast --size 3 --k a", 2, "--k 'a': cannot read it"),
    ("value", PLAN + " forecast --size 3 --points {d}/points.csv --pool with_own", 2, "--pool applies to a fitted family"),
    ("value", "compare {nofit} --methods average", 2, "--methods 'average': expected two different methods"),
    ("value", "compare {nofit} --methods ties,ties", 2, "expected two different methods"),
    ("value", "compare {nofit} --methods a,b,c", 2, "expected two different methods"),
    ("value", "compare {nofit} --methods average --methods ties,dare", 2, "--methods 'average,ties,dare': expected two different methods"),
    ("value", PLAN + " budget --budget 10 --base-costs 0.5=1 --base-costs 3:1 --expert-cost 1", 2, "--base-costs: cannot read '3:1' (expected SIZE=COST)"),
    ("value", PLAN + " budget " + BUDGET + " --expert-cost 1 --expert-cost 2", 2, "--expert-cost '1,2': expected one cost"),
    ("value", "lab run {d}/pipeline.toml --device cpu --only tiny,nosuch", 2, "no base named 'nosuch'"),
    ("value", "fit {d}/table.parquet --out f.nc --method average,nosuch", 2, "column 'method' has no value 'nosuch'"),
    ("value", "measure {d}/sweep.toml --out m --workers 2", 2, "--workers needs --executor ray"),
    ("value", "measure {d}/sweep.toml --out m --address auto", 2, "--address needs --executor ray"),
    ("value", "measure {d}/sweep.toml --out m --device gpu", 2, "--device gpu: expected auto, cpu, cuda or cuda:N"),
    ("value", "measure {d}/sweep.toml --out m --device cuda:x", 2, "--device cuda:x: expected"),
    ("value", "measure {d}/sweep.toml --out m --executor ray --device cuda:1", 2, "each Ray worker sees only its own GPU"),
    ("value", "lab run {d}/pipeline.toml --device tpu", 2, "--device tpu: expected auto, cpu, cuda or cuda:N"),
    ("value", "lab run {d}/pipeline.toml --device cpu --only nosuch", 2, "no base named 'nosuch'"),
    ("value", "lab corpora --out corp --cache cache --domain nosuch", 2, "domain 'nosuch': unknown"),
    # ---- input files: missing, unreadable, breaking the data contract -------------------------
    ("file", "validate {d}/none.parquet", 2, "none.parquet: no such file"),
    ("file", "validate {d}", 2, "is a folder (expected a curves table"),
    ("file", "validate {d}/table.txt", 2, "table.txt: unknown file type '.txt'"),
    ("file", "validate {d}/empty.csv", 2, "empty.csv"),
    ("file", "validate {d}/header.csv", 2, "header.csv"),
    ("file", "validate {d}/corrupt.parquet", 2, "corrupt.parquet"),
    ("file", "validate {d}/nan_loss.csv", 2, "nan_loss.csv: column 'loss' row 4"),
    ("file", "validate {d}/no_loss.csv", 2, "no_loss.csv: missing column 'loss'"),
    ("file", "validate {d}/k0.csv", 2, "k0.csv: column 'k' row 0"),
    ("file", "validate {d}/duplicate.csv", 2, "duplicate.csv"),
    ("file", "fit-ls {d}/none.csv", 2, "none.csv: no such file"),
    ("file", "fit-ls {d}/nan_loss.csv", 2, "column 'loss' row 4"),
    ("file", "fit {d}/none.csv --out f.nc", 2, "none.csv: no such file"),
    ("file", "fit {d}/empty.csv --out f.nc", 2, "empty.csv"),
    ("file", "fit {d}/means_over_pool.csv --out f.nc", 2, "exceeds pool_size"),
    ("file", "fit {d}/means_no_se.csv --out f.nc", 2, "missing column 'se'"),
    ("file", "kfold {d}/none.parquet", 2, "none.parquet: no such file"),
    ("file", "diagnose {d}/none.nc", 2, "none.nc: no such fit file"),
    ("file", "diagnose {nofit}", 2, "not a mergelaw fit"),
    ("file", "report {d}/none.nc", 2, "none.nc: no such fit file"),
    ("file", "report {nofit}", 2, "not a mergelaw fit"),
    ("file", "loo {d}/none.nc", 2, "none.nc: no such fit file"),
    ("file", "loo {nofit}", 2, "not a mergelaw fit"),
    ("file", "plan {d}/none.nc target --loss 0.3 --size 3", 2, "none.nc: no such fit file"),
    ("file", PLAN + " target --loss 0.3 --size 3", 2, "not a mergelaw fit"),
    ("file", PLAN + " stop --size 3 --epsilon 0.01 --losses {d}/none.csv", 2, "--losses {d}/none.csv: no such file"),
    ("file", PLAN + " stop --size 3 --epsilon 0.01 --losses {d}/table.txt", 2, "expected a .csv or .parquet file"),
    ("file", PLAN + " stop --size 3 --epsilon 0.01 --losses {d}/empty.csv", 2, "--losses {d}/empty.csv: cannot be read"),
    ("file", PLAN + " forecast --size 3 --points {d}/none.csv", 2, "--points {d}/none.csv: no such file"),
    ("file", "compare {d}/none.nc --methods average,ties", 2, "none.nc: no such fit file"),
    ("file", "compare {nofit} --methods average,ties --null {d}/none.nc", 2, "--null {d}/none.nc: no such fit file"),
    ("file", "measure {d}/none.toml --out m", 2, "no such sweep file"),
    ("file", "measure {d}/sweep.json --out m", 2, "unknown sweep file type '.json'"),
    ("file", "measure {d}/sweep_bad.toml --out m", 2, "sweep_bad.toml: cannot be parsed"),
    ("file", "measure {d}/sweep_k.toml --out m", 2, "'k' = 5 (expected 1 <= k <= 2, the pool size)"),
    ("file", "measure {d}/sweep_method.toml --out m", 2, "unknown merge method 'slerp'"),
    ("file", "lab run {d}/none.toml", 2, "no such pipeline file"),
    ("file", "lab run {d}/sweep_bad.toml", 2, "cannot be parsed"),
    ("file", "lab tokenizer --corpora {d}/none --out tok", 2, "no provenance.json"),
    # ---- unknown keys in spec, sweep and pipeline files ---------------------------------------
    ("keys", "fit {d}/table.parquet --out f.nc --spec {d}/spec_top.toml", 2, "spec_top.toml: unknown key 'colour' in the top level"),
    ("keys", "fit {d}/table.parquet --out f.nc --spec {d}/spec_mean.toml", 2, "unknown key 'parametrisation' in [mean]"),
    ("keys", "fit {d}/table.parquet --out f.nc --spec {d}/spec_noise.toml", 2, "unknown key 'nuget' in [noise]"),
    ("keys", "fit {d}/table.parquet --out f.nc --spec {d}/spec_param.toml", 2, "unknown key 'prior_scale' in [params.level]"),
    ("keys", "fit {d}/table.parquet --out f.nc --spec {d}/spec_sampler.toml", 2, "unknown key 'target_accpt' in [sampler]"),
    ("keys", "fit {d}/table.parquet --out f.nc --spec {d}/spec_bad.toml", 2, "spec_bad.toml: not valid TOML"),
    ("keys", "fit {d}/table.parquet --out f.nc --spec nosuch", 2, "no such model spec"),
    ("keys", "kfold {d}/table.parquet --spec default --spec {d}/spec_top.toml", 2, "unknown key 'colour'"),
    ("keys", "measure {d}/sweep_top.toml --out m", 2, "sweep_top.toml: unknown setting 'colour'"),
    ("keys", "measure {d}/sweep_eval.toml --out m", 2, "unknown setting 'eval.batch'"),
    ("keys", "measure {d}/sweep_sampler.toml --out m", 2, "unknown setting 'sampler.count'"),
    ("keys", "measure {d}/sweep_param.toml --out m", 2, "unknown parameter 'lambda' for method 'task_arithmetic'"),
    ("keys", "lab run {d}/pipeline_top.toml", 2, "pipeline_top.toml: unknown setting 'colour'"),
    ("keys", "lab run {d}/pipeline_tokenizer.toml", 2, "unknown setting 'tokenizer.size'"),
    ("keys", "lab run {d}/pipeline_sweep.toml", 2, "unknown setting 'sweep.sampling'"),
    ("keys", "lab run {d}/pipeline_recipe.toml", 2, "unknown setting 'learning_rate'"),
    # ---- output paths: refused up front, by the name given ------------------------------------
    ("output", "simulate --out x.txt", 2, "--out x.txt: expected a .parquet or .csv path"),
    ("output", "simulate --out {d}/table.parquet/x.parquet", 2, "{d}/table.parquet/x.parquet: cannot write under {d}/table.parquet, a file"),
    ("output", "simulate --out /proc/x.parquet", 2, "/proc/x.parquet: cannot write in /proc"),
    ("output", "simulate --out {d}/folder.csv", 2, "folder.csv: is a folder"),
    ("output", "fit {d}/table.parquet --out f.txt", 2, "--out f.txt: a fit is written as netCDF"),
    ("output", "fit {d}/table.parquet --out {d}/table.parquet/f.nc", 2, "cannot write under"),
    ("output", "fit {d}/table.parquet --out /proc/f.nc", 2, "/proc/f.nc: cannot write in /proc"),
    ("output", "fit-ls {d}/table.parquet --out-csv {d}/table.parquet/p.csv", 2, "p.csv: cannot write under"),
    ("output", "fit-ls {d}/table.parquet --out-json /proc/p.json", 2, "/proc/p.json: cannot write in /proc"),
    ("output", "fit-ls {d}/table.parquet --out-json - --out-csv -", 2, "--out-csv - and --out-json -: only one output can go to stdout"),
    ("output", "report {nofit} --out /proc/report.html", 2, "/proc/report.html: cannot write in /proc"),
    ("output", "report {nofit} --out {d}/table.parquet/r.html", 2, "cannot write under"),
    ("output", "report {nofit} --out {d}", 2, "is a folder"),
    ("output", PLAN + " target --loss 0.3 --size 3 --json /proc/a.json", 2, "/proc/a.json: cannot write in /proc"),
    ("output", PLAN + " forecast --size 3 --json {d}/table.parquet/a.json", 2, "cannot write under"),
    ("output", "compare {nofit} --methods average,ties --json /proc/c.json", 2, "/proc/c.json: cannot write in /proc"),
    ("output", "measure {d}/sweep.toml --out {d}/table.parquet", 2, "cannot write under"),
    ("output", "lab corpora --out {d}/table.parquet --cache cache", 2, "cannot write under"),
    # ---- a real fit is loaded, then the query refuses ------------------------------------------
    ("fit", "plan {fit} target --loss 0.3 --size 3 --family nosuch", 2, "family 'nosuch'"),
    ("fit", "plan {fit} forecast --size 3 --family nosuch", 2, "family 'nosuch'"),
    ("fit", "plan {fit} budget " + BUDGET + " --expert-cost 3=1", 2, "no per-expert cost for base size 0.5B"),
    ("fit", "plan {fit} budget --budget 0.5 --base-costs 0.5=1 --expert-cost 1", 2, "no (N, k) fits budget 0.5"),
    ("fit", "plan {fit} forecast --size 3 --points {d}/points_negative.csv", 2, "points_negative.csv: column 'loss' row 1: -0.1"),
    ("fit", "compare {fit} --methods average,dare", 2, "method 'dare' is not in this fit"),
    ("fit", "loo {fit} {nofit}", 2, "not a mergelaw fit"),
    ("fit", "report {fit} --size 3 --target 2.2 --out {d}/table.parquet/r.html", 2, "cannot write under"),
]

TORCH_CASES: list[tuple[str, str, int, str]] = [
    ("measure", "measure {d}/sweep_corrupt.toml --out {d}/corrupt_out --device cpu --no-progress", 2, "model.safetensors: not a readable safetensors file"),
    ("measure", "measure {d}/sweep_mismatch.toml --out {d}/mismatch_out --device cpu --no-progress", 2, "mismatch/b: tensor 'lm_head.weight' has shape (260, 8)"),
    ("measure", "measure {d}/sweep.toml --out m --device cuda:99", 2, "--device cuda:99: "),
    ("measure", "lab run {d}/pipeline.toml --device cuda:99", 2, "--device cuda:99: "),
]
NO_CUDA_CASES: list[tuple[str, str, int, str]] = [
    ("measure", "measure {d}/sweep.toml --out m --device cuda", 2, "--device cuda: CUDA is not available"),
]
# fmt: on


def _params():
    params = [pytest.param(*case, id=f"{case[0]}-{i:03d}") for i, case in enumerate(CASES)]
    no_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs mergelaw[measure]")
    params += [
        pytest.param(*case, id=f"{case[0]}-t{i}", marks=no_torch)
        for i, case in enumerate(TORCH_CASES)
    ]
    no_cuda = pytest.mark.skipif(not HAS_TORCH or _cuda(), reason="needs torch without CUDA")
    params += [
        pytest.param(*case, id=f"{case[0]}-c{i}", marks=no_cuda)
        for i, case in enumerate(NO_CUDA_CASES)
    ]
    return params


# ---- the input files ------------------------------------------------------------------------


SWEEP = """\
base = "ckpt/base"
tokenizer = "bytes"
k = [1, 2]
experts = {a = "ckpt/a", b = "ckpt/b"}

[eval]
domains = {code = "text/code.txt"}
max_length = 32

[[methods]]
name = "average"
"""

PIPELINE = """\
out = "run"
corpora = "corpora"

[tokenizer]
path = "run/tokenizer"
vocab_size = 1024

[pretrain]
token_budget = 6000
seq_len = 32
batch_size = 2
lr = 3e-3

[finetune]
token_budget = 1000
seq_len = 32
batch_size = 2
lr = 2e-3

[[bases]]
name = "tiny"
arch = "llama"
hidden_size = 16

[sweep]
methods = [{name = "average"}]
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    import pandas as pd

    from mergelaw.bayes.spec import models_dir
    from mergelaw.simulate import simulate_curves

    d = tmp_path_factory.mktemp("bad_input")
    table = simulate_curves(sizes_b=(0.5, 3.0, 14.0), domains=["code"], methods=["average"],
                            pool_size=4, subsets_per_k=2, seed=1)  # fmt: skip
    table.to_parquet(d / "table.parquet")
    table.to_csv(d / "table.csv", index=False)
    (d / "table.txt").write_text("k,loss\n1,2.0\n")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text(",".join(table.columns) + "\n")
    (d / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (d / "folder.csv").mkdir()
    edits = {
        "nan_loss": lambda t: t.assign(loss=t["loss"].where(t.index != 4)),
        "no_loss": lambda t: t.drop(columns="loss"),
        "k0": lambda t: t.assign(k=t["k"].where(t.index != 0, 0)),
        "duplicate": lambda t: pd.concat([t, t.iloc[:1]]),
    }
    for name, edit in edits.items():
        edit(table.copy()).to_csv(d / f"{name}.csv", index=False)
    means = pd.DataFrame({
        "arch": "qwen2", "base_model": "b", "method": "average", "method_params": "{}",
        "eval_domain": "code", "n_params": 1e9, "k": [1, 2, 9], "pool_size": 4,
        "mean": [2.0, 1.9, 1.8], "se": 0.01,
    })  # fmt: skip
    means.to_csv(d / "means_over_pool.csv", index=False)
    means.drop(columns="se").assign(k=[1, 2, 3]).to_csv(d / "means_no_se.csv", index=False)
    (d / "points.csv").write_text("k,loss\n1,2.0\n2,1.9\n")
    (d / "points_negative.csv").write_text("k,loss\n1,2.0\n2,-0.1\n")
    (d / "fit.nc").write_text("not a netCDF file\n")

    spec = (models_dir() / "default.toml").read_text()
    specs = {
        "spec_top": 'colour = "red"\n' + spec,
        "spec_mean": spec.replace("[mean]\n", '[mean]\nparametrisation = "anchored"\n'),
        "spec_noise": spec.replace("[noise]\n", '[noise]\nnuget = "global"\n'),
        "spec_param": spec.replace("[params.level]\n", "[params.level]\nprior_scale = 1.0\n"),
        "spec_sampler": spec.replace("[sampler]\n", "[sampler]\ntarget_accpt = 0.9\n"),
        "spec_bad": spec.replace("[mean]", "[mean"),
    }
    for name, text in specs.items():
        assert text != spec
        (d / f"{name}.toml").write_text(text)

    sweeps = {
        "sweep": SWEEP,
        "sweep_top": 'colour = "red"\n' + SWEEP,
        "sweep_eval": SWEEP.replace("max_length = 32", "max_length = 32\nbatch = 2"),
        "sweep_sampler": SWEEP.replace(
            "k = [1, 2]", 'k = [1, 2]\nsampler = {name = "uniform", count = 2}'
        ),
        "sweep_param": SWEEP.replace('name = "average"', 'name = "task_arithmetic"\nlambda = 0.8'),
        "sweep_method": SWEEP.replace('name = "average"', 'name = "slerp"'),
        "sweep_k": SWEEP.replace("k = [1, 2]", "k = [1, 5]"),
        "sweep_bad": SWEEP.replace("[eval]", "[eval"),
        "sweep_corrupt": SWEEP.replace("ckpt/", "corrupt/"),
        "sweep_mismatch": SWEEP.replace("ckpt/", "mismatch/"),
    }
    for name, text in sweeps.items():
        (d / f"{name}.toml").write_text(text)
    (d / "sweep.json").write_text("{}")
    (d / "text").mkdir()
    (d / "text" / "code.txt").write_text("def add(a, b):\n    return a + b\n" * 20)
    for folder in ("corrupt/base", "corrupt/a", "corrupt/b"):
        (d / folder).mkdir(parents=True)
        (d / folder / "config.json").write_text('{"model_type": "llama", "vocab_size": 260}')
        (d / folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00garbage!")

    pipelines = {
        "pipeline": PIPELINE,
        "pipeline_top": 'colour = "red"\n' + PIPELINE,
        "pipeline_tokenizer": PIPELINE.replace("vocab_size = 1024", "size = 1024"),
        "pipeline_sweep": PIPELINE.replace("[sweep]\n", "[sweep]\nsampling = 1\n"),
        "pipeline_recipe": PIPELINE.replace("lr = 3e-3", "learning_rate = 3e-3"),
    }
    for name, text in pipelines.items():
        (d / f"{name}.toml").write_text(text)
    return d


def _tiny_mismatched_checkpoints(d: Path) -> None:
    """A tiny Llama base and two experts, one of another width: loading the base succeeds
    (transformers would show its progress bars here), then the pool refuses the expert."""
    import torch
    import transformers

    def model(hidden: int):
        config = transformers.LlamaConfig(
            hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, vocab_size=260,
            max_position_embeddings=64, tie_word_embeddings=False,
        )  # fmt: skip
        return transformers.LlamaForCausalLM(config)

    torch.manual_seed(0)
    for name, hidden in (("base", 16), ("a", 16), ("b", 8)):
        model(hidden).save_pretrained(d / "mismatch" / name, safe_serialization=True)


@pytest.fixture
def paths(request, inputs) -> dict[str, str]:
    values = {"d": str(inputs), "nofit": str(inputs / "fit.nc"), "fit": "{fit}"}
    if "{fit}" in request.node.callspec.params["args"]:
        values["fit"] = str(request.getfixturevalue("fake_fit_path"))
    if "mismatch" in request.node.callspec.params["args"] and not (inputs / "mismatch").exists():
        _tiny_mismatched_checkpoints(inputs)
    return values


# ---- the suite --------------------------------------------------------------------------------


@pytest.mark.parametrize(("category", "args", "code", "fragment"), _params())
def test_bad_input(category, args, code, fragment, paths, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(args.format(**paths))
    result = runner.invoke(app, argv)
    lines = result.stderr.splitlines()
    shown = f"mergelaw {' '.join(argv)}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.exit_code == code, shown
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    assert fragment.format(**paths) in lines[0], shown
    assert result.stdout == "", shown
    assert "Traceback" not in result.output and "np.float" not in result.output, shown
    assert list(tmp_path.iterdir()) == [], f"left behind: {list(tmp_path.iterdir())}\n{shown}"


def test_the_suite_counts_its_cases(capsys):
    cases = CASES + TORCH_CASES + NO_CUDA_CASES
    per_category = collections.Counter(category for category, *_ in cases)
    per_command = collections.Counter(args.split()[0] for _, args, _, _ in cases)
    with capsys.disabled():
        print(f"\nbad-input cases: {len(cases)}; by category: {dict(per_category)}; "
              f"by command: {dict(per_command)}")  # fmt: skip
    commands = {"validate", "simulate", "fit-ls", "fit", "diagnose", "report", "loo", "kfold",
                "measure", "compare", "lab", "plan"}  # fmt: skip
    assert commands <= set(per_command), commands - set(per_command)
    assert len(cases) >= 100


# ---- nothing left behind ----------------------------------------------------------------------


def test_a_write_killed_midway_is_cleaned_by_the_next_write(tmp_path):
    target = tmp_path / "fit.nc"
    code = (
        "import os, sys\nfrom mergelaw.io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'half')\n    os._exit(9)\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], env={**os.environ}, check=False)
    assert killed.returncode == 9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".fit.nc.") and left[0].endswith(".tmp")
    (tmp_path / ".fit.nc.ab12cd34.tmp").write_bytes(b"older, unnamed writer")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.nc"]
    assert target.read_bytes() == b"whole"


def test_a_live_writer_keeps_its_temporary(tmp_path):
    target = tmp_path / "out.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("mine")
        assert remove_stale_temporaries(target) == [] and tmp.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_failed_write_is_named_by_its_target_and_leaves_nothing(tmp_path):
    from mergelaw.errors import MergelawError

    target = tmp_path / "report.html"
    with pytest.raises(MergelawError, match=r"report\.html: cannot write it"):  # noqa: SIM117
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            tmp.unlink()  # the rename then fails: reported as the target, not the temp name
    assert list(tmp_path.iterdir()) == []


def test_library_output_stays_off_stderr_unless_verbose(tmp_path, monkeypatch, caplog):
    """Without --verbose a library's warnings and log lines never reach the user between a
    command and its error line; with it they pass through."""
    import logging
    import warnings

    import typer

    from mergelaw import cli
    from mergelaw.cli.shared import OneLineUsage, command

    def noisy(table: Path) -> None:
        warnings.warn("a library warning", UserWarning, stacklevel=1)
        logging.getLogger("jax._src.xla_bridge").warning("a JAX log line")
        raise ValueError("bad input")

    noisy.__annotations__ = {"table": Path}
    monkeypatch.chdir(tmp_path)
    app_ = typer.Typer(cls=OneLineUsage)
    app_.callback()(cli.main)
    command(app_, {}, "noisy")(noisy)
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        quiet = runner.invoke(app_, ["noisy", "x"])
    assert quiet.exit_code == 2 and quiet.stderr == "error: ValueError: bad input\n"
    assert seen == [] and caplog.records == []
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        loud = runner.invoke(app_, ["--verbose", "noisy", "x"])
    assert loud.exit_code == 2 and loud.stderr.endswith("error: ValueError: bad input\n")
    assert [str(w.message) for w in seen] == ["a library warning"]
    assert [r.getMessage() for r in caplog.records] == ["a JAX log line"]


# ---- the lock on an output folder -------------------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_a_folder_lock_is_released_on_exit_and_on_error(tmp_path):
    from mergelaw.errors import MergelawError

    with folder_lock(tmp_path / "out", "mergelaw measure") as lock:
        assert lock.name == LOCK_NAME
        assert lock.read_text().split()[0] == str(os.getpid())
        with pytest.raises(MergelawError, match=r"another mergelaw measure \(pid \d+\)"):  # noqa: SIM117
            with folder_lock(tmp_path / "out"):
                pass  # the same folder, locked: refused (this process counts as alive)
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(RuntimeError), folder_lock(tmp_path / "out"):
        raise RuntimeError("the run failed")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import socket

    lock = tmp_path / LOCK_NAME
    lock.write_text(f"{_dead_pid()} {socket.gethostname()} mergelaw measure\n")
    with folder_lock(tmp_path, "mergelaw measure"):
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()


def test_a_lock_from_another_host_is_honoured(tmp_path):
    from mergelaw.errors import MergelawError

    (tmp_path / LOCK_NAME).write_text(f"{_dead_pid()} some-other-host mergelaw measure\n")
    with pytest.raises(MergelawError, match=r"\(pid \d+ on some-other-host\)"):  # noqa: SIM117
        with folder_lock(tmp_path):
            pass
    assert (tmp_path / LOCK_NAME).exists()


def test_measure_without_torch_checks_its_input_first(inputs, tmp_path, monkeypatch):
    """Without mergelaw[measure], a bad sweep file is still named first; a good one is refused
    by naming the extra, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)
    result = runner.invoke(app, ["measure", str(inputs / "sweep_k.toml"), "--out", "m"])
    assert result.exit_code == 2 and "'k' = 5" in result.stderr
    result = runner.invoke(app, ["measure", str(inputs / "sweep.toml"), "--out", "m"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: mergelaw measure needs torch, which is not installed: "
        "pip install 'mergelaw[measure]'"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_the_lock_of_a_killed_unreaped_process_is_stale(tmp_path):
    """A run killed while its parent has not yet reaped it (a zombie) holds nothing."""
    import signal
    import time

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom mergelaw.io import folder_lock\n"
         f"with folder_lock({str(tmp_path)!r}, 'mergelaw measure'):\n"
         "    print('held', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline() == "held\n"
        child.send_signal(signal.SIGKILL)
        for _ in range(500):  # until the kernel has made it a zombie
            state = Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0]
            if state == "Z":
                break
            time.sleep(0.01)
        with folder_lock(tmp_path, "mergelaw measure"):
            assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    finally:
        child.kill()
        child.wait()
