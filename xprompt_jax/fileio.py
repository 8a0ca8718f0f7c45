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

import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import uuid
from typing import Any, Iterator, Mapping, Optional, Union

import jax
import numpy as np
from etils import epath

PathLike = Union[str, os.PathLike]
logger = logging.getLogger("xprompt_jax")


# ----------------------------------------------------------------------------- processes
RUNS_DIR_ENV = "XPROMPT_RUNS_DIR"


def runs_dir() -> str:
    """Where the quickstart and the benches put a run when no folder is named:
    `$XPROMPT_RUNS_DIR`, else `~/xprompt_runs`; never the working directory, which for a
    newcomer is the repository checkout (untracked files in `git status`)."""
    return os.path.abspath(os.path.expanduser(
        os.environ.get(RUNS_DIR_ENV) or os.path.join("~", "xprompt_runs")))


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
    """numpy / jax scalars and arrays, tuples and non-str keys -> plain JSON types; a
    NaN / Inf float -> None (JSON has no NaN: a bare `NaN` makes the file invalid)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{_where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (np.generic, np.ndarray, jax.Array)):
        value = host_array(obj)
        return to_jsonable(value.item() if value.ndim == 0 else value.tolist(), _where)
    raise TypeError(f"{_where}: {type(obj).__name__} is not JSON-serializable")


def jsonable_loose(obj: Any) -> Any:
    """Like `to_jsonable`, with anything else written as its `str` (records of settings
    that may hold objects, e.g. a gin-configured module)."""
    return to_jsonable(json.loads(json.dumps(obj, default=lambda o: (
        to_jsonable(o) if isinstance(o, (np.generic, np.ndarray, jax.Array)) else str(o)))))


# ----------------------------------------------------------------------------- names
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]{0,127}")


def check_name(name: Any, what: str) -> str:
    """`name` if it may become a file name and a gin comment: 1-128 of letters, digits,
    `_ . + = -` (`=`: a sweep entry's `learning_rate=0.1`), starting with a letter or
    digit, no '..' (so no path separators, newlines, quotes or shell characters). Raises ConfigError naming `what` (the names of prompts
    and tasks come from data and settings that other people write)."""
    from .errors import ConfigError

    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        shown = repr(name)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ConfigError(f"{what} {shown} is not a valid name: use 1-128 letters, digits, "
                          "'_', '.', '+', '=' or '-', starting with a letter or digit")
    return name


# ----------------------------------------------------------------------------- writes
def fsync(f) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass  # non-local file systems: the backend's close semantics apply


def is_local(path: PathLike) -> bool:
    """Whether `path` is on a local filesystem (not `gs://...` or another URL scheme)."""
    return "://" not in str(path)


def absolute(path: PathLike) -> str:
    """`path` made absolute where it is local; a URL (`gs://bucket/run`) as it is
    (`os.path.abspath` would turn it into the local folder `./gs:/bucket/run`)."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return text if not is_local(text) else os.path.abspath(text)


def is_file(path: PathLike) -> bool:
    """Whether `path` is a file (local or remote)."""
    return epath.Path(path).is_file()


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_exclusive(path: PathLike, mode: str = "w"):
    """A new local file opened for writing: created here (`O_CREAT | O_EXCL`, so nothing
    that exists at `path`, a planted symlink included, is opened or followed), with the
    mode the user's umask gives."""
    fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o666)
    return os.fdopen(fd, mode)


