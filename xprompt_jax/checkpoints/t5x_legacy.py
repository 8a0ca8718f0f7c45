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

A checkpoint may come from someone else, so a spec is checked before TensorStore sees it:
only the keys T5X writes (`driver`, `kvstore`, `path`, `metadata`, `dtype`), an array
driver of `ARRAY_DRIVERS` and a kvstore driver of `KVSTORE_DRIVERS`; the array path must
stay inside the checkpoint's folder (relative, no '..', no symlink leading out; a
top-level `path` must be relative). Anything else is refused naming the key.

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

ARRAY_DRIVERS = ("zarr", "zarr3", "n5")
KVSTORE_DRIVERS = ("file", "gfile", "gcs")
SPEC_KEYS = ("driver", "kvstore", "path", "metadata", "dtype")
_KVSTORE_KEYS = ("driver", "path", "bucket")


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


def check_spec(spec: Mapping, where: str) -> None:
    """Refuses (CheckpointError naming `where` and the key) a spec with keys, drivers or a
    top-level path that T5X does not write."""
    from ..errors import CheckpointError

    def refuse(key: str, value, why: str):
        raise CheckpointError(f"{where}: TensorStore spec key {key!r} = {value!r} {why}")

    for key in spec:
        if key not in SPEC_KEYS:
            refuse(key, spec[key], f"is not allowed (allowed keys: {', '.join(SPEC_KEYS)})")
    if spec.get("driver") not in ARRAY_DRIVERS:
        refuse("driver", spec.get("driver"),
               f"is not allowed (allowed drivers: {', '.join(ARRAY_DRIVERS)})")
    kv = spec.get("kvstore")
    if isinstance(kv, str):
        if not kv.startswith(("file://", "gs://")):
            refuse("kvstore", kv, "is not a file:// or gs:// location")
    elif isinstance(kv, Mapping):
        for key in kv:
            if key not in _KVSTORE_KEYS:
                refuse(f"kvstore.{key}", kv[key], "is not allowed")
        if kv.get("driver") not in KVSTORE_DRIVERS:
            refuse("kvstore.driver", kv.get("driver"),
                   f"is not allowed (allowed: {', '.join(KVSTORE_DRIVERS)})")
        if kv.get("path") is not None and not isinstance(kv.get("path"), str):
            refuse("kvstore.path", kv.get("path"), "is not a string")
    elif kv is not None:
        refuse("kvstore", kv, "is not a kvstore")
    top = spec.get("path")
    if top is not None:
        if not isinstance(top, str):
            refuse("path", top, "is not a string")
        if top.startswith("/") or "://" in top:
            refuse("path", top, "is an absolute path (T5X records it relative to the "
                   "checkpoint folder)")


def resolve_spec(spec: Mapping, checkpoint_dir: str, where: str = "") -> Dict[str, Any]:
    """A T5X TensorStore spec re-rooted at `checkpoint_dir` (see module docstring);
    `where` names the spec in errors (the file and parameter)."""
    where = where or f"{checkpoint_dir}: a TensorStore spec"
    check_spec(spec, where)
    spec = copy.deepcopy(dict(spec))
    rel, absolute = _recorded_name(spec)
    kv = spec.get("kvstore")
    kv_path = kv if isinstance(kv, str) else (kv or {}).get("path")
    top = spec.pop("path", None)
    key = ("kvstore.path + path" if top and kv_path else "path" if top else
           "kvstore" if isinstance(kv, str) else "kvstore.path")
    name = paths.basename(rel) if absolute else rel
    what = f"{where}: TensorStore spec key {key!r} (the array's path)"
    gcs = paths.split_gcs(checkpoint_dir)
    if gcs is not None:
        paths.inside(checkpoint_dir, name, what)
        bucket, prefix = gcs
        spec["kvstore"] = {"driver": "gcs", "bucket": bucket,
                           "path": posixpath.join(prefix, name)}
    else:
        base = paths.absolute(checkpoint_dir)
        target = paths.inside(base, name, what)
        if not absolute and not paths.exists(target):
            # a relative path with directories that are not there: fall back to the name
            alt = paths.inside(base, paths.basename(rel), what)
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
            spec = resolve_spec(x, checkpoint_dir,
                                f"{paths.join(checkpoint_dir, 'checkpoint')}: {name}")
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
