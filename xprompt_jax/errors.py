"""The error types a user can act on (bad input, bad config, bad files, a busy run dir).

Every CLI catches `XPromptError` at the top (`xprompt_jax.cli.run_cli`) and prints its
message on one line, then exits with `exit_code` (2 for bad input); the traceback is shown
only with `--verbose`. Messages name the file (and line), field or setting at fault and
what was expected. Anything else is a bug and keeps its traceback.

This module imports nothing heavy: the data readers, gin helpers and checkpoint loaders
all raise these types.
"""

from __future__ import annotations

import os
import re
from typing import Optional


class XPromptError(Exception):
    """Base of the errors reported as one line (`exit_code` 2: bad input or setting)."""

    exit_code = 2


class ConfigError(XPromptError, ValueError):
    """A gin file, binding, macro or run setting is wrong (names the macro / file)."""


class DataError(XPromptError, ValueError):
    """A data file is missing or malformed (names file:line and the field)."""


class CheckpointError(XPromptError, ValueError):
    """A checkpoint cannot be read or does not fit the configured model."""


class ConfigMismatchError(CheckpointError):
    """An intact checkpoint holds arrays of other shapes than the configured model (another
    prompt length or method): the settings differ, the checkpoint is not damaged."""


class NonFiniteError(XPromptError, FloatingPointError):
    """The loss or the trainable parameters became NaN/Inf (names the step and the last
    good checkpoint; nothing non-finite was written)."""


class PartialWriteError(XPromptError):
    """Writing an output failed midway (a full disk, a read-only filesystem); the
    complete lines written before are kept beside it (names both files). Exit code 1: a
    failure, not bad input."""

    exit_code = 1


class RunLockedError(XPromptError, RuntimeError):
    """MODEL_DIR is in use by another live run (names its host, pid and start time)."""


class TrainingInterrupted(XPromptError):
    """SIGTERM / SIGINT / a preemption notice: the run saved a checkpoint and stopped.

    Not a failure: `exit_code` 0; the message says where to resume from.
    """

    exit_code = 0

    def __init__(self, message: str, step: int = 0, signal_name: str = "",
                 hint: Optional[str] = None):
        self.what = message
        self.hint = (f"rerun the same command to resume from step {step}" if hint is None
                     else hint)
        super().__init__(f"{message}; {self.hint}")
        self.step = step
        self.signal_name = signal_name

    def with_hint(self, hint: str) -> "TrainingInterrupted":
        """The same stop, with another way to resume (a CLI whose same command would not
        resume says which command does)."""
        return TrainingInterrupted(self.what, self.step, self.signal_name, hint)


def one_line(error: BaseException) -> str:
    """`error`'s message on one line (newlines folded into '; '; the lines gin appends
    to exceptions raised inside configurables, "In call to configurable ...", dropped)."""
    text = str(error).strip() or type(error).__name__
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    return "; ".join(p for p in parts if not p.startswith("In call to configurable"))


class ResourceError(XPromptError):
    """The machine ran out of something the run needs (disk space, a writable folder,
    accelerator or host memory). Exit code 1: a failure of the environment, not bad input;
    the message names the path or what to lower."""

    exit_code = 1


# errno values that mean "this folder cannot take the write" (not a bug of ours).
STORAGE_ERRNOS = {
    28: "no space left on device (disk full)",        # ENOSPC
    122: "disk quota exceeded",                        # EDQUOT (Linux)
    30: "read-only file system",                       # EROFS
    13: "permission denied",                           # EACCES
    1: "operation not permitted",                      # EPERM
}

OOM_HINT = ("out of memory; lower BATCH_SIZE (or raise the data axis of MESH_SHAPE), set "
            "FROZEN_DTYPE='bfloat16', rematerialise the layers (REMAT_POLICY='full'), or "
            "shorten TASK_FEATURE_LENGTHS")

MAX_LINE_CHARS = 500


