"""mergelaw: plan model merging with a hierarchical Bayesian merging law."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mergelaw")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
