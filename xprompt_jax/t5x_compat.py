"""Helpers for running our prompt modules under `t5x/train.py` (gin/t5x/*.gin).

The only module of `xprompt_jax` that uses t5x, and it imports t5x lazily: inside the
functions below, so `import xprompt_jax` (and this module) works without t5x installed.
Classes that must subclass a t5x class are built on demand by factory functions and cached,
so gin's repeated evaluation of `@t5x_compat.numpy_checkpoint_manager_cls()` yields one
class (T5X requires the save and restore configs to name the *same* manager class).

- `logical_axis_rules()`: our prompt axes (replicated) for
  `partitioning.standard_logical_axis_rules(additional_rules=...)`. No t5x needed.
- `logical_factor_rules()`: T5X Adafactor's `standard_logical_factor_rules()` plus our
  prompt axes as `FactorDim.NONE` (T5X's Adafactor raises KeyError on unknown axis names).
- `match_any(regexes)`: a `filter_fn(path, value)` for flax's `ModelParamTraversal`
  (the prompt traversal of T5X's `MultiOptimizer`). No t5x needed.
- `prompt_only_optax(optimizer)`: an optax optimizer on the prompt parameters only (zero
  updates elsewhere), for T5X's `optimizers.OptaxWrapper`. No t5x needed.
- `numpy_checkpoint_manager_cls()`: T5X's `OrbaxCheckpointManagerInterface` (what
  `t5x/train.py` uses by default, `use_orbax=True`) that also exports the prompt params as
  `.npy` files on every save, like google-research/prompt-tuning's `Checkpointer`.
- `numpy_checkpointer_cls()`: the same for T5X's legacy `checkpoints.Checkpointer`
  (or `SaveBestCheckpointer`), for runs with `train.use_orbax = False`.

Numpy export layout (as prompt-tuning, with the `.npy` suffix our own trainer writes):
`MODEL_DIR/numpy_checkpoints/checkpoint_<step>/<param path with '/' -> '.'>.npy`, e.g.
`numpy_checkpoints/checkpoint_1030000/prompt.prompt.npy`, float32, written atomically
(temporary directory renamed into place) by `training.checkpointing.save_numpy_params`.
Numpy directories are never deleted by checkpoint retention (as in prompt-tuning).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from typing import Any, Callable, Optional, Sequence, Tuple, Union

logger = logging.getLogger(__name__)

# Every logical axis name our prompt modules use (prompts/, xprompt/): all replicated.
PROMPT_AXIS_NAMES: Tuple[str, ...] = ("prompt", "prompt_embed", "prompt_pieces",
                                      "prompt_hidden", "prompt_hidden_in")
DEFAULT_PROMPT_REGEX = r".*prompt.*"
NUMPY_CHECKPOINTS_DIR = "numpy_checkpoints"

Regexes = Union[str, Sequence[str]]


def _import_t5x(what: str):
    try:
        import t5x  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"xprompt_jax.t5x_compat.{what} needs t5x, which is not installed. t5x is not on "
            "PyPI: install it from https://github.com/google-research/t5x (see the README's T5X section)."
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

    return optax.multi_transform({"trainable": optimizer, "frozen": optax.set_to_zero()},
                                 labels)


# ----------------------------------------------------------------------------- numpy export
def _step_of(train_state) -> int:
    import numpy as np

    step = train_state.step
    local = getattr(step, "addressable_data", None)
    if callable(local):  # a (possibly sharded / replicated) jax.Array
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


def _regex_tuple(regexes: Regexes) -> Tuple[str, ...]:
    out = (regexes,) if isinstance(regexes, str) else tuple(regexes)
    _compile(out)
    return out


def numpy_checkpoint_manager_cls(save_regexes: Regexes = DEFAULT_PROMPT_REGEX,
                                 suffix: str = ".npy"):
    """A subclass of T5X's `checkpoints.OrbaxCheckpointManagerInterface` whose `save` first
    exports the params matching `save_regexes` as `.npy` files (see module doc).

    gin (both configs must name the same class; this factory caches it)::

        utils.SaveCheckpointConfig.checkpoint_manager_cls = \
            @t5x_compat.numpy_checkpoint_manager_cls()
        utils.RestoreCheckpointConfig.checkpoint_manager_cls = \
            @t5x_compat.numpy_checkpoint_manager_cls()
    """
    return _numpy_checkpoint_manager_cls(_regex_tuple(save_regexes), suffix)


@functools.lru_cache(maxsize=None)
def _numpy_checkpoint_manager_cls(regexes: Tuple[str, ...], suffix: str):
    _import_t5x("numpy_checkpoint_manager_cls")
    from t5x import checkpoints

    class NumpyExportCheckpointManager(checkpoints.OrbaxCheckpointManagerInterface):
        """T5X's orbax checkpoint manager + prompt `.npy` export on every save."""

        numpy_regexes = regexes
        numpy_suffix = suffix

        def save(self, train_state, state_transformation_fns=(), force: bool = True) -> bool:
            step = _step_of(train_state)
            if not force and not self.should_save(step):
                return False
            export_numpy(train_state.params, os.fspath(self.directory), step,
                         self.numpy_regexes, self.numpy_suffix)
            return super().save(train_state, state_transformation_fns, force=force)

    return NumpyExportCheckpointManager


def numpy_checkpointer_cls(save_regexes: Regexes = DEFAULT_PROMPT_REGEX, suffix: str = ".npy",
                           base: str = "Checkpointer"):
    """A subclass of T5X's legacy `checkpoints.Checkpointer` (or `base=
    'SaveBestCheckpointer'`) that exports the matching params as `.npy` before each save.
    For runs with `train.use_orbax = False`::

        utils.SaveCheckpointConfig.checkpointer_cls = @t5x_compat.numpy_checkpointer_cls()
    """
    if base not in ("Checkpointer", "SaveBestCheckpointer"):
        raise ValueError(f"numpy_checkpointer_cls base={base!r}; expected 'Checkpointer' or "
                         "'SaveBestCheckpointer'")
    return _numpy_checkpointer_cls(_regex_tuple(save_regexes), suffix, base)


@functools.lru_cache(maxsize=None)
def _numpy_checkpointer_cls(regexes: Tuple[str, ...], suffix: str, base: str):
    _import_t5x("numpy_checkpointer_cls")
    from t5x import checkpoints

    parent = getattr(checkpoints, base)

    class NumpyExportCheckpointer(parent):
        """T5X's legacy checkpointer + prompt `.npy` export on every save."""

        numpy_regexes = regexes
        numpy_suffix = suffix

        def save(self, train_state, state_transformation_fns=(), **kwargs):
            export_numpy(train_state.params, self.checkpoints_dir, _step_of(train_state),
                         self.numpy_regexes, self.numpy_suffix)
            return super().save(train_state, state_transformation_fns, **kwargs)

    return NumpyExportCheckpointer
