"""The notebooks run end to end (fast settings), and their committed .ipynb twins are clean.

Each notebooks/*.py (jupytext py:percent, the source) is executed with nbclient on the python3
kernel, cwd notebooks/, MERGELAW_NOTEBOOK_FAST=1. The paired .ipynb must hold the same cells and
no outputs or execution counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_planning", "02_compare_methods", "03_paper_law")
TIMEOUT_S = 900  # per cell; the fast settings need about a minute per notebook on 2 cores


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, monkeypatch):
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    monkeypatch.setenv("MERGELAW_NOTEBOOK_FAST", "1")
    # The kernel is a child process: it inherits this environment (XLA_FLAGS from conftest).
    client = nbclient.NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_stripped_and_paired(name):
    paired = NOTEBOOKS / f"{name}.ipynb"
    assert paired.exists(), f"{paired} missing: run jupytext --sync notebooks/{name}.py"
    ipynb = jupytext.read(paired)
    for cell in ipynb.cells:
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{paired}: a code cell has outputs"
            assert cell.get("execution_count") is None, f"{paired}: a cell has an execution count"
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert _cells(ipynb) == _cells(source), f"{paired} differs from {name}.py: jupytext --sync"
