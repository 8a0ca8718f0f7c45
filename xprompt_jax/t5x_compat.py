"""Helpers for running our prompt modules under `t5x/train.py` (gin/t5x/*.gin).

It imports t5x lazily: inside the functions below, so `import xprompt_jax` (and this
module) works without t5x installed. (The other module that uses t5x, as lazily:
`xprompt.t5x_trainer`, XPrompt's stages as a trainer of this module's.)

- `logical_axis_rules()`: our prompt axes (replicated) for
  `partitioning.standard_logical_axis_rules(additional_rules=...)`. No t5x needed.
- `logical_factor_rules()`: T5X Adafactor's `standard_logical_factor_rules()` plus our
  prompt axes as `FactorDim.NONE` (T5X's Adafactor raises KeyError on unknown axis names).
- `match_any(regexes)`: a `filter_fn(path, value)` for flax's `ModelParamTraversal`
  (the prompt traversal of T5X's `MultiOptimizer`). No t5x needed.
- `prompt_only_optax(optimizer)`: an optax optimizer on the prompt parameters only (zero
  updates elsewhere), for T5X's `optimizers.OptaxWrapper`. No t5x needed.
- `numpy_export_fn(model_dir)`: a save-time state transformation for T5X's
  `SaveCheckpointConfig.state_transformation_fns` that exports the prompt params as `.npy`
  files on every save (orbax and legacy checkpointers alike), like
  google-research/prompt-tuning's `Checkpointer`, with T5X's default checkpoint manager
  (so reruns on the same MODEL_DIR resume). No t5x needed.

Numpy export layout (as prompt-tuning, with the `.npy` suffix our own trainer writes):
`MODEL_DIR/numpy_checkpoints/checkpoint_<step>/<param path with '/' -> '.'>.npy`, e.g.
`numpy_checkpoints/checkpoint_1030000/prompt.prompt.npy`, float32, written atomically
(temporary directory renamed into place) by `training.checkpointing.save_numpy_params`.
Numpy directories are never deleted by checkpoint retention (as in prompt-tuning).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Optional, Sequence, Tuple, Union

from . import gin_utils

logger = logging.getLogger(__name__)

# t5x/train.py adds the search paths after gin's first entry, the working directory, so an
# `include` of ours would be read from the working directory first. Our top-level
# gin/t5x files import this module before their first include: from then on the working
# directory is searched last.
gin_utils.search_working_dir_last()

# Every logical axis name our prompt modules use (prompts/, xprompt/): all replicated.
PROMPT_AXIS_NAMES: Tuple[str, ...] = ("prompt", "prompt_embed", "prompt_pieces",
                                      "prompt_hidden", "prompt_hidden_in", "prompt_bank")
DEFAULT_PROMPT_REGEX = r".*prompt.*"
NUMPY_CHECKPOINTS_DIR = "numpy_checkpoints"

Regexes = Union[str, Sequence[str]]


def _import_t5x(what: str):
    try:
        import t5x  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"xprompt_jax.t5x_compat.{what} needs t5x, which is not installed. t5x is not on "
            "PyPI: install it from https://github.com/google-research/t5x (see docs/t5x.md)."
        ) from e


# ----------------------------------------------------------------------------- partitioning
def logical_axis_rules() -> Tuple[Tuple[str, Optional[str]], ...]:
    """`(name, None)` for each prompt axis: for T5X's
    `partitioning.standard_logical_axis_rules.additional_rules`."""
    from .training.partitioning import PROMPT_AXIS_RULES

    rules = list(PROMPT_AXIS_RULES)
    known = {name for name, _ in rules}
    rules.extend((name, None) for name in PROMPT_AXIS_NAMES if name not in known)
    return tuple(rules)


# ----------------------------------------------------------------------------- adafactor
def logical_factor_rules(rules=None):
    """T5X Adafactor factor rules with our prompt axes unfactored (`FactorDim.NONE`).

    `rules`: the rules to extend (default `adafactor.standard_logical_factor_rules()`).
    Bind it as `adafactor.Adafactor.logical_factor_rules =
    @t5x_compat.logical_factor_rules()`.
    """
    _import_t5x("logical_factor_rules")
    from flax.core import frozen_dict
    from t5x import adafactor

    if rules is None:
        rules = adafactor.standard_logical_factor_rules()
    rules = dict(frozen_dict.unfreeze(rules)) if isinstance(rules, frozen_dict.FrozenDict) \
        else dict(rules)
    for name in PROMPT_AXIS_NAMES:
        rules[name] = adafactor.FactorDim.NONE
    # A PromptBank's N axis (prompts/bank.py): second moments per prompt, never factored
    # across prompts (T5X's update clipping still pools the bank's RMS).
    rules["prompt_bank"] = adafactor.FactorDim.BATCH
    return frozen_dict.freeze(rules)


# ----------------------------------------------------------------------------- traversal
def _compile(regexes: Regexes):
    if isinstance(regexes, str):
        regexes = [regexes]
    patterns = [re.compile(r) for r in regexes]
    if not patterns:
        raise ValueError("match_any: give at least one regex")
    return patterns


def match_any(regexes: Regexes = DEFAULT_PROMPT_REGEX) -> Callable[[str, Any], bool]:
    """`filter_fn(path, value)` for `flax.traverse_util.ModelParamTraversal`: True when a
    regex *fully* matches the '/'-joined parameter path (flax passes '/prompt/prompt'; the
    leading '/' is dropped, so the convention is our TRAINABLE_REGEX's: `.*prompt.*`)."""
    patterns = _compile(regexes)

    def filter_fn(path: str, value: Any = None) -> bool:
        del value
        path = path.lstrip("/")
        return any(p.fullmatch(path) for p in patterns)

    return filter_fn


def prompt_only_optax(optimizer, regexes: Regexes = DEFAULT_PROMPT_REGEX):
    """An optax transformation that applies `optimizer` to the parameters matching
    `regexes` and zero updates to every other parameter (`optax.multi_transform` with
    `optax.set_to_zero()`: the frozen model gets no optimizer state). For T5X's
    `optimizers.OptaxWrapper` (gin/t5x/optimizers/adamw_t5x.gin). No t5x needed."""
    import jax
    import optax

    match = match_any(regexes)

    def key_name(key) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "trainable" if match("/".join(key_name(k) for k in path))
            else "frozen", params)

    _register_t5x_optax_state_rules()
    return optax.multi_transform({"trainable": optimizer, "frozen": optax.set_to_zero()},
                                 labels)


