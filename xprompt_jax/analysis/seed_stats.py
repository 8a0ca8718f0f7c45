"""Statistics over seeds: the mean, the sample standard deviation and a two-sided 95%
Student-t interval `mean +- t_{0.975, n-1} * s / sqrt(n)` (`s` with ddof 1). Used by the
sweep report (`runs/sweep_report.py`) and the quality benchmark (bench/quality_stats.py)."""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

# t_{0.975, df} for df = 1..30 (two-sided 95%); above 30 the normal 1.96 is close enough.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """t_{0.975, df} (from the table above; 1.96 beyond df 30)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T975[df - 1] if df <= len(T975) else 1.96


def summarize(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """`{'n', 'mean', 'std' (ddof 1), 'ci95': [lo, hi]}` of `values` (None where n is too
    small: std and interval need n >= 2)."""
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = sum(vals) / n
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}
