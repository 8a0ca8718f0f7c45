"""The XPrompt pipeline: stage 1 prompt tuning -> importance scores -> masking curve ->
token then piece pruning search -> rewind -> final evaluation [-> ablations] -> report.

The search (the paper's, p5): token ratios then piece ratios (10%..90% by default),
iterative (the survivors are rescored after each ratio), every candidate scored on dev
with the stage-1 prompt and no retraining unless `rewind_each_candidate`; the unpruned
prompt is a candidate only with `search_include_unpruned`. `mask_variant` 'reversed' /
'random' keep XPrompt's chosen counts taken from the lowest scorers / at random (the
paper's Figure 5); 'length' is a fresh prompt of the surviving length. `ablations` runs
such variants as extra rewinds from the same stage 1 and search. The masking curve (the
paper's Figure 2 generalised): dev metric of the stage-1 prompt against the pruned token
share for importance, reversed and random order (`masking_curve`).

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
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import numpy as np

from .. import gin_utils
from ..training.checkpointing import write_json_atomic
from ..training.data import TrainBatchIterator
from ..training.distributed import is_writer
from ..training.run_logging import progress_bar
from . import pruning, report as report_lib, search
from .masked_prompt import MASKS
from .scoring import ImportanceScorer, ImportanceScores, mask_variables

logger = logging.getLogger("xprompt_jax")

STAGES = ("stage1", "scores", "curve", "search", "rewind", "final_eval")
MASK_VARIANTS = ("xprompt", "reversed", "random", "length")
ABLATIONS = ("reversed", "random", "length")
PRUNE_LEVELS = ("token", "piece")
CURVE_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _done_path(model_dir: str, stage: str) -> str:
    return os.path.join(model_dir, stage, "DONE.json")


def stage_done(model_dir: str, stage: str) -> Optional[Dict[str, Any]]:
    path = _done_path(model_dir, stage)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class _StageClock:
    """Wall seconds of each stage in this invocation (`report['timings_s']`; a stage
    resumed from its files shows the time to load them), `total` their sum."""

    def __init__(self):
        self._last = time.time()
        self.seconds: Dict[str, float] = {"total": 0.0}

    def mark(self, stage: str) -> None:
        now = time.time()
        self.seconds[stage] = round(now - self._last, 1)
        self.seconds["total"] = round(self.seconds["total"] + now - self._last, 1)
        self._last = now


# Multi-process runs: process 0 (`distributed.is_writer`) writes the pipeline's files (stage
# results, marks, report, plots); every process reads them back after `_sync` (a shared
# MODEL_DIR, as T5X assumes on a pod).


def _sync(name: str) -> None:
    """A barrier across processes (no-op in one process): what process 0 wrote before it
    is visible to all when they pass it."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"xprompt_jax.pipeline:{name}")


def _write_json(path: str, data: Any) -> None:
    if is_writer():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, data)


def _mark_done(model_dir: str, stage: str, info: Mapping[str, Any]) -> None:
    """Marks a stage done (process 0 writes, then all processes meet at a barrier, so that
    none reads a stage's result before it exists)."""
    _write_json(_done_path(model_dir, stage), dict(info))
    _sync(f"{model_dir}/{stage}")


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

    def score_batches(self, seed_offset: int = 0):
        """The importance-scoring examples: one draw of the train split (data seed + 7919),
        reused by the first scoring and every rescoring of the search (`ScoreBatches`:
        no input pipeline per pruning step); `seed_offset` is ignored."""
        from dataclasses import replace

        from .scoring import ScoreBatches

        if getattr(self, "_score_batches", None) is None:
            config = replace(self.trainer.data_config,
                             seed=self.trainer.data_config.seed + 7919)
            self._score_batches = ScoreBatches(lambda: TrainBatchIterator(config))
        return self._score_batches


