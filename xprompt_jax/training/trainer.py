"""The prompt-tuning trainer: frozen T5 + trainable prompt, jitted and sharded.

`Trainer.run()` restores from MODEL_DIR if a checkpoint exists, trains to `num_steps`,
evaluates every `eval_period` steps (best checkpoint by the task's main metric, early
stopping after `patience` evaluations without improvement), checkpoints every
`save_period` steps (orbax, atomic; numpy prompt export), and logs (JSONL, TensorBoard,
progress bar). XPrompt and EPT reuse it: `extra_variables` carries non-trainable
collections such as `prompt_masks`, `initial_trainable` overrides the prompt's initial
values (rewinding), `update_mask` zeroes updates of pruned entries. The model's variables
come from `frozen_model.initialize` (the pretrained weights in place, the frozen part cast
and sharded).

Reliability (docs: Reliability):
- one run per MODEL_DIR: `run_lock` (`force` takes a live lock over);
- resume from the newest *good* checkpoint (`RunCheckpointer.restore_latest_good`);
- NaN/Inf: the jitted step drops a non-finite update; `on_nonfinite='stop'` (default)
  ends the run with `NonFiniteError` naming the step and the last good checkpoint,
  'skip_step' counts the skip and goes on (at most `max_consecutive_skips` in a row);
- SIGTERM / SIGINT / SIGHUP (a closed terminal; not under `nohup`) and a TPU preemption
  notice under `jax.distributed`: the current step finishes, a checkpoint with the data
  position is written, and `run` raises `TrainingInterrupted` (the CLIs exit 0 saying how
  to resume); under a CLI a second signal ends the process at once (`interrupts`). All
  processes agree on the stop step (`multihost_utils`, no-ops in one process);
- with no SAVE_PERIOD a checkpoint is also written every `save_interval_s` seconds
  (default 300), so a crash or `kill -9` loses at most about five minutes.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _moved, interrupts
from ..errors import CheckpointError, ConfigError, NonFiniteError, TrainingInterrupted
from . import partitioning, run_lock
from .checkpointing import RunCheckpointer
from .data import DataConfig, TrainBatchIterator
from .frozen_model import FrozenModelConfig, initialize
from .params import count_params, merge_params
from .run_logging import RunLogger
from .train_step import LossConfig, TrainState, jit_train_step, make_train_step

logger = logging.getLogger("xprompt_jax")


def resume_position(meta: Mapping[str, Any], start: int, where: str) -> int:
    """The data position (batches consumed) saved in a checkpoint's meta, checked: an int in
    [0, start] (one batch per step; a checkpoint may come from elsewhere, and a huge value
    would make the resume skip batches for ever). CheckpointError naming the field."""
    data = meta.get("data", {})
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{where}: meta field 'data' = {str(data)[:80]!r} is not an "
                              "object; refusing to resume from it")
    position = data.get("position", start)
    if isinstance(position, bool) or not isinstance(position, numbers.Integral) \
            or not 0 <= int(position) <= start:
        raise CheckpointError(f"{where}: meta field 'data.position' = {str(position)[:80]} "
                              f"is not a batch count in [0, {start}] (one batch per step "
                              "up to the checkpoint's step); refusing to resume from it")
    return int(position)


def _nonfinite_cause(metrics: Mapping[str, Any]) -> str:
    """The likelier cause of a non-finite step, from what was non-finite: a loss or
    gradient that overflowed points to the learning rate (or the data), a loss and gradient
    that are finite while the trainable norm is not to trainable values too large for
    float32 (e.g. an initial prompt of huge values)."""
    finite = {k: bool(np.isfinite(float(metrics[k]))) for k in ("loss", "grad_norm")}
    if all(finite.values()) and not np.isfinite(float(metrics["trainable_norm"])):
        return ("the trainable values' norm overflows float32 while the loss and gradient "
                "are finite: the prompt holds values too large (check PROMPT_INIT / "
                "PROMPT_FILE or the restored prompt)")
    return "LEARNING_RATE too high?"


@dataclasses.dataclass
class EvalAction:
    """What an `eval_callback` may return: `update_state(TrainState) -> TrainState`
    applied on the host before the evaluation's checkpoint is saved (e.g. a sweep freezing
    its stopped entries) and `stop`: end the run after that save, as early stopping does
    (`reason` says why in the log)."""

    update_state: Optional[Callable[[Any], Any]] = None
    stop: bool = False
    reason: str = ""


def seed_rngs(seed: int):
    """(init rng, dropout rng) of a run with RANDOM_SEED `seed`."""
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    return init_rng, dropout_rng


@dataclasses.dataclass
class TrainerConfig:
    """Run settings (T5X names in comments: TRAIN_STEPS, EVAL_PERIOD, ...)."""

    model_dir: str
    num_steps: int = 30000                 # TRAIN_STEPS
    eval_period: Optional[int] = 1000      # EVAL_PERIOD (None: no periodic eval)
    save_period: Optional[int] = None      # SAVE_PERIOD; None: every eval + save_interval_s
    save_interval_s: Optional[float] = 300.0  # with save_period None: seconds between saves
    keep_checkpoints: int = 3              # keep N plus the best
    patience: Optional[int] = None         # evaluations without improvement before stopping
    log_period: int = 10
    seed: int = 0
    num_microbatches: int = 1
    save_numpy: bool = True
    progress: Optional[bool] = None        # None: progress bar only on a terminal
    on_nonfinite: str = "stop"             # ON_NONFINITE: 'stop' | 'skip_step'
    max_consecutive_skips: int = 100       # 'skip_step': stop after this many in a row
    force: bool = False                    # --force: take over a live MODEL_DIR lock
    handle_signals: bool = True            # SIGTERM/SIGINT: save and stop

    def __post_init__(self):
        if self.on_nonfinite not in ("stop", "skip_step"):
            raise ConfigError(f"ON_NONFINITE={self.on_nonfinite!r}: expected 'stop' or "
                              "'skip_step'")
        for name in ("num_steps", "log_period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainerConfig.{name}={value!r}: expected an int >= 1")
        for name in ("eval_period", "save_period", "patience"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < (0 if name == "patience" else 1)):
                raise ConfigError(f"TrainerConfig.{name}={value!r}: expected None or an "
                                  "int >= 1")


MIN_INPUT_LENGTH = 4   # inputs: at least 3 tokens + EOS
MIN_TARGET_LENGTH = 2  # targets: at least 1 token + EOS


def check_feature_lengths(feature_lengths: Mapping[str, int]) -> None:
    """TASK_FEATURE_LENGTHS must be ints that leave room for an input and a target (with
    targets of length 1 every target is cut to its EOS)."""
    for key, minimum in (("inputs", MIN_INPUT_LENGTH), ("targets", MIN_TARGET_LENGTH)):
        if key not in feature_lengths:
            raise ConfigError(f"TASK_FEATURE_LENGTHS={dict(feature_lengths)!r} has no "
                              f"'{key}' length")
        value = feature_lengths[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"TASK_FEATURE_LENGTHS['{key}']={value!r}: expected an int")
        if value < minimum:
            what = ("leaves no room for the input" if key == "inputs"
                    else "cuts every target to its end-of-sequence token")
            raise ConfigError(f"TASK_FEATURE_LENGTHS['{key}']={value} {what} (EOS counts; "
                              f"expected at least {minimum})")


class Trainer:
    """Trains the trainable subtree of a (prompted) model; see module docstring."""

    def __init__(self, model, optimizer: optax.GradientTransformation, data_config: DataConfig,
                 config: TrainerConfig, *,
                 frozen_config: FrozenModelConfig = FrozenModelConfig(),
                 pretrained_params: Optional[Mapping[str, Any]] = None,
                 evaluator: Any = None,
                 loss_config: LossConfig = LossConfig(),
                 extra_variables: Optional[Mapping[str, Any]] = None,
                 initial_trainable: Optional[Mapping[str, Any]] = None,
                 update_mask: Optional[Mapping[str, Any]] = None,
                 step_callback: Optional[Callable[[int, Dict[str, Any]], None]] = None,
                 eval_callback: Optional[Callable[[int, Dict[str, Any], Any], None]] = None,
                 batch_transform: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
                 numpy_params_fn: Optional[Callable[[Any], Any]] = None):
        """`frozen_config`: which params train, the frozen dtype and the mesh;
        `evaluator`: anything with `evaluate(variables) -> result` (`evaluation`);
        `eval_callback(step, result, trainable)` after each evaluation (a bank's best prompt
        per task, a sweep's best and early stopping per entry), returning None or an
        `EvalAction`; a callback with `meta()` (JSON) and `load_meta(meta or None)` has
        its bookkeeping saved in each checkpoint's meta and restored with it;
        `batch_transform`: applied to every host batch before the step (a
        PromptBank's `bank_training.BankBatches`); `numpy_params_fn`: trainable params ->
        the tree the numpy export writes (per-prompt files of a bank)."""
        self.model = model
        self.batch_transform = batch_transform
        self.numpy_params_fn = numpy_params_fn
        self.config = config
        self.frozen_config = frozen_config
        self.data_config = data_config
        self.evaluator = evaluator
        self.step_callback = step_callback
        # called (no arguments) once `run` restored its checkpoint (or found none), before
        # the first step: e.g. the config record, written only when the resume worked
        self.after_restore: Optional[Callable[[], None]] = None
        self.eval_callback = eval_callback
        check_feature_lengths(data_config.task_feature_lengths)
        batch_size = data_config.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"BATCH_SIZE={batch_size!r}: expected an int >= 1")
        if batch_transform is None:  # (a bank's batches hold each example once per prompt)
            partitioning.check_batch_size(batch_size, frozen_config.mesh())
        run_lock.acquire(config.model_dir, force=config.force)  # before any work or write
        if update_mask is not None:
            optimizer = optax.chain(optimizer, _mask_updates(update_mask))
        self.optimizer = optimizer

        init_rng, self.dropout_rng = seed_rngs(config.seed)
        initialized = initialize(model, pretrained_params, data_config.task_feature_lengths,
                                 frozen_config, init_rng, extra_variables=extra_variables,
                                 initial_trainable=initial_trainable)
        self.mesh, self.rules = initialized.mesh, initialized.rules
        trainable = initialized.trainable
        self.frozen = dict(initialized.frozen)
        self.extra_variables = {k: v for k, v in self.frozen.items() if k != "params"}
        self.num_trainable = count_params(trainable)
        self.num_frozen = count_params(self.frozen["params"])

        # Shardings from the logical axes (prompt axes replicated; opt state replicated).
        self.replicated = partitioning.replicated(self.mesh)
        trainable_sh = partitioning.param_shardings(trainable, initialized.params_axes,
                                                    self.mesh, self.rules)
        frozen_shardings = jax.tree_util.tree_map(lambda x: x.sharding, self.frozen)
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
        if step is None:
            restored = self.checkpointer.restore_latest_good(target=self._abstract_payload())
            if restored is None:
                return None
            _, payload, meta = restored
            # An unreadable best must not keep its place (and push intact checkpoints of the
            # same metric out of the keep-N window): found now, it gives way at once.
            self.checkpointer.readable_best_step(target=self._abstract_payload())
        else:
            payload, meta = self.checkpointer.restore(step, target=self._abstract_payload())
        self.state = payload["train"]
        for name, value in payload.get("collections", {}).items():
            self.frozen[name] = jax.device_put(value, self.replicated)
        return meta or {}

    def restore_best(self) -> Optional[Tuple[int, Dict[str, Any]]]:
        """Restores the best checkpoint that can be read (an unreadable best gives way to
        the next best, with one warning: `RunCheckpointer.restore_best_good`); returns
        (its step, its meta), None without checkpoints."""
        restored = self.checkpointer.restore_best_good(target=self._abstract_payload())
        if restored is None:
            return None
        step, payload, meta = restored
        self.state = payload["train"]
        for name, value in payload.get("collections", {}).items():
            self.frozen[name] = jax.device_put(value, self.replicated)
        return int(step), meta or {}

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
        if hasattr(self.eval_callback, "meta"):
            meta["eval_callback"] = self.eval_callback.meta()
        metric = None if eval_result is None else eval_result.get("main_metric")
        self.checkpointer.save(int(step), run_payload(self.state, self._collections()),
                               meta=meta, metric=metric,
                               numpy_params=(self.state.params if self.numpy_params_fn is None
                                             else self.numpy_params_fn(self.state.params)))

    # ------------------------------------------------------------------ loop
    def run(self) -> Dict[str, Any]:
        """Trains to `num_steps` (resuming); returns a summary. Raises NonFiniteError
        (on_nonfinite='stop') and TrainingInterrupted (SIGTERM/SIGINT, after saving)."""
        cfg = self.config
        try:
            with _StopSignals(cfg.handle_signals,
                              str(self.checkpointer.checkpoints_dir)) as signals:
                return self._run(signals)
        finally:
            run_lock.release(cfg.model_dir)

    def _readable_best_eval(self, best_eval: Optional[Dict[str, Any]]):
        """The best evaluation a resumed run compares new ones with: the recorded one, or,
        when its checkpoint cannot be read (an unreadable best gives way to the next best
        readable one, `restore_best_good`), the evaluation of that fallback checkpoint, so
        that an evaluation beating the fallback counts as an improvement and is kept."""
        if not best_eval or best_eval.get("step") is None:
            return best_eval
        readable = self.checkpointer.readable_best_step(target=self._abstract_payload())
        if readable == best_eval["step"]:
            return best_eval
        saved = None if readable is None else (
            self.checkpointer.restore_meta(readable) or {}).get("eval")
        return None if saved is None else {"step": readable, **saved}

    def _last_good(self) -> str:
        step = self.checkpointer.latest_step()
        return ("none (no checkpoint was saved)" if step is None else
                f"step {step} in {self.checkpointer.checkpoint_path(step)}")

    def _run(self, signals: "_StopSignals") -> Dict[str, Any]:
        cfg = self.config
        meta = self.restore() or {}
        if hasattr(self.eval_callback, "load_meta"):
            self.eval_callback.load_meta(meta.get("eval_callback"))
        if self.after_restore is not None:
            self.after_restore()
        start = int(self.state.step)
        position = resume_position(meta, start, self._last_good())
        run_meta = {k: meta[k] for k in ("best_eval", "evals_without_improvement") if k in meta}
        best_eval = self._readable_best_eval(run_meta.get("best_eval"))
        stale = int(run_meta.get("evals_without_improvement", 0))
        skipped = int(meta.get("skipped_steps", 0))
        iterator = TrainBatchIterator(self.data_config, position=position)
        save_period = cfg.save_period
        save_interval = cfg.save_interval_s if save_period is None else None
        log = RunLogger(cfg.model_dir, cfg.num_steps, start, progress=cfg.progress)
        if start:
            log.message(f"resumed from step {start} (data position {position}) in "
                        f"{cfg.model_dir}")
        else:
            log.message(f"starting a run of {cfg.num_steps} steps in {cfg.model_dir}")
        log.message(f"trainable parameters: {self.num_trainable:,}; frozen: {self.num_frozen:,}")
        last_metrics: Dict[str, Any] = {}
        step = start
        stopped_early = False
        consecutive_skips = 0
        norm_watch = _NormWatch()
        last_save_time = time.monotonic()
        try:
            with partitioning.activate(self.mesh, self.rules):
                while step < cfg.num_steps:
                    try:
                        local_batch = next(iterator)
                    except StopIteration:
                        raise ConfigError(f"{self.data_config.mixture_or_task_name} split "
                                          f"'{self.data_config.split}' yields no batch of "
                                          f"{self.data_config.batch_size} examples (empty or "
                                          "smaller than BATCH_SIZE?)") from None
                    if self.batch_transform is not None:
                        local_batch = self.batch_transform(local_batch)
                    batch = self._global_batch(local_batch)
                    self.state, metrics = self._step(self.state, self.frozen, batch,
                                                     self.dropout_rng)
                    step += 1
                    if float(metrics["nonfinite"]):
                        loss = float(metrics["loss"])
                        if cfg.on_nonfinite == "stop":
                            log.log(step, "train", jax.device_get(metrics))
                            raise NonFiniteError(
                                f"step {step}: non-finite training (loss {loss}, gradient "
                                f"norm {float(metrics['grad_norm'])}); stopped before "
                                f"writing anything of it ({_nonfinite_cause(metrics)}; "
                                f"ON_NONFINITE='skip_step' drops such updates); last good "
                                f"checkpoint: {self._last_good()}")
                        skipped += 1
                        consecutive_skips += 1
                        log.message(f"step {step}: non-finite loss {loss}; update dropped "
                                    f"({skipped} skipped so far)")
                        if consecutive_skips >= cfg.max_consecutive_skips:
                            raise NonFiniteError(
                                f"step {step}: {consecutive_skips} consecutive non-finite "
                                f"steps (ON_NONFINITE='skip_step'); stopped; last good "
                                f"checkpoint: {self._last_good()}")
                    else:
                        consecutive_skips = 0
                    if step % cfg.log_period == 0 or step == cfg.num_steps:
                        last_metrics = log.train_progress(
                            step, self.data_config.batch_size, jax.device_get(metrics))
                        norm_watch.check(step, last_metrics.get("trainable_norm"), log)
                    if self.step_callback is not None:
                        self.step_callback(step, metrics)
                    do_eval = cfg.eval_period and (step % cfg.eval_period == 0 or
                                                   step == cfg.num_steps)
                    eval_result = action = None
                    if do_eval and self.evaluator is not None:
                        eval_result = self.evaluate()
                        main = eval_result.get("main_metric")
                        if main is not None and not np.isfinite(float(main)):
                            eval_result["main_metric"] = main = None  # never a metric
                        if eval_result.get("nonfinite_scores"):
                            log.message(f"step {step}: evaluation scores are not finite for "
                                        f"{eval_result['nonfinite_scores']} of "
                                        f"{eval_result['num_examples']} examples: no metric, "
                                        "never the best checkpoint")
                        log.log(step, "eval", {"main_metric": main,
                                               "mode": eval_result["mode"],
                                               **({"nonfinite_scores":
                                                   eval_result["nonfinite_scores"]}
                                                  if "nonfinite_scores" in eval_result
                                                  else {}),
                                               **eval_result["metrics"]})
                        log.message(f"step {step} eval ({eval_result['mode']}): "
                                    f"{eval_result['metrics']}")
                        if self.eval_callback is not None:
                            action = self.eval_callback(step, eval_result, self.state.params)
                        if action is not None and action.update_state is not None:
                            self.state = jax.device_put(action.update_state(self.state),
                                                        self.state_shardings)
                        if main is not None and (best_eval is None or main > best_eval["main_metric"]):
                            best_eval = {"step": step, **eval_result}
                            stale = 0
                        else:
                            stale += 1
                    stop_signal, timed = _agree(
                        signals.received(step),
                        save_interval is not None and
                        time.monotonic() - last_save_time >= save_interval)
                    do_save = ((save_period and step % save_period == 0) or
                               step == cfg.num_steps or timed or bool(stop_signal))
                    stop = cfg.patience is not None and stale >= cfg.patience
                    stop_reason = f"no improvement in {stale} evaluations"
                    if eval_result is not None and action is not None and action.stop:
                        stop, stop_reason = True, action.reason or stop_reason
                    if do_save or eval_result is not None or stop:
                        self._save(step, iterator, eval_result,
                                   {"best_eval": best_eval, "evals_without_improvement": stale,
                                    "skipped_steps": skipped})
                        last_save_time = time.monotonic()
                    if stop_signal:
                        name = signals.name or "a preemption notice"
                        log.message(f"{name} received: stopped after step {step}; "
                                    f"checkpoint saved")
                        raise TrainingInterrupted(
                            f"{name}: saved step {step} (data position {iterator.position}) "
                            f"to {self.checkpointer.checkpoint_path(step)}", step=step,
                            signal_name=name)
                    if stop:
                        stopped_early = True
                        log.message(f"early stopping at step {step}: {stop_reason}")
                        break
        finally:
            self.checkpointer.wait()
            log.close()
        best_step = self.checkpointer.best_step()
        if best_step is not None:  # never name a best checkpoint that cannot be read
            best_step = self.checkpointer.readable_best_step(target=self._abstract_payload())
            if best_step is not None and (best_eval or {}).get("step") != best_step:
                saved = (self.checkpointer.restore_meta(best_step) or {}).get("eval")
                best_eval = None if saved is None else {"step": best_step, **saved}
        if step > start:
            log.message(f"finished at step {step}; best checkpoint: {best_step}")
        return {"final_step": step, "stopped_early": stopped_early, "best_eval": best_eval,
                "best_step": best_step, "last_train_metrics": last_metrics,
                "num_trainable_params": self.num_trainable, "skipped_steps": skipped}


class _NormWatch:
    """Warns once when the trainable params' norm grows NORM_GROWTH-fold over its first
    logged value (a diverging prompt that is still finite, e.g. LEARNING_RATE=1e4)."""

    NORM_GROWTH = 100.0

    def __init__(self):
        self.first: Optional[float] = None
        self.warned = False

    def check(self, step: int, norm: Any, log: RunLogger) -> None:
        if norm is None or self.warned or not np.isfinite(float(norm)):
            return
        norm = float(norm)
        if self.first is None:
            self.first = max(norm, 1e-12)
        elif norm > self.NORM_GROWTH * self.first:
            self.warned = True
            log.message(f"warning: step {step}: the trainable parameters' norm grew from "
                        f"{self.first:.3g} to {norm:.3g} (diverging? LEARNING_RATE too high?)")


def _agree(stop_signal: bool, timed_save: bool):
    """(stop, save) decided the same way on every process: any process's signal stops
    all of them at this step; process 0's clock decides time-based saves. In one process
    this is the identity (no collective)."""
    if jax.process_count() == 1:
        return stop_signal, timed_save
    from jax.experimental import multihost_utils

    flags = np.asarray([stop_signal, timed_save], np.int32)
    gathered = np.asarray(multihost_utils.process_allgather(flags))  # [processes, 2]
    return bool(gathered[:, 0].max()), bool(gathered[0, 1])


class _StopSignals:
    """Within the `with` block SIGTERM, SIGINT and SIGHUP (unless ignored, as `nohup`
    does) set a flag (the loop saves and stops after the current step); the previous
    handlers are reinstalled at the first signal (a second one acts as they do: under a
    CLI it ends the process at once) and on exit. Under `jax.distributed`, a TPU
    preemption notice (`multihost_utils.reached_preemption_sync_point`) counts as a signal
    too. Only the main thread can install handlers; elsewhere this does nothing.
    `checkpoint_dir` names where the checkpoints are kept in the line a second signal
    prints."""

    SIGNALS = interrupts.SIGNALS

    def __init__(self, enabled: bool = True, checkpoint_dir: str = ""):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.name: Optional[str] = None
        self._previous: Dict[int, Any] = {}
        self._phase = interrupts.phase(
            "training", f"the checkpoints finished before are kept in "
            f"{checkpoint_dir or 'MODEL_DIR'}; rerun the same command to resume from the "
            "latest")

    def _handler(self, signum, frame):
        del frame
        interrupts.leave_closed_terminal(signum)  # SIGHUP: the save must not fail on it
        self.name = signal.Signals(signum).name
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "_StopSignals":
        self._phase.__enter__()
        if self.enabled:
            interrupts.note_terminal()
            for signum in self.SIGNALS:
                if not interrupts.ignored_by_user(signum):
                    self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
        self._phase.__exit__(*exc)

    def received(self, step: int) -> bool:
        if self.name is not None:
            return True
        if jax.process_count() > 1:
            try:
                from jax.experimental import multihost_utils

                return bool(multihost_utils.reached_preemption_sync_point(step))
            except Exception:  # pylint: disable=broad-except  (no preemption service)
                return False
        return False


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


# Names that moved elsewhere: an import names their new home.
__getattr__ = _moved.module_getattr(__name__)
