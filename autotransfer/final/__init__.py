"""Final stage: the model that is exported, built from the tuned trials and the probe's linear heads.

``members``: member selection (temperature-scaled, bagged greedy selection), flip averaging and
the refit on every labelled row (:class:`~autotransfer.final.members.FinalModel`). ``ensemble``:
the selection rule and temperature scaling on predicted probabilities. ``crossfit``: out-of-fold
predictions of heads and trials for small data, and the nested estimate of the chosen ensemble.
"""
