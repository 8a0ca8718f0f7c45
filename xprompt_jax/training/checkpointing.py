"""Run checkpoints in MODEL_DIR: orbax state + JSON meta, keep-N-plus-best, numpy export.

Layout under `model_dir`::

    checkpoints/                      orbax CheckpointManager root
      _ROOT_METADATA                  (orbax)
      <step>/                         one finalized checkpoint per saved step
        state/                        pytree item: trainable params, optimizer state, step,
                                      masks, ... (anything array-like)
        meta/                         JSON item: data-iterator position, eval results, ...
        checkpoint_info/              JSON item: {"step", "metric", "best_mode"}
        _CHECKPOINT_METADATA, commit_success.txt   (orbax)
      <step>.orbax-checkpoint-tmp/    a save in progress (or killed): never listed
    numpy_checkpoints/
      checkpoint_<step>/<param path>  one .npy-format file per exported parameter
      checkpoint_<step>.tmp-<n>/      an export in progress (or killed): never listed
    best_checkpoint.json              summary: best step/metric, retained steps and metrics

Numpy export follows google-research/prompt-tuning (`prompt_tuning/train/utils.py`,
`Checkpointer.save_numpy`): the exported tree is the *params* tree (no `target.` prefix),
each file is named by the parameter's path with '/' replaced by '.', e.g.
`numpy_checkpoints/checkpoint_1000/encoder.prompt.prompt.prompt` for
params['encoder']['prompt']['prompt']['prompt'], and - like prompt-tuning, whose
`np_save` writes through a file object - **without** a `.npy` suffix (the content is
ordinary `.npy` format; `np.load` reads it). Pass `numpy_suffix='.npy'` to append one.
Floating arrays are cast to float32 (T5X's default `save_dtype`). Which parameters are
exported: the `numpy_params` given to `save` (default: `state['params']` or
`state.params`), filtered by `numpy_filter`, a regex (or list of regexes) that must
*fully* match the '/'-joined path (prompt-tuning's `match_any`; same convention as
`params.split_params`). Unlike prompt-tuning (whose numpy dirs are never deleted), numpy
dirs are pruned together with the orbax checkpoints (`prune_numpy=False` keeps them all).

Atomicity:
- orbax writes each checkpoint into `<step>.orbax-checkpoint-tmp` (older orbax releases
  append `-<timestamp>`) and renames it to `<step>` once complete (on GCS it uses a
  `commit_success.txt` marker instead); saves are synchronous, so when `save` returns the
  checkpoint is finalized. Unfinished directories are never listed by
  `all_steps`/`latest_step`, so `restore` ignores them; a writer (not `read_only`) also
  deletes leftover temporary directories when it starts.
- numpy exports are written into `checkpoint_<step>.tmp-<n>/` and renamed to
  `checkpoint_<step>/` when all files are written (`os.rename`: atomic on POSIX). The
  export happens *before* the orbax save, so every orbax checkpoint has its numpy dir; a
  numpy dir orphaned by a crash in between is replaced when that step is saved again, or
  pruned.
- `best_checkpoint.json` is written to a temporary file, fsynced and `os.replace`d.

Integrity:
- `save` refuses a state with NaN/Inf in a floating leaf (`NonFiniteError`): nothing
  non-finite is written (neither the orbax state nor the numpy export).
- each checkpoint's meta holds `state_sha256`, a digest of its arrays (order-independent:
  the sorted per-array digests), checked by `restore`: flipped bytes that orbax reads
  without complaint still count as a bad checkpoint.
- `restore_latest_good` tries the newest checkpoint first and falls back to older ones
  with a warning naming each bad step and why; bad checkpoints are never deleted. When a
  run reaches a bad step's number again, the bad directory is moved to
  `corrupt_checkpoints/<step>-<time>` (kept for inspection) before the new save.
- the metric that decides "best" lives inside each checkpoint (`checkpoint_info` item),
  so it is committed atomically with the state; on construction the metrics of all
  retained steps are read back, so after a restart the best step is still known and still
  protected from pruning. `best_checkpoint.json` is a human-readable summary only.

Multi-host: every process must call `save`/`restore` (orbax coordinates the array writes
and the deletions); only process 0 writes the numpy files and the JSON summary
(`jax.process_index() == 0`). Parameters sharded across hosts are gathered for export
with `multihost_utils.process_allgather` (a collective: all processes take part).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from .. import _moved
from ..checkpoints.read_errors import first_line as _first_line
from ..checkpoints.read_errors import quiet_failed_reads, unreadable_reason
from ..errors import CheckpointError, ConfigMismatchError, DataError, NonFiniteError
from ..fileio import (barrier, fsync, host_array, is_local, is_writer, read_npy,
                      remove_written_dir, to_jsonable, write_json_atomic)

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
NUMPY_CHECKPOINTS_DIR = "numpy_checkpoints"
BEST_RECORD_FILE = "best_checkpoint.json"
CORRUPT_DIR = "corrupt_checkpoints"
CHECKSUM_KEY = "state_sha256"

STATE_ITEM = "state"
META_ITEM = "meta"
INFO_ITEM = "checkpoint_info"

_NUMPY_DIR_RE = re.compile(r"^checkpoint_(\d+)$")
_NUMPY_TMP_RE = re.compile(r"^checkpoint_(\d+)\.tmp-")

PathLike = Union[str, os.PathLike]
Filter = Union[None, str, Sequence[str]]


# ----------------------------------------------------------------------------- helpers
def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def param_paths(tree: Any) -> Dict[str, Any]:
    """Flattens a pytree to {'a/b/c': leaf} ('/'-joined keys; None leaves skipped)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in flat}