def run_pipeline(*, model_dir: str, num_score_examples: int = 1024, per_example: bool = True,
                 token_ratios: Sequence[float] = pruning.default_ratios(),
                 piece_ratios: Sequence[float] = pruning.default_ratios(),
                 piece_ranking: str = "per_token", prune_levels: Sequence[str] = PRUNE_LEVELS,
                 mask_variant: str = "xprompt", mask_seed: int = 0,
                 search_include_unpruned: bool = False, ablations: Sequence[str] = (),
                 masking_curve: bool = True, curve_ratios: Sequence[float] = CURVE_RATIOS,
                 curve_random_seeds: int = 3,
                 rewind_each_candidate: bool = False, rewind_steps: Optional[int] = None,
                 rewind_jointly: bool = True,
                 batched_search: bool = True, stage1_init_path: Optional[str] = None,
                 stage1_steps: Optional[int] = None) -> Dict[str, Any]:
    """Runs (or resumes) the pipeline in `model_dir`; returns the report dict.

    `stage1_init_path`: XPrompt transfer - initialise stage 1 from another run's prompt
    (`.npy`, e.g. `<other MODEL_DIR>/rewind/numpy_checkpoints/checkpoint_<step>/prompt.prompt.npy`).
    `ablations`: variants of `ABLATIONS` rewound in addition, from the same stage 1 and
    search, into MODEL_DIR/ablations/<variant>/ (the paper's Figure 5 in one run).
    """
    if mask_variant not in MASK_VARIANTS:
        raise ValueError(f"mask_variant {mask_variant!r}; expected one of {MASK_VARIANTS}")
    ablations = tuple(ablations or ())
    if any(a not in ABLATIONS for a in ablations) or len(set(ablations)) != len(ablations):
        raise ValueError(f"ablations {ablations}; expected distinct values of {ABLATIONS}")
    check_search_settings(token_ratios, piece_ratios, piece_ranking, prune_levels)
    levels = tuple(prune_levels)
    token_ratios = pruning.ratios_checked(token_ratios, "TOKEN_RATIOS")
    piece_ratios = pruning.ratios_checked(piece_ratios, "PIECE_RATIOS")
    curve_ratios = check_curve_ratios(curve_ratios)
    gin_utils.check_required("run_pipeline", {"model_dir": model_dir})
    if is_writer():
        os.makedirs(model_dir, exist_ok=True)
    from ..training import run_lock

    run_lock.acquire(model_dir)  # one pipeline per MODEL_DIR (released at exit)

    overrides: Dict[str, Any] = {}
    if stage1_steps is not None:
        overrides.update(train_steps=stage1_steps, train_epochs=None)
    if stage1_init_path:
        overrides["initial_trainable"] = {"prompt": {"prompt": np.load(stage1_init_path)}}
    clock = _StageClock()
    ctx = PipelineContext(model_dir, overrides)

    # ---- stage 1: prompt tuning
    if stage_done(model_dir, "stage1") is None:
        logger.info("XPrompt stage 1/4: prompt tuning (%s)", ctx.trainer.config.model_dir)
        summary = ctx.trainer.run()
        _mark_done(model_dir, "stage1", {"summary": summary})
    stage1_params, stage1_step = _best_trainable(ctx.trainer)
    clock.mark("stage1")
    stage1_summary = stage_done(model_dir, "stage1")["summary"] or {}
    stage1_eval = stage1_summary.get("best_eval")
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
        _write_json(scores_path, initial.to_json())
        _mark_done(model_dir, "scores", {"num_examples": initial.num_examples})
    with open(scores_path) as f:
        initial = ImportanceScores.from_json(json.load(f))
    clock.mark("scores")

    # ---- masking curve (Figure 2): the stage-1 prompt with tokens masked in three orders
    curve = None
    if masking_curve:
        curve_path = os.path.join(model_dir, "curve", "curve.json")
        if stage_done(model_dir, "curve") is None:
            logger.info("XPrompt masking curve: %d ratios x (importance, reversed, %d random)",
                        len(curve_ratios), curve_random_seeds)
            curve = masking_curve_result(ctx, stage1_params, initial.token, curve_ratios,
                                         curve_random_seeds, batched_search)
            _write_json(curve_path, curve)
            _mark_done(model_dir, "curve", {"ratios": list(curve_ratios)})
        with open(curve_path) as f:
            curve = json.load(f)
        clock.mark("masking_curve")

    # ---- pruning search
    search_path = os.path.join(model_dir, "search", "search.json")
    if stage_done(model_dir, "search") is None:
        logger.info("XPrompt stage 3/4: pruning search (%s)", ", ".join(levels))
        result = search_masks(ctx, scorer, initial, stage1_params, token_ratios, piece_ratios,
                              piece_ranking, levels, num_score_examples, batched_search,
                              rewind_each_candidate, rewind_steps,
                              include_unpruned=search_include_unpruned,
                              rewind_jointly=rewind_jointly)
        result["chosen"] = variant_masks(result, initial, mask_variant, mask_seed)
        _write_json(search_path, result)
        _mark_done(model_dir, "search", {"chosen": result["chosen"].get("name")})
    with open(search_path) as f:
        search_result = json.load(f)
    token_mask = np.asarray(search_result["chosen"]["token_mask"], np.float32)
    piece_mask = np.asarray(search_result["chosen"]["piece_mask"], np.float32)
    clock.mark("search")

    # ---- rewind: survivors reset to stage-1 values, fresh optimizer, masks fixed
    logger.info("XPrompt stage 4/4: rewind and retrain with masks fixed (%s)",
                os.path.join(model_dir, "rewind"))
    final, rewind_steps_run = rewind_and_evaluate(ctx, stage1_params, token_mask, piece_mask,
                                                  model_dir, mask_variant, rewind_steps)
    clock.mark("rewind_and_final_eval")

    ablation_results: Dict[str, Any] = {}
    for variant in ablations:
        base = os.path.join(model_dir, "ablations", variant)
        masks = variant_masks(search_result, initial, variant, mask_seed)
        t, p = (np.asarray(masks["token_mask"], np.float32),
                np.asarray(masks["piece_mask"], np.float32))
        logger.info("XPrompt ablation %r: rewind with %d tokens, %d pieces (%s)", variant,
                    int((t > 0).sum()), kept_pieces(t, p), base)
        result, _ = rewind_and_evaluate(ctx, stage1_params, t, p, base, variant, rewind_steps)
        ablation_results[variant] = {
            "masks": masks, "final_eval": result,
            "surviving_tokens": int((t > 0).sum()), "surviving_pieces": kept_pieces(t, p),
            "parameters": (int((t > 0).sum()) * ctx.embed_dim if variant == "length" else
                           pruning.trainable_parameter_count(t, p, ctx.embed_dim))}

    if ablations:
        clock.mark("ablations")
    evaluator = ctx.trainer.evaluator
    report = {
        "model_dir": model_dir,
        "task": ctx.trainer.data_config.mixture_or_task_name,
        "mask_variant": mask_variant,
        "prune_levels": list(levels),
        "per_example_scores": per_example,
        "num_score_examples": initial.num_examples,
        "prompt_length": m, "num_pieces": k, "embed_dim": ctx.embed_dim,
        "stage1": {"best_step": stage1_step, "eval": stage1_eval,
                   "steps": stage1_summary.get("final_step")},
        "search": search_result,
        "masking_curve": curve,
        "final_eval": final,
        "ablations": ablation_results,
        # Lester et al. section 7: nearest vocabulary pieces of the stage-1 prompt.
        "nearest_tokens": _nearest_tokens(ctx, stage1_params),
        "protocol": protocol(ctx, search_result, stage1_step, rewind_steps_run,
                             token_ratios, piece_ratios, piece_ranking, levels,
                             search_include_unpruned, rewind_each_candidate, mask_variant,
                             getattr(evaluator.main_metric_fn, "name", "task default"),
                             initial.num_examples),
        "parameters": {
            "prompt_tuning": m * ctx.embed_dim,
            "xprompt": pruning.trainable_parameter_count(token_mask, piece_mask, ctx.embed_dim),
            "surviving_tokens": int((token_mask > 0).sum()),
            "surviving_pieces": kept_pieces(token_mask, piece_mask),
        },
    }
    clock.mark("report")
    report["timings_s"] = clock.seconds
    if is_writer():
        report_lib.write_report(model_dir, report, initial, token_mask, piece_mask)
    _sync(f"{model_dir}/report")
    return report


