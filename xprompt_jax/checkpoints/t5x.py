"""Load a pretrained T5X checkpoint (legacy msgpack + zarr, or orbax/OCDBT) as params.

`path` may be
- a `checkpoint_N` directory of either format (legacy: has a `checkpoint` msgpack file;
  orbax: has a `state/` item directory),
- the legacy `checkpoint` file itself, or the orbax `state` directory,
- a model directory holding `checkpoint_N` subdirectories: the largest N is used.
Local paths and `gs://` paths work (GCS reads need TensorStore's gcs driver / orbax).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Optional, Tuple

from . import paths
from . import t5x_legacy
from . import t5x_orbax

LEGACY = "legacy"
ORBAX = "orbax"

_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


@dataclasses.dataclass
class T5XCheckpoint:
    """What `load_t5x_checkpoint` read.

    params: nested dict of arrays (T5X names). optimizer_state: the checkpoint's `state`
    subtree (`{'step', 'param_states'}`) as host numpy, or None when not requested.
    step: the training step, or None if the checkpoint has none. format: 'legacy' or
    'orbax'. path: the file (legacy) or `state` directory (orbax) that was read.
    """

    params: Dict[str, Any]
    optimizer_state: Optional[Dict[str, Any]]
    step: Optional[int]
    format: str
    path: str


def latest_checkpoint_dir(model_dir: str) -> Optional[str]:
    """`model_dir/checkpoint_N` with the largest N, or None."""
    steps = []
    for name in paths.listdir(model_dir):
        m = _STEP_DIR.match(name)
        if m and paths.isdir(paths.join(model_dir, name)):
            steps.append((int(m.group(1)), name))
    return paths.join(model_dir, max(steps)[1]) if steps else None


def find_t5x_checkpoint(path) -> Tuple[str, str]:
    """`(format, location)`: the legacy msgpack file or the orbax `state` directory."""
    path = paths.fspath(path)
    if not paths.exists(path):
        raise FileNotFoundError(f"T5X checkpoint path does not exist: {path}")
    if paths.isfile(path):
        return LEGACY, path
    legacy_file = paths.join(path, "checkpoint")
    if paths.isfile(legacy_file):
        return LEGACY, legacy_file
    state_dir = paths.join(path, "state")
    if t5x_orbax.is_orbax_pytree_dir(state_dir):
        return ORBAX, state_dir
    if t5x_orbax.is_orbax_pytree_dir(path):
        return ORBAX, path
    latest = latest_checkpoint_dir(path)
    if latest is not None:
        return find_t5x_checkpoint(latest)
    raise FileNotFoundError(
        f"no T5X checkpoint in {path}: expected a legacy 'checkpoint' msgpack file, an "
        "orbax 'state/' directory (with _METADATA / manifest.ocdbt), or checkpoint_N "
        "subdirectories")


def load_t5x_checkpoint(path, *, shardings=None, dtype=None, expected=None,
                        restore_optimizer_state: bool = False) -> T5XCheckpoint:
    """Reads a T5X checkpoint without importing t5x (see `load_t5x_params`)."""
    fmt, location = find_t5x_checkpoint(paths.absolute(paths.fspath(path)))  # orbax: absolute
    if fmt == LEGACY:
        params, opt_state, step, _ = t5x_legacy.load(
            location, shardings=shardings, dtype=dtype, expected=expected,
            restore_optimizer_state=restore_optimizer_state)
    else:
        params, opt_state, step = t5x_orbax.load(
            location, shardings=shardings, dtype=dtype, expected=expected,
            restore_optimizer_state=restore_optimizer_state)
    return T5XCheckpoint(params=params, optimizer_state=opt_state, step=step, format=fmt,
                         path=location)


def load_t5x_params(path, *, shardings=None, dtype=None, expected=None,
                    return_optimizer_state: bool = False, return_step: bool = False):
    """The `target` parameters of a T5X checkpoint, in T5X names and layouts.

    Args:
      path: a `checkpoint_N` directory (legacy or orbax), the legacy `checkpoint` file,
        the orbax `state` directory, or a directory of `checkpoint_N` (latest is used).
      shardings: None (host `np.ndarray`s), one `jax.sharding.Sharding` for all, a tree of
        shardings matching the params, or `fn(path_str[, shape]) -> Sharding | None`.
        Sharded parameters are read shard by shard (TensorStore for legacy zarr arrays,
        orbax `ArrayRestoreArgs` for orbax), never as a full array on one host.
      dtype: cast the params to this dtype (e.g. 'bfloat16'); None keeps the stored one.
      expected: a `T5Config` or a tree of shapes (e.g. `jax.eval_shape(model.init, ...)
        ['params']`): checked against the checkpoint's metadata *before* any data is read;
        a mismatch raises `ParamsMismatchError` naming each parameter and both shapes.
      return_optimizer_state: also return the `state` subtree (host numpy).
      return_step: also return the step (int or None).

    Returns:
      `params`, or a tuple `(params, optimizer_state?, step?)` with the requested extras
      in that order.
    """
    ckpt = load_t5x_checkpoint(path, shardings=shardings, dtype=dtype, expected=expected,
                               restore_optimizer_state=return_optimizer_state)
    if not (return_optimizer_state or return_step):
        return ckpt.params
    out = [ckpt.params]
    if return_optimizer_state:
        out.append(ckpt.optimizer_state)
    if return_step:
        out.append(ckpt.step)
    return tuple(out)