def _tmp(path: epath.Path) -> epath.Path:
    """A fresh temporary name beside `path` (random: not guessable in advance)."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}"


def _write(path: PathLike, mode: str, write,
           keep_partial: Optional[epath.Path] = None) -> epath.Path:
    """Writes a temporary file beside `path` and renames it into place: a kill leaves the
    old file whole. Locally the temporary is created exclusively (never a file or symlink
    planted under its name) and the rename replaces a symlink at `path` itself, never the
    file it points to. `keep_partial`: where a write that fails midway leaves what it
    wrote (`_keep_lines`) instead of deleting it."""
    path = epath.Path(path)
    local = is_local(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _raise_storage_error(e, path)
        raise
    for _ in range(100):
        tmp = _tmp(path)
        try:
            f = open_exclusive(tmp, mode) if local else tmp.open(mode)
            break
        except FileExistsError:
            continue
        except OSError as e:
            _raise_storage_error(e, path)
            raise
    else:
        raise FileExistsError(f"could not create a temporary file beside {path}")
    try:
        # a local file is its own context; epath's remote open is a context manager that
        # gives the file only on entering it
        with f as handle:
            write(handle)
            fsync(handle)
        tmp.replace(path)
    except BaseException as e:
        if os.path.lexists(tmp) if local else tmp.exists():
            if keep_partial is None:
                tmp.unlink()
            else:
                _keep_lines(tmp, keep_partial, path, e)
        _raise_storage_error(e, path)
        raise
    return path


def _raise_storage_error(error: BaseException, path: epath.Path) -> None:
    """A full disk or read-only folder while writing `path` as one line naming `path` (the
    OSError itself names only the temporary beside it); other errors are left alone."""
    from .errors import STORAGE_ERRNOS, storage_error

    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        raise storage_error(error, path) from error


def _keep_lines(tmp: epath.Path, partial: epath.Path, path: epath.Path,
                error: BaseException) -> None:
    """The complete lines of a failed write moved to `partial` (a torn last line cut
    off locally) and logged; an OSError is re-raised as PartialWriteError saying so."""
    try:
        if is_local(tmp):
            with open(tmp, "rb+") as f:
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
            lines = data[:data.rfind(b"\n") + 1].count(b"\n")
        else:
            lines = tmp.read_bytes().count(b"\n")
        partial = _unused(partial)  # an older partial output is kept, never replaced
        tmp.replace(partial)
    except OSError:
        if os.path.lexists(tmp) if is_local(tmp) else tmp.exists():
            tmp.unlink()
        return
    logger.error("%s: writing stopped (%s) after %d complete lines; they are kept in %s",
                 path, type(error).__name__, lines, partial)
    if isinstance(error, OSError):
        from .errors import PartialWriteError

        raise PartialWriteError(f"{path}: writing failed after {lines} lines ({error}); "
                                f"those lines are kept in {partial}, {path} is "
                                "unchanged") from error


def _unused(path: epath.Path) -> epath.Path:
    """`path`, or `<path>.1`, `<path>.2`, ... : the first name not taken."""
    candidate, n = path, 0
    while candidate.exists() or (is_local(candidate) and os.path.lexists(candidate)):
        n += 1
        candidate = path.parent / f"{path.name}.{n}"
    return candidate


# ----------------------------------------------------------------------------- deletes
def symlink_below(root: PathLike, path: PathLike) -> Optional[str]:
    """The first symlink among `path` and its folders strictly below `root` (None if none,
    or not local). `root` itself is the user's choice and may be a link."""
    if not is_local(path):
        return None
    root, path = os.path.abspath(os.fspath(root)), os.path.abspath(os.fspath(path))
    rel = os.path.relpath(path, root)
    if rel == os.curdir:
        return None
    if rel.split(os.sep)[0] == os.pardir:
        raise ValueError(f"{path} is not below {root}")
    current = root
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return current
    return None


def remove_written_dir(directory: PathLike, root: PathLike) -> bool:
    """Deletes `directory`, a folder of plain files this library wrote below `root`.

    Nothing is deleted through a symlink: when `directory` or a folder between `root` and
    it is a symlink, or `directory` holds anything but plain files (a sub-folder: not a
    folder we wrote), it is left as it is with a warning and False is returned. Files are
    removed by name (a symlink among them is removed itself, never its target), then the
    folder. Non-local paths (`gs://`, no symlinks there) are removed recursively."""
    if not is_local(directory):
        path = epath.Path(directory)
        if path.exists():
            path.rmtree()
        return True
    link = symlink_below(root, directory)
    if link is not None:
        logger.warning("not deleting %s: %s is a symlink (only files written here are "
                       "deleted, never through a link)", directory, link)
        return False
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return True
    dirs = [n for n in names if os.path.isdir(os.path.join(directory, n))
            and not os.path.islink(os.path.join(directory, n))]
    if dirs:
        logger.warning("not deleting %s: it holds folders (%s), which this library does "
                       "not write there", directory, ", ".join(sorted(dirs)[:3]))
        return False
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    os.rmdir(directory)
    return True


def write_text_atomic(path: PathLike, text: str) -> epath.Path:
    """`text` to `path`, atomically."""
    return _write(path, "w", lambda f: f.write(text))


