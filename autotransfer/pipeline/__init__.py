"""The run as a loop over stages: plan -> probe -> tune -> final -> evaluate -> export -> report.

Each stage module here is the glue between the run and its stage's package (``plan``, ``probe``,
``tune``, ``final``, ``evaluate``, ``export``): ``run(ctx)`` does the stage on a
:class:`RunContext` and leaves its results in the run directory as plain files; a stage a resumed
run can skip also has ``load(ctx)``, which reads them back. :func:`run_stages` owns the order, the
timings, resume and the interrupt checks between stages.
"""
from autotransfer.pipeline.context import RunContext, write_json
from autotransfer.pipeline.loop import STAGES, run_stages

__all__ = ["STAGES", "RunContext", "run_stages", "write_json"]
