"""Export stage: the final model as a versioned SavedModel that TF Serving loads (``export/``)."""
from __future__ import annotations

import re

from autotransfer.pipeline.context import RunContext
from autotransfer.pipeline.final import refit_with_test

NAME = "export"


def run(ctx: RunContext) -> None:
    """Refit on the test items too when asked, then export, warmed up with real validation items
    (the same decode path and shapes as serving, not zeros)."""
    from autotransfer import modalities
    from autotransfer.export import export_model

    if ctx.config.refit_with_test:
        refit_with_test(ctx)
    model, sizes = ctx.final.model(refit=True)
    modality = modalities.for_data(ctx.data)
    warm = next(iter(modality.dataset(ctx.data, ctx.splits.val[:8], size=sizes[-1], batch_size=8,
                                      with_labels=False))).numpy()
    ctx.export_path = export_model(model, class_names=ctx.data.class_names, input_size=sizes,
                                   export_dir=ctx.run_dir / "export",
                                   model_name=re.sub(r"[^A-Za-z0-9_-]+", "_", ctx.run_dir.name), warmup_examples=warm,
                                   modality=modality, max_pixels=ctx.config.max_pixels)
