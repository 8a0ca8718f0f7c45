"""Hierarchical structured pruning of prompt masks (pure NumPy, deterministic).

Token level: to reach ratio r, prune the lowest-scoring surviving tokens until
round(r * m) tokens are pruned. Piece level: among the surviving pieces of surviving
tokens, prune until round(r * P0) pieces are pruned, P0 = surviving pieces when piece
pruning starts; ranking is global over those pieces (default) or `per_token` (each
surviving token loses round(r * k) pieces). `variant='reversed'` prunes the *highest*
scorers instead (keeps the low scorers); ties break by index, so results are reproducible.

Ablations at XPrompt's counts (the paper's Figure 5): `reversed_masks_like` keeps the same
numbers of tokens and pieces taken from the *lowest* scorers of the full prompt (the
complement ranking), `random_masks_like` the same numbers at random. The masking curve
(Figure 2, `curve_token_mask`): one-shot token masks of the full prompt's ranking.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

VARIANTS = ("xprompt", "reversed")

logger = logging.getLogger(__name__)


def default_ratios(step: float = 0.1, stop: float = 0.9) -> tuple:
    """(0.1, 0.2, ..., 0.9) by default."""
    n = int(round(stop / step))
    return tuple(round(step * i, 6) for i in range(1, n + 1))


def _order(scores: np.ndarray, variant: str) -> np.ndarray:
    """Indices in pruning order (first = pruned first)."""
    if variant not in VARIANTS:
        raise ValueError(f"pruning variant {variant!r}; expected one of {VARIANTS}")
    keys = scores if variant == "xprompt" else -scores
    return np.argsort(keys, kind="stable")


def prune_tokens(token_scores: np.ndarray, token_mask: np.ndarray, ratio: float,
                 variant: str = "xprompt") -> np.ndarray:
    """New token mask `[m]` with round(ratio * m) tokens pruned in total."""
    token_scores = np.asarray(token_scores, np.float64)
    mask = np.asarray(token_mask, np.float32).copy()
    m = mask.shape[0]
    target = int(round(ratio * m))
    if not 0 <= target < m:
        raise ValueError(f"token ratio {ratio} prunes {target} of {m} tokens; keep at least one")
    to_prune = target - int((mask == 0).sum())
    if to_prune <= 0:
        return mask
    survivors = np.flatnonzero(mask > 0)
    order = survivors[_order(token_scores[survivors], variant)]
    mask[order[:to_prune]] = 0.0
    return mask


def prune_pieces(piece_scores: np.ndarray, piece_mask: np.ndarray, token_mask: np.ndarray,
                 ratio: float, base_pieces: int, per_token: bool = False,
                 variant: str = "xprompt") -> np.ndarray:
    """New piece mask `[m, k]`; `base_pieces` = surviving pieces before piece pruning."""
    piece_scores = np.asarray(piece_scores, np.float64)
    mask = np.asarray(piece_mask, np.float32).copy()
    alive_tokens = np.asarray(token_mask) > 0
    alive = (mask > 0) & alive_tokens[:, None]
    if per_token:
        k = mask.shape[1]
        target_per_token = int(round(ratio * k))
        if target_per_token >= k:
            raise ValueError(f"piece ratio {ratio} prunes every piece of a token (k={k})")
        for t in np.flatnonzero(alive_tokens):
            cols = np.flatnonzero(alive[t])
            to_prune = target_per_token - (k - len(cols))
            if to_prune > 0:
                mask[t, cols[_order(piece_scores[t, cols], variant)[:to_prune]]] = 0.0
        return mask
    target = int(round(ratio * base_pieces))
    if target >= base_pieces:
        raise ValueError(f"piece ratio {ratio} prunes all {base_pieces} pieces")
    already = base_pieces - int(alive.sum())
    to_prune = target - already
    if to_prune <= 0:
        return mask
    flat_alive = np.flatnonzero(alive.ravel())
    order = flat_alive[_order(piece_scores.ravel()[flat_alive], variant)]
    mask.ravel()[order[:to_prune]] = 0.0
    return mask


def random_masks_like(token_mask: np.ndarray, piece_mask: np.ndarray, seed: int):
    """Random masks with the same number of surviving tokens and of surviving pieces."""
    rng = np.random.RandomState(seed)
    token_mask = np.asarray(token_mask)
    piece_mask = np.asarray(piece_mask)
    m, k = piece_mask.shape
    n_tokens = int((token_mask > 0).sum())
    n_pieces = int(((piece_mask > 0) & (token_mask[:, None] > 0)).sum())
    new_tokens = np.zeros(m, np.float32)
    kept = rng.choice(m, n_tokens, replace=False)
    new_tokens[kept] = 1.0
    new_pieces = np.zeros((m, k), np.float32)
    cells = (kept[:, None] * k + np.arange(k)[None, :]).ravel()
    new_pieces.ravel()[rng.choice(cells, n_pieces, replace=False)] = 1.0
    return new_tokens, new_pieces


def _lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` lowest scores (ties: lower index first)."""
    return np.argsort(np.asarray(scores, np.float64), kind="stable")[:count]


