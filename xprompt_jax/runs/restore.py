"""The trainable state of a finished run: its prompt parameters (and saved collections such
as XPrompt's masks) from our own run checkpoints or from a `t5x/train.py` run.

`restore_trainable(model, model_dir, checkpoint)` reads the 'best' (else latest), 'latest'
or a given step of MODEL_DIR and checks names and shapes against the model's trainable
parameters. MODEL_DIR may also be a T5X run (`checkpoint_<N>/` directories, no
`checkpoints/` of our own trainer) or one of its `checkpoint_<N>` directories, read without
t5x; T5X keeps no best checkpoint, so 'best' is the latest step there.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import CheckpointError
from ..training.checkpointing import RunCheckpointer
from ..training.frozen_model import abstract_variables
from ..training.params import DEFAULT_TRAINABLE_REGEX, flatten, split_params, unflatten
from ..training.trainer import restored_params_and_collections

logger = logging.getLogger("xprompt_jax")

# Parameter shapes do not depend on sequence lengths: a small dummy batch is enough.
SHAPE_FEATURE_LENGTHS = {"inputs": 4, "targets": 2}


class Restored(NamedTuple):
    """A run's trainable params, the step they were saved at, and its saved collections."""

    trainable: Dict[str, Any]
    step: int
    collections: Dict[str, Any]


def abstract_trainable(model, trainable_regex: str = DEFAULT_TRAINABLE_REGEX) -> Dict[str, Any]:
    """Shapes/dtypes (`jax.ShapeDtypeStruct`) of the model's trainable params."""
    abstract = abstract_variables(model, SHAPE_FEATURE_LENGTHS)
    return split_params(abstract["params"], trainable_regex)[0]


def restore_trainable(model, model_dir: str, checkpoint: Union[str, int] = "best",
                      trainable_regex: str = DEFAULT_TRAINABLE_REGEX) -> Restored:
    """The trainable params of a run's checkpoint (see module docstring)."""
    t5x_path = t5x_run_checkpoint(model_dir, checkpoint)
    if t5x_path is not None:
        return _restore_t5x(model, t5x_path, trainable_regex)
    checkpointer = RunCheckpointer(model_dir, read_only=True)
    if checkpoint == "best":  # an unreadable best gives way to the next best, with a warning
        best = checkpointer.restore_best_good()
        if best is None:
            raise CheckpointError(f"no checkpoint in {model_dir}")
        step, restored = best[0], best[1:]
    else:
        step = checkpointer.latest_step() if checkpoint == "latest" else int(checkpoint)
        if step is None:
            raise CheckpointError(f"no checkpoint in {model_dir}")
        if step not in checkpointer.all_steps():
            raise CheckpointError(f"no checkpoint for step {step} in {model_dir} (available:"
                                  f" {checkpointer.all_steps()})")
        restored = checkpointer.restore(step)
    saved, collections = restored_params_and_collections(restored[0])
    trainable = checked_trainable(model, saved, trainable_regex,
                                  f"checkpoint {step} in {model_dir}")
    collections = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), collections)
    return Restored(trainable, int(step), collections)


def t5x_run_checkpoint(model_dir: str, checkpoint: Union[str, int]) -> Optional[str]:
    """The T5X checkpoint directory to read when `model_dir` is a `t5x/train.py` run or one
    of its `checkpoint_<N>` directories; None otherwise."""
    from ..checkpoints import t5x as t5x_checkpoints

    if os.path.isdir(os.path.join(model_dir, "checkpoints")):
        return None
    if checkpoint not in ("best", "latest"):
        candidate = os.path.join(model_dir, f"checkpoint_{int(checkpoint)}")
        return candidate if os.path.isdir(candidate) else None
    try:
        t5x_checkpoints.find_t5x_checkpoint(model_dir)
    except FileNotFoundError:
        return None
    latest = t5x_checkpoints.latest_checkpoint_dir(model_dir)
    return model_dir if latest is None else latest


def _restore_t5x(model, path: str, trainable_regex: str) -> Restored:
    from ..checkpoints import load_t5x_checkpoint

    ckpt = load_t5x_checkpoint(path)
    saved, _ = split_params(ckpt.params, trainable_regex)
    trainable = checked_trainable(model, saved, trainable_regex, f"T5X checkpoint {path}")
    logger.info("restored the prompt of T5X checkpoint %s (step %s)", path, ckpt.step)
    return Restored(trainable, int(ckpt.step), {})


def checked_trainable(model, saved, trainable_regex: str, what: str) -> Dict[str, Any]:
    """`saved` checked against the model's trainable params (names and shapes)."""
    expected = flatten(abstract_trainable(model, trainable_regex))
    got = flatten(dict(saved))
    if set(got) != set(expected):
        raise CheckpointError(f"{what} does not match the model's "
                         f"trainable params: missing {sorted(set(expected) - set(got))[:10]}, "
                         f"unexpected {sorted(set(got) - set(expected))[:10]} (same method gin "
                         "file and TRAINABLE_REGEX as the run?)")
    for key, spec in expected.items():
        if tuple(np.shape(got[key])) != tuple(spec.shape):
            raise CheckpointError(f"{what}: parameter {key} has shape "
                             f"{tuple(np.shape(got[key]))}, the model expects {tuple(spec.shape)}")
    for key in expected:
        value = np.asarray(got[key])
        bad = ~np.isfinite(np.asarray(value, np.float32)) if "float" in value.dtype.name \
            else np.zeros((), bool)
        if bad.any():
            raise CheckpointError(f"{what}: parameter {key} holds {int(bad.sum())} NaN/Inf "
                                  "values; a "
                                  "non-finite prompt would answer every example alike")
    return unflatten({k: jnp.asarray(np.asarray(got[k]), expected[k].dtype) for k in expected})
