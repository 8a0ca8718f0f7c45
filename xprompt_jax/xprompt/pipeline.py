"""The XPrompt pipeline: stage 1 prompt tuning -> importance scores -> masking curve ->
token then piece pruning search -> rewind -> final evaluation [-> ablations] -> report.

Every stage writes its artifacts under MODEL_DIR/<stage>/ and a `DONE.json` marker when it
finishes (`stages.py`); a rerun skips finished stages and resumes an unfinished training
stage from its last checkpoint. Stage 1 and every rewind are trainers of the same run
(`runs.build_trainer`), so they share the recipe; what differs (MODEL_DIR, masks, the
rewound prompt, steps) is passed in code. The stages and their settings: `search.py`
(token then piece candidates), `curve.py` (the paper's Figure 2), `rewind.py` (stage 3,
also every candidate retrained jointly), `report.py`, `config.py` (`XPromptConfig`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Sequence

import numpy as np

from .. import gin_utils, interrupts
from ..errors import ConfigError
from ..evaluation.metrics import metric_name
from ..fileio import barrier, is_writer, read_json, read_npy
from ..runs.build import build_trainer
from ..runs.flags import import_task_module
from ..runs.config import RunConfig
from ..runs.report import SectionFn
from ..training import run_lock
from ..training.run_logging import progress_bar
from ..runs.config_record import check_config
from . import pruning, report as report_lib, rewind, search, stages
from .config import XPromptConfig
from .context import XPromptContext
from .curve import masking_curve_result
from .scoring import ImportanceScores
from .stages import StageClock, mark_done, stage_done, write_result

logger = logging.getLogger("xprompt_jax")

STAGES = ("stage1", "scores", "curve", "search", "rewind", "final_eval")


def run_pipeline(run: RunConfig, config: XPromptConfig = XPromptConfig(),
                 report_sections: Sequence[SectionFn] = (), config_text: str = "",
                 allow_config_change: bool = False) -> Dict[str, Any]:
    """Runs (or resumes) the pipeline in `run.model_dir`; returns the report dict.

    `config.stage1_init_path`: XPrompt transfer - stage 1 starts from another run's prompt
    (`.npy`, e.g. `<other MODEL_DIR>/rewind/numpy_checkpoints/checkpoint_<step>/
    prompt.prompt.npy`). `config.ablations`: variants of `config.ABLATIONS` rewound in
    addition, from the same stage 1 and search, into MODEL_DIR/ablations/<variant>/ (the
    paper's Figure 5 in one run). `report_sections`: functions of the finished report that
    add sections to report.md / report.json (e.g. the quickstart's summary).

    `config_text` (the parsed gin, as `train` takes it): a rerun reuses a finished stage only
    while what it was computed from is unchanged (`stages.stage_inputs`). Stage 1 with other
    run settings is refused like a training resume (`--allow_config_change` accepts and
    records the change); a later stage whose settings changed is redone, with every stage
    after it, and its earlier folder kept as `<stage>.superseded_<n>`."""
    model_dir = run.model_dir
    gin_utils.check_required("run_pipeline", {"model_dir": model_dir})
    if run.sweep is not None:  # every stage trains and prunes one prompt, not a bank
        raise ConfigError("SWEEP: the XPrompt pipeline does not train sweeps yet; sweep "
                          "prompt tuning with python -m xprompt_jax.train --sweep=...")
    import_task_module(run.task_module, run.task_name)  # a mistyped task: before any folder
    if is_writer():
        os.makedirs(model_dir, exist_ok=True)
    run_lock.acquire(model_dir)  # one pipeline per MODEL_DIR (released at exit)

    stage_names = ["stage1", "scores"] + (["curve"] if config.masking_curve else []) + [
        "search", "rewind"] + [f"ablations/{v}" for v in config.ablations]
    inputs = stages.stage_inputs(config_text, config, stage_names)
    stage1_dir = os.path.join(model_dir, "stage1")
    write_stage1_record = check_config(stage1_dir, stages.stage1_record(config_text, config),
                                       _stage1_step(stage1_dir), allow_config_change)

    initial = None
    if config.stage1_init_path:
        initial = {"prompt": {"prompt": read_npy(config.stage1_init_path,
                                                 "stage-1 init prompt file")}}
    clock = StageClock()
    stage1_run = rewind.stage_run(run, os.path.join(model_dir, "stage1"),
                                     config.stage1_steps)
    trainer = build_trainer(stage1_run, initial_trainable=initial)
    trainer.after_restore = write_stage1_record  # once stage 1's checkpoint restored
    ctx = XPromptContext.from_trainer(run, trainer, model_dir)

    # ---- stage 1: prompt tuning
    if stage_done(model_dir, "stage1") is None:
        logger.info("XPrompt stage 1/4: prompt tuning (%s)", trainer.config.model_dir)
        mark_done(model_dir, "stage1", {"summary": trainer.run()})
    stage1_params, stage1_step = rewind.best_trainable(trainer)
    write_stage1_record()  # (a finished stage 1 is not rerun: its best checkpoint restored)
    # Only now, with stage 1 restored under these settings: later stages whose inputs
    # changed are set aside (a refused or failed change leaves them as they were).
    stages.record_inputs(model_dir, "stage1", inputs["stage1"])
    for stage, changes, kept in stages.supersede_changed(model_dir, inputs):
        logger.warning("XPrompt: %s changed since stage %r ran: redoing it; the earlier "
                       "result is kept in %s", ", ".join(changes), stage,
                       ", ".join(kept) or "(process 0's copy)")
    clock.mark("stage1")
    stage1_summary = dict(stage_done(model_dir, "stage1")["summary"] or {})
    if stage1_summary.get("best_step") not in (None, stage1_step):  # its best is unreadable
        stage1_summary["best_eval"] = (trainer.checkpointer.restore_meta(stage1_step)
                                       or {}).get("eval")
    m, k = ctx.length, ctx.pieces
    scorer = ctx.scorer(stage1_params, config.per_example)

    # ---- importance scores of the full prompt
    scores_path = os.path.join(model_dir, "scores", "scores.json")
    if stage_done(model_dir, "scores") is None:
        with _stage(model_dir, "stage 2 (importance scores)"):
            stages.record_inputs(model_dir, "scores", inputs["scores"])
            n = config.num_score_examples
            logger.info("XPrompt stage 2/4: importance scores over %d examples", n)
            with progress_bar(n, "importance scores: examples", ctx.progress) as bar:
                scores = scorer.score(np.ones(m, np.float32), np.ones((m, k), np.float32),
                                      ctx.score_batches(), n, bar)
            write_result(scores_path, scores.to_json())
            mark_done(model_dir, "scores", {"num_examples": scores.num_examples})
    scores = ImportanceScores.from_json(read_json(scores_path, "XPrompt importance scores"))
    clock.mark("scores")

    # ---- masking curve (Figure 2): the stage-1 prompt with tokens masked in three orders
    curve = None
    if config.masking_curve:
        curve_path = os.path.join(model_dir, "curve", "curve.json")
        if stage_done(model_dir, "curve") is None:
            with _stage(model_dir, "the masking curve"):
                stages.record_inputs(model_dir, "curve", inputs["curve"])
                logger.info("XPrompt masking curve: %d ratios x (importance, reversed, %d random)",
                            len(config.curve_ratios), config.curve_random_seeds)
                write_result(curve_path, masking_curve_result(
                    ctx, stage1_params, scores.token, config.curve_ratios,
                    config.curve_random_seeds, config.batched_search))
                mark_done(model_dir, "curve", {"ratios": list(config.curve_ratios)})
        curve = read_json(curve_path, "XPrompt masking curve")
        clock.mark("masking_curve")

    # ---- pruning search
    search_path = os.path.join(model_dir, "search", "search.json")
    if stage_done(model_dir, "search") is None:
        with _stage(model_dir, "stage 3 (pruning search)"):
            stages.record_inputs(model_dir, "search", inputs["search"])
            logger.info("XPrompt stage 3/4: pruning search (%s)", ", ".join(config.prune_levels))
            result = search.search_masks(ctx, scorer, scores, stage1_params, config,
                                         config.rewind_each_candidate)
            result["chosen"] = search.variant_masks(result, scores, config.mask_variant,
                                                    config.mask_seed)
            write_result(search_path, result)
            mark_done(model_dir, "search", {"chosen": result["chosen"].get("name")})
    search_result = read_json(search_path, "XPrompt search table")
    token_mask = np.asarray(search_result["chosen"]["token_mask"], np.float32)
    piece_mask = np.asarray(search_result["chosen"]["piece_mask"], np.float32)
    clock.mark("search")

    # ---- rewind: survivors reset to stage-1 values, fresh optimizer, masks fixed
    logger.info("XPrompt stage 4/4: rewind and retrain with masks fixed (%s)",
                os.path.join(model_dir, "rewind"))
    stages.record_inputs(model_dir, "rewind", inputs["rewind"])
    final, rewind_steps_run = rewind.rewind_and_evaluate(
        ctx, stage1_params, token_mask, piece_mask, model_dir, config.mask_variant,
        config.rewind_steps)
    clock.mark("rewind_and_final_eval")
    ablations = _ablations(ctx, stage1_params, search_result, scores, config, inputs)
    if config.ablations:
        clock.mark("ablations")

    report = {
        "model_dir": model_dir,
        "task": run.task_name,
        "mask_variant": config.mask_variant,
        "prune_levels": list(config.prune_levels),
        "per_example_scores": config.per_example,
        "num_score_examples": scores.num_examples,
        "prompt_length": m, "num_pieces": k, "embed_dim": ctx.embed_dim,
        "stage1": {"best_step": stage1_step, "eval": stage1_summary.get("best_eval"),
                   "steps": stage1_summary.get("final_step")},
        "search": search_result,
        "masking_curve": curve,
        "final_eval": final,
        "ablations": ablations,
        # Lester et al. section 7: nearest vocabulary pieces of the stage-1 prompt.
        "nearest_tokens": report_lib.nearest_tokens(ctx, stage1_params),
        "protocol": report_lib.protocol(
            ctx, config, search_result, stage1_step, rewind_steps_run,
            config.rewind_each_candidate, metric_name(ctx.evaluator.main_metric_fn),
            scores.num_examples),
        "parameters": report_lib.parameters(token_mask, piece_mask, m, ctx.embed_dim),
    }
    clock.mark("report")
    report["timings_s"] = clock.seconds
    report = report_lib.write_report(model_dir, report, scores, token_mask, piece_mask,
                                     report_sections)
    barrier(f"xprompt_jax.pipeline:{model_dir}/report")
    return report


def _stage(model_dir: str, what: str):
    """The phase a signal names: the finished stages are kept and a rerun goes on."""
    return interrupts.phase(f"XPrompt {what}", f"the finished stages are kept in "
                            f"{model_dir}; rerun the same command to continue from this "
                            "stage")


def _stage1_step(stage1_dir: str):
    """Stage 1's latest checkpoint step (None before its first)."""
    if not os.path.isdir(os.path.join(stage1_dir, "checkpoints")):
        return None
    from ..training.checkpointing import RunCheckpointer

    with RunCheckpointer(stage1_dir, read_only=True) as checkpointer:
        return checkpointer.latest_step()


def _ablations(ctx: XPromptContext, stage1_params, search_result, scores,
               config: XPromptConfig, inputs) -> Dict[str, Any]:
    """Each variant of `config.ablations` rewound from the same stage 1 and search."""
    out: Dict[str, Any] = {}
    for variant in config.ablations:
        base = os.path.join(ctx.model_dir, "ablations", variant)
        stages.record_inputs(ctx.model_dir, f"ablations/{variant}",
                             inputs[f"ablations/{variant}"])
        masks = search.variant_masks(search_result, scores, variant, config.mask_seed)
        t, p = (np.asarray(masks["token_mask"], np.float32),
                np.asarray(masks["piece_mask"], np.float32))
        logger.info("XPrompt ablation %r: rewind with %d tokens, %d pieces (%s)", variant,
                    int((t > 0).sum()), search.kept_pieces(t, p), base)
        result, _ = rewind.rewind_and_evaluate(ctx, stage1_params, t, p, base, variant,
                                               config.rewind_steps)
        out[variant] = {
            "masks": masks, "final_eval": result,
            "surviving_tokens": int((t > 0).sum()),
            "surviving_pieces": search.kept_pieces(t, p),
            "parameters": (int((t > 0).sum()) * ctx.embed_dim if variant == "length" else
                           pruning.trainable_parameter_count(t, p, ctx.embed_dim))}
    return out