def numpy_file_name(param_path: str, suffix: str = "") -> str:
    """prompt-tuning's file name for a parameter: '/' -> '.', e.g.
    'encoder/prompt/prompt/prompt' -> 'encoder.prompt.prompt.prompt' (+ `suffix`)."""
    return param_path.replace("/", ".") + suffix


def _compile_filter(patterns: Filter):
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = [re.compile(p) for p in patterns]
    return lambda path: any(c.fullmatch(path) for c in compiled)


def _array_leaves(tree: Any) -> List[Tuple[str, np.ndarray]]:
    return [(path, host_array(leaf)) for path, leaf in param_paths(tree).items()
            if isinstance(leaf, (jax.Array, np.ndarray, np.generic))]


def state_checksum(tree: Any) -> str:
    """sha256 over the arrays of `tree` (dtype, shape, bytes), independent of the tree's
    container types and order (a restore without target returns dicts, not dataclasses)."""
    digests = sorted(
        hashlib.sha256(f"{v.dtype.str}{v.shape}".encode() + np.ascontiguousarray(v).tobytes()
                       ).hexdigest() for _, v in _array_leaves(tree))
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def nonfinite_leaves(tree: Any) -> List[str]:
    """Paths of the floating arrays of `tree` that hold a NaN or Inf."""
    bad = []
    for path, value in _array_leaves(tree):
        if jnp.issubdtype(value.dtype, jnp.floating) and not np.all(
                np.isfinite(value.astype(np.float32))):
            bad.append(path)
    return bad


def _why(error: BaseException) -> str:
    """The reason part of a failed restore (without the path `restore` puts first)."""
    text = _first_line(error, limit=400)
    return text.split(" cannot be read: ", 1)[1] if " cannot be read: " in text else text


def abstract_like(tree: Any) -> Any:
    """Concrete pytree -> restore target: jax.Arrays become ShapeDtypeStructs carrying their
    sharding (so `restore` puts arrays straight onto it); other leaves stay as they are."""
    def one(x):
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x
    return jax.tree_util.tree_map(one, tree)


