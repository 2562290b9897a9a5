"""The 2011 side of the story: hand-crafted features and linear SVMs, as estimators.

Feature extraction (:mod:`~alexnet.baselines.hog`, :mod:`~alexnet.baselines.features`, and
:mod:`~alexnet.baselines.sift` + :mod:`~alexnet.baselines.fisher` for SIFT + Fisher vectors) is
separate from classification (:mod:`~alexnet.baselines.svm`); :mod:`~alexnet.baselines.pipeline`
fits them in resumable stages into a run folder that ``alexnet eval`` and ``alexnet predict``
accept like a network's.
"""

from alexnet.baselines.pipeline import (
    DEFAULT_L2,
    DESCRIPTIONS,
    FEATURES,
    SYSTEMS,
    BaselineConfig,
    evaluate_baseline,
    fit_baseline,
    is_baseline_run,
    load_baseline,
)

__all__ = [
    "DEFAULT_L2", "DESCRIPTIONS", "FEATURES", "SYSTEMS", "BaselineConfig", "evaluate_baseline", "fit_baseline", "is_baseline_run",
    "load_baseline",
]  # fmt: skip
