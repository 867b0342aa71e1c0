"""Errors raised on bad input. Each message is one line naming the file/column/value at fault."""


class MergelawError(ValueError):
    """Bad input to mergelaw; the CLI prints its message as one line and exits with code 2."""


class CurvesTableError(MergelawError):
    """A curves table that breaks the data contract of ``mergelaw.curves``."""
