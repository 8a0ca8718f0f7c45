"""XPrompt's faithful search, fast: all candidates of a level retrained in one run.

With `REWIND_EACH_CANDIDATE=True` every candidate (token or piece masks at one ratio) is
rewound and retrained before it is scored on dev (the paper's stated cost). Instead of C
runs one after another, `joint_rewind_results` trains the C candidates as the C entries
of one `PromptBank` of the stage-1 `MaskedSoftPrompt`:

- entry c has its own masks (`prompt_masks/prompt/bank/{token,piece}_mask` `[C, ...]`),
  starts from the same stage-1 values (times its value mask) and has its own optimizer
  state (`bank_training.per_prompt_optimizer`), with updates of pruned values masked off;
- every training batch holds each example once per candidate (`BankBatches('ensemble')`)
  and each candidate's loss is its own token mean, so it sees exactly the batches and the
  gradients of its run alone (same data seed);
- all candidates are scored on dev in one batch at every evaluation
  (`BankEvaluator`); each candidate's result is its best evaluation (the earliest of equal
  ones), as a separate run's best checkpoint would be.

Equal to retraining each candidate alone up to float summation order (tests: atol 1e-5 on
the retrained prompts) when dropout is off (the world's default; with dropout the
candidates draw different, equally distributed masks) and without early stopping
(PATIENCE stops the joint run on the candidates' mean).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..prompts.bank import PromptBank
from . import pruning
from .masked_prompt import MASKS


def joint_rewind_trainer(ctx, stage1_params, candidates: Sequence[Tuple[np.ndarray, np.ndarray]],
                         names: Sequence[str], model_dir: str, rewind_steps: Optional[int]):
    """The trainer of all `candidates` ((token mask `[m]`, piece mask `[m, k]`) pairs)."""
    from .pipeline import _build

    token = np.stack([np.asarray(t, np.float32) for t, _ in candidates])       # [C, m]
    piece = np.stack([np.asarray(p, np.float32) for _, p in candidates])       # [C, m, k]
    values = np.stack([pruning.value_mask(t, p, ctx.embed_dim)
                       for t, p in candidates]).astype(np.float32)            # [C, m, e]
    stage1 = np.asarray(stage1_params["prompt"]["prompt"], np.float32)        # [m, e]
    model = ctx.model.clone(prompt=PromptBank(ctx.prompt.clone(), num_prompts=len(candidates)))
    overrides: Dict[str, Any] = {
        "model_dir": model_dir, "model": model,
        "extra_variables": {MASKS: {"prompt": {"bank": {"token_mask": token,
                                                        "piece_mask": piece}}}},
        "update_mask": {"prompt": {"bank": {"prompt": values}}},
        "initial_trainable": {"prompt": {"bank": {"prompt": stage1[None] * values}}},
        "prompt_names": list(names), "bank_mode": "ensemble"}
    if rewind_steps is not None:
        overrides.update(train_steps=rewind_steps, train_epochs=None)
    return _build(**overrides)


def per_candidate_best(model_dir: str, names: Sequence[str], main_metric_fn) -> List[Dict]:
    """Each candidate's best dev evaluation of the joint run (from its metrics.jsonl, so a
    resumed run's earlier evaluations count): {'main_metric', 'metrics', 'step'}."""
    evals = []
    path = os.path.join(model_dir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if record.get("split") == "eval":
                    evals.append(record)
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


def joint_rewind_results(ctx, stage1_params, candidates, names, model_dir: str,
                         rewind_steps: Optional[int]) -> List[Dict[str, Any]]:
    """Retrains all candidates jointly in `model_dir` (resumable) and returns their dev
    results in order (as the sequential path's `best_eval`s)."""
    trainer = joint_rewind_trainer(ctx, stage1_params, candidates, names, model_dir,
                                   rewind_steps)
    trainer.run()
    return per_candidate_best(model_dir, names, trainer.evaluator.main_metric_fn)
