"""XPrompt's pruning search: token then piece candidates, scored on dev.

The paper's search (p5): token ratios then piece ratios (10%..90% by default), iterative
(the survivors are rescored after each ratio), every candidate scored on dev with the
stage-1 prompt and no retraining unless `rewind_each_candidate`; the unpruned prompt is a
candidate only with `search_include_unpruned`.

Scoring without retraining, batched (default): C candidates are evaluated in one compiled
pass per chunk of examples by folding a candidate axis into the batch (`MaskCandidates`,
the evaluator's variants): rows are tiled C times and each row carries its candidate's masks
(`[C*R, m]`, `[C*R, m, k]`, per-example masks of `MaskedSoftPrompt`). `rows_per_call` caps
C*R (default: the eval batch size): on CPU a call of C times the eval batch materialises C
times larger `[rows, T, vocab]` logits and loses to sequential evaluation
(bench/xprompt_search.py); on accelerators a larger cap pays off. Sequential: one
evaluation per candidate (for comparison in bench/xprompt_search.py).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from ..evaluation.variants import SINGLE, Variants
from ..training.run_logging import progress_bar
from . import pruning
from .masked_prompt import MASKS
from .scoring import mask_variables

Candidate = Tuple[np.ndarray, np.ndarray]  # (token mask [m], piece mask [m, k])


def with_masks(variables: Mapping[str, Any], token_masks, piece_masks) -> Dict[str, Any]:
    """`variables` with the `prompt_masks` collection set to the given masks (`[m]` /
    `[m, k]`, or per row `[B, m]` / `[B, m, k]`)."""
    out = {k: v for k, v in variables.items() if k not in ("cache", MASKS)}
    out[MASKS] = mask_variables(jnp.asarray(token_masks, jnp.float32),
                                jnp.asarray(piece_masks, jnp.float32))
    return out


class MaskCandidates(Variants):
    """C candidate masks as evaluator variants over chunks of `rows` example rows: row
    `c*rows + r` is example row r with candidate c's masks."""

    def __init__(self, candidates: Sequence[Candidate], rows: int):
        self.count = len(candidates)
        tokens = np.stack([np.asarray(c[0], np.float32) for c in candidates])
        pieces = np.stack([np.asarray(c[1], np.float32) for c in candidates])
        self.token_rows = np.repeat(tokens, rows, axis=0)
        self.piece_rows = np.repeat(pieces, rows, axis=0)

    def variables(self, variables):
        return with_masks(variables, self.token_rows, self.piece_rows)

    def expand(self, features, indices):
        del indices
        return {k: np.concatenate([v] * self.count, axis=0) for k, v in features.items()}

    def split(self, out, rows):
        out = np.asarray(out)
        return out.reshape((self.count, rows) + out.shape[1:])