def _register_t5x_optax_state_rules() -> None:
    """Teaches T5X's `OptaxWrapper` the logical axes of optax's `FactoredState` (the state
    of our Adafactor, `training.optimizers.adafactor`), which T5X does not list: every entry
    replicated (prompt axes are replicated). A no-op without t5x."""
    try:
        from t5x import optimizers as t5x_optimizers
    except ImportError:
        return
    import jax
    import optax
    from jax.sharding import PartitionSpec

    rules = t5x_optimizers.OptaxStatePartitionRules._RULES  # pylint: disable=protected-access
    factored = optax._src.factorized.FactoredState  # pylint: disable=protected-access
    if factored in rules:
        return

    def replicated(tree):
        return jax.tree_util.tree_map(
            lambda x: x if isinstance(x, optax.MaskedNode)
            else PartitionSpec(*([None] * len(getattr(x, "shape", ())))),
            tree, is_leaf=lambda x: isinstance(x, optax.MaskedNode))

    rules[factored] = lambda state, params_axes: factored(
        count=None, v_row=replicated(state.v_row), v_col=replicated(state.v_col),
        v=replicated(state.v))


# ----------------------------------------------------------------------------- numpy export
def _step_value(step) -> int:
    """The step of a T5X state dict: an int, numpy scalar or replicated jax.Array."""
    import numpy as np

    if callable(getattr(step, "addressable_data", None)):
        step = step.addressable_data(0)
    return int(np.asarray(step))


def export_numpy(params, model_dir: str, step: int, regexes: Regexes = DEFAULT_PROMPT_REGEX,
                 suffix: str = ".npy"):
    """Writes the params matching `regexes` to
    `model_dir/numpy_checkpoints/checkpoint_<step>/` (all processes call; process 0 writes).
    Returns {param path: file}."""
    import numpy as np
    from flax.core import frozen_dict

    from .training.checkpointing import save_numpy_params

    patterns = _compile(regexes)
    directory = os.path.join(os.fspath(model_dir), NUMPY_CHECKPOINTS_DIR, f"checkpoint_{step}")
    params = frozen_dict.unfreeze(params) if isinstance(params, frozen_dict.FrozenDict) \
        else params
    files = save_numpy_params(params, directory, include=[p.pattern for p in patterns],
                              dtype=np.float32, suffix=suffix)
    logger.info("numpy export of step %d: %s", step, sorted(files))
    return files


