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

from typing import Dict, Mapping, Optional, Sequence

# the interval arithmetic lives in the library (the sweep report uses it too)
from xprompt_jax.analysis.seed_stats import T975, summarize, t_quantile  # noqa: F401

YES, NO, NOT_SEPARABLE = "yes", "no", "not separable"
ANSWERS = (YES, NO, NOT_SEPARABLE)

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
