"""The package's promises about its environment: a torch-free core, and the test settings."""

import os
import subprocess
import sys
import warnings

CORE_MODULES = [
    "mergelaw",
    "mergelaw.law",
    "mergelaw.curves",
    "mergelaw.paper",
    "mergelaw.simulate",
    "mergelaw.least_squares",
    "mergelaw.cli",
]


def test_core_imports_no_torch():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE_MODULES)
        + "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        + "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_xla_host_devices_for_parallel_chains():
    assert "--xla_force_host_platform_device_count=4" in os.environ["XLA_FLAGS"]
    import jax

    assert jax.local_device_count() == 4


def test_pytensor_compiledir_is_writable_and_blas_warning_filtered():
    import pytensor

    assert os.access(pytensor.config.compiledir, os.W_OK), pytensor.config.compiledir
    # record=True keeps the suite's filters (pyproject's filterwarnings); the missing-BLAS warning
    # PyTensor raises when it first reads its BLAS flags must be among those filtered out.
    with warnings.catch_warnings(record=True) as caught:
        pytensor.config.blas__ldflags  # noqa: B018  (reading it is what warns)
    assert not [w for w in caught if "BLAS" in str(w.message)]
