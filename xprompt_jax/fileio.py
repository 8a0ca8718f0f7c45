"""Files we write, on one process of many, through one filesystem layer.

Every file a run writes (JSON records, reports, masks, exported prompts, predictions) goes
through these helpers: a temporary file in the same directory, written, flushed and
renamed into place, so a kill or a full disk leaves the previous file whole. Paths are
`etils.epath` paths (local or `gs://...`, as T5X's own files).

Multi-process runs (a TPU pod): `is_writer()` is process 0, the one that writes files;
`barrier(name)` lets every process wait until the others reach the same point (a no-op in
one process), so that what process 0 wrote before it is visible to all after it.
`host_array` brings a (possibly multi-host) `jax.Array` to the host of every process.
"""

from __future__ import annotations

import io
import json
import os
import time
from typing import Any, Mapping, Union

import jax
import numpy as np
from etils import epath

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- processes
def is_writer() -> bool:
    """Process 0 writes exports, logs, reports and run records."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """All processes meet here (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_array(x: Any) -> np.ndarray:
    """A full host copy of `x`; an array spread over other processes' devices is gathered
    (a collective: every process must call it with the same array)."""
    if isinstance(x, jax.Array):
        if x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def to_jsonable(obj: Any, _where: str = "value") -> Any:
    """numpy / jax scalars and arrays, tuples and non-str keys -> plain JSON types."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{_where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (np.generic, np.ndarray, jax.Array)):
        value = host_array(obj)
        return value.item() if value.ndim == 0 else value.tolist()
    raise TypeError(f"{_where}: {type(obj).__name__} is not JSON-serializable")


def jsonable_loose(obj: Any) -> Any:
    """Like `to_jsonable`, with anything else written as its `str` (records of settings
    that may hold objects, e.g. a gin-configured module)."""
    return json.loads(json.dumps(obj, default=lambda o: (
        to_jsonable(o) if isinstance(o, (np.generic, np.ndarray, jax.Array)) else str(o))))


# ----------------------------------------------------------------------------- writes
def fsync(f) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass  # non-local file systems: the backend's close semantics apply


def _tmp(path: epath.Path) -> epath.Path:
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{time.time_ns()}"


def _write(path: PathLike, mode: str, write) -> epath.Path:
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        with tmp.open(mode) as f:
            write(f)
            fsync(f)
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


def write_text_atomic(path: PathLike, text: str) -> epath.Path:
    """`text` to `path`, atomically."""
    return _write(path, "w", lambda f: f.write(text))


def write_json_atomic(path: PathLike, obj: Any) -> epath.Path:
    """`obj` (`to_jsonable`) as indented, key-sorted JSON to `path`, atomically."""
    return _write(path, "w", lambda f: json.dump(to_jsonable(obj), f, indent=2,
                                                 sort_keys=True))


def write_lines_atomic(path: PathLike, lines) -> epath.Path:
    """An iterable of text lines (without newlines) to `path`, atomically."""
    return _write(path, "w", lambda f: f.writelines(f"{line}\n" for line in lines))


def save_npy_atomic(path: PathLike, value: Any, dtype: Any = None) -> epath.Path:
    """One array as `.npy` (never pickled), atomically; `dtype` casts it first."""
    value = np.asarray(value) if dtype is None else np.asarray(value, dtype)
    return _write(path, "wb", lambda f: np.save(f, value, allow_pickle=False))


def save_npz_atomic(path: PathLike, **arrays: Any) -> epath.Path:
    """Named arrays as one `.npz`, atomically."""
    return _write(path, "wb", lambda f: np.savez(f, **{k: np.asarray(v)
                                                     for k, v in arrays.items()}))


def read_json(path: PathLike) -> Any:
    with epath.Path(path).open() as f:
        return json.load(f)
