"""XPrompt as one `t5x/train.py` run (gin/t5x/xprompt.gin): T5X's `train.trainer_cls` that
owns XPrompt's stages inside T5X's own loop.

T5X's loop calls `trainer.train(batch_iter, num_steps, start_step)` chunk after chunk and
saves `trainer.train_state` (the params and the optimizer state) at its periods. This
trainer (T5X's Trainer plus `t5x_compat`'s SIGTERM stop) splits those chunks where XPrompt
needs to act, and keeps its stage in the checkpoint (the params of `StagedMaskPrompt`):

1. stage 1 (`stage` 1): prompt tuning with all-ones masks until STAGE1_STEPS; after every
   EVAL_PERIOD steps (and at STAGE1_STEPS) the prompt is evaluated on dev with our
   evaluator (EVAL_MODE, MAIN_METRIC, ...); a better one is kept as `stage1_best`;
2. at STAGE1_STEPS (the stage boundary): the importance scores of the best stage-1 prompt
   (`scoring.py`: `jax.grad` over the masks, batches sharded with T5X's partitioner's mesh
   and data axes), the token-then-piece search on dev (`search.py`), both as our pipeline
   and `python -m xprompt_jax.prune` compute them (`XPromptConfig`, gin
   xprompt_settings.gin); then the rewind: the survivors restart from `stage1_best`, the
   masks become the stored masks, the optimizer state is fresh (its step count too; T5X's
   global step goes on);
3. retraining (`stage` 2) with the masks fixed until TRAIN_STEPS.

Files in MODEL_DIR/xprompt/ (through fileio): `stage1_prompt.npy` (the best stage-1
prompt), `scores.json`, `search.json`, `masks.npz`, `rewound_prompt.npy` and
`report.{json,md}` with its plots, as `python -m xprompt_jax.prune` writes them.

Resuming: a rerun of the same command restores MODEL_DIR's latest checkpoint and with it
the stage, the best stage-1 prompt and the masks. A SIGTERM during the boundary's work
stops after the piece that is being computed is saved (`scores.json`, `search.json`); the
rerun reuses those files and goes on. T5X then saves a checkpoint and exits 0 as for any
stop (`t5x_compat.preemptible_trainer`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from typing import Any, Dict, Mapping, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ..errors import ConfigError
from ..evaluation.metrics import metric_name
from ..fileio import absolute, barrier, is_file, is_writer, read_json, save_npy_atomic, \
    write_json_atomic
from ..runs.build import build_evaluator
from ..runs.config import RunConfig
from ..runs.flags import import_task_module
from . import pruning, report as report_lib, search
from .config import XPromptConfig
from .context import XPromptContext
from .fixed_masks import MASKS_FILE, REWOUND_PROMPT_FILE, save_masks
from .scoring import ImportanceScores
from .staged_prompt import (NO_METRIC, STAGE1, STAGE_NOT_STARTED, STAGE_RETRAIN,
                            StagedMaskPrompt)

logger = logging.getLogger("xprompt_jax")

OUTPUT_DIR = "xprompt"
STAGE1_PROMPT_FILE = "stage1_prompt.npy"
_CLASSES: Dict[Any, Any] = {}


def stage1_end(first_step: int, train_steps: int, stage1_steps: Optional[int]) -> int:
    """The absolute step stage 1 ends at: STAGE1_STEPS, or (None) half way from the step
    the run started at to TRAIN_STEPS (the paper retrains as long as stage 1)."""
    end = first_step + (train_steps - first_step) // 2 if stage1_steps is None \
        else int(stage1_steps)
    if not first_step < end < train_steps:
        raise ConfigError(f"XPrompt under t5x/train.py: STAGE1_STEPS={end} must lie between "
                          f"the step the run started at ({first_step}) and TRAIN_STEPS="
                          f"{train_steps} (absolute steps, as TRAIN_STEPS)")
    return end


def _done(result: Any = None) -> concurrent.futures.Future:
    """A finished future, as T5X's `train` returns (its metrics summary)."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result({} if result is None else result)
    return future


def _placed_like(value, old):
    """`value` with the shape and sharding of `old` (a leaf of the state T5X compiled its
    train step for; a restored scalar may come back as `[1]`)."""
    if not hasattr(old, "sharding"):
        return value
    value = np.asarray(value)
    if value.shape != old.shape:
        if value.size != old.size:
            raise ValueError(f"XPrompt: a state leaf of shape {value.shape} does not fit the "
                             f"restored {old.shape}")
        value = value.reshape(old.shape)
    sharding = old.sharding
    if isinstance(sharding, NamedSharding) and len(sharding.spec) > value.ndim:
        # T5X restores some scalars with a rank-1 spec (P(None,)); the same placement
        sharding = NamedSharding(sharding.mesh, PartitionSpec(*sharding.spec[:value.ndim]))
    return jax.device_put(value.astype(old.dtype), sharding)