def save_numpy_params(params: Any, directory: PathLike, *, include: Filter = None,
                      dtype: Optional[Any] = np.float32, suffix: str = "") -> Dict[str, str]:
    """Exports `params` as one .npy-format file per leaf into `directory`, atomically.

    File names follow `numpy_file_name` (prompt-tuning's convention). `include`: regex(es)
    that must fully match the '/'-joined path (None: every leaf). `dtype`: floating leaves
    are cast to it (None: kept). Files are written into `<directory>.tmp-<n>` which is then
    renamed to `directory` (an existing `directory` is replaced). Call on all processes;
    only process 0 writes. Returns {param path: file path} of what was (or would be) written.
    """
    directory = epath.Path(directory)
    match = _compile_filter(include)
    selected = {p: v for p, v in param_paths(params).items() if match is None or match(p)}
    if not selected:
        logger.warning("numpy export to %s: no parameter matched %r; nothing written",
                       directory, include)
        return {}
    values = {}
    for path, value in selected.items():
        value = host_array(value)  # collective for cross-host arrays: all processes
        if dtype is not None and jnp.issubdtype(value.dtype, jnp.floating):
            value = value.astype(dtype)  # also bfloat16, which plain numpy cannot load
        values[path] = value
    files = {p: str(directory / numpy_file_name(p, suffix)) for p in values}
    if is_writer():
        tmp = directory.parent / f"{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(exist_ok=False)  # a fresh folder of ours (never a planted one)
        for path, value in values.items():
            with (tmp / numpy_file_name(path, suffix)).open("wb") as f:
                np.save(f, value, allow_pickle=False)
                fsync(f)
        if directory.exists():
            logger.warning("%s already exists (a rerun after an interrupted save?); "
                           "replacing it", directory)
            if not remove_written_dir(directory, directory.parent):
                remove_written_dir(tmp, tmp.parent)
                raise CheckpointError(f"cannot replace {directory}: it is a symlink or "
                                      "holds folders this library did not write")
        tmp.rename(directory)
    barrier(f"xprompt_jax:save_numpy:{directory}")
    return files


def _resolve_numpy_file(path: epath.Path, param_path: Optional[str]) -> epath.Path:
    if path.is_dir():
        if param_path is None:
            names = sorted(p.name for p in path.iterdir() if p.is_file())
            if len(names) == 1:
                return path / names[0]
            raise ValueError(f"{path} holds {len(names)} files {names[:10]}; pass "
                             "param_path= to choose one (e.g. 'encoder/prompt/prompt/prompt')")
        name = numpy_file_name(param_path)
        candidates = [path / name, path / (name + ".npy")]
        if name.endswith(".npy"):
            candidates.append(path / name[: -len(".npy")])
    else:
        candidates = [path, epath.Path(str(path) + ".npy")]
        if path.name.endswith(".npy"):
            candidates.append(path.parent / path.name[: -len(".npy")])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"numpy prompt not found: tried {[str(c) for c in candidates]}")


def load_numpy_prompt(path: PathLike, expected_shape: Optional[Sequence[Optional[int]]] = None,
                      *, param_path: Optional[str] = None) -> np.ndarray:
    """Loads a prompt exported in prompt-tuning's numpy format.

    `path`: the file itself (with or without a `.npy` suffix), or a
    `numpy_checkpoints/checkpoint_<step>` directory plus `param_path` ('/'- or '.'-joined
    parameter path; may be omitted when the directory holds a single file).
    `expected_shape`: checked when given (None entries match any size); a mismatch raises
    ValueError naming the file and both shapes.
    """
    file = _resolve_numpy_file(epath.Path(path), param_path)
    value = read_npy(file, "numpy prompt")
    if expected_shape is not None:
        expected = tuple(expected_shape)
        ok = len(expected) == value.ndim and all(
            e is None or int(e) == s for e, s in zip(expected, value.shape))
        if not ok:
            raise DataError(f"numpy prompt {file}: shape {tuple(value.shape)} does not match "
                             f"the expected shape {expected}")
    return value


def _default_numpy_params(state: Any) -> Any:
    if isinstance(state, Mapping):
        return state.get("params")
    return getattr(state, "params", None)


def _clean_metric(metric: Any) -> Optional[float]:
    return None if metric is None else float(host_array(metric))


