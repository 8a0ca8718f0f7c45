"""The prompt-tuning trainer: frozen T5 + trainable prompt, jitted and sharded.

`Trainer.run()` restores from MODEL_DIR if a checkpoint exists, trains to `num_steps`,
evaluates every `eval_period` steps (best checkpoint by the task's main metric, early
stopping after `patience` evaluations without improvement), checkpoints every
`save_period` steps (orbax, atomic; numpy prompt export), and logs (JSONL, TensorBoard,
progress bar). XPrompt and EPT reuse it: `extra_variables` carries non-trainable
collections such as `prompt_masks`, `initial_trainable` overrides the prompt's initial
values (rewinding), `update_mask` zeroes updates of pruned entries.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import partitioning
from .checkpointing import RunCheckpointer
from .data import DataConfig, TrainBatchIterator
from .evaluation import Evaluator
from .params import DEFAULT_TRAINABLE_REGEX, cast_tree, count_params, merge_params, split_params
from .run_logging import RunLogger
from .train_step import LossConfig, TrainState, jit_train_step, make_train_step

logger = logging.getLogger("xprompt_jax")


@dataclasses.dataclass
class TrainerConfig:
    """Run settings (T5X names in comments: TRAIN_STEPS, EVAL_PERIOD, ...)."""

    model_dir: str
    num_steps: int = 30000                 # TRAIN_STEPS
    eval_period: Optional[int] = 1000      # EVAL_PERIOD (None: no periodic eval)
    save_period: Optional[int] = None      # defaults to eval_period
    keep_checkpoints: int = 3              # keep N plus the best
    patience: Optional[int] = None         # evaluations without improvement before stopping
    log_period: int = 10
    seed: int = 0
    trainable_regex: str = DEFAULT_TRAINABLE_REGEX
    frozen_dtype: Optional[str] = None     # e.g. 'bfloat16'
    num_microbatches: int = 1
    mesh_shape: tuple = (-1, 1)
    activation_partitioning_dims: int = 1
    parameter_partitioning_dims: int = 1
    save_numpy: bool = True
    progress: Optional[bool] = None        # None: progress bar only on a terminal


def dummy_batch(feature_lengths: Mapping[str, int], batch_size: int = 1) -> Dict[str, jnp.ndarray]:
    enc = jnp.ones((batch_size, feature_lengths["inputs"]), jnp.int32)
    dec = jnp.ones((batch_size, feature_lengths["targets"]), jnp.int32)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": dec}


def init_variables(model, pretrained_params: Optional[Mapping[str, Any]],
                   feature_lengths: Mapping[str, int], rng: jax.Array) -> Dict[str, Any]:
    """Variables of `model` with `pretrained_params` in place; only missing parameters (the
    prompt) are freshly initialized (no throw-away init of the frozen model)."""
    batch = dummy_batch(feature_lengths)
    args = (batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"])
    if pretrained_params is None:
        return dict(jax.jit(lambda r: model.init(r, *args, enable_dropout=False))(rng))

    def fill(params, r):
        _, variables = model.apply({"params": params}, *args, enable_dropout=False,
                                   mutable=True, rngs={"params": r})
        return variables

    variables = jax.jit(fill)(pretrained_params, rng)
    abstract = jax.eval_shape(lambda r: model.init(r, *args, enable_dropout=False), rng)
    _check_shapes(variables["params"], abstract["params"])
    return dict(variables)


def _check_shapes(params, expected):
    from .params import flatten

    got, want = flatten(params), flatten(expected)
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    if missing or unexpected:
        raise ValueError(f"pretrained parameters do not match the model: missing {missing[:10]}, "
                         f"unexpected {unexpected[:10]}")
    for key, spec in want.items():
        if tuple(got[key].shape) != tuple(spec.shape):
            raise ValueError(f"parameter {key}: checkpoint shape {tuple(got[key].shape)} != "
                             f"model shape {tuple(spec.shape)}")


class Trainer:
    """Trains the trainable subtree of a (prompted) model; see module docstring."""

    def __init__(self, model, optimizer: optax.GradientTransformation, data_config: DataConfig,
                 config: TrainerConfig, *, pretrained_params: Optional[Mapping[str, Any]] = None,
                 evaluator: Optional[Evaluator] = None,
                 loss_config: LossConfig = LossConfig(),
                 extra_variables: Optional[Mapping[str, Any]] = None,
                 initial_trainable: Optional[Mapping[str, Any]] = None,
                 update_mask: Optional[Mapping[str, Any]] = None,
                 step_callback: Optional[Callable[[int, Dict[str, Any]], None]] = None):
        self.model = model
        self.config = config
        self.data_config = data_config
        self.evaluator = evaluator
        self.step_callback = step_callback
        self.mesh = partitioning.make_mesh(config.mesh_shape)
        self.rules = partitioning.standard_logical_axis_rules(
            config.activation_partitioning_dims, config.parameter_partitioning_dims)
        if update_mask is not None:
            optimizer = optax.chain(optimizer, _mask_updates(update_mask))
        self.optimizer = optimizer

        rng = jax.random.PRNGKey(config.seed)
        init_rng, self.dropout_rng = jax.random.split(rng)
        with partitioning.activate(self.mesh, self.rules):
            variables = init_variables(model, pretrained_params, data_config.task_feature_lengths,
                                       init_rng)
        params_axes = variables.pop("params_axes", {})
        variables.pop("cache", None)
        params = variables.pop("params")
        self.extra_variables = dict(extra_variables or {})
        for name, value in variables.items():  # e.g. prompt_masks created at init
            self.extra_variables.setdefault(name, value)
        trainable, frozen = split_params(params, config.trainable_regex)
        if initial_trainable is not None:
            trainable = jax.tree_util.tree_map(lambda a, b: jnp.asarray(b, a.dtype), trainable,
                                               dict(initial_trainable))
        frozen = cast_tree(frozen, config.frozen_dtype)
        self.num_trainable = count_params(trainable)
        self.num_frozen = count_params(frozen)

        # Shardings from the logical axes (prompt axes replicated; opt state replicated).
        self.replicated = partitioning.replicated(self.mesh)
        trainable_sh = partitioning.param_shardings(trainable, params_axes, self.mesh, self.rules)
        frozen_sh = partitioning.param_shardings(frozen, params_axes, self.mesh, self.rules)
        self.frozen = {"params": jax.device_put(frozen, frozen_sh)}
        frozen_shardings = {"params": frozen_sh}
        for name, value in self.extra_variables.items():
            self.frozen[name] = jax.device_put(value, self.replicated)
            frozen_shardings[name] = jax.tree_util.tree_map(lambda _: self.replicated, value)
        state = TrainState.create(jax.device_put(trainable, trainable_sh), optimizer)
        self.state_shardings = TrainState(
            step=self.replicated, params=trainable_sh,
            opt_state=jax.tree_util.tree_map(lambda _: self.replicated, state.opt_state))
        self.state = jax.device_put(state, self.state_shardings)
        self.frozen_shardings = frozen_shardings
        self.batch_sharding = partitioning.batch_sharding(self.mesh)
        step_fn = make_train_step(model, optimizer, loss_config, config.num_microbatches)
        self._step = jit_train_step(step_fn, self.state_shardings, frozen_shardings,
                                    self.batch_sharding, self.replicated)
        self.checkpointer = RunCheckpointer(
            os.path.join(config.model_dir), keep=config.keep_checkpoints, keep_best=True,
            best_mode="max", save_numpy=config.save_numpy, numpy_suffix=".npy")

    # ------------------------------------------------------------------ helpers
    def variables(self, trainable=None) -> Dict[str, Any]:
        """Full variables dict (frozen + current or given trainable params)."""
        trainable = self.state.params if trainable is None else trainable
        out = dict(self.frozen)
        out["params"] = merge_params(trainable, self.frozen["params"])
        return out

    def _global_batch(self, local_batch: Mapping[str, np.ndarray]):
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
                for k, v in local_batch.items()}

    def _collections(self) -> Dict[str, Any]:
        """Non-trainable collections saved with the run (e.g. XPrompt's prompt_masks)."""
        return {name: value for name, value in self.frozen.items() if name != "params"}

    def _abstract_payload(self):
        abstract = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
        train = jax.tree_util.tree_map(abstract, self.state, self.state_shardings)
        collections = jax.tree_util.tree_map(lambda x: abstract(x, self.replicated),
                                             self._collections())
        return run_payload(train, collections)

    def restore(self, step: Optional[int] = None) -> Optional[Dict[str, Any]]:
        """Restores the latest (or given) checkpoint into the trainer (train state and the
        saved collections, e.g. masks); returns its meta."""
        if self.checkpointer.latest_step() is None:
            return None
        restored = self.checkpointer.restore(step, target=self._abstract_payload())
        if restored is None:
            return None
        payload, meta = restored
        self.state = payload["train"]
        for name, value in payload.get("collections", {}).items():
            self.frozen[name] = jax.device_put(value, self.replicated)
        return meta or {}

    def evaluate(self, trainable=None) -> Optional[Dict[str, Any]]:
        if self.evaluator is None:
            return None
        with partitioning.activate(self.mesh, self.rules):
            return self.evaluator.evaluate(self.variables(trainable))

    def _save(self, step: int, iterator: TrainBatchIterator, eval_result=None, extra_meta=None):
        meta = {"data": iterator.state(), "step": int(step)}
        if eval_result is not None:
            meta["eval"] = eval_result
        if extra_meta:
            meta.update(extra_meta)
        metric = None if eval_result is None else eval_result.get("main_metric")
        self.checkpointer.save(int(step), run_payload(self.state, self._collections()),
                               meta=meta, metric=metric, numpy_params=self.state.params)

    # ------------------------------------------------------------------ loop
    def run(self) -> Dict[str, Any]:
        cfg = self.config
        meta = self.restore() or {}
        start = int(self.state.step)
        position = int(meta.get("data", {}).get("position", start))
        run_meta = {k: meta[k] for k in ("best_eval", "evals_without_improvement") if k in meta}
        best_eval = run_meta.get("best_eval")
        stale = int(run_meta.get("evals_without_improvement", 0))
        iterator = TrainBatchIterator(self.data_config, position=position)
        save_period = cfg.save_period or cfg.eval_period
        log = RunLogger(cfg.model_dir, cfg.num_steps, start, progress=cfg.progress)
        if start:
            log.message(f"resumed from step {start} (data position {position})")
        log.message(f"trainable parameters: {self.num_trainable:,}; frozen: {self.num_frozen:,}")
        last_metrics: Dict[str, Any] = {}
        step = start
        stopped_early = False
        try:
            with partitioning.activate(self.mesh, self.rules):
                while step < cfg.num_steps:
                    batch = self._global_batch(next(iterator))
                    self.state, metrics = self._step(self.state, self.frozen, batch,
                                                     self.dropout_rng)
                    step += 1
                    if step % cfg.log_period == 0 or step == cfg.num_steps:
                        last_metrics = log.train_progress(
                            step, self.data_config.batch_size, jax.device_get(metrics))
                    if self.step_callback is not None:
                        self.step_callback(step, metrics)
                    do_eval = cfg.eval_period and (step % cfg.eval_period == 0 or
                                                   step == cfg.num_steps)
                    eval_result = None
                    if do_eval and self.evaluator is not None:
                        eval_result = self.evaluate()
                        log.log(step, "eval", {"main_metric": eval_result["main_metric"],
                                               "mode": eval_result["mode"],
                                               **eval_result["metrics"]})
                        log.message(f"step {step} eval ({eval_result['mode']}): "
                                    f"{eval_result['metrics']}")
                        main = eval_result["main_metric"]
                        if main is not None and (best_eval is None or main > best_eval["main_metric"]):
                            best_eval = {"step": step, **eval_result}
                            stale = 0
                        else:
                            stale += 1
                    do_save = (save_period and step % save_period == 0) or step == cfg.num_steps
                    stop = cfg.patience is not None and stale >= cfg.patience
                    if do_save or eval_result is not None or stop:
                        self._save(step, iterator, eval_result,
                                   {"best_eval": best_eval, "evals_without_improvement": stale})
                    if stop:
                        stopped_early = True
                        log.message(f"early stopping at step {step}: no improvement in "
                                    f"{stale} evaluations")
                        break
        finally:
            self.checkpointer.wait()
            log.close()
        return {"final_step": step, "stopped_early": stopped_early, "best_eval": best_eval,
                "best_step": self.checkpointer.best_step(), "last_train_metrics": last_metrics,
                "num_trainable_params": self.num_trainable}


def run_payload(state, collections: Mapping[str, Any]) -> Dict[str, Any]:
    """What a run checkpoint holds: `{'train': TrainState, 'collections': {...}}` (the
    collections entry only when there are any)."""
    payload = {"train": state}
    if collections:
        payload["collections"] = dict(collections)
    return payload


def restored_params_and_collections(restored_state) -> tuple:
    """(trainable params, collections) of a run checkpoint restored without a target."""
    train = restored_state["train"]
    params = train["params"] if isinstance(train, Mapping) else train.params
    return params, dict(restored_state.get("collections", {}))


def _mask_updates(mask_tree: Mapping[str, Any]) -> optax.GradientTransformation:
    """Multiplies updates by a fixed 0/1 mask tree (pruned entries never move)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, m: u * jnp.asarray(m, u.dtype), updates,
                                      dict(mask_tree)), state

    return optax.GradientTransformation(init_fn, update_fn)