def reversed_masks_like(token_mask: np.ndarray, piece_mask: np.ndarray,
                        token_scores: np.ndarray, piece_scores: np.ndarray):
    """Reversed XPrompt: the counts of (`token_mask` `[m]`, `piece_mask` `[m, k]`) taken
    from the lowest scorers. Tokens: the n lowest of `token_scores` `[m]` (n = surviving
    tokens). Pieces, from `piece_scores` `[m, k]`: when every surviving token keeps the same
    c pieces (per-token ranking, or no piece pruning) each kept token keeps its c lowest;
    otherwise the P lowest among the kept tokens' pieces (P = surviving pieces). Rows of
    pruned tokens stay ones, as in XPrompt's own masks (they do not count)."""
    token_mask = np.asarray(token_mask)
    piece_scores = np.asarray(piece_scores, np.float64)
    m, k = np.asarray(piece_mask).shape
    if np.shape(token_scores) != (m,) or piece_scores.shape != (m, k):
        raise ValueError(f"reversed masks: scores {np.shape(token_scores)} / "
                         f"{piece_scores.shape} do not match masks [{m}] / [{m}, {k}]")
    alive = effective_piece_mask(token_mask, piece_mask)
    alive_tokens = token_mask > 0
    n_tokens = int(alive_tokens.sum())
    per_token = alive[alive_tokens].sum(axis=1)
    new_tokens = np.zeros(m, np.float32)
    kept = np.sort(_lowest(token_scores, n_tokens))
    new_tokens[kept] = 1.0
    new_pieces = np.zeros((m, k), np.float32)
    if n_tokens and np.all(per_token == per_token[0]):
        for t in kept:
            new_pieces[t, _lowest(piece_scores[t], int(per_token[0]))] = 1.0
    else:
        cells = (kept[:, None] * k + np.arange(k)[None, :]).ravel()
        chosen = cells[_lowest(piece_scores.ravel()[cells], int(alive.sum()))]
        new_pieces.ravel()[chosen] = 1.0
    new_pieces[new_tokens == 0] = 1.0
    return new_tokens, new_pieces


CURVE_ORDERS = ("importance", "reversed", "random")


def curve_token_mask(token_scores: np.ndarray, ratio: float, order: str,
                     seed: int = 0) -> np.ndarray:
    """Token mask `[m]` with round(ratio * m) tokens pruned in one shot: the lowest scorers
    (`importance`, XPrompt's order), the highest (`reversed`) or a random draw (`random`,
    `np.random.RandomState(seed)`)."""
    token_scores = np.asarray(token_scores, np.float64)
    m = token_scores.shape[0]
    count = int(round(ratio * m))
    if not 0 <= count < m:
        raise ValueError(f"masking curve: ratio {ratio} prunes {count} of {m} tokens")
    if order == "importance":
        pruned = _lowest(token_scores, count)
    elif order == "reversed":
        pruned = _lowest(-token_scores, count)
    elif order == "random":
        pruned = np.random.RandomState(seed).permutation(m)[:count]
    else:
        raise ValueError(f"masking curve order {order!r}; expected one of {CURVE_ORDERS}")
    mask = np.ones(m, np.float32)
    mask[pruned] = 0.0
    return mask


def effective_piece_mask(token_mask: np.ndarray, piece_mask: np.ndarray) -> np.ndarray:
    """`[m, k]` 1 where the piece survives and its token survives."""
    return ((np.asarray(piece_mask) > 0) & (np.asarray(token_mask)[:, None] > 0)).astype(
        np.float32)


def value_mask(token_mask: np.ndarray, piece_mask: np.ndarray, embed_dim: int) -> np.ndarray:
    """`[m, e]` 0/1 mask over prompt values (pruned tokens and pieces are 0)."""
    pieces = effective_piece_mask(token_mask, piece_mask)
    return np.repeat(pieces, embed_dim // pieces.shape[1], axis=1)


def trainable_parameter_count(token_mask: np.ndarray, piece_mask: np.ndarray,
                              embed_dim: int) -> int:
    """Surviving pieces x (e / k) (XPrompt Table 3)."""
    pieces = effective_piece_mask(token_mask, piece_mask)
    return int(pieces.sum()) * (embed_dim // pieces.shape[1])


def reachable_ratios(ratios: Sequence[float], units: int, name: str) -> tuple:
    """The ratios that keep at least one of `units` (tokens of the prompt, or pieces of a
    token with per-token piece ranking): round(r * units) < units. With the paper's grid
    and m = 20, k = 16 all are; a smaller prompt or k (e.g. k = 4 for a tiny model) loses
    the top ratios, with a warning. Raises when none is left."""
    kept = tuple(r for r in ratios if int(round(r * units)) < units)
    if len(kept) < len(ratios):
        logger.warning("%s: %s would prune all %d units; searching %s", name,
                       [r for r in ratios if r not in kept], units, list(kept))
    if not kept:
        raise ValueError(f"{name} {tuple(ratios)}: every ratio prunes all {units} units")
    return kept


def ratios_checked(ratios: Sequence[float], name: str = "pruning ratios") -> tuple:
    ratios = tuple(float(r) for r in ratios)
    if (not ratios or any(not 0 < r < 1 for r in ratios)
            or any(b <= a for a, b in zip(ratios, ratios[1:]))):
        raise ValueError(f"{name} must be non-empty, strictly increasing and in (0, 1) (the "
                         f"unpruned prompt is added by SEARCH_INCLUDE_UNPRUNED): {ratios}")
    return ratios
