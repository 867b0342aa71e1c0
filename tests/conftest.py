"""Test environment, set before jax/pytensor are imported: `pytest` alone acts like `make test`."""

import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault(
    "PYTENSOR_FLAGS", f"compiledir={Path(__file__).resolve().parents[1] / '.cache' / 'pytensor'}"
)