def write_bytes_atomic(path: PathLike, data: bytes) -> epath.Path:
    """`data` to `path`, atomically."""
    return _write(path, "wb", lambda f: f.write(data))


def open_append(path: PathLike):
    """A local text file opened for appending (created if missing, with the mode the
    umask gives); a symlink planted at `path` is refused (OSError), never written
    through."""
    try:
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW,
                     0o666)
    except OSError as e:
        _raise_storage_error(e, path)
        raise
    return _Appending(os.fdopen(fd, "a"), path)


class _Appending:
    """The file of `open_append`: as a context manager, a full disk or read-only folder
    while writing or closing becomes one line naming the file (a file object's own OSError
    names none); the lines appended before stay."""

    def __init__(self, f, path):
        self._f, self._path = f, path

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        try:
            self._f.close()
        except OSError as e:
            error = error or e
        if error is not None:
            _raise_storage_error(error, epath.Path(self._path))
            if error is not None and kind is None:
                raise error
        return False


def write_json_atomic(path: PathLike, obj: Any) -> epath.Path:
    """`obj` (`to_jsonable`) as indented, key-sorted JSON to `path`, atomically."""
    return _write(path, "w", lambda f: json.dump(to_jsonable(obj), f, indent=2,
                                                 sort_keys=True, allow_nan=False))


def write_lines_atomic(path: PathLike, lines, keep_partial: bool = False) -> epath.Path:
    """An iterable of text lines (without newlines) to `path`, atomically. With
    `keep_partial`, a write that fails midway (the iterable raising, a full disk, Ctrl-C)
    keeps the complete lines written so far in `partial_path(path)`, leaves `path` as it
    was, and an OSError becomes PartialWriteError naming both files."""
    return _write(path, "w", lambda f: f.writelines(f"{line}\n" for line in lines),
                  keep_partial=partial_path(path) if keep_partial else None)


@contextlib.contextmanager
def staged_files(directory: PathLike, what: str, last: str = "") -> Iterator[str]:
    """A set of files that appear in `directory` together or not at all (an export).

    Yields a new folder `<directory>/<what>.partial-<random>` to write the files into
    (sub-folders allowed). When the block ends normally every file is moved into place in
    `directory` (`last`, a file name, moved last: the record saying the set is complete)
    and the folder removed; when it raises (Ctrl-C, a signal, a full disk) the folder is
    removed and nothing in `directory` changed: an earlier set there stays whole. An
    OSError becomes PartialWriteError saying so. A process killed outright leaves the
    folder, named as the partial set it is."""
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stage = directory / f"{what}.partial-{uuid.uuid4().hex[:12]}"
    stage.mkdir()
    try:
        yield os.fspath(stage)
        names = sorted(_files_below(stage), key=lambda name: (name == last, name))
        for name in names:
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            (stage / name).replace(target)
    except BaseException as e:
        _remove_stage(stage)
        from .errors import PartialWriteError, ResourceError

        # (a file written atomically inside reports a full disk as ResourceError)
        cause = e.__cause__ if isinstance(e, ResourceError) else e
        if isinstance(cause, OSError):
            raise PartialWriteError(f"{directory}: writing the {what} failed ({cause}); "
                                    f"nothing of it was kept, an earlier {what} there is "
                                    "unchanged") from e
        raise
    _remove_stage(stage)


def _files_below(folder: epath.Path, prefix: str = "") -> list:
    """The files under `folder`, as paths relative to it (walked folder by folder: no
    recursive glob, which gs:// refuses)."""
    out = []
    for entry in folder.iterdir():
        if entry.is_dir():
            out += _files_below(entry, f"{prefix}{entry.name}/")
        else:
            out.append(f"{prefix}{entry.name}")
    return out


def _remove_stage(stage: epath.Path) -> None:
    """Removes a staging folder this process created (never following a link in it)."""
    try:
        if is_local(stage):
            shutil.rmtree(os.fspath(stage))
        elif stage.exists():
            stage.rmtree()
    except OSError as e:
        logger.warning("could not remove %s: %s", stage, e)


def partial_path(path: PathLike) -> epath.Path:
    """Where `write_lines_atomic(..., keep_partial=True)` keeps the lines of a failed
    write: `<path>.partial` (`<path>.partial.1`, ... when an older one is there: kept)."""
    path = epath.Path(path)
    return path.parent / f"{path.name}.partial"


