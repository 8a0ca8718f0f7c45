"""Where loaded arrays go: host numpy, or straight onto a target sharding shard by shard.

`shardings` (the argument of every loader) is one of
- None: every parameter is returned as a host `np.ndarray`;
- a `jax.sharding.Sharding`: used for every parameter;
- a nested mapping of shardings with the parameter tree's paths (a `None` leaf keeps that
  parameter on the host); its paths must equal the parameters' paths;
- a callable `fn(path)` or `fn(path, shape)` -> `Sharding | None`, with `path` the
  '/'-joined parameter name, e.g. `'encoder/layers_0/mlp/wi_0/kernel'`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from . import tree as tree_lib

Path = Tuple[str, ...]
Reader = Callable[[Tuple[slice, ...]], np.ndarray]


def canonical_dtype(dtype) -> Optional[np.dtype]:
    """None / 'bfloat16' / jnp.bfloat16 / np.float32 -> np.dtype (bfloat16 via ml_dtypes)."""
    if dtype is None:
        return None
    import jax.numpy as jnp
    return np.dtype(jnp.dtype(dtype))


def _is_sharding(x) -> bool:
    import jax
    return isinstance(x, jax.sharding.Sharding)


def _call_sharding_fn(fn: Callable, path: str, shape: Tuple[int, ...]):
    try:
        inspect.signature(fn).bind(path, shape)
    except (TypeError, ValueError):
        return fn(path)
    return fn(path, shape)


def shardings_for(shardings: Any, shapes: Mapping[Path, Tuple[int, ...]]
                  ) -> Dict[Path, Any]:
    """Per-path shardings (or None = host) for parameters with the given shapes."""
    if shardings is None:
        return {p: None for p in shapes}
    if _is_sharding(shardings):
        return {p: shardings for p in shapes}
    if isinstance(shardings, Mapping):
        flat = tree_lib.flatten(shardings)
        missing = [tree_lib.path_str(p) for p in shapes if p not in flat]
        extra = [tree_lib.path_str(p) for p in flat if p not in shapes]
        if missing or extra:
            msg = ["the shardings tree does not match the checkpoint's parameters:"]
            if missing:
                msg.append(f"  no sharding for ({len(missing)}): {tree_lib._fmt_list(missing)}")
            if extra:
                msg.append(f"  sharding for a parameter not in the checkpoint ({len(extra)}): "
                           f"{tree_lib._fmt_list(extra)}")
            raise tree_lib.ParamsMismatchError("\n".join(msg), extra, missing)
        out = {}
        for p in shapes:
            s = flat[p]
            if s is not None and not _is_sharding(s):
                raise TypeError(f"shardings[{tree_lib.path_str(p)}] is a {type(s).__name__}, "
                                "not a jax.sharding.Sharding")
            out[p] = s
        return out
    if callable(shardings):
        out = {}
        for p, shape in shapes.items():
            s = _call_sharding_fn(shardings, tree_lib.path_str(p), tuple(shape))
            if s is not None and not _is_sharding(s):
                raise TypeError(f"shardings({tree_lib.path_str(p)!r}) returned "
                                f"{type(s).__name__}, not a jax.sharding.Sharding or None")
            out[p] = s
        return out
    raise TypeError("shardings must be None, a Sharding, a tree of shardings or a callable, "
                    f"got {type(shardings).__name__}")


def _key(index) -> tuple:
    return tuple((s.start, s.stop, s.step) if isinstance(s, slice) else s for s in index)


def materialize(name: str, shape: Tuple[int, ...], read: Reader, sharding=None,
                dtype: Optional[np.dtype] = None):
    """Reads one parameter.

    Without a sharding: `read(full index)` as a host `np.ndarray` (cast to `dtype`). With
    one: `jax.make_array_from_callback`, reading only the slices this process's devices
    hold (each distinct slice once, shared by replicas).
    """
    shape = tuple(int(d) for d in shape)
    full = tuple(slice(0, d) for d in shape)

    def read_cast(index):
        arr = np.asarray(read(index))
        if dtype is not None and arr.dtype != dtype:
            arr = arr.astype(dtype)
        return arr

    if sharding is None:
        return read_cast(full)

    import jax
    cache: Dict[tuple, np.ndarray] = {}

    def callback(index):
        index = tuple(slice(*s.indices(d)) if isinstance(s, slice) else s
                      for s, d in zip(index, shape)) if index else full
        key = _key(index)
        if key not in cache:
            cache[key] = read_cast(index)
        return cache[key]

    try:
        return jax.make_array_from_callback(shape, sharding, callback)
    except Exception as err:  # name the parameter in shape/sharding errors
        raise ValueError(f"cannot place parameter {name} of shape {shape} with sharding "
                         f"{sharding}: {err}") from err


def numpy_reader(arr: np.ndarray) -> Reader:
    return lambda index: arr[index] if index else arr


def place_numpy_tree(flat: Mapping[Path, np.ndarray], shardings=None, dtype=None
                     ) -> Dict[Path, Any]:
    """Host arrays -> host arrays (cast) or sharded jax arrays."""
    dtype = canonical_dtype(dtype)
    per_path = shardings_for(shardings, {p: np.shape(a) for p, a in flat.items()})
    return {p: materialize(tree_lib.path_str(p), np.shape(a), numpy_reader(np.asarray(a)),
                           per_path[p], dtype)
            for p, a in flat.items()}
