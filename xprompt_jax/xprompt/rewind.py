"""Rewinding (the paper's stage 3): the surviving prompt values reset to the best stage-1
prompt, the optimizer state and schedule reset, the same recipe, masks fixed, retrained.

`rewind_trainer` builds one rewind (a mask variant's masks: fixed `prompt_masks`, the
stage-1 prompt times the value mask, updates of pruned values masked off; 'length' is a
fresh prompt of the surviving length). `rewind_and_evaluate` runs it and scores its best
checkpoint on dev, each step skipped when done.

XPrompt's faithful search, fast (`joint_rewind_results`): with `rewind_each_candidate`
every candidate is retrained before it is scored. Instead of C runs one after another, the
C candidates train as the C entries of one `PromptBank` of the stage-1 `MaskedSoftPrompt`:
entry c has its own masks (`prompt_masks/prompt/bank/{token,piece}_mask` `[C, ...]`),
starts from the same stage-1 values (times its value mask) and has its own optimizer state
(`bank_training.per_prompt_optimizer`); every batch holds each example once per candidate
and each candidate's loss is its own token mean, so it sees exactly the batches and
gradients of its run alone (same data seed); each candidate's result is its best evaluation
(the earliest of equal ones), as a separate run's best checkpoint would be. Equal to
retraining each candidate alone up to float summation order (tests: atol 1e-5 on the
retrained prompts) when dropout is off and without early stopping (PATIENCE stops the joint
run on the candidates' mean).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from ..errors import CheckpointError
from ..prompts.bank import PromptBank
from ..runs.build import build_trainer
from ..training.bank_training import BankConfig
from ..training.run_logging import METRICS_FILE, read_metrics
from . import pruning
from .context import XPromptContext
from .masked_prompt import MASKS
from .scoring import mask_variables
from .stages import mark_done, stage_done


def best_trainable(trainer) -> Tuple[Dict[str, Any], int]:
    """Trainable params of the run's best checkpoint (latest if no eval was recorded)."""
    restored = trainer.restore_best()  # an unreadable best gives way to the next best
    if restored is None:
        raise CheckpointError(f"no checkpoint in {trainer.config.model_dir}")
    return jax.device_get(trainer.state.params), restored[0]


def stage_run(run, model_dir: str, steps: Optional[int], **changes):
    """`run` (the stage-1 run) in `model_dir`, with `steps` training steps when given and
    other `changes` (e.g. a model with another prompt module)."""
    run = run.with_model_dir(model_dir).replace(**changes)
    if steps is not None:
        run = run.with_trainer(num_steps=steps).replace(train_epochs=None)
    return run


def rewind_trainer(ctx: XPromptContext, stage1_params, token_mask, piece_mask,
                   model_dir: str, mask_variant: str, rewind_steps: Optional[int]):
    """The trainer of one rewind in `model_dir` (module docstring)."""
    if mask_variant == "length":
        # A fresh prompt with the surviving token count (no masks, no rewound values).
        length = int((token_mask > 0).sum())
        model = ctx.model.clone(prompt=ctx.prompt.clone(length=length))
        return build_trainer(stage_run(ctx.run, model_dir, rewind_steps, model=model))
    values = pruning.value_mask(token_mask, piece_mask, ctx.embed_dim)
    initial = np.asarray(stage1_params["prompt"]["prompt"]) * values
    return build_trainer(stage_run(ctx.run, model_dir, rewind_steps),
                         extra_variables={MASKS: mask_variables(token_mask, piece_mask)},
                         update_mask={"prompt": {"prompt": values}},
                         initial_trainable={"prompt": {"prompt": initial}})


def rewind_and_evaluate(ctx: XPromptContext, stage1_params, token_mask, piece_mask,
                        base_dir: str, mask_variant: str, rewind_steps: Optional[int]):
    """Rewind stage in `base_dir`/rewind and the best rewound prompt's dev result in
    `base_dir`/final_eval (each skipped when done). Returns (result, steps trained)."""
    trainer = rewind_trainer(ctx, stage1_params, token_mask, piece_mask,
                             os.path.join(base_dir, "rewind"), mask_variant, rewind_steps)
    if stage_done(base_dir, "rewind") is None:
        summary = trainer.run()
        mark_done(base_dir, "rewind", {"summary": summary})
    if stage_done(base_dir, "final_eval") is None:
        params, step = best_trainable(trainer)
        result = trainer.evaluate(params)
        result["checkpoint_step"] = step
        mark_done(base_dir, "final_eval", {"result": result})
    summary = stage_done(base_dir, "rewind")["summary"] or {}
    return stage_done(base_dir, "final_eval")["result"], summary.get(
        "final_step", trainer.config.num_steps)


