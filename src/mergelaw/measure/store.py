"""The resumable row store: one parquet part file per finished unit of work, written atomically.

A unit's rows land in ``DIR/parts/<unit id>.parquet`` through a temporary file and a rename, so a
sweep killed at any moment leaves only whole part files (and perhaps a ``.*.tmp`` file, removed on
the next open). On resume the runner skips every (method, params, seed, subset) whose rows are all
present, keyed by ``mergelaw.curves.KEY_COLUMNS``; nothing is lost and nothing is written twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from mergelaw.curves import COLUMNS, KEY_COLUMNS
from mergelaw.errors import MergelawError
from mergelaw.io import atomic_path

Key = tuple


class RowStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.parts = self.directory / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        for leftover in self.parts.glob(".*.tmp"):  # a write interrupted by a kill
            leftover.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        return sorted(self.parts.glob("*.parquet"))

    def read(self) -> pd.DataFrame:
        """All stored rows (an empty frame with the schema's columns if there are none)."""
        frames = []
        for file in self.files():
            try:
                frames.append(pd.read_parquet(file))
            except Exception as exc:  # pyarrow raises many kinds; all mean "unreadable"
                raise MergelawError(
                    f"{file}: unreadable part file ({type(exc).__name__}); "
                    "expected a parquet file written by mergelaw measure"
                ) from None
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        return pd.concat(frames, ignore_index=True)

    def keys(self) -> set[Key]:
        rows = self.read()
        return set(rows[list(KEY_COLUMNS)].itertuples(index=False, name=None))

    def write(self, unit_id: str, rows: pd.DataFrame) -> Path:
        """Store one unit's rows (adds ``timestamp``); atomic: all of the unit or nothing."""
        rows = rows.copy()
        rows["timestamp"] = datetime.now(UTC).isoformat(timespec="seconds")
        target = self.parts / f"{unit_id}.parquet"
        with atomic_path(target) as tmp:
            rows.to_parquet(tmp, index=False)
        return target
