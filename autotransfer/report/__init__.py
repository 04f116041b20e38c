"""Report stage: render a self-contained ``report.html`` from the plain files of a run directory."""
from autotransfer.report.render import render_report

__all__ = ["render_report"]