def _nearest_tokens(ctx: PipelineContext, stage1_params):
    from ..training.heldout_eval import trainer_interpretability

    try:
        return trainer_interpretability(ctx.trainer, ctx.trainer.data_config.mixture_or_task_name,
                                        trainable=stage1_params)
    except Exception as e:  # pylint: disable=broad-except  (a report extra)
        logger.warning("nearest-token analysis skipped: %s", e)
        return None


def check_search_settings(token_ratios, piece_ratios, piece_ranking: str, levels) -> None:
    if piece_ranking not in ("global", "per_token"):
        raise ValueError(f"piece_ranking {piece_ranking!r}; expected 'global' or 'per_token'")
    levels = tuple(levels)
    if not levels or any(level not in PRUNE_LEVELS for level in levels):
        raise ValueError(f"prune_levels {levels}; expected a non-empty subset of {PRUNE_LEVELS}")


def check_curve_ratios(ratios: Sequence[float]) -> tuple:
    ratios = tuple(float(r) for r in ratios)
    if (not ratios or any(not 0 <= r < 1 for r in ratios)
            or any(b <= a for a, b in zip(ratios, ratios[1:]))):
        raise ValueError(f"CURVE_RATIOS must be strictly increasing and in [0, 1): {ratios}")
    return ratios


