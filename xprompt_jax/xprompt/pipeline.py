"""The XPrompt pipeline: stage 1 prompt tuning -> importance scores -> token then piece
pruning search -> rewind -> final evaluation -> report.

Each stage writes its artifacts under MODEL_DIR/<stage>/ and a `DONE.json` marker
(atomically) when it finishes; a rerun skips finished stages and resumes an unfinished
training stage from its last checkpoint. The trainers come from the gin bindings of
`xprompt_jax.train.build_trainer` (runs/prompt_tune.gin), so stage 1 and the rewind use
the same recipe.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

from .. import gin_utils
from ..training.checkpointing import write_json_atomic
from ..training.data import TrainBatchIterator
from ..training.run_logging import progress_bar
from . import pruning, report as report_lib, search
from .masked_prompt import MASKS
from .scoring import ImportanceScorer, ImportanceScores, mask_variables

logger = logging.getLogger("xprompt_jax")

STAGES = ("stage1", "scores", "search", "rewind", "final_eval")
MASK_VARIANTS = ("xprompt", "reversed", "random", "length")
PRUNE_LEVELS = ("token", "piece")


def _done_path(model_dir: str, stage: str) -> str:
    return os.path.join(model_dir, stage, "DONE.json")


def stage_done(model_dir: str, stage: str) -> Optional[Dict[str, Any]]:
    path = _done_path(model_dir, stage)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _mark_done(model_dir: str, stage: str, info: Mapping[str, Any]) -> None:
    os.makedirs(os.path.join(model_dir, stage), exist_ok=True)
    write_json_atomic(_done_path(model_dir, stage), dict(info))


def _build(**overrides):
    from xprompt_jax.train import build_trainer

    return gin_utils.configured(build_trainer)(**overrides)


def masked_prompt_module(model):
    prompt = getattr(model, "prompt", None)
    if prompt is None or not hasattr(prompt, "num_pieces"):
        raise ValueError("the XPrompt pipeline needs PromptedT5 with a MaskedSoftPrompt "
                         "(gin/xprompt.gin sets it)")
    return prompt


def _best_trainable(trainer) -> Dict[str, Any]:
    """Trainable params of the run's best checkpoint (latest if no eval was recorded)."""
    step = trainer.checkpointer.best_step() or trainer.checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {trainer.config.model_dir}")
    trainer.restore(step)
    return jax.device_get(trainer.state.params), int(step)


def masks_json(token_mask, piece_mask) -> Dict[str, Any]:
    return {"token_mask": np.asarray(token_mask).astype(int).tolist(),
            "piece_mask": np.asarray(piece_mask).astype(int).tolist()}


def kept_pieces(token_mask, piece_mask) -> int:
    return int(pruning.effective_piece_mask(token_mask, piece_mask).sum())


class PipelineContext:
    """What the stages share: the stage-1 trainer, its model, frozen weights, data."""

    def __init__(self, model_dir: str, stage1_overrides: Mapping[str, Any]):
        self.model_dir = model_dir
        self.trainer = _build(model_dir=os.path.join(model_dir, "stage1"), **stage1_overrides)
        self.model = self.trainer.model
        self.prompt = masked_prompt_module(self.model)
        self.length, self.pieces = self.prompt.length, self.prompt.num_pieces
        self.embed_dim = self.model.config.emb_dim
        if self.trainer.evaluator is None:
            raise ValueError("the XPrompt search scores candidates on the dev split: set "
                             "EVAL_PERIOD (an evaluator is needed)")

    def scorer(self, trainable, per_example: bool) -> ImportanceScorer:
        return ImportanceScorer(self.model, trainable, self.trainer.frozen,
                                self.trainer.batch_sharding, per_example)

    def score_batches(self, seed_offset: int):
        from dataclasses import replace

        config = replace(self.trainer.data_config, seed=self.trainer.data_config.seed + 7919
                         + seed_offset)
        return TrainBatchIterator(config)


