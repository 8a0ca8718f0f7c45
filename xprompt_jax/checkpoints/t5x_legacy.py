"""The legacy T5X checkpoint format: a msgpack file plus TensorStore zarr arrays.

`checkpoint_N/checkpoint` holds `{'version', 'optimizer': {'target': params, 'state':
{'step', 'param_states'}}}` as flax msgpack: small arrays inline (msgpack ext type 1,
`(shape, dtype name, bytes)`), large ones replaced by a TensorStore spec dict, e.g.
`{'driver': 'zarr', 'kvstore': {'driver': 'gfile', 'path':
'target.token_embedder.embedding'}, 'metadata': {...}}`, whose data lives in a sibling
directory of the msgpack file. T5X records the path relative to the checkpoint directory
and a `gfile` / `file` / `gcs` kvstore driver; we re-root it at the directory the msgpack
file is in now (`file` driver locally, `gcs` for `gs://bucket/...`). Recorded absolute
paths (another machine or bucket) keep only their last component.

t5x is not imported: the file is decoded with `flax.serialization.msgpack_restore`.
"""

from __future__ import annotations

import copy
import dataclasses
import posixpath
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from . import paths
from . import placement
from . import tree as tree_lib

Path = Tuple[str, ...]


def is_tensorstore_spec(x) -> bool:
    return (isinstance(x, Mapping) and isinstance(x.get("driver"), str)
            and ("kvstore" in x or "path" in x))


def read_msgpack(checkpoint_file: str) -> Dict[str, Any]:
    from flax import serialization
    raw = paths.read_bytes(checkpoint_file)
    try:
        return serialization.msgpack_restore(raw)
    except Exception as err:
        raise ValueError(f"{checkpoint_file} is not a T5X msgpack checkpoint: {err}") from err


def _recorded_name(spec: Mapping) -> Tuple[str, bool]:
    """(recorded array path, whether it is absolute) from a T5X TensorStore spec."""
    kv = spec.get("kvstore")
    top = spec.get("path")  # tensorstore < 0.1.14 kept the path at the top level
    if isinstance(kv, str):  # a kvstore URL, e.g. 'file:///a/b' or 'gs://bucket/a/b'
        rel, absolute = kv, True
    else:
        kv = kv or {}
        rel = kv.get("path") or ""
        absolute = rel.startswith("/") or "://" in rel or (
            kv.get("driver") == "gcs" and bool(kv.get("bucket")) and "/" in rel.strip("/"))
    if top:
        rel = posixpath.join(rel, top) if rel else top
    if not rel:
        raise ValueError(f"TensorStore spec without a path: {dict(spec)}")
    return rel.rstrip("/"), absolute


def resolve_spec(spec: Mapping, checkpoint_dir: str) -> Dict[str, Any]:
    """A T5X TensorStore spec re-rooted at `checkpoint_dir` (see module docstring)."""
    spec = copy.deepcopy(dict(spec))
    rel, absolute = _recorded_name(spec)
    spec.pop("path", None)
    name = paths.basename(rel) if absolute else rel
    gcs = paths.split_gcs(checkpoint_dir)
    if gcs is not None:
        bucket, prefix = gcs
        spec["kvstore"] = {"driver": "gcs", "bucket": bucket,
                           "path": posixpath.join(prefix, name)}
    else:
        target = paths.join(paths.absolute(checkpoint_dir), name)
        if not absolute and not paths.exists(target):
            # a relative path with directories that are not there: fall back to the name
            alt = paths.join(paths.absolute(checkpoint_dir), paths.basename(rel))
            target = alt if paths.exists(alt) else target
        spec["kvstore"] = {"driver": "file", "path": target}
    return spec


@dataclasses.dataclass
class _Leaf:
    """A parameter as found in the msgpack: inline array or opened TensorStore."""

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    array: Optional[np.ndarray] = None
    store: Any = None  # tensorstore.TensorStore

    def reader(self):
        if self.array is not None:
            return placement.numpy_reader(self.array)
        store = self.store
        return lambda index: store[index].read().result() if index else store.read().result()