def rewind_and_evaluate(ctx: PipelineContext, stage1_params, token_mask, piece_mask,
                        base_dir: str, mask_variant: str, rewind_steps: Optional[int]):
    """Rewind stage in `base_dir`/rewind and the best rewound prompt's dev result in
    `base_dir`/final_eval (each skipped when done). Returns (result, steps trained)."""
    rewind_trainer = _rewind_trainer(ctx, stage1_params, token_mask, piece_mask,
                                     os.path.join(base_dir, "rewind"), mask_variant,
                                     rewind_steps)
    if stage_done(base_dir, "rewind") is None:
        summary = rewind_trainer.run()
        _mark_done(base_dir, "rewind", {"summary": summary})
    if stage_done(base_dir, "final_eval") is None:
        params, step = _best_trainable(rewind_trainer)
        result = rewind_trainer.evaluate(params)
        result["checkpoint_step"] = step
        _mark_done(base_dir, "final_eval", {"result": result})
    summary = stage_done(base_dir, "rewind")["summary"] or {}
    return stage_done(base_dir, "final_eval")["result"], summary.get(
        "final_step", rewind_trainer.config.num_steps)


def variant_masks(search_result: Mapping[str, Any], scores: ImportanceScores,
                  mask_variant: str, seed: int = 0) -> Dict[str, Any]:
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
    raise ValueError(f"mask_variant {mask_variant!r}; expected one of {MASK_VARIANTS}")


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


def masking_curve_result(ctx: PipelineContext, stage1_params, token_scores,
                         ratios: Sequence[float], random_seeds: int,
                         batched: bool = True) -> Dict[str, Any]:
    """Dev main metric of the stage-1 prompt (no retraining) with round(r * m) tokens
    masked, for each ratio r and order: `importance` (lowest scores first, XPrompt),
    `reversed` (highest first) and `random` (mean over `random_seeds` draws). All
    candidates go through one `search.evaluate_candidates` call."""
    ratios = [r for r in ratios if int(round(r * ctx.length)) < ctx.length]  # keep a token
    candidates = masking_curve_candidates(token_scores, (ctx.length, ctx.pieces), ratios,
                                          random_seeds)
    variables = ctx.trainer.variables(stage1_params)
    with progress_bar(len(candidates), "masking curve: candidates on dev",
                      ctx.trainer.config.progress) as bar:
        results = search.evaluate_candidates(
            ctx.trainer.evaluator, variables,
            [(c["token_mask"], c["piece_mask"]) for c in candidates], batched, bar=bar)
    return curve_from_results(candidates, results, ratios, ctx.length, random_seeds,
                              getattr(ctx.trainer.evaluator.main_metric_fn, "name",
                                      "task default"))


def curve_from_results(candidates, results, ratios, length: int, random_seeds: int,
                       metric_name: str) -> Dict[str, Any]:
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
            "metric": metric_name, "prompt": "stage-1 best checkpoint, no retraining",
            "order_scores": "token importance of the full prompt (one shot)"}


def protocol(ctx: PipelineContext, search_result, stage1_step, rewind_steps_run,
             token_ratios, piece_ratios, piece_ranking, levels, include_unpruned: bool,
             rewind_each_candidate: bool, mask_variant: str, metric_name: str,
             num_score_examples: int = 0) -> Dict[str, Any]:
    """What was searched, retrained and measured, for comparison with the paper (p5).

    `importance_scoring`: the full prompt's scoring, one rescoring of the survivors per
    ratio step of each level (the last ratio of a level needs none) and, before the piece
    level, one scoring on the best token mask, each over
    `num_score_examples` examples; a scored example costs about one trained example (a
    forward and a backward pass to the masks), so `train_step_equivalents` = examples /
    BATCH_SIZE."""
    prompt = ctx.prompt
    steps = {"token": len(token_ratios) - 1, "piece": len(piece_ratios)}
    scorings = 1 + sum(steps[level] for level in levels)
    examples = scorings * int(num_score_examples)
    return {
        "importance_scoring": {
            "scorings": scorings, "examples_each": int(num_score_examples),
            "examples_total": examples,
            "train_step_equivalents": round(examples / ctx.trainer.data_config.batch_size, 1)},
        "levels": list(levels),
        "token_ratios": list(token_ratios) if "token" in levels else [],
        "piece_ratios": list(piece_ratios) if "piece" in levels else [],
        "piece_ranking": piece_ranking,
        "unpruned_candidate": bool(include_unpruned),
        "iterative": True,
        "candidates_scored": ("each retrained from the stage-1 values (rewind) and its best "
                              "dev checkpoint" if rewind_each_candidate else
                              "stage-1 prompt with the mask applied, no retraining"),
        "eval_split": ctx.trainer.evaluator.config.split,
        "eval_mode": ctx.trainer.evaluator.config.mode,
        "main_metric": metric_name,
        "token_prune_mode": getattr(prompt, "token_prune_mode", None),
        "chosen": search_result.get("xprompt", {}).get("name"),
        "mask_variant": mask_variant,
        "rewound_to_stage1_step": stage1_step,
        "rewind_steps": rewind_steps_run,
    }