def numpy_export_fn(model_dir: str, save_regexes: Regexes = DEFAULT_PROMPT_REGEX,
                    suffix: str = ".npy"):
    """A T5X save-time state transformation (`SaveStateTransformationFn`) that exports the
    params matching `save_regexes` as `.npy` files on every save and leaves the state as
    it is. T5X passes `SaveCheckpointConfig.state_transformation_fns` to every save of both
    checkpointers (orbax and legacy), and the checkpoint manager stays T5X's default, so a
    rerun on the same MODEL_DIR resumes (T5X builds its resume config in code, with the
    default manager class). No t5x needed::

        utils.SaveCheckpointConfig.state_transformation_fns = [@t5x_compat.numpy_export_fn()]
        t5x_compat.numpy_export_fn.model_dir = %MODEL_DIR
    """
    regexes = tuple(p.pattern for p in _compile(save_regexes))
    model_dir = os.fspath(model_dir)

    def export(state_dict, parameter_infos):
        export_numpy(state_dict["target"], model_dir, _step_value(state_dict["state"]["step"]),
                     regexes, suffix)
        return state_dict, parameter_infos

    return export



# ----------------------------------------------------------------------------- data state
def _restore_state_only_without_data_state() -> None:
    """With `save_dataset`, T5X's orbax checkpoint manager also restores the data pipeline's
    position from every checkpoint it restores, the pretrained one (INITIAL_CHECKPOINT_PATH)
    included, which has none: the run fails (`NotFoundError: ... dataset/train_ds-...`). A
    restore from a checkpoint without a saved data pipeline restores the train state only (the
    data pipeline starts at its beginning, as without save_dataset). Installed once."""
    from etils import epath
    from t5x import checkpoints

    def _has_data_state(directory) -> bool:
        """Whether a checkpoint holds a saved data pipeline (its `dataset` item may be
        there and empty: the pretrained checkpoints' is)."""
        item = directory / checkpoints._DATASET_KEY  # pylint: disable=protected-access
        prefix = checkpoints._TRAIN_DS_PREFIX  # pylint: disable=protected-access
        return item.exists() and any(p.name.startswith(prefix) for p in item.iterdir())

    manager = checkpoints.OrbaxCheckpointManagerInterface
    if getattr(manager.restore, "state_only_without_data_state", False):
        return
    restore = manager.restore

    def restore_checked(self, step=None, path=None, *args, **kwargs):
        writes = getattr(self, "_should_write_dataset_ckpt", False)
        if writes and path is not None and not _has_data_state(epath.Path(os.fspath(path))):
            logger.info("%s holds no data pipeline state: restoring the train state only",
                        path)
            self._should_write_dataset_ckpt = False
            try:
                return restore(self, step, path, *args, **kwargs)
            finally:
                self._should_write_dataset_ckpt = writes
        return restore(self, step, path, *args, **kwargs)

    restore_checked.state_only_without_data_state = True
    manager.restore = restore_checked


def resumable_data_stream() -> bool:
    """True, for T5X's `utils.SaveCheckpointConfig.save_dataset`: every checkpoint also
    holds the train data pipeline's position, so a resumed run reads the batches an
    uninterrupted run would have read. Makes T5X's orbax manager restore a checkpoint
    without that position (the pretrained one) as a train state only (without it T5X
    fails on the first run). Bind it as
    `utils.SaveCheckpointConfig.save_dataset = @t5x_compat.resumable_data_stream()`."""
    _import_t5x("resumable_data_stream")
    _restore_state_only_without_data_state()
    return True


# ----------------------------------------------------------------------------- refusals
def refuse(error) -> None:
    """Ends a T5X script with `error` on one line (no traceback) and its exit code: T5X's
    main is not ours, so our usual top-level handler (`cli.run_cli`) is not around it."""
    import sys

    from .errors import one_line

    message = f"xprompt_jax: error: {one_line(error)}"
    logger.error("%s", message)
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(getattr(error, "exit_code", 2))


def _has_t5x_checkpoint(model_dir) -> bool:
    """Whether MODEL_DIR holds a T5X checkpoint that t5x/train.py resumes from."""
    _import_t5x("frozen_model_checkpoint")
    from t5x import checkpoints

    if not model_dir:
        return False
    try:
        return bool(checkpoints.all_steps(os.fspath(model_dir)))
    except Exception:  # noqa: BLE001 - a missing or unreadable directory: nothing to resume
        return False


def frozen_model_checkpoint(path: Optional[str], model_dir: Optional[str] = None):
    """The pretrained checkpoint the frozen model is read from (T5X's
    `utils.RestoreCheckpointConfig.path`), checked before T5X builds anything.

    A prompt is only meaningful on a pretrained model: without INITIAL_CHECKPOINT_PATH,
    t5x/train.py would initialise the "frozen" model at random and train a prompt on it
    (its only hint: `Initializing parameters from scratch.`). Refused in one line, unless
    MODEL_DIR already holds a checkpoint of this run (a resume reads the frozen model
    from there)."""
    if path:
        return os.fspath(path)
    if _has_t5x_checkpoint(model_dir):
        return None  # resumed: T5X restores MODEL_DIR's latest checkpoint first
    from .errors import ConfigError

    refuse(ConfigError(
        "INITIAL_CHECKPOINT_PATH is not set and MODEL_DIR "
        f"{model_dir!r} holds no checkpoint to resume: the frozen model would be initialised "
        "at random; pass --gin.INITIAL_CHECKPOINT_PATH=\"'<pretrained T5X checkpoint_<step> "
        "directory>'\""))


