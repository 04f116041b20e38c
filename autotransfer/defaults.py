"""Run defaults the CLI needs before anything heavy is imported (no TensorFlow here)."""

#: The ranking scorer when none is named: ``combined``, the mean z-score across candidates of LogME
#: and N-LEEP (:data:`autotransfer.probe.combine.DEFAULT_COMPONENTS`). Chosen with
#: benchmarks/selection.py on digits and five Fashion-MNIST subsets (benchmarks/README.md): the best
#: mean Kendall tau and top-1 regret of the scorers; no scorer, this one included, ranks well on
#: every subset, which is why the run tunes the top few rather than the first alone.
DEFAULT_SCORER = "combined"

#: Most pixels (height x width) an image may have, read from its header before anything decodes it:
#: the data stage skips larger files (``--max-pixels``) and the export's ``serving_bytes`` refuses
#: them. 40 MP covers camera photos; a 10000 x 10000 PNG is ~300 KB on disk but ~300 MB as uint8
#: pixels and ~1.2 GB as float32.
MAX_PIXELS = 40_000_000

#: ``--cv auto`` cross-validates when the labelled items (a given test split aside) are at most this
#: many. Below it the fixed 15% validation split holds 300 items or fewer: a standard error of 2 pp
#: or more on an accuracy near 85%, more than the differences member selection decides on, and 15%
#: of the labels kept from the export; above it the k fits of each fine-tuned member cost more than
#: a budget on 2 cores affords, and a single split is steadier.
CV_MAX_ITEMS = 2000
#: Most folds; fewer when the smallest class has fewer items.
CV_MAX_FOLDS = 5
#: ``--cv`` choices.
CV_CHOICES = ("auto", "on", "off")
