"""Numbers of a learning curve: the crossover of two systems and a power-law fit.

* :func:`crossover`: where a challenger's error curve first drops to an incumbent's or below,
  by linear interpolation of the error difference in log N between the two sizes around the
  sign change (curves are straight-ish on log axes). Computed per seed (each seed draws its own
  subsets), then mean +- sample std and a 95% t interval over the seeds that cross inside the
  measured range; the seeds that are already ahead at the smallest size or never ahead are
  counted, not averaged.
* :func:`power_law`: ``err = a * N ** b + c`` by non-linear least squares
  (``scipy.optimize.curve_fit``) over every seed's point, with the exponent's standard error
  from the covariance and the residuals; Hestness et al. 2017 ("Deep learning scaling is
  predictable, empirically") report b ~ -0.31 for ImageNet top-1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

HESTNESS_BETA = -0.31  # Hestness et al. 2017, ImageNet top-1 error (their Figure 7: beta_g = -0.309)


def crossover(sizes: Sequence[float], challenger: Sequence[float], incumbent: Sequence[float]) -> dict[str, Any]:
    """Where ``challenger`` (errors at ``sizes``, ascending) first gets to ``incumbent`` or below.

    ``{"n": N*, "state": "crossed"}``, or ``state`` ``ahead`` (already at or below at the
    smallest size: ``n`` is that size, an upper bound) or ``behind`` (never: ``n`` None).
    """
    diff = [c - i for c, i in zip(challenger, incumbent)]
    if diff[0] <= 0:
        return {"n": float(sizes[0]), "state": "ahead"}
    for k in range(1, len(diff)):
        if diff[k] <= 0:
            lo, hi = math.log(sizes[k - 1]), math.log(sizes[k])
            frac = diff[k - 1] / (diff[k - 1] - diff[k])
            return {"n": math.exp(lo + frac * (hi - lo)), "state": "crossed"}
    return {"n": None, "state": "behind"}


def crossover_over_seeds(sizes: Sequence[float], challenger: Sequence[Sequence[float]],
                         incumbent: Sequence[Sequence[float]]) -> dict[str, Any]:  # fmt: skip
    """:func:`crossover` for each seed's pair of curves, with mean +- std of the crossed ones."""
    per_seed = [crossover(sizes, c, i) for c, i in zip(challenger, incumbent)]
    crossed = [p["n"] for p in per_seed if p["state"] == "crossed"]
    mean = float(np.mean(crossed)) if crossed else None
    std = float(np.std(crossed, ddof=1)) if len(crossed) >= 2 else None
    states = [p["state"] for p in per_seed]
    last = sum(c[-1] <= i[-1] for c, i in zip(challenger, incumbent))  # a curve ahead at first may fall behind
    return {"per_seed": per_seed, "mean": mean, "std": std, "ci95": confidence_interval(crossed), "crossed": len(crossed),
            "ahead": states.count("ahead"), "behind": states.count("behind"), "ahead_at_largest": last}  # fmt: skip


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student's t interval for the mean of ``values`` (seeds as independent draws): mean +-
    t_{(1+level)/2, k-1} * std / sqrt(k); ``None`` for fewer than 2 values. With 3 seeds t = 4.30,
    so the 95% interval is about 2.5 standard deviations wide on each side."""
    from scipy.stats import t

    if len(values) < 2:
        return None
    mean, sem = float(np.mean(values)), float(np.std(values, ddof=1)) / math.sqrt(len(values))
    half = float(t.ppf((1 + level) / 2, len(values) - 1)) * sem
    return mean - half, mean + half


def power_law(n: Sequence[float], err: Sequence[float]) -> dict[str, Any] | None:
    """Fit ``err = a * n ** b + c`` (a > 0, -3 < b < 0, 0 <= c < 1); ``None`` with fewer than 4
    distinct sizes (three parameters need a fourth point to leave a residual) or no convergence."""
    from scipy.optimize import curve_fit

    x, y = np.asarray(n, dtype=float), np.asarray(err, dtype=float)
    if len(np.unique(x)) < 4:
        return None

    def model(v: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a * v**b + c

    start = (max(y[x == x.min()].mean() - y.min(), 1e-3) * x.min() ** 0.3, -0.3, max(y.min() * 0.5, 0.0))
    try:
        params, cov = curve_fit(model, x, y, p0=start, bounds=([0, -3, 0], [np.inf, 0, 1]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    a, b, c = (float(v) for v in params)
    residuals = y - model(x, a, b, c)
    errors = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else [math.nan] * 3
    return {"a": a, "b": b, "c": c, "b_se": float(errors[1]), "rms_residual": float(np.sqrt(np.mean(residuals**2))),
            "residuals": [float(r) for r in residuals], "points": len(x)}  # fmt: skip
