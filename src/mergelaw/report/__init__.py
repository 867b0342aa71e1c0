"""The posterior report: one self-contained HTML page per saved fit (``mergelaw report``)."""

from mergelaw.report.build import build_report, write_report

__all__ = ["build_report", "write_report"]