def sequential_rewind_results(ctx: XPromptContext, stage1_params, candidates, names,
                              base_dir: str, rewind_steps: Optional[int]) -> List[Dict]:
    """Each candidate rewound alone, one run after another (`base_dir/<name>`)."""
    results = []
    for (t, p), name in zip(candidates, names):
        trainer = rewind_trainer(ctx, stage1_params, t, p, os.path.join(base_dir, name),
                                 "xprompt", rewind_steps)
        summary = trainer.run()
        results.append(summary.get("best_eval") or {"main_metric": None})
    return results


def joint_rewind_trainer(ctx: XPromptContext, stage1_params,
                         candidates: Sequence[Tuple[np.ndarray, np.ndarray]],
                         names: Sequence[str], model_dir: str, rewind_steps: Optional[int]):
    """The trainer of all `candidates` ((token mask `[m]`, piece mask `[m, k]`) pairs)."""
    token = np.stack([np.asarray(t, np.float32) for t, _ in candidates])       # [C, m]
    piece = np.stack([np.asarray(p, np.float32) for _, p in candidates])       # [C, m, k]
    values = np.stack([pruning.value_mask(t, p, ctx.embed_dim)
                       for t, p in candidates]).astype(np.float32)            # [C, m, e]
    stage1 = np.asarray(stage1_params["prompt"]["prompt"], np.float32)        # [m, e]
    model = ctx.model.clone(prompt=PromptBank(ctx.prompt.clone(), num_prompts=len(candidates)))
    run = stage_run(ctx.run, model_dir, rewind_steps, model=model,
                    bank=BankConfig(mode="ensemble", prompt_names=tuple(names)))
    return build_trainer(
        run, extra_variables={MASKS: {"prompt": {"bank": {"token_mask": token,
                                                          "piece_mask": piece}}}},
        update_mask={"prompt": {"bank": {"prompt": values}}},
        initial_trainable={"prompt": {"bank": {"prompt": stage1[None] * values}}})


def per_candidate_best(model_dir: str, names: Sequence[str], main_metric_fn) -> List[Dict]:
    """Each candidate's best dev evaluation of the joint run (from its metrics.jsonl, so a
    resumed run's earlier evaluations count): {'main_metric', 'metrics', 'step'}."""
    evals = [record for record in read_metrics(os.path.join(model_dir, METRICS_FILE))
             if record.get("split") == "eval"]
    best: List[Dict[str, Any]] = [{"main_metric": None} for _ in names]
    seen = set()
    for record in evals:
        step = record.get("step")
        if step in seen:  # a resumed run may log a step twice: keep the first
            continue
        seen.add(step)
        for c, name in enumerate(names):
            metrics = {k[len(name) + 1:]: v for k, v in record.items()
                       if k.startswith(name + "/")}
            if not metrics:
                continue
            main = main_metric_fn(metrics)
            if main is None or not np.isfinite(main):
                continue
            if best[c]["main_metric"] is None or main > best[c]["main_metric"]:
                best[c] = {"main_metric": float(main), "metrics": metrics, "step": step}
    return best


def joint_rewind_results(ctx: XPromptContext, stage1_params, candidates, names,
                         model_dir: str, rewind_steps: Optional[int]) -> List[Dict[str, Any]]:
    """Retrains all candidates jointly in `model_dir` (resumable) and returns their dev
    results in order (as the sequential path's `best_eval`s)."""
    trainer = joint_rewind_trainer(ctx, stage1_params, candidates, names, model_dir,
                                   rewind_steps)
    trainer.run()
    return per_candidate_best(model_dir, names, ctx.evaluator.main_metric_fn)
