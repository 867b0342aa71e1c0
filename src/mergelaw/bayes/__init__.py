"""Fitting the hierarchical Bayesian merging law: the model spec (spec), its data (data), the
model on two backends (model, numpyro_backend, pymc_backend), fitting and saving (fit), the
posterior as draws of curves (posterior), diagnostics (every ArviZ call), predictive checks,
model choice (selection, kfold), few-point updates (update) and calibration (SBC). The paper's
least-squares baseline is mergelaw.least_squares.

Kept light on import so the CLI starts fast: submodules import their heavy dependencies themselves.
"""
