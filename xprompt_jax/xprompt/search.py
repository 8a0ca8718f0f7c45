"""Scoring candidate masks on the dev split without retraining.

Batched (default): C candidates are evaluated in one compiled pass per chunk of examples by
folding a candidate axis into the batch: rows are tiled C times and each row carries its
candidate's masks (`[C*R, m]`, `[C*R, m, k]`, per-example masks of `MaskedSoftPrompt`).
Rank classification uses the evaluator's shared-encoder scorer (one encoder pass per
(candidate, example), all verbalizers from it) on length-sorted, trimmed chunks.
`rows_per_call` caps C*R (default: the eval batch size): on CPU a call of C times the eval
batch materialises C times larger `[rows, T, vocab]` logits and loses to sequential
evaluation (bench/xprompt_search.py); on accelerators a larger cap pays off.
Sequential: one evaluation per candidate (for comparison in bench/xprompt_search.py).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from ..training.evaluation import Evaluator
from .masked_prompt import MASKS
from .scoring import mask_variables

Candidate = Tuple[np.ndarray, np.ndarray]  # (token mask [m], piece mask [m, k])


def _with_masks(variables: Mapping[str, Any], token_masks, piece_masks) -> Dict[str, Any]:
    out = {k: v for k, v in variables.items() if k not in ("cache", MASKS)}
    out[MASKS] = mask_variables(jnp.asarray(token_masks, jnp.float32),
                                jnp.asarray(piece_masks, jnp.float32))
    return out


def _tile(features: Mapping[str, np.ndarray], copies: int) -> Dict[str, np.ndarray]:
    return {k: np.concatenate([v] * copies, axis=0) for k, v in features.items()}


def _row_masks(candidates: Sequence[Candidate], rows: int):
    tokens = np.stack([np.asarray(c[0], np.float32) for c in candidates])
    pieces = np.stack([np.asarray(c[1], np.float32) for c in candidates])
    return np.repeat(tokens, rows, axis=0), np.repeat(pieces, rows, axis=0)


def evaluate_candidates(evaluator: Evaluator, variables: Mapping[str, Any],
                        candidates: Sequence[Candidate], batched: bool = True,
                        rows_per_call: Optional[int] = None, bar=None) -> List[Dict[str, Any]]:
    """Dev results (as `Evaluator.evaluate`) for each candidate, in order. `bar` (a tqdm
    bar or None) advances by one per candidate evaluated."""
    if not candidates:
        return []
    if not batched:
        results = []
        for t, p in candidates:
            results.append(evaluator.evaluate(_with_masks(variables, t, p)))
            if bar is not None:
                bar.update(1)
        return results
    count = len(candidates)
    rows_per_call = rows_per_call or evaluator.config.batch_size
    size = max(1, rows_per_call // count)  # rows per candidate in one call
    num_examples = len(evaluator.examples)
    token_rows, piece_rows = _row_masks(candidates, size)
    masked = _with_masks(variables, token_rows, piece_rows)
    rank = evaluator.config.mode == "rank_classification"
    labels = evaluator.rank_options()[0] if rank else None
    if rank and evaluator.config.rank_scorer == "per_row":  # the earlier path (benchmarks)
        return [evaluator.result_from_texts(evaluator.pick_labels(s, labels))
                for s in _per_row_scores(evaluator, masked, count, size, bar)]
    outputs = [[None] * num_examples for _ in range(count)]  # scores or texts
    for indices in evaluator.example_batches(size):
        if rank:
            features = evaluator.option_batch(indices, size)
            out = evaluator.score_option_batch(masked, _tile(features, count))
            out = out.reshape(count, size, -1)
            for c in range(count):
                for j, i in enumerate(indices):
                    outputs[c][i] = out[c, j, :len(labels[i])]
        else:
            features = evaluator.input_batch(indices, size)
            tokens = evaluator.decode_batch(masked, _tile(features, count)[
                "encoder_input_tokens"]).reshape(count, size, -1)
            for c in range(count):
                for j, i in enumerate(indices):
                    outputs[c][i] = evaluator.tokens_to_text(tokens[c, j])
        if bar is not None:
            bar.update(count * len(indices) / num_examples)
    if rank:
        texts = [evaluator.pick_labels(evaluator.flat_scores(s), labels) for s in outputs]
    else:
        texts = outputs
    return [evaluator.result_from_texts(t) for t in texts]


def candidate_set(level: str, ratios: Sequence[float], start: Candidate, first_scores,
                  prune: Callable, include_unpruned: bool = False,
                  rescore: Optional[Callable] = None, bar=None):
    """XPrompt's iterative candidates at one level: candidate i = `prune(scores_i,
    candidate_{i-1}, ratios[i])` (candidate_{-1} = `start`), scores_0 = `first_scores`,
    scores_{i+1} = `rescore(candidate_i, i)` (the survivors rescored). The unpruned `start`
    comes first only with `include_unpruned` (the paper searches 10%..90%, p5). Returns
    (candidates, names `'<level>_<ratio>'`, ratios). `bar` (context-manager tqdm or None)
    advances once per rescoring."""
    candidates: List[Candidate] = []
    names: List[str] = []
    used: List[float] = []
    if include_unpruned:
        candidates.append(start)
        names.append(f"{level}_0.0")
        used.append(0.0)
    previous, scores = start, first_scores
    with (bar if bar is not None else contextlib.nullcontext()):
        for i, ratio in enumerate(ratios):
            previous = prune(scores, previous, ratio)
            candidates.append(previous)
            names.append(f"{level}_{ratio}")
            used.append(float(ratio))
            if i + 1 < len(ratios) and rescore is not None:
                scores = rescore(previous, i)
                if bar is not None:
                    bar.update(1)
    return candidates, names, used


def _per_row_scores(evaluator: Evaluator, masked, count: int, size: int, bar):
    """Flat (example, verbalizer) scores of each candidate, one forward pass per row."""
    from ..training import data as data_lib

    rows, _ = evaluator.rank_rows()
    scores = [[] for _ in range(count)]
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        features = data_lib.examples_to_features(chunk, evaluator.feature_lengths, size)
        out = evaluator.score_row_batch(masked, _tile(features, count))
        for c in range(count):
            scores[c].extend(out.reshape(count, size)[c, :len(chunk)].tolist())
        if bar is not None:
            bar.update(count * len(chunk) / len(rows))
    return scores


def choose_best(results: Sequence[Mapping[str, Any]], kept_counts: Sequence[int]) -> int:
    """Index of the best candidate by main metric; ties go to the sparser mask (fewer kept
    units), then to the earlier candidate."""
    best = None
    for i, (result, kept) in enumerate(zip(results, kept_counts)):
        metric = result.get("main_metric")
        metric = -np.inf if metric is None else float(metric)
        key = (metric, -int(kept))
        if best is None or key > best[0]:
            best = (key, i)
    return best[1]