def run_pipeline(*, model_dir: str, num_score_examples: int = 1024, per_example: bool = True,
                 token_ratios: Sequence[float] = pruning.default_ratios(),
                 piece_ratios: Sequence[float] = pruning.default_ratios(),
                 piece_ranking: str = "global", prune_levels: Sequence[str] = PRUNE_LEVELS,
                 mask_variant: str = "xprompt", mask_seed: int = 0,
                 rewind_each_candidate: bool = False, rewind_steps: Optional[int] = None,
                 batched_search: bool = True, stage1_init_path: Optional[str] = None,
                 stage1_steps: Optional[int] = None) -> Dict[str, Any]:
    """Runs (or resumes) the pipeline in `model_dir`; returns the report dict.

    `stage1_init_path`: XPrompt transfer - initialise stage 1 from another run's prompt
    (`.npy`, e.g. `<other MODEL_DIR>/rewind/numpy_checkpoints/checkpoint_<step>/prompt.prompt.npy`).
    """
    if mask_variant not in MASK_VARIANTS:
        raise ValueError(f"mask_variant {mask_variant!r}; expected one of {MASK_VARIANTS}")
    if piece_ranking not in ("global", "per_token"):
        raise ValueError(f"piece_ranking {piece_ranking!r}; expected 'global' or 'per_token'")
    levels = tuple(prune_levels)
    if not levels or any(level not in PRUNE_LEVELS for level in levels):
        raise ValueError(f"prune_levels {levels}; expected a non-empty subset of {PRUNE_LEVELS}")
    token_ratios = pruning.ratios_checked(token_ratios)
    piece_ratios = pruning.ratios_checked(piece_ratios)
    gin_utils.check_required("run_pipeline", {"model_dir": model_dir})
    os.makedirs(model_dir, exist_ok=True)

    overrides: Dict[str, Any] = {}
    if stage1_steps is not None:
        overrides["train_steps"] = stage1_steps
    if stage1_init_path:
        overrides["initial_trainable"] = {"prompt": {"prompt": np.load(stage1_init_path)}}
    ctx = PipelineContext(model_dir, overrides)

    # ---- stage 1: prompt tuning
    if stage_done(model_dir, "stage1") is None:
        logger.info("XPrompt stage 1/4: prompt tuning (%s)", ctx.trainer.config.model_dir)
        summary = ctx.trainer.run()
        _mark_done(model_dir, "stage1", {"summary": summary})
    stage1_params, stage1_step = _best_trainable(ctx.trainer)
    stage1_eval = (stage_done(model_dir, "stage1")["summary"] or {}).get("best_eval")
    variant = "reversed" if mask_variant == "reversed" else "xprompt"
    m, k = ctx.length, ctx.pieces
    scorer = ctx.scorer(stage1_params, per_example)
    ones_t, ones_p = np.ones(m, np.float32), np.ones((m, k), np.float32)

    # ---- importance scores of the full prompt
    scores_path = os.path.join(model_dir, "scores", "scores.json")
    if stage_done(model_dir, "scores") is None:
        logger.info("XPrompt stage 2/4: importance scores over %d examples",
                    num_score_examples)
        with progress_bar(num_score_examples, "importance scores: examples",
                          ctx.trainer.config.progress) as bar:
            initial = scorer.score(ones_t, ones_p, ctx.score_batches(0), num_score_examples,
                                   bar)
        os.makedirs(os.path.dirname(scores_path), exist_ok=True)
        write_json_atomic(scores_path, initial.to_json())
        _mark_done(model_dir, "scores", {"num_examples": initial.num_examples})
    with open(scores_path) as f:
        initial = ImportanceScores.from_json(json.load(f))

    # ---- pruning search
    search_path = os.path.join(model_dir, "search", "search.json")
    if stage_done(model_dir, "search") is None:
        logger.info("XPrompt stage 3/4: pruning search (%s)", ", ".join(levels))
        result = search_masks(ctx, scorer, initial, stage1_params, token_ratios, piece_ratios,
                         piece_ranking, levels, variant, num_score_examples, batched_search,
                         rewind_each_candidate, rewind_steps)
        if mask_variant == "random":
            token_mask, piece_mask = pruning.random_masks_like(
                np.asarray(result["chosen"]["token_mask"]),
                np.asarray(result["chosen"]["piece_mask"]), mask_seed)
            result["xprompt_chosen"] = result["chosen"]
            result["chosen"] = {**masks_json(token_mask, piece_mask), "name": "random"}
        os.makedirs(os.path.dirname(search_path), exist_ok=True)
        write_json_atomic(search_path, result)
        _mark_done(model_dir, "search", {"chosen": result["chosen"].get("name")})
    with open(search_path) as f:
        search_result = json.load(f)
    token_mask = np.asarray(search_result["chosen"]["token_mask"], np.float32)
    piece_mask = np.asarray(search_result["chosen"]["piece_mask"], np.float32)

    # ---- rewind: survivors reset to stage-1 values, fresh optimizer, masks fixed
    rewind_trainer = _rewind_trainer(ctx, stage1_params, token_mask, piece_mask,
                                     os.path.join(model_dir, "rewind"), mask_variant,
                                     rewind_steps)
    if stage_done(model_dir, "rewind") is None:
        logger.info("XPrompt stage 4/4: rewind and retrain with masks fixed (%s)",
                    rewind_trainer.config.model_dir)
        summary = rewind_trainer.run()
        _mark_done(model_dir, "rewind", {"summary": summary})

    # ---- final evaluation of the best rewound prompt
    if stage_done(model_dir, "final_eval") is None:
        params, step = _best_trainable(rewind_trainer)
        result = rewind_trainer.evaluate(params)
        result["checkpoint_step"] = step
        _mark_done(model_dir, "final_eval", {"result": result})
    final = stage_done(model_dir, "final_eval")["result"]

    report = {
        "model_dir": model_dir,
        "mask_variant": mask_variant,
        "prune_levels": list(levels),
        "per_example_scores": per_example,
        "num_score_examples": initial.num_examples,
        "prompt_length": m, "num_pieces": k, "embed_dim": ctx.embed_dim,
        "stage1": {"best_step": stage1_step, "eval": stage1_eval},
        "search": search_result,
        "final_eval": final,
        "parameters": {
            "prompt_tuning": m * ctx.embed_dim,
            "xprompt": pruning.trainable_parameter_count(token_mask, piece_mask, ctx.embed_dim),
            "surviving_tokens": int((token_mask > 0).sum()),
            "surviving_pieces": kept_pieces(token_mask, piece_mask),
        },
    }
    report_lib.write_report(model_dir, report, initial, token_mask, piece_mask)
    return report


