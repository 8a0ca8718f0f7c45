"""The current T5X checkpoint format: orbax PyTree (OCDBT) under `checkpoint_N/state`.

`t5x/train.py` writes `{'target': params, 'state': {'step', 'param_states'}}` with orbax's
`PyTreeCheckpointHandler`. We read it with orbax's public API: the handler's `metadata`
(shapes and dtypes, no data read) and a partial `restore` of only the requested subtrees,
as host numpy (`RestoreArgs(restore_type=np.ndarray)`) or straight onto a sharding
(`ArrayRestoreArgs(sharding=...)`), each process reading only its shards.
"""

from __future__ import annotations

from typing import Mapping, Tuple

import numpy as np

from . import paths
from . import placement
from . import tree as tree_lib

Path = Tuple[str, ...]

def is_orbax_pytree_dir(path: str) -> bool:
    """True for a directory orbax's PyTree handler wrote (the `state` item directory)."""
    if not paths.isdir(path):
        return False
    names = set(paths.listdir(path))
    return "_METADATA" in names or "manifest.ocdbt" in names


def _handler():
    import orbax.checkpoint as ocp
    return ocp.PyTreeCheckpointHandler()


def _metadata_tree(handler, state_dir) -> Mapping:
    from etils import epath
    md = handler.metadata(epath.Path(state_dir))
    tree = getattr(md, "tree", md)
    if not isinstance(tree, Mapping) or "target" not in tree:
        keys = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise ValueError(f"{state_dir}: not a T5X orbax checkpoint (expected a 'target' "
                         f"subtree, found {keys})")
    return tree


def _shape(md) -> Tuple[int, ...]:
    shape = getattr(md, "shape", None)
    return () if shape is None else tuple(int(d) for d in shape)


def _dtype(md):
    dt = getattr(md, "dtype", None)
    return None if dt is None else np.dtype(dt)


def load(state_dir: str, *, shardings=None, dtype=None, expected=None,
         restore_optimizer_state: bool = False):
    """Returns `(params, optimizer_state or None, step or None)`.

    Params are host numpy arrays, or jax arrays where `shardings` gives a sharding.
    The optimizer state and step are restored to host numpy.
    """
    import jax
    import orbax.checkpoint as ocp
    from etils import epath

    handler = _handler()
    try:
        tree = _metadata_tree(handler, state_dir)
        target_md = tree_lib.flatten(tree["target"])
        shapes = {p: _shape(m) for p, m in target_md.items()}
        expected = tree_lib.resolve_expected(expected)
        if expected is not None:
            tree_lib.check_params_match(
                tree_lib.unflatten({p: jax.ShapeDtypeStruct(s, _dtype(target_md[p]) or
                                                           np.float32)
                                    for p, s in shapes.items()}), expected)
        np_dtype = placement.canonical_dtype(dtype)
        per_path = placement.shardings_for(shardings, shapes)

        def target_args(p):
            if per_path[p] is None:
                return ocp.RestoreArgs(restore_type=np.ndarray, dtype=np_dtype)
            return ocp.ArrayRestoreArgs(sharding=per_path[p], global_shape=shapes[p],
                                        dtype=np_dtype)

        item = {"target": tree["target"]}
        restore_args = {"target": tree_lib.unflatten({p: target_args(p) for p in target_md})}
        state = tree.get("state") or {}
        if isinstance(state, Mapping) and state:
            if restore_optimizer_state:
                item["state"] = state
            elif "step" in state:
                item["state"] = {"step": state["step"]}
            if "state" in item:
                restore_args["state"] = tree_lib.unflatten(
                    {p: ocp.RestoreArgs(restore_type=np.ndarray)
                     for p in tree_lib.flatten(item["state"])})
        restored = handler.restore(
            epath.Path(state_dir),
            args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                        partial_restore=True))
    finally:
        close = getattr(handler, "close", None)
        if callable(close):
            close()

    params = tree_lib.unflatten(tree_lib.flatten(restored["target"]))
    rstate = restored.get("state") or {}
    step = rstate.get("step") if isinstance(rstate, Mapping) else None
    step = None if step is None else int(np.asarray(step))
    opt_state = None
    if restore_optimizer_state:
        opt_state = tree_lib.unflatten(tree_lib.flatten(rstate)) if rstate else {}
    return params, opt_state, step