# ----------------------------------------------------------------------------- preemption
_PREEMPTIBLE_TRAINERS: dict = {}
_STOP_SIGNALLED = [False]


def _skip_repeated_saves_after_a_stop() -> None:
    """After a stop in T5X's last "epoch" (the last EVAL_PERIOD steps), t5x/train.py saves
    the step "before early stopping" and then again as the end of training; orbax refuses
    the second save of the same step (StepAlreadyExistsError) and the run would fail after
    saving. Once a SIGTERM was received, a save of a step that is already saved is skipped
    (T5X's orbax checkpoint manager; the legacy one overwrites). Installed once."""
    from t5x import checkpoints
    from t5x import utils as t5x_utils

    manager = checkpoints.OrbaxCheckpointManagerInterface
    if getattr(manager.save, "skips_repeated_saves", False):
        return
    save = manager.save

    def save_once(self, train_state, *args, **kwargs):
        if _STOP_SIGNALLED[0]:
            step = int(t5x_utils.get_local_data(train_state.step))
            if step in self.all_steps():
                logger.info("step %d is saved already (stopping)", step)
                return False
        return save(self, train_state, *args, **kwargs)

    save_once.skips_repeated_saves = True
    manager.save = save_once


def _preemptible_trainer_class():
    """`t5x.trainer.Trainer` whose `stop_training` also turns true on SIGTERM. Built on
    use (t5x is imported lazily) on gin's configurable version of T5X's Trainer, so the
    gin bindings of `trainer.Trainer` (learning_rate_fn, num_microbatches) apply."""
    _import_t5x("preemptible_trainer")
    import signal
    import threading

    import jax
    import numpy as np
    from t5x import trainer as t5x_trainer

    base = gin_utils.configured(t5x_trainer.Trainer)
    if base in _PREEMPTIBLE_TRAINERS:
        return _PREEMPTIBLE_TRAINERS[base]
    _skip_repeated_saves_after_a_stop()

    class PreemptibleTrainer(base):
        """T5X's Trainer, plus: SIGTERM (a TPU preemption, `kill`) asks T5X's loop to stop.

        t5x/train.py checks `trainer.stop_training` before each chunk of `stats_period`
        steps and, when it is true, saves a checkpoint ("Saving a checkpoint before early
        stopping...") and returns normally (exit code 0); a rerun of the same command
        resumes from that checkpoint. T5X's actions assign `stop_training` after every
        chunk, so the signal is kept apart and OR-ed in rather than overwritten. With
        several processes, every process stops at the same chunk: the flag is gathered
        across processes (any process signalled stops all)."""

        def __init__(self, *args, **kwargs):
            self._stop_requested = False
            self._signal_name: Optional[str] = None
            self._previous_handler = None
            super().__init__(*args, **kwargs)
            if threading.current_thread() is threading.main_thread():
                self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)
            else:  # pragma: no cover - T5X builds its trainer in the main thread
                logger.warning("not in the main thread: SIGTERM will not save a checkpoint")

        def _on_signal(self, signum, frame):
            del frame
            if self._signal_name is None:
                self._signal_name = signal.Signals(signum).name
                _STOP_SIGNALLED[0] = True
                logger.warning("%s received: saving a checkpoint at the end of the current "
                               "stats period and stopping (rerun the same command to "
                               "resume)", self._signal_name)

        @property
        def stop_training(self) -> bool:
            stop = bool(self._stop_requested or self._signal_name is not None)
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                stop = bool(np.any(multihost_utils.process_allgather(np.int32(stop))))
            return stop

        @stop_training.setter
        def stop_training(self, value) -> None:
            self._stop_requested = bool(value)

        def close(self):
            if self._previous_handler is not None and \
                    threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._previous_handler)
                self._previous_handler = None
            super().close()

    _PREEMPTIBLE_TRAINERS[base] = PreemptibleTrainer
    return PreemptibleTrainer


def preemptible_trainer_class():
    """The class `preemptible_trainer` makes (for trainers that extend it, e.g.
    `xprompt.t5x_trainer`)."""
    return _preemptible_trainer_class()


def preemptible_trainer(**kwargs):
    """T5X's `train.trainer_cls` that saves a checkpoint and exits 0 on SIGTERM (see
    `PreemptibleTrainer` above); its other arguments are T5X's `trainer.Trainer`'s, and
    gin bindings of `trainer.Trainer` (learning_rate_fn, num_microbatches) still apply."""
    return _preemptible_trainer_class()(**kwargs)