def save_npy_atomic(path: PathLike, value: Any, dtype: Any = None) -> epath.Path:
    """One array as `.npy` (never pickled), atomically; `dtype` casts it first."""
    value = np.asarray(value) if dtype is None else np.asarray(value, dtype)
    buffer = io.BytesIO()  # serialised first: remote files may not seek or tell
    np.save(buffer, value, allow_pickle=False)
    return write_bytes_atomic(path, buffer.getvalue())


def save_figure(fig, path: PathLike, **savefig_kwargs: Any) -> epath.Path:
    """A matplotlib figure as a file (format from the suffix), atomically, local or remote
    (matplotlib itself writes local files only)."""
    fmt = savefig_kwargs.pop("format", None) or epath.Path(path).suffix.lstrip(".") or "png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, **savefig_kwargs)
    return write_bytes_atomic(path, buffer.getvalue())


def save_npz_atomic(path: PathLike, **arrays: Any) -> epath.Path:
    """Named arrays as one `.npz`, atomically."""
    buffer = io.BytesIO()  # a zip archive seeks and tells; remote files may not
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return write_bytes_atomic(path, buffer.getvalue())


NPY_MAGIC = b"\x93NUMPY"


def read_npy(path: PathLike, what: str = "prompt file", finite: bool = True) -> np.ndarray:
    """The one array of a `.npy` file (never unpickled), with DataError naming `what` and
    the file when it is missing, not a `.npy` file (a text file, an `.npz` archive), cut
    short or corrupt, not floating point, or (`finite`) holding NaN / Inf or values so large
    that its norm overflows float32: a NaN prompt would otherwise score every option NaN
    and answer with the first label, a huge one stop training at step 1 blaming the
    learning rate."""
    from .errors import DataError

    path = epath.Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(len(NPY_MAGIC))
            if head != NPY_MAGIC:
                kind = "an .npz archive" if head.startswith(b"PK") else \
                    "empty" if not head else f"no .npy file (it starts with {head!r})"
                raise DataError(f"{what} {path}: {kind}; expected one .npy array "
                                "(numpy.save)")
            f.seek(0)
            value = np.load(f, allow_pickle=False)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, ValueError, EOFError, TypeError) as e:
        raise DataError(f"{what} {path}: unreadable .npy: "
                        f"{str(e).strip() or type(e).__name__}") from None
    if not np.issubdtype(value.dtype, np.floating) and value.dtype.name != "bfloat16":
        raise DataError(f"{what} {path}: dtype {value.dtype}, expected floating point")
    if finite:
        bad = ~np.isfinite(np.asarray(value, np.float32))
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(f"{what} {path}: {int(bad.sum())} of {bad.size} values are NaN "
                            f"or Inf (the first at index {first}); refusing a non-finite "
                            "prompt")
        with np.errstate(over="ignore"):  # the norm training logs and checks each step
            norm = np.sqrt(np.sum(np.square(np.asarray(value, np.float32)), dtype=np.float32))
        if not np.isfinite(norm):
            raise DataError(f"{what} {path}: values up to "
                            f"{float(np.abs(np.asarray(value, np.float32)).max()):.3g}; the "
                            "prompt's norm overflows float32, so training or scoring with it "
                            "would be non-finite (expected values on the scale of the model's "
                            "embeddings)")
    return value


def read_json(path: PathLike, what: str = "JSON file") -> Any:
    """The JSON value of `path`; a file cut short, edited by hand or not UTF-8 is a
    DataError naming `what`, the file and the line and column at fault (every record a
    run, a pipeline stage or a checkpoint keeps is read through here)."""
    path = epath.Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        from .errors import DataError

        raise DataError(f"{what} {path} does not exist") from None
    return parse_json(text, path, what)


def parse_json(text: Union[str, bytes], path: PathLike, what: str = "JSON file") -> Any:
    """`text` (the contents of `path`) parsed as JSON, with `read_json`'s DataError."""
    from .errors import DataError

    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {path}: not valid UTF-8 at byte {e.start}; the file is "
                        "damaged (delete or restore it)") from None
    except json.JSONDecodeError as e:
        problem = "empty" if not text.strip() else \
            f"invalid JSON at line {e.lineno} column {e.colno} ({e.msg})"
        raise DataError(f"{what} {path}: {problem}; the file is damaged (cut short or "
                        "edited: delete or restore it)") from None
