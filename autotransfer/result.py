"""Result: what ``autotransfer.run`` returns, and predictions through the exported model."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Result:
    """A finished run: leaderboard, best configuration, test metrics and the exported model."""

    run_dir: Path
    leaderboard: pd.DataFrame
    best: dict[str, Any]
    test_metrics: dict[str, Any]
    export_path: Path
    report_path: Path
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    timings: dict[str, float] = field(default_factory=dict)
    _loaded: Any = field(default=None, repr=False)

    def _model(self) -> Any:
        if self._loaded is None:
            from autotransfer.backbones.sources import load_saved_model

            self._loaded = load_saved_model(self.export_path)
        return self._loaded

    def _modality(self) -> str:
        import json

        from autotransfer.export import METADATA_FILE

        meta = Path(self.export_path) / METADATA_FILE
        return json.loads(meta.read_text()).get("modality", "image") if meta.is_file() else "image"

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities from the exported SavedModel (exactly what TF Serving would return).

        ``images``: file paths (list of str/Path, sent as encoded bytes through ``serving_bytes``) or
        an array [N, H, W, C] (uint8 0..255 or float 0..1, resized to the model's input size); for a
        text export, a list of strings (sent as they are).
        """
        return self._predict(images)["probabilities"]

    def predict(self, images: Any) -> np.ndarray:
        """Predicted label strings for ``images`` (see :meth:`predict_proba`)."""
        return np.array([b.decode() for b in self._predict(images)["label"]])

    def _predict(self, images: Any) -> dict[str, np.ndarray]:
        import tensorflow as tf

        model = self._model()
        if self._modality() == "text":
            from autotransfer.modalities.text import TEXT_KEY

            out = model.signatures["serving_default"](**{TEXT_KEY: tf.constant([str(t) for t in images], tf.string)})
        elif isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, Path)):
            raw = tf.constant([Path(p).read_bytes() for p in images])
            out = model.signatures["serving_bytes"](image_bytes=raw)
        else:
            from autotransfer import modalities
            from autotransfer.data import LabelledData

            x = np.asarray(images)
            # Unlabelled inference data: build the container directly (load_data insists on >= 2 classes).
            data = LabelledData(items=x, labels=np.zeros(len(x), dtype="int64"), class_names=["?"])
            size = int(self.best.get("input_size", 224))
            batches = modalities.for_data(data).dataset(data, np.arange(len(x)), size=size, with_labels=False)
            out = model.signatures["serving_default"](images=tf.constant(np.concatenate([b.numpy() for b in batches])))
        return {k: v.numpy() for k, v in out.items()}