def evaluate_candidates(evaluator, variables: Mapping[str, Any],
                        candidates: Sequence[Candidate], batched: bool = True,
                        rows_per_call: Optional[int] = None, bar=None) -> List[Dict[str, Any]]:
    """Dev results (as `Evaluator.evaluate`) for each candidate, in order. `bar` (a tqdm
    bar or None) advances by one per candidate evaluated."""
    if not candidates:
        return []
    if not batched:
        results = []
        for t, p in candidates:
            results.append(evaluator.evaluate_variants(with_masks(variables, t, p), SINGLE)[0])
            if bar is not None:
                bar.update(1)
        return results
    size = max(1, (rows_per_call or evaluator.config.batch_size) // len(candidates))
    n = len(evaluator.examples)
    return evaluator.evaluate_variants(
        variables, MaskCandidates(candidates, size), examples_per_call=size,
        progress=None if bar is None else (lambda k: bar.update(k / n)))


def candidate_set(level: str, ratios: Sequence[float], start: Candidate, first_scores,
                  prune: Callable, include_unpruned: bool = False,
                  rescore: Optional[Callable] = None, bar=None):
    """XPrompt's iterative candidates at one level: candidate i = `prune(scores_i,
    candidate_{i-1}, ratios[i])` (candidate_{-1} = `start`), scores_0 = `first_scores`,
    scores_{i+1} = `rescore(candidate_i)` (the survivors rescored). The unpruned `start`
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
                scores = rescore(previous)
                if bar is not None:
                    bar.update(1)
    return candidates, names, used


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


def masks_json(token_mask, piece_mask) -> Dict[str, Any]:
    return {"token_mask": np.asarray(token_mask).astype(int).tolist(),
            "piece_mask": np.asarray(piece_mask).astype(int).tolist()}


def kept_pieces(token_mask, piece_mask) -> int:
    return int(pruning.effective_piece_mask(token_mask, piece_mask).sum())


def search_masks(ctx, scorer, initial, stage1_params, config,
                 rewind_each_candidate: bool = False) -> Dict[str, Any]:
    """XPrompt's search in importance order with `config` (an `XPromptConfig`) from the
    full prompt's scores `initial`; `record['xprompt']` holds the chosen masks.

    `rewind_each_candidate` (the config's, unless a caller cannot retrain): with
    `rewind_jointly` (default) all candidates of a level retrain in one PromptBank run
    (`rewind.joint_rewind_results`, in `rewind_candidates/<level>_joint`); else one run
    per candidate, one after another."""
    from . import rewind

    m, k = ctx.length, ctx.pieces
    levels = config.prune_levels
    token_ratios = pruning.reachable_ratios(config.token_ratios, m, "TOKEN_RATIOS")
    piece_ratios = config.piece_ratios
    if config.piece_ranking == "per_token":
        piece_ratios = pruning.reachable_ratios(piece_ratios, k, "PIECE_RATIOS")
    variables = ctx.variables(stage1_params)
    batches = ctx.score_batches()
    rescore = lambda masks: scorer.score(*masks, batches, config.num_score_examples)  # noqa
    base_dir = os.path.join(ctx.model_dir, "rewind_candidates")

    def evaluate(candidates: List[Candidate], names: List[str], level: str):
        if rewind_each_candidate and config.rewind_jointly:
            return rewind.joint_rewind_results(ctx, stage1_params, candidates, names,
                                               os.path.join(base_dir, f"{level}_joint"),
                                               config.rewind_steps)
        if rewind_each_candidate:
            return rewind.sequential_rewind_results(ctx, stage1_params, candidates, names,
                                                    base_dir, config.rewind_steps)
        with progress_bar(len(candidates), f"{level} pruning: candidates on dev",
                          ctx.progress) as bar:
            return evaluate_candidates(ctx.evaluator, variables, candidates,
                                       config.batched_search, bar=bar)

    def run_level(level: str, ratios, first_scores, start: tuple, prune):
        """Iterative pruning at one level from `start`: one candidate per ratio, rescoring
        the survivors in between; evaluates them, records them, returns the best masks."""
        candidates, names, used_ratios = candidate_set(
            level, ratios, start, first_scores, prune, config.search_include_unpruned,
            rescore=rescore, bar=progress_bar(len(ratios) - 1,
                                              f"{level} pruning: rescoring survivors",
                                              ctx.progress))
        results = evaluate(candidates, names, level)
        best = choose_best(results, [kept_pieces(t, p) for t, p in candidates])
        mask_index, mask_key = (0, "token_mask") if level == "token" else (1, "piece_mask")
        for candidate, name, ratio, result in zip(candidates, names, used_ratios, results):
            record[f"{level}_candidates"].append({
                "name": name, "ratio": ratio, "main_metric": result.get("main_metric"),
                "metrics": result.get("metrics"),
                "kept_tokens": int((candidate[0] > 0).sum()),
                "kept_pieces": kept_pieces(*candidate),
                mask_key: candidate[mask_index].astype(int).tolist()})
        record[f"best_{level}"] = names[best]
        return candidates[best]

    record: Dict[str, Any] = {"token_candidates": [], "piece_candidates": [],
                              "unpruned_candidate": bool(config.search_include_unpruned)}
    masks = (np.ones(m, np.float32), np.ones((m, k), np.float32))
    if "token" in levels:
        masks = run_level(
            "token", token_ratios, initial, masks,
            prune=lambda sc, cand, r: (pruning.prune_tokens(sc.token, cand[0], r), cand[1]))
    if "piece" in levels:
        token_mask = masks[0]
        base = kept_pieces(*masks)
        scores = rescore(masks)
        record["piece_scores_on_best_tokens"] = scores.to_json()
        masks = run_level(
            "piece", piece_ratios, scores, masks,
            prune=lambda sc, cand, r: (token_mask, pruning.prune_pieces(
                sc.piece, cand[1], token_mask, r, base,
                per_token=config.piece_ranking == "per_token")))
    record["xprompt"] = {**masks_json(*masks),
                         "name": "+".join(record.get(f"best_{lv}", "") for lv in levels)}
    record["chosen"] = dict(record["xprompt"])
    return record


def variant_masks(search_result: Mapping[str, Any], scores, mask_variant: str,
                  seed: int = 0) -> Dict[str, Any]:
    """The masks a variant rewinds, from XPrompt's chosen masks (`search_result['xprompt']`):
    'xprompt' / 'length' those masks, 'reversed' the same counts from the lowest scorers of
    the full prompt (`scores`), 'random' the same counts at random (`seed`)."""
    xp = search_result["xprompt"]
    token_mask = np.asarray(xp["token_mask"], np.float32)
    piece_mask = np.asarray(xp["piece_mask"], np.float32)
    if mask_variant in ("xprompt", "length"):
        return {**masks_json(token_mask, piece_mask), "name": xp["name"]}
    if mask_variant == "reversed":
        t, p = pruning.reversed_masks_like(token_mask, piece_mask, scores.token, scores.piece)
        return {**masks_json(t, p), "name": f"reversed({xp['name']})"}
    if mask_variant == "random":
        t, p = pruning.random_masks_like(token_mask, piece_mask, seed)
        return {**masks_json(t, p), "name": f"random({xp['name']}, seed {seed})"}
    raise ValueError(f"mask_variant {mask_variant!r}")
