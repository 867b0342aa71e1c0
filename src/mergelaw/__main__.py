"""``python -m mergelaw``: the CLI, for environments where the entry point is not installed."""

from mergelaw.cli import app

app(prog_name="mergelaw")
