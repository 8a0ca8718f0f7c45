"""Statistics of the quality benchmark: means, 95% t-intervals, paired differences, answers.

Every interval is a two-sided 95% Student-t interval over seeds:
`mean +- t_{0.975, n-1} * s / sqrt(n)`, `s` the sample standard deviation (ddof 1). A
paired comparison of methods A and B uses only the seeds both finished (same seeds, same
few-shot draws, same dev/test data) and the interval of the per-seed differences A - B.

Answers to a claim (`answer`):

* `'>'` (A beats B): **yes** if the whole interval of A - B lies above 0, **no** if it
  lies below 0, else **not separable** (the interval contains 0, or n < 2);
* `'>='` (A keeps up with B, non-inferiority with a margin of `margin` points): **yes**
  if the lower end is above `-margin`, **no** if the upper end is below `-margin`,
  else **not separable**.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

YES, NO, NOT_SEPARABLE = "yes", "no", "not separable"
ANSWERS = (YES, NO, NOT_SEPARABLE)

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


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]
                      ) -> Dict[str, object]:
    """Per-seed `a[s] - b[s]` over the seeds both have, and their `summarize`."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    diffs = {s: float(a[s]) - float(b[s]) for s in seeds}
    return {"seeds": seeds, "per_seed": diffs, **summarize(list(diffs.values()))}


def answer(ci95: Optional[Sequence[float]], relation: str = ">", margin: float = 1.0) -> str:
    """yes / no / not separable for the claim 'A `relation` B' from the interval of A - B."""
    if ci95 is None:
        return NOT_SEPARABLE
    lo, hi = ci95
    if relation == ">":
        threshold = 0.0
    elif relation == ">=":
        threshold = -float(margin)
    else:
        raise ValueError(f"relation {relation!r}; expected '>' or '>='")
    if lo > threshold:
        return YES
    if hi < threshold:
        return NO
    return NOT_SEPARABLE


def combine(answers: Sequence[str]) -> str:
    """A claim made of several comparisons (A < B < C): yes if every part is yes, no if
    any part is no, else not separable."""
    if answers and all(a == YES for a in answers):
        return YES
    if any(a == NO for a in answers):
        return NO
    return NOT_SEPARABLE