def _default_folders():
    """(folder, variable that moves it) for the folders we write under HOME by default."""
    home = os.path.expanduser("~")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    folders = []
    if not os.environ.get("XPROMPT_RUNS_DIR"):
        folders.append((os.path.join(home, "xprompt_runs"), "XPROMPT_RUNS_DIR"))
    if not os.environ.get("XPROMPT_WORLD_DIR"):
        folders.append((os.path.join(cache, "xprompt_jax"), "XPROMPT_WORLD_DIR"))
    folders.append((cache, "XDG_CACHE_HOME"))
    return folders


def _move_hint(where: str) -> str:
    """'; set X to a writable folder' when `where` is (a parent of) a default folder."""
    where = os.path.abspath(os.fspath(where))
    for folder, variable in _default_folders():
        if where == folder or where.startswith(folder + os.sep) or \
                folder.startswith(where.rstrip(os.sep) + os.sep):
            return (f"; {where} is a default location under HOME: set {variable} to a "
                    "writable folder")
    return ""


def storage_error(error: OSError, path=None) -> "ResourceError":
    """An OSError of `STORAGE_ERRNOS` as one line naming the path, what the errno means and,
    for a default folder under HOME (a read-only HOME), the variable that moves it. With
    `path` (what was being written), the line says so and that earlier files are kept."""
    where = path if path is not None else (error.filename or "a file")
    meaning = STORAGE_ERRNOS.get(error.errno, error.strerror or type(error).__name__)
    hint = _move_hint(os.fspath(where)) if isinstance(where, (str, os.PathLike)) and \
        "://" not in os.fspath(where) else ""
    if path is None:
        return ResourceError(f"{where}: {meaning} [errno {error.errno}]{hint}")
    return ResourceError(f"cannot write {where}: {meaning} [errno {error.errno}]{hint}; "
                         "what was written before is kept")


# How a library that does its own I/O (TensorStore, under orbax's checkpoints) words these
# errnos in the message of a ValueError; the file is the one it names as failing.
_STORAGE_TEXTS = {"no space left on device": 28, "disk quota exceeded": 122,
                  "read-only file system": 30}
_FAILED_FILE = re.compile(r'(?:Failed writing|Error writing[^"]*in [^"]*at local file):? "([^"]+)"')


def _storage_error_in_text(error: BaseException) -> Optional["ResourceError"]:
    text = str(error)
    lower = text.lower()
    for words, number in _STORAGE_TEXTS.items():
        if words in lower:
            found = _FAILED_FILE.search(text) or re.search(r'local file "([^"]+)"', text)
            where = found.group(1) if found else "a file"
            return storage_error(OSError(number, STORAGE_ERRNOS[number]), where)
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """Host MemoryError, or XLA's RESOURCE_EXHAUSTED (jaxlib's XlaRuntimeError /
    JaxRuntimeError; matched by name so that this module imports nothing heavy)."""
    if isinstance(error, MemoryError):
        return True
    return (type(error).__name__ in ("XlaRuntimeError", "JaxRuntimeError")
            and "RESOURCE_EXHAUSTED" in str(error))


def as_user_error(error: BaseException) -> Optional[XPromptError]:
    """`error` itself or the first error on its cause/context chain that a user can act
    on: one of ours, an OSError of `STORAGE_ERRNOS` (a full disk, a read-only folder), or
    running out of memory. None for anything else (a bug: it keeps its traceback)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, XPromptError):
            return error
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return storage_error(error)
        text_error = _storage_error_in_text(error) if isinstance(error, ValueError) else None
        if text_error is not None:
            return text_error
        if is_out_of_memory(error):
            detail = str(error).strip().splitlines()[0] if str(error).strip() else \
                type(error).__name__
            return ResourceError(f"{OOM_HINT} ({detail})")
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def capped(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """`text` cut to `limit` characters, the cut marked with an ellipsis and its length."""
    if len(text) <= limit:
        return text
    keep = limit
    for _ in range(3):  # the suffix's length depends on the count it gives
        suffix = f" ... [{len(text) - keep} more characters]"
        keep = limit - len(suffix)
    return text[:keep] + suffix