def _open_leaves(flat: Mapping[Path, Any], checkpoint_dir: str) -> Dict[Path, _Leaf]:
    """Opens every TensorStore leaf (concurrently) and wraps inline arrays."""
    futures = {}
    out: Dict[Path, _Leaf] = {}
    for p, x in flat.items():
        name = tree_lib.path_str(p)
        if is_tensorstore_spec(x):
            import tensorstore as ts
            spec = resolve_spec(x, checkpoint_dir)
            futures[p] = (spec, ts.open(spec, read=True))
            out[p] = None  # keeps the order
        else:
            arr = np.asarray(x)
            out[p] = _Leaf(name, tuple(arr.shape), arr.dtype, array=arr)
    for p, (spec, fut) in futures.items():
        try:
            store = fut.result()
        except Exception as err:
            raise FileNotFoundError(
                f"cannot open the TensorStore array of {tree_lib.path_str(p)} at "
                f"{spec['kvstore']}: {err}") from err
        out[p] = _Leaf(tree_lib.path_str(p), tuple(int(d) for d in store.shape),
                       np.dtype(store.dtype.numpy_dtype), store=store)
    return out


def _read_all_host(leaves: Mapping[Path, _Leaf], dtype=None) -> Dict[Path, np.ndarray]:
    """Full reads, all TensorStore reads in flight at once."""
    futures = {p: lf.store.read() for p, lf in leaves.items() if lf.store is not None}
    out = {}
    for p, lf in leaves.items():
        arr = futures[p].result() if p in futures else lf.array
        if dtype is not None and arr.dtype != dtype:
            arr = arr.astype(dtype)
        out[p] = arr
    return out


def _split(raw: Mapping, checkpoint_file: str) -> Tuple[Mapping, Mapping]:
    if "optimizer" in raw and isinstance(raw["optimizer"], Mapping) \
            and "target" in raw["optimizer"]:
        return raw["optimizer"]["target"], raw["optimizer"].get("state") or {}
    if "target" in raw:
        return raw["target"], raw.get("state") or {}
    raise ValueError(f"{checkpoint_file}: no 'optimizer/target' in the checkpoint "
                     f"(top-level keys: {sorted(raw)})")


def load(checkpoint_file: str, *, shardings=None, dtype=None, expected=None,
         restore_optimizer_state: bool = False):
    """Returns `(params, optimizer_state or None, step or None, version)`.

    Params are host numpy arrays, or jax arrays where `shardings` gives a sharding (read
    per shard through TensorStore). The optimizer state (`param_states`) is read to host
    numpy.
    """
    checkpoint_dir = paths.dirname(checkpoint_file)
    raw = read_msgpack(checkpoint_file)
    target, state = _split(raw, checkpoint_file)
    flat = tree_lib.flatten(target, is_leaf=is_tensorstore_spec)
    leaves = _open_leaves(flat, checkpoint_dir)
    expected = tree_lib.resolve_expected(expected)
    if expected is not None:
        tree_lib.check_params_match(tree_lib.unflatten(leaves_shapes(leaves)), expected)
    dtype = placement.canonical_dtype(dtype)
    if shardings is None:
        params = _read_all_host(leaves, dtype)
    else:
        per_path = placement.shardings_for(shardings, {p: lf.shape for p, lf in leaves.items()})
        params = {p: placement.materialize(lf.name, lf.shape, lf.reader(), per_path[p], dtype)
                  for p, lf in leaves.items()}
    step = state.get("step") if isinstance(state, Mapping) else None
    step = None if step is None else int(np.asarray(step))
    opt_state = None
    if restore_optimizer_state:
        sflat = tree_lib.flatten(state, is_leaf=is_tensorstore_spec) if state else {}
        opt_state = tree_lib.unflatten(_read_all_host(_open_leaves(sflat, checkpoint_dir))) \
            if sflat else {}
    return tree_lib.unflatten(params), opt_state, step, raw.get("version")


def leaves_shapes(leaves: Mapping[Path, _Leaf]) -> Dict[Path, Any]:
    import jax
    return {p: jax.ShapeDtypeStruct(lf.shape, lf.dtype) for p, lf in leaves.items()}
