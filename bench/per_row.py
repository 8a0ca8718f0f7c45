"""The earlier rank-classification scorer, kept for the benchmarks' before/after comparisons
(the library scores verbalizers with one encoder pass per example, `evaluation.scorers`):
one full forward pass per (example, verbalizer) row, rows padded to the feature lengths."""

from __future__ import annotations

from typing import List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xprompt_jax.evaluation.scorers import token_log_probs
from xprompt_jax.fileio import host_array
from xprompt_jax.training import data as data_lib


def row_scores(model, variables, batch):
    """`[B]` sums of target-token log-probabilities, a full forward pass per row."""
    logits = model.apply(variables, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                         batch["decoder_target_tokens"], enable_dropout=False)
    token_logp = token_log_probs(logits, batch["decoder_target_tokens"])
    return jnp.sum(token_logp * batch["decoder_loss_weights"], axis=-1)


_row_scores = jax.jit(row_scores, static_argnums=(0,))


def per_row_texts(evaluator, variables, candidates: Optional[Sequence] = None,
                  rows_per_call: Optional[int] = None) -> List[List[str]]:
    """`[C][n]` predicted verbalizers of `evaluator`'s examples by per-row scoring (C = 1
    without `candidates`, else one per XPrompt candidate mask, `rows_per_call` // C rows of
    each in one call, as the search did)."""
    from xprompt_jax.xprompt.search import with_masks

    labels, ids = evaluator.rank_options()
    rows = [{"inputs": ex["inputs"], "targets": t}
            for ex, ex_ids in zip(evaluator.examples, ids) for t in ex_ids]
    count = 1 if candidates is None else len(candidates)
    size = max(1, (rows_per_call or evaluator.config.batch_size) // count)
    masked = variables
    if candidates is not None:
        tokens = np.repeat(np.stack([np.asarray(c[0], np.float32) for c in candidates]), size, 0)
        pieces = np.repeat(np.stack([np.asarray(c[1], np.float32) for c in candidates]), size, 0)
        masked = with_masks(variables, tokens, pieces)
    flat: List[List[float]] = [[] for _ in range(count)]
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        features = data_lib.examples_to_features(chunk, evaluator.feature_lengths, size)
        tiled = {k: np.concatenate([v] * count, axis=0) for k, v in features.items()}
        out = host_array(_row_scores(evaluator.model, masked, tiled)).reshape(count, size)
        for c in range(count):
            flat[c].extend(out[c, :len(chunk)].tolist())
    offsets = np.cumsum([0] + [len(o) for o in labels])
    return [[labels[i][int(np.argmax(f[offsets[i]:offsets[i + 1]]))]
             for i in range(len(labels))] for f in flat]


def per_row_results(evaluator, variables, candidates: Optional[Sequence] = None) -> List[dict]:
    """One result (as `Evaluator.evaluate`) per candidate (or one), by per-row scoring."""
    return [evaluator.result_from_texts(t)
            for t in per_row_texts(evaluator, variables, candidates)]
