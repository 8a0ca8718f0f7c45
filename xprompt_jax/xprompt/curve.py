"""The masking curve (the paper's Figure 2, generalised): dev metric of the stage-1 prompt,
without retraining, against the share of pruned tokens, for three orders - `importance`
(lowest scores first, XPrompt), `reversed` (highest first) and `random` (mean over seeds).
All candidates are scored in one `search.evaluate_candidates` call."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from ..evaluation.metrics import metric_name
from ..training.run_logging import progress_bar
from . import pruning, search
from .context import XPromptContext


def masking_curve_candidates(token_scores, piece_shape, ratios: Sequence[float],
                             random_seeds: int) -> List[Dict[str, Any]]:
    """One candidate per (order, ratio[, seed]): token masks of the full prompt's ranking
    (`pruning.curve_token_mask`), all pieces kept. Ratio 0 is the unpruned prompt, shared."""
    m, k = piece_shape
    out = []
    for ratio in ratios:
        for order in pruning.CURVE_ORDERS:
            seeds = range(random_seeds) if order == "random" else (0,)
            for seed in seeds:
                if ratio == 0 and (order != "importance"):
                    continue
                out.append({"order": order, "ratio": ratio, "seed": seed,
                            "token_mask": pruning.curve_token_mask(token_scores, ratio, order,
                                                                   seed),
                            "piece_mask": np.ones((m, k), np.float32)})
    return out


def masking_curve_result(ctx: XPromptContext, stage1_params, token_scores,
                         ratios: Sequence[float], random_seeds: int,
                         batched: bool = True) -> Dict[str, Any]:
    """Dev main metric of the stage-1 prompt (no retraining) with round(r * m) tokens
    masked, for each ratio r and order (module docstring)."""
    ratios = [r for r in ratios if int(round(r * ctx.length)) < ctx.length]  # keep a token
    candidates = masking_curve_candidates(token_scores, (ctx.length, ctx.pieces), ratios,
                                          random_seeds)
    with progress_bar(len(candidates), "masking curve: candidates on dev",
                      ctx.progress) as bar:
        results = search.evaluate_candidates(
            ctx.evaluator, ctx.variables(stage1_params),
            [(c["token_mask"], c["piece_mask"]) for c in candidates], batched, bar=bar)
    return curve_from_results(candidates, results, ratios, ctx.length, random_seeds,
                              metric_name(ctx.evaluator.main_metric_fn))


def curve_from_results(candidates, results, ratios, length: int, random_seeds: int,
                       metric: str) -> Dict[str, Any]:
    """Arranges per-candidate results into the curve's series (see `masking_curve_result`)."""
    table: Dict[tuple, float] = {}
    for c, r in zip(candidates, results):
        table[(c["order"], c["ratio"], c["seed"])] = r.get("main_metric")
    base = table[("importance", ratios[0], 0)] if ratios[0] == 0 else None

    def value(order, ratio, seed):
        if ratio == 0:
            return base
        return table[(order, ratio, seed)]

    random_runs = [[value("random", r, s) for r in ratios] for s in range(random_seeds)]
    random_mean = [None if any(run[i] is None for run in random_runs) or not random_runs
                   else float(np.mean([run[i] for run in random_runs]))
                   for i in range(len(ratios))]
    return {"ratios": list(ratios),
            "pruned_tokens": [int(round(r * length)) for r in ratios],
            "importance": [value("importance", r, 0) for r in ratios],
            "reversed": [value("reversed", r, 0) for r in ratios],
            "random": random_mean, "random_seeds": random_runs,
            "metric": metric, "prompt": "stage-1 best checkpoint, no retraining",
            "order_scores": "token importance of the full prompt (one shot)"}