def _xprompt_trainer_class():
    from .. import t5x_compat

    base = t5x_compat.preemptible_trainer_class()
    if base in _CLASSES:
        return _CLASSES[base]

    from flax.core import frozen_dict

    class XPromptTrainer(base):
        """T5X's Trainer that runs XPrompt's stages (module docstring)."""

        def __init__(self, *, run: RunConfig, config: XPromptConfig,
                     stage1_steps: Optional[int] = None, **kwargs):
            super().__init__(**kwargs)
            module = self._model.module
            self._run = run.replace(model=module)
            self._config = config
            self._stage1_steps = stage1_steps
            self._out = os.path.join(absolute(run.model_dir), OUTPUT_DIR)
            self._evaluator = None
            try:  # T5X's main is not ours: a bad setting is one line, before compiling
                if config.rewind_each_candidate or config.mask_variant == "length":
                    raise ConfigError("XPrompt under t5x/train.py scores candidates without "
                                      "retraining and rewinds the chosen masks: "
                                      "REWIND_EACH_CANDIDATE and MASK_VARIANT='length' need "
                                      "our own pipeline (python -m xprompt_jax.xprompt)")
                if not isinstance(getattr(module, "prompt", None), StagedMaskPrompt):
                    raise ConfigError("gin/t5x/xprompt.gin's trainer needs the "
                                      "StagedMaskPrompt of methods/xprompt.gin (PROMPT)")
                record = self._record()
                first = int(record["first_step"]) if record["stage"] != STAGE_NOT_STARTED \
                    else int(np.asarray(jax.device_get(self.train_state.step)).reshape(-1)[0])
                stage1_end(first, run.trainer.num_steps, stage1_steps)
            except ConfigError as e:
                t5x_compat.refuse(e)

        # ------------------------------------------------------------ the stage record
        def _prompt_params(self) -> Dict[str, np.ndarray]:
            return {k: np.asarray(jax.device_get(v))
                    for k, v in frozen_dict.unfreeze(self.train_state.params)["prompt"].items()}

        def _record(self) -> Dict[str, float]:
            p = self._prompt_params()
            return {k: float(p[k]) for k in ("stage", "first_step", "best_step",
                                             "best_metric")}

        def _set_prompt_params(self, values: Mapping[str, Any], fresh_optimizer=False):
            """Replaces params under `prompt/` (on their shardings); `fresh_optimizer`:
            the optimizer state as at the start (T5X's step count kept)."""
            state = self.train_state
            params = state.params
            tree = frozen_dict.unfreeze(params)
            for name, value in values.items():
                tree["prompt"][name] = _placed_like(value, tree["prompt"][name])
            new = frozen_dict.freeze(tree) if isinstance(params, frozen_dict.FrozenDict) \
                else tree
            if not fresh_optimizer:
                self.train_state = state.replace_params(new)
                return
            optimizer = state._optimizer  # pylint: disable=protected-access
            fresh = optimizer.optimizer_def.init_state(new).param_states
            fresh = jax.tree_util.tree_map(_placed_like, fresh, optimizer.state.param_states)
            optimizer = optimizer.replace(target=new, state=optimizer.state.replace(
                param_states=fresh))
            self.train_state = state.replace(_optimizer=optimizer)

        def _end(self, record) -> int:
            return stage1_end(int(record["first_step"]), self._run.trainer.num_steps,
                              self._stage1_steps)

        def _is_eval_step(self, step: int, record) -> bool:
            period = self._run.trainer.eval_period
            first = int(record["first_step"])
            return step == self._end(record) or bool(period and (step - first) % period == 0)

        def _next_stop(self, step: int, record) -> int:
            """The next step after `step` where stage 1 evaluates (or ends)."""
            end, period = self._end(record), self._run.trainer.eval_period
            if not period:
                return end
            first = int(record["first_step"])
            return min(end, first + ((step - first) // period + 1) * period)

        # ------------------------------------------------------------ T5X's chunk
        def train(self, batch_iter, num_steps: int, start_step: Optional[int] = None):
            from t5x import utils as t5x_utils

            step = int(start_step if start_step is not None else
                       t5x_utils.get_local_data(self.train_state.step))
            end = step + int(num_steps)
            record = self._record()
            if record["stage"] == STAGE_NOT_STARTED:
                record.update(stage=STAGE1, first_step=step)
                stage1_end(step, self._run.trainer.num_steps, self._stage1_steps)  # checked
                self._set_prompt_params({"stage": STAGE1, "first_step": step})
                logger.info("XPrompt stage 1: prompt tuning from step %d to %d (then scores, "
                            "search, rewind; retraining to %d)", step, self._end(record),
                            self._run.trainer.num_steps)
            summary = None
            while step < end:
                if record["stage"] == STAGE1 and step >= self._end(record):
                    if not self._stage_boundary(step, record):
                        return summary if summary is not None else _done()
                    record = self._record()
                    continue
                stop = end if record["stage"] != STAGE1 else min(end, self._next_stop(step,
                                                                                      record))
                summary = super().train(batch_iter, stop - step, step)
                step = stop
                if record["stage"] == STAGE1 and self._is_eval_step(step, record):
                    self._evaluate_stage1(step, record)
                    record = self._record()
            return summary if summary is not None else _done()

        # ------------------------------------------------------------ stage 1
        def _dev_evaluator(self):
            if self._evaluator is None:
                import_task_module(self._run.task_module, self._run.task_name)
                self._evaluator = build_evaluator(self._run)
            return self._evaluator

        def _evaluate_stage1(self, step: int, record) -> None:
            result = self._dev_evaluator().evaluate({"params": self.train_state.params})
            metric = result.get("main_metric")
            better = metric is not None and np.isfinite(metric) and \
                float(metric) > record["best_metric"]
            if better:
                self._set_prompt_params({"stage1_best": self._prompt_params()["prompt"],
                                         "best_step": step, "best_metric": float(metric)})
            best = (step, metric) if better else (int(record["best_step"]),
                                                  record["best_metric"])
            logger.info("XPrompt stage 1: step %d dev %s %s (best: step %d, %s)", step,
                        metric_name(self._dev_evaluator().main_metric_fn), metric, *best)

        # ------------------------------------------------------------ stage boundary
        def _context(self) -> XPromptContext:
            params = frozen_dict.unfreeze(self.train_state.params)
            params["prompt"] = {k: v for k, v in params["prompt"].items() if k != "prompt"}
            partitioner = self._partitioner
            return XPromptContext(
                run=self._run, model_dir=self._out, frozen={"params": params},
                evaluator=self._dev_evaluator(),
                batch_sharding=NamedSharding(partitioner.mesh,
                                             partitioner.data_partition_spec),
                progress=False)

        def _stopped(self, what: str) -> bool:
            if self.stop_training:
                logger.warning("XPrompt: stopping after the %s (saved in %s); rerun the same "
                               "command to go on from there", what, self._out)
                return True
            return False

        def _stage_boundary(self, step: int, record) -> bool:
            """Scores, search and rewind at the end of stage 1; False when a stop request
            ended it early (the finished parts are saved and reused by the rerun)."""
            config = self._config
            tick = time.time()
            p = self._prompt_params()
            best_step = int(record["best_step"])
            if best_step < 0:  # never evaluated to a finite metric: the last prompt
                best_step, stage1_prompt = step, p["prompt"]
            else:
                stage1_prompt = p["stage1_best"]
            trainable = {"prompt": {"prompt": stage1_prompt}}
            ctx = self._context()
            m, k = ctx.length, ctx.pieces
            if is_writer():
                save_npy_atomic(os.path.join(self._out, STAGE1_PROMPT_FILE), stage1_prompt,
                                np.float32)
            scorer = ctx.scorer(trainable, config.per_example)

            scores_path = os.path.join(self._out, "scores.json")
            if is_file(scores_path):
                logger.info("XPrompt stage 2: importance scores reused from %s", scores_path)
            else:
                logger.info("XPrompt stage 2: importance scores of the stage-1 prompt of step "
                            "%d over %d examples", best_step, config.num_score_examples)
                scores = scorer.score(np.ones(m, np.float32), np.ones((m, k), np.float32),
                                      ctx.score_batches(), config.num_score_examples)
                if is_writer():
                    write_json_atomic(scores_path, scores.to_json())
                barrier(f"xprompt_jax.t5x_trainer:{scores_path}")
                if self._stopped("importance scores"):
                    return False
            scores = ImportanceScores.from_json(read_json(scores_path, "XPrompt scores"))
            scoring_s = time.time() - tick

            search_path = os.path.join(self._out, "search.json")
            if is_file(search_path):
                logger.info("XPrompt stage 2: search reused from %s", search_path)
            else:
                logger.info("XPrompt stage 2: token-then-piece search on dev (%s)",
                            ", ".join(config.prune_levels))
                result = search.search_masks(ctx, scorer, scores, trainable, config)
                result["chosen"] = search.variant_masks(result, scores, config.mask_variant,
                                                        config.mask_seed)
                if is_writer():
                    write_json_atomic(search_path, result)
                barrier(f"xprompt_jax.t5x_trainer:{search_path}")
                if self._stopped("search"):
                    return False
            result = read_json(search_path, "XPrompt search table")
            search_s = time.time() - tick - scoring_s

            token_mask = np.asarray(result["chosen"]["token_mask"], np.float32)
            piece_mask = np.asarray(result["chosen"]["piece_mask"], np.float32)
            values = pruning.value_mask(token_mask, piece_mask, ctx.embed_dim)
            rewound = np.where(values > 0, np.asarray(stage1_prompt, np.float32),
                               np.float32(0.0))
            masks_path = os.path.join(self._out, MASKS_FILE)
            prompt_path = os.path.join(self._out, REWOUND_PROMPT_FILE)
            if is_writer():
                save_masks(masks_path, token_mask, piece_mask)
                save_npy_atomic(prompt_path, rewound, np.float32)
            self._set_prompt_params({"prompt": rewound, "token_mask": token_mask,
                                     "piece_mask": piece_mask, "stage": STAGE_RETRAIN},
                                    fresh_optimizer=True)
            logger.info("XPrompt stage 3: rewind to the stage-1 prompt of step %d with %s "
                        "(%d of %d tokens, %d of %d pieces); retraining with the masks "
                        "fixed from step %d to %d", best_step, result["chosen"].get("name"),
                        int(token_mask.sum()), m, search.kept_pieces(token_mask, piece_mask),
                        m * k, step, self._run.trainer.num_steps)
            self._write_report(ctx, scores, result, token_mask, piece_mask, best_step,
                               record, step, {"scores": round(scoring_s, 3),
                                              "search": round(search_s, 3),
                                              "total": round(scoring_s + search_s, 3)})
            return True

        def _write_report(self, ctx, scores, result, token_mask, piece_mask, best_step,
                          record, step, timings) -> None:
            config = self._config
            m, embed_dim = ctx.length, ctx.embed_dim
            report = {
                "model_dir": self._out,
                "task": self._run.task_name,
                "mask_variant": config.mask_variant,
                "prune_levels": list(config.prune_levels),
                "per_example_scores": config.per_example,
                "num_score_examples": scores.num_examples,
                "prompt_length": m, "num_pieces": ctx.pieces, "embed_dim": embed_dim,
                "stage1": {"best_step": best_step,
                           "eval": {"main_metric": None if record["best_metric"] == NO_METRIC
                                    else record["best_metric"]},
                           "first_step": int(record["first_step"]), "last_step": step},
                "search": result,
                "masking_curve": None,
                "protocol": report_lib.protocol(ctx, config, result, best_step, None, False,
                                                metric_name(ctx.evaluator.main_metric_fn),
                                                scores.num_examples),
                "final_eval": {},
                "parameters": report_lib.parameters(token_mask, piece_mask, m, embed_dim),
                "retraining": {"from_step": step, "to_step": self._run.trainer.num_steps},
                "timings_s": timings,
            }
            report_lib.write_report(self._out, report, scores, token_mask, piece_mask)

    _CLASSES[base] = XPromptTrainer
    return XPromptTrainer


def xprompt_trainer(*, run: RunConfig, config: XPromptConfig = XPromptConfig(),
                    stage1_steps: Optional[int] = None, **kwargs):
    """T5X's `train.trainer_cls` for XPrompt in one `t5x/train.py` run (module docstring).

    `run`: our run settings of gin/t5x/xprompt.gin (task, feature lengths, BATCH_SIZE and
    RANDOM_SEED of the scoring examples, EVAL_* of the dev evaluation, TRAIN_STEPS,
    EVAL_PERIOD); `config`: XPROMPT (xprompt_settings.gin); `stage1_steps`: STAGE1_STEPS,
    the absolute step stage 1 ends at (None: half way to TRAIN_STEPS). The other arguments
    are T5X's `trainer.Trainer`'s."""
    return _xprompt_trainer_class()(run=run, config=config, stage1_steps=stage1_steps,
                                    **kwargs)