def _rewind_trainer(ctx: PipelineContext, stage1_params, token_mask, piece_mask, model_dir: str,
                    mask_variant: str, rewind_steps: Optional[int]):
    values = pruning.value_mask(token_mask, piece_mask, ctx.embed_dim)
    overrides: Dict[str, Any] = {"model_dir": model_dir,
                                 "extra_variables": {MASKS: mask_variables(token_mask,
                                                                           piece_mask)},
                                 "update_mask": {"prompt": {"prompt": values}}}
    if rewind_steps is not None:
        overrides.update(train_steps=rewind_steps, train_epochs=None)
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
                 num_examples: int, batched: bool, rewind_each_candidate: bool,
                 rewind_steps: Optional[int], include_unpruned: bool = False,
                 rewind_jointly: bool = True) -> Dict[str, Any]:
    """XPrompt's search (importance order); `record['xprompt']` holds the chosen masks.

    `rewind_each_candidate` with `rewind_jointly` (gin REWIND_JOINTLY, default): all
    candidates of a level retrain in one PromptBank run (`joint_rewind.py`, in
    `rewind_candidates/<level>_joint`); else one run per candidate, one after another."""
    m, k = ctx.length, ctx.pieces
    token_ratios = pruning.reachable_ratios(token_ratios, m, "TOKEN_RATIOS")
    if piece_ranking == "per_token":
        piece_ratios = pruning.reachable_ratios(piece_ratios, k, "PIECE_RATIOS")
    variables = ctx.trainer.variables(stage1_params)

    def evaluate(candidates: List[tuple], names: List[str], level: str):
        if rewind_each_candidate and rewind_jointly:
            from .joint_rewind import joint_rewind_results

            return joint_rewind_results(ctx, stage1_params, candidates, names, os.path.join(
                ctx.model_dir, "rewind_candidates", f"{level}_joint"), rewind_steps)
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
        """Iterative pruning at one level from `start`: one candidate per ratio, rescoring
        the survivors in between (the unpruned `start` is a candidate only when
        `include_unpruned`); evaluates them, records them, returns the best masks."""
        candidates, names, used_ratios = search.candidate_set(
            level, ratios, start, first_scores, prune, include_unpruned,
            rescore=lambda masks, i: scorer.score(*masks, ctx.score_batches(seed_base + i),
                                                  num_examples),
            bar=progress_bar(len(ratios) - 1, f"{level} pruning: rescoring survivors",
                             ctx.trainer.config.progress))
        results = evaluate(candidates, names, level)
        best = search.choose_best(results, [kept_pieces(t, p) for t, p in candidates])
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
                              "unpruned_candidate": bool(include_unpruned)}
    masks = (np.ones(m, np.float32), np.ones((m, k), np.float32))
    if "token" in levels:
        masks = run_level(
            "token", token_ratios, initial, masks, seed_base=1,
            prune=lambda sc, cand, r: (pruning.prune_tokens(sc.token, cand[0], r), cand[1]))
    if "piece" in levels:
        token_mask = masks[0]
        base = kept_pieces(*masks)
        scores = scorer.score(*masks, ctx.score_batches(100), num_examples)
        record["piece_scores_on_best_tokens"] = scores.to_json()
        masks = run_level(
            "piece", piece_ratios, scores, masks, seed_base=101,
            prune=lambda sc, cand, r: (token_mask, pruning.prune_pieces(
                sc.piece, cand[1], token_mask, r, base,
                per_token=piece_ranking == "per_token")))
    record["xprompt"] = {**masks_json(*masks),
                         "name": "+".join(record.get(f"best_{lv}", "") for lv in levels)}
    record["chosen"] = dict(record["xprompt"])
    return record
