"""Fitting the merging law: the least-squares baseline now; the hierarchical Bayesian model next.

Kept light on import so the CLI starts fast: submodules import their heavy dependencies themselves.
"""