# ----------------------------------------------------------------------------- manager
class RunCheckpointer:
    """Checkpoints of one training run in `model_dir` (see the module docstring).

    Args:
      model_dir: the run directory (local path, or anything `etils.epath` opens).
      keep: how many of the most recent checkpoints to keep (>= 1; None keeps all), in
        addition to the best one.
      keep_best: also keep the checkpoint with the best `metric` (never pruned).
      best_mode: 'max' or 'min'. Ties keep the earlier step; NaN / None never count.
      save_numpy: export the params at each save (prompt-tuning numpy format).
      numpy_filter: regex or list of regexes over '/'-joined param paths (full match) that
        selects what is exported; None exports every leaf of the exported tree.
      numpy_dtype: floating leaves are exported in this dtype (None: unchanged).
      numpy_suffix: appended to each numpy file name ('' like prompt-tuning, or '.npy').
      prune_numpy: delete numpy dirs together with their orbax checkpoints.
      read_only: never write (e.g. an evaluator watching a training run); also skips the
        start-up deletion of leftover temporary directories.
    """

    def __init__(self, model_dir: PathLike, keep: Optional[int] = 3, keep_best: bool = True,
                 best_mode: str = "max", save_numpy: bool = True, numpy_filter: Filter = None,
                 *, numpy_dtype: Optional[Any] = np.float32, numpy_suffix: str = "",
                 prune_numpy: bool = True, read_only: bool = False):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        if keep is not None and int(keep) < 1:
            raise ValueError(f"keep must be >= 1 (or None to keep all), got {keep}")
        self.model_dir = epath.Path(model_dir)
        self.checkpoints_dir = self.model_dir / CHECKPOINTS_DIR
        self.numpy_dir = self.model_dir / NUMPY_CHECKPOINTS_DIR
        self.best_record_path = self.model_dir / BEST_RECORD_FILE
        self.keep = None if keep is None else int(keep)
        self.keep_best = keep_best
        self.best_mode = best_mode
        self.save_numpy = save_numpy
        self.numpy_filter = numpy_filter
        _compile_filter(numpy_filter)  # fail early on a bad regex
        self.numpy_dtype = numpy_dtype
        self.numpy_suffix = numpy_suffix
        self.prune_numpy = prune_numpy
        self.read_only = read_only
        self._local = is_local(self.model_dir)
        self._warned_no_params = False
        if not read_only and self._local and os.path.islink(self.checkpoints_dir):
            # orbax deletes pruned steps and unfinished saves there: never through a link
            raise CheckpointError(f"{self.checkpoints_dir} is a symlink; a run deletes old "
                                  "checkpoints in it, so it must be a real folder (point "
                                  "MODEL_DIR at the other disk instead)")
        if read_only and not self.checkpoints_dir.exists():
            self._manager = None
        else:
            self._manager = self._make_manager()
        if not read_only and is_writer():
            self._cleanup_numpy_tmp()
        self._metrics: Dict[int, Optional[float]] = {}
        self._bad_steps: Dict[int, str] = {}   # step -> why restoring it failed
        self._good_steps: set = set()          # saved or restored intact by this process
        self._load_metrics()

    def _make_manager(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,                      # pruning is ours: keep-N plus best
            create=not self.read_only,
            read_only=self.read_only,
            cleanup_tmp_directories=not self.read_only,
            enable_async_checkpointing=False,      # `save` returns a finalized checkpoint
        )
        return ocp.CheckpointManager(self.checkpoints_dir, options=options)

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> List[int]:
        """Finalized checkpoint steps, ascending (in-progress temp dirs are not listed)."""
        if self._manager is None:
            return []
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def metric(self, step: int) -> Optional[float]:
        """The metric saved with `step` (None if none was given or the step is gone)."""
        return self._metrics.get(int(step))

    def ranked_steps(self) -> List[int]:
        """The retained steps best first: those with a metric by metric (ties: the earlier
        step first), then those without one (None / NaN), newest first. Steps found
        unreadable in this process are left out."""
        steps = [s for s in self.all_steps() if s not in self._bad_steps]
        scored = [s for s in steps if self._metrics.get(s) is not None
                  and not math.isnan(self._metrics[s])]
        sign = -1.0 if self.best_mode == "max" else 1.0
        scored.sort(key=lambda s: (sign * self._metrics[s], s))
        return scored + sorted((s for s in steps if s not in scored), reverse=True)

    def best_step(self) -> Optional[int]:
        """The retained step with the best metric (None if no checkpoint has a metric);
        a step found unreadable in this process never counts (see `restore_best_good`)."""
        ranked = self.ranked_steps()
        if not ranked or self._metrics.get(ranked[0]) is None \
                or math.isnan(self._metrics[ranked[0]]):
            return None
        return ranked[0]

    def best_metric(self) -> Optional[float]:
        step = self.best_step()
        return None if step is None else self._metrics[step]

    def checkpoint_path(self, step: int) -> epath.Path:
        return self.checkpoints_dir / str(int(step))

    def numpy_path(self, step: int) -> epath.Path:
        """`numpy_checkpoints/checkpoint_<step>` (prompt-tuning's directory name)."""
        return self.numpy_dir / f"checkpoint_{int(step)}"

    # ------------------------------------------------------------------ save
    def save(self, step: int, state: Any, meta: Optional[Mapping[str, Any]] = None,
             metric: Optional[float] = None, force: bool = False,
             numpy_params: Any = None) -> bool:
        """Saves `state` (pytree) and `meta` (JSON dict) as checkpoint `step`, then prunes.

        Synchronous: when it returns, the checkpoint (and the numpy export) are finalized
        on disk and old checkpoints are deleted. `metric` ranks checkpoints for
        `keep_best`. If `step` already exists it is left alone and False is returned,
        unless `force`, which replaces it. `numpy_params`: the tree to export (default
        `state['params']` / `state.params`), filtered by `numpy_filter`. Returns True when
        a checkpoint was written. Call on all processes.
        """
        if self.read_only or self._manager is None:
            raise RuntimeError(f"RunCheckpointer({self.model_dir}) is read-only")
        step = int(step)
        bad = nonfinite_leaves(state)
        if bad:
            raise NonFiniteError(f"not saving step {step} to {self.checkpoints_dir}: "
                                 f"non-finite values in {bad[:5]}")
        if step in self._bad_steps and step in self.all_steps():
            self._quarantine(step)
        if step in self.all_steps():
            if not force:
                logger.warning("checkpoint for step %d already exists in %s; not saving "
                               "(force=True replaces it)", step, self.checkpoints_dir)
                return False
            logger.info("replacing the checkpoint for step %d", step)
            self._delete(step)
        metric = _clean_metric(metric)
        info = {"step": step, "metric": metric, "best_mode": self.best_mode}
        meta = dict(meta or {})
        meta[CHECKSUM_KEY] = state_checksum(state)
        args = ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            META_ITEM: ocp.args.JsonSave(to_jsonable(meta)),
            INFO_ITEM: ocp.args.JsonSave(info),
        })
        if self.save_numpy:
            params = numpy_params if numpy_params is not None else _default_numpy_params(state)
            if params is None:
                if not self._warned_no_params:
                    logger.warning("save_numpy: state has no 'params' and no numpy_params "
                                   "were given; skipping the numpy export")
                    self._warned_no_params = True
            else:
                save_numpy_params(params, self.numpy_path(step), include=self.numpy_filter,
                                  dtype=self.numpy_dtype, suffix=self.numpy_suffix)
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()
        self._manager.check_for_errors()
        self._metrics[step] = metric
        self._good_steps.add(step)
        self._prune()
        self._write_best_record()
        return True

    def wait(self) -> None:
        """Blocks until pending writes are finished (saves are synchronous: cheap no-op)."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    # ------------------------------------------------------------------ restore
    def restore(self, step: Optional[int] = None, target: Any = None
                ) -> Optional[Tuple[Any, Dict[str, Any]]]:
        """Returns `(state, meta)` of checkpoint `step` (None: the latest).

        Returns None when `step` is None and there is no checkpoint yet (a fresh run);
        raises FileNotFoundError when an explicitly requested step does not exist.
        `target`: a pytree of the saved state's structure whose leaves are
        `jax.ShapeDtypeStruct`s (with `.sharding`, e.g. a NamedSharding: arrays are
        restored straight onto it; without one: onto the default device), concrete
        arrays (restored like them) or Python / numpy scalars; e.g.
        `jax.eval_shape(lambda: init_state)` or `abstract_like(state)`.
        With a target, containers come back as in the target (optax namedtuples,
        EmptyState, MaskedState/MaskedNode, flax struct dataclasses); without one, orbax
        returns the saved tree as nested dicts/lists with arrays on their saved sharding.
        """
        steps = self.all_steps()
        if step is None:
            if not steps:
                return None
            step = steps[-1]
        step = int(step)
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.checkpoints_dir}"
                                    f" (available: {steps})")
        quiet_failed_reads()

        def load(target):
            restore_arg = (ocp.args.StandardRestore() if target is None
                           else ocp.args.StandardRestore(target))
            return self._manager.restore(step, args=ocp.args.Composite(**{
                STATE_ITEM: restore_arg, META_ITEM: ocp.args.JsonRestore()}))

        try:
            try:
                restored = load(target)
            except ValueError as e:
                local = self._local_target(step) if target is None else None
                if local is None or "topology" not in str(e).lower():
                    raise
                restored = load(local)  # saved by another topology: onto this process's device
        except Exception as e:  # pylint: disable=broad-except  (orbax / TensorStore errors)
            mismatch = self._shape_mismatch(step, target) if target is not None else None
            if mismatch:
                raise ConfigMismatchError(
                    f"checkpoint {self.checkpoint_path(step)} has {mismatch}: the checkpoint "
                    "is intact, the settings differ from those it was trained with (run "
                    "with them, or use a new MODEL_DIR)") from e
            raise CheckpointError(f"checkpoint {self.checkpoint_path(step)} cannot be read: "
                                  f"{unreadable_reason(e)}") from e
        state, meta = restored[STATE_ITEM], dict(restored[META_ITEM] or {})
        expected = meta.pop(CHECKSUM_KEY, None)
        if expected is not None and state_checksum(state) != expected:
            raise CheckpointError(f"checkpoint {self.checkpoint_path(step)}: its arrays do "
                                  f"not match the checksum saved with them (corrupt data)")
        self._good_steps.add(step)
        return state, meta

    def _saved_shapes(self, step: int) -> Dict[str, Tuple[int, ...]]:
        """{'/'-joined path: shape} of checkpoint `step`'s state, from its metadata ({} when
        the metadata cannot be read)."""
        path = os.path.join(self.checkpoint_path(step), STATE_ITEM)
        try:
            metadata = ocp.StandardCheckpointer().metadata(path)
            tree = getattr(metadata, "item_metadata", metadata)
            tree = getattr(tree, "tree", tree)
            return {p: tuple(m.shape) for p, m in param_paths(tree).items()
                    if hasattr(m, "shape")}
        except Exception:  # pylint: disable=broad-except  (damaged: not a shape question)
            return {}

    def _shape_mismatch(self, step: int, target: Any) -> Optional[str]:
        """'<param> [20, 128], the config asks for [10, 128]' when checkpoint `step` holds an
        array of another shape than `target` (a changed prompt length or method), params
        named before optimizer state; None when the shapes agree or cannot be read."""
        saved = self._saved_shapes(step)
        wanted = {p: tuple(getattr(v, "shape", ())) for p, v in param_paths(target).items()
                  if hasattr(v, "shape")}
        differ = [p for p in wanted if p in saved and saved[p] != wanted[p]]
        params = lambda tree: sorted(p[len("train/params/"):] for p in tree
                                     if p.startswith("train/params/"))
        if not differ and saved and params(saved) and params(saved) != params(wanted):
            names = lambda ps: ", ".join(ps[:4]) + (", ..." if len(ps) > 4 else "")
            return (f"parameters {names(params(saved))}, the config asks for "
                    f"{names(params(wanted))} (another method or TRAINABLE_REGEX)")
        if not differ:
            return None
        differ.sort(key=lambda p: (not p.startswith("train/params/"), p))
        path = differ[0]
        name = path[len("train/params/"):] if path.startswith("train/params/") else path
        shape = lambda s: "[" + ", ".join(str(d) for d in s) + "]"
        more = f" (and {len(differ) - 1} more arrays)" if len(differ) > 1 else ""
        return (f"{name} {shape(saved[path])}, the config asks for {shape(wanted[path])}"
                f"{more}")

    def _local_target(self, step: int) -> Any:
        """The saved state's tree as `ShapeDtypeStruct`s on this process's first device, from
        the checkpoint's metadata: the target `restore` retries with when orbax refuses to
        restore onto the saved shardings because another topology wrote them (e.g. a
        2-process x 4-device run read back by one process: "Topology mismatch"). None when
        the metadata can not be read."""
        path = os.path.join(self.checkpoint_path(step), STATE_ITEM)
        try:
            metadata = ocp.StandardCheckpointer().metadata(path)
            tree = getattr(metadata, "item_metadata", metadata)
            tree = getattr(tree, "tree", tree)
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

            def leaf(m):
                if not hasattr(m, "shape") or not hasattr(m, "dtype"):
                    raise TypeError(f"unexpected metadata leaf {type(m).__name__}")
                return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device)

            return jax.tree_util.tree_map(leaf, tree)
        except Exception as e:  # pylint: disable=broad-except  (orbax's own path remains)
            logger.debug("checkpoint %s: no local restore target from metadata (%s)", path, e)
            return None

    def restore_latest_good(self, target: Any = None
                            ) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
        """`(step, state, meta)` of the newest checkpoint that restores and passes its
        checksum; None if there is no checkpoint. A bad checkpoint is skipped with a
        warning naming its step and what is wrong (never deleted; see `save`). Raises
        CheckpointError when every checkpoint fails (each step's error named)."""
        steps = self.all_steps()
        errors = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(step, target)
            except ConfigMismatchError:
                raise  # an intact checkpoint of other settings: no older one fits either
            except Exception as e:  # pylint: disable=broad-except
                why = _why(e)
                self._bad_steps[step] = why
                errors.append(f"step {step}: {why}")
                older = [s for s in steps if s < step]
                logger.warning("checkpoint %s is unreadable or inconsistent (%s); %s",
                               self.checkpoint_path(step), why,
                               f"trying step {older[-1]}" if older else "no older checkpoint")
                continue
            if errors:
                logger.warning("resuming from step %d instead of the newest checkpoint %d "
                               "(bad checkpoints are kept; one whose step is reached again "
                               "is moved to %s/)", step, steps[-1], CORRUPT_DIR)
            return step, state, meta
        if errors:
            raise CheckpointError(f"no readable checkpoint in {self.checkpoints_dir}: "
                                  + "; ".join(errors) + " (if the model or prompt config "
                                  "changed, use a new MODEL_DIR)")
        return None

    def _best_good(self, target: Any, need_state: bool
                   ) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
        ranked = self.ranked_steps()
        first = ranked[0] if ranked else None
        for step in ranked:
            state = meta = None
            if need_state or step not in self._good_steps:
                try:
                    state, meta = self.restore(step, target)
                except ConfigMismatchError:
                    raise
                except Exception as e:  # pylint: disable=broad-except
                    self._bad_steps[step] = _why(e)
                    continue
            if step != first:
                self._warn_best_fallback(first, step)
            return step, state, meta
        if self._bad_steps and ranked:
            raise CheckpointError(f"no readable checkpoint in {self.checkpoints_dir}: " +
                                  "; ".join(f"step {s}: {w}" for s, w in
                                            sorted(self._bad_steps.items())))
        return None

    def _warn_best_fallback(self, bad: int, used: int) -> None:
        def described(step):
            metric = self._metrics.get(step)
            return f"step {step}" + ("" if metric is None else f" (metric {metric:g})")
        logger.warning("the best checkpoint %s cannot be read (%s); using %s instead (the "
                       "bad checkpoint is kept)", described(bad), self._bad_steps.get(bad),
                       described(used))

    def restore_best_good(self, target: Any = None
                          ) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
        """`(step, state, meta)` of the best checkpoint that restores and passes its
        checksum (`ranked_steps` order: an unreadable best gives way to the next best,
        with the same or a worse metric, then to the newest without a metric) with one
        warning naming the bad step and why; None if there is no checkpoint. Raises
        CheckpointError when none can be read."""
        return self._best_good(target, need_state=True)

    def readable_best_step(self, target: Any = None) -> Optional[int]:
        """`best_step` once checked to restore (steps this process saved or restored count
        as checked); an unreadable best gives way as in `restore_best_good`. None when no
        checkpoint has a metric."""
        if self.best_step() is None:
            return None
        found = self._best_good(target, need_state=False)
        step = None if found is None else found[0]
        return step if step is not None and self._metrics.get(step) is not None else None

    def _quarantine(self, step: int) -> None:
        """Moves the bad checkpoint `step` to corrupt_checkpoints/<step>-<time> (kept)."""
        if is_writer():
            dest_dir = self.model_dir / CORRUPT_DIR
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            logger.warning("moving the bad checkpoint %s (%s) to %s before saving step %d "
                           "again", self.checkpoint_path(step), self._bad_steps.get(step),
                           dest, step)
            self.checkpoint_path(step).rename(dest)
        barrier(f"xprompt_jax:quarantine:{self.model_dir}:{step}")
        self._bad_steps.pop(step, None)
        self._metrics.pop(step, None)
        self._manager.reload()

    def restore_meta(self, step: Optional[int] = None) -> Optional[Dict[str, Any]]:
        """Only the JSON meta of checkpoint `step` (None: latest); None if no checkpoint."""
        steps = self.all_steps()
        step = (steps[-1] if steps else None) if step is None else int(step)
        if step is None:
            return None
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.checkpoints_dir}"
                                    f" (available: {steps})")
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))
        meta = dict(restored[META_ITEM] or {})
        meta.pop(CHECKSUM_KEY, None)
        return meta

    def reload(self) -> None:
        """Re-reads the directory (checkpoints written by another process)."""
        if self._manager is None and self.checkpoints_dir.exists():
            self._manager = self._make_manager()
        if self._manager is not None:
            self._manager.reload()
        self._load_metrics()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()

    def __enter__(self) -> "RunCheckpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _read_info_metric(self, step: int) -> Optional[float]:
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{INFO_ITEM: ocp.args.JsonRestore()}))
            info = restored[INFO_ITEM] or {}
        except Exception as e:  # pylint: disable=broad-except
            logger.warning("checkpoint %d in %s has no readable %s (%s); treating it as "
                           "having no metric", step, self.checkpoints_dir, INFO_ITEM, e)
            return None
        return _clean_metric(info.get("metric"))

    def _load_metrics(self) -> None:
        steps = self.all_steps()
        self._metrics = {s: self._metrics[s] if s in self._metrics
                         else self._read_info_metric(s) for s in steps}

    def _steps_to_keep(self) -> set:
        steps = self.all_steps()
        keep = set(steps if self.keep is None else steps[-self.keep:])
        keep |= set(self._bad_steps) & set(steps)  # kept for inspection, never deleted
        best = self.best_step()
        if self.keep_best and best is not None:
            keep.add(best)
        return keep

    def _delete(self, step: int) -> None:
        if step in self.all_steps():
            self._manager.delete(step)
        self._metrics.pop(step, None)
        path = self.numpy_path(step)
        if is_writer() and (os.path.lexists(path) if self._local else path.exists()):
            remove_written_dir(path, self.model_dir)

    def _prune(self) -> None:
        keep = self._steps_to_keep()
        for step in self.all_steps():
            if step not in keep:
                logger.info("deleting checkpoint %d (keeping %s)", step, sorted(keep))
                self._manager.delete(step)
                self._metrics.pop(step, None)
        if self.prune_numpy and is_writer() and self.numpy_dir.exists() \
                and not self._numpy_dir_is_link():
            for path in self.numpy_dir.iterdir():
                m = _NUMPY_DIR_RE.match(path.name)
                if m and int(m.group(1)) not in keep:
                    remove_written_dir(path, self.model_dir)
        barrier(f"xprompt_jax:prune:{self.model_dir}")

    def _numpy_dir_is_link(self) -> bool:
        """Whether numpy_checkpoints is a symlink: then nothing in it is deleted (its
        checkpoint_<step> folders may be another run's)."""
        if self._local and os.path.islink(self.numpy_dir):
            logger.warning("%s is a symlink: not pruning or cleaning anything in it",
                           self.numpy_dir)
            return True
        return False

    def _cleanup_numpy_tmp(self) -> None:
        if not self.numpy_dir.exists() or self._numpy_dir_is_link():
            return
        for path in self.numpy_dir.iterdir():
            if _NUMPY_TMP_RE.match(path.name):
                logger.info("removing unfinished numpy export %s", path)
                remove_written_dir(path, self.model_dir)

    def _write_best_record(self) -> None:
        if not is_writer():
            return
        steps = self.all_steps()
        write_json_atomic(self.best_record_path, {
            "best_mode": self.best_mode,
            "best_step": self.best_step(),
            "best_metric": self.best_metric(),
            "latest_step": steps[-1] if steps else None,
            "steps": steps,
            "metrics": {str(s): self._metrics.get(s) for s in steps},
        })


# Names that moved elsewhere: an import names their new home.
__getattr__ = _moved.module_getattr(__name__)