def _rewind_trainer(ctx: PipelineContext, stage1_params, token_mask, piece_mask, model_dir: str,
                    mask_variant: str, rewind_steps: Optional[int]):
    values = pruning.value_mask(token_mask, piece_mask, ctx.embed_dim)
    overrides: Dict[str, Any] = {"model_dir": model_dir,
                                 "extra_variables": {MASKS: mask_variables(token_mask,
                                                                           piece_mask)},
                                 "update_mask": {"prompt": {"prompt": values}}}
    if rewind_steps is not None:
        overrides["train_steps"] = rewind_steps
    if mask_variant == "length":
        # A fresh prompt with the surviving token count (no masks, no rewound values).
        length = int((token_mask > 0).sum())
        overrides = {k: v for k, v in overrides.items() if k not in ("extra_variables",
                                                                      "update_mask")}
        overrides["model"] = ctx.model.clone(prompt=ctx.prompt.clone(length=length))
    else:
        initial = np.asarray(stage1_params["prompt"]["prompt"]) * values
        overrides["initial_trainable"] = {"prompt": {"prompt": initial}}
    return _build(**overrides)


def search_masks(ctx: PipelineContext, scorer: ImportanceScorer, initial: ImportanceScores,
            stage1_params, token_ratios, piece_ratios, piece_ranking: str, levels,
            variant: str, num_examples: int, batched: bool, rewind_each_candidate: bool,
            rewind_steps: Optional[int]) -> Dict[str, Any]:
    m, k = ctx.length, ctx.pieces
    variables = ctx.trainer.variables(stage1_params)

    def evaluate(candidates: List[tuple], names: List[str], level: str):
        if rewind_each_candidate:
            results = []
            for (t, p), name in zip(candidates, names):
                trainer = _rewind_trainer(ctx, stage1_params, t, p,
                                          os.path.join(ctx.model_dir, "rewind_candidates", name),
                                          "xprompt", rewind_steps)
                summary = trainer.run()
                results.append(summary.get("best_eval") or {"main_metric": None})
            return results
        with progress_bar(len(candidates), f"{level} pruning: candidates on dev",
                          ctx.trainer.config.progress) as bar:
            return search.evaluate_candidates(ctx.trainer.evaluator, variables, candidates,
                                              batched, bar=bar)

    def run_level(level: str, ratios, first_scores, start: tuple, prune, seed_base: int):
        """Iterative pruning at one level: the unpruned `start` (pruning is kept only if it
        helps or ties), then one candidate per ratio, rescoring the survivors in between;
        evaluates them all, records them, returns the best (token_mask, piece_mask)."""
        candidates, names, scores = [start], [f"{level}_0.0"], first_scores
        with progress_bar(len(ratios) - 1, f"{level} pruning: rescoring survivors",
                          ctx.trainer.config.progress) as bar:
            for i, ratio in enumerate(ratios):
                candidates.append(prune(scores, candidates[-1], ratio))
                names.append(f"{level}_{ratio}")
                if i + 1 < len(ratios):
                    scores = scorer.score(*candidates[-1], ctx.score_batches(seed_base + i),
                                          num_examples)
                    bar.update(1)
        results = evaluate(candidates, names, level)
        best = search.choose_best(results, [kept_pieces(t, p) for t, p in candidates])
        mask_index, mask_key = (0, "token_mask") if level == "token" else (1, "piece_mask")
        for candidate, name, ratio, result in zip(candidates, names, (0.0,) + tuple(ratios),
                                                  results):
            record[f"{level}_candidates"].append({
                "name": name, "ratio": ratio, "main_metric": result.get("main_metric"),
                "metrics": result.get("metrics"),
                mask_key: candidate[mask_index].astype(int).tolist()})
        record[f"best_{level}"] = names[best]
        return candidates[best]

    record: Dict[str, Any] = {"token_candidates": [], "piece_candidates": []}
    masks = (np.ones(m, np.float32), np.ones((m, k), np.float32))
    if "token" in levels:
        masks = run_level(
            "token", token_ratios, initial, masks, seed_base=1,
            prune=lambda sc, cand, r: (pruning.prune_tokens(sc.token, cand[0], r, variant),
                                       cand[1]))
    if "piece" in levels:
        token_mask = masks[0]
        base = kept_pieces(*masks)
        scores = scorer.score(*masks, ctx.score_batches(100), num_examples)
        record["piece_scores_on_best_tokens"] = scores.to_json()
        masks = run_level(
            "piece", piece_ratios, scores, masks, seed_base=101,
            prune=lambda sc, cand, r: (token_mask, pruning.prune_pieces(
                sc.piece, cand[1], token_mask, r, base,
                per_token=piece_ranking == "per_token", variant=variant)))
    record["chosen"] = {**masks_json(*masks),
                        "name": "+".join(record.get(f"best_{lv}", "") for lv in levels)}
    return record
