"""One run per MODEL_DIR: a lock file `MODEL_DIR/run.lock` holding the owner's host, pid and
start time.

`acquire` creates the file atomically (`O_CREAT | O_EXCL`). If it exists:
- owned by this process (a second `Trainer` in the same program, e.g. a rerun in a
  notebook or the pipeline's stages): kept;
- owned by a process on this host that is no longer alive (a killed run): taken over with a
  warning naming the dead owner;
- owned by another host whose heartbeat stopped (the owner touches the file every
  HEARTBEAT_S seconds from a daemon thread; none for STALE_AFTER_S: e.g. a preempted VM
  whose job was relaunched elsewhere): taken over with a warning;
- otherwise (a live process, or a fresh lock of another host): `RunLockedError`
  naming the owner, unless `force` (`--force`), which takes it over with a warning.
`release` removes the file if this process owns it (also at interpreter exit). Only
process 0 of a multi-process run holds the lock; every process learns the outcome (a
broadcast, a no-op in one process) so all of them stop together.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Dict, Optional

import jax

from ..errors import RunLockedError
from ..fileio import is_writer

logger = logging.getLogger("xprompt_jax")

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
_HELD: Dict[str, Dict[str, Any]] = {}
_HEARTBEAT: Dict[str, threading.Event] = {}


def lock_path(model_dir: str) -> str:
    return os.path.join(os.fspath(model_dir), LOCK_FILE)


def _owner_record() -> Dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_time": time.time(),
            "start": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def read_lock(model_dir: str) -> Optional[Dict[str, Any]]:
    """The lock's owner record (None if unlocked; {} if unreadable, e.g. half-written)."""
    try:
        with open(lock_path(model_dir)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(owner: Dict[str, Any]) -> str:
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started "
            f"{owner.get('start', '?')}")


def _age(path: str) -> float:
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return 0.0


def _beat(path: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(path)
        except OSError:
            return


def _start_heartbeat(path: str) -> None:
    if path in _HEARTBEAT:
        return
    stop = threading.Event()
    _HEARTBEAT[path] = stop
    threading.Thread(target=_beat, args=(path, stop), daemon=True,
                     name="xprompt_jax-lock-heartbeat").start()


def _create(path: str, record: Dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def _try_acquire(model_dir: str, force: bool) -> Optional[str]:
    """Takes the lock; returns None, or the reason it could not."""
    os.makedirs(model_dir, exist_ok=True)
    path = lock_path(model_dir)
    me = _owner_record()
    for _ in range(3):
        if _create(path, me):
            _HELD[path] = me
            _start_heartbeat(path)
            return None
        owner = read_lock(model_dir)
        if owner is None:
            continue  # released meanwhile: try again
        if owner.get("host") == me["host"] and owner.get("pid") == me["pid"]:
            _HELD[path] = owner
            return None
        same_host = owner.get("host") == me["host"]
        pid = owner.get("pid")
        stale = (same_host and isinstance(pid, int) and not _alive(pid)) or (
            not same_host and _age(path) > STALE_AFTER_S)
        if not (stale or force or owner == {}):
            where = "" if same_host else " (another host: cannot tell whether it still runs)"
            return (f"{model_dir} is in use by another run ({_describe(owner)}{where}); "
                    f"wait for it, use another MODEL_DIR, or pass --force to take it over "
                    f"(lock file {path})")
        reason = ("forced (--force)" if force and not stale else
                  "its owner is gone" if stale and same_host else
                  f"no heartbeat for {_age(path):.0f} s" if stale else
                  "the lock file was unreadable")
        logger.warning("taking over the lock of %s from %s: %s", model_dir,
                       _describe(owner) if owner else "an unknown owner", reason)
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    return f"could not take the lock {path} (another run keeps creating it)"


def acquire(model_dir: str, force: bool = False) -> None:
    """Locks `model_dir` for this run (see the module docstring); raises RunLockedError."""
    reason = _try_acquire(model_dir, force) if is_writer() else None
    failed = reason is not None
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        failed = bool(multihost_utils.broadcast_one_to_all(np.int32(failed)))
    if failed:
        raise RunLockedError(reason or f"{model_dir} is in use by another run (see process 0)")


def release(model_dir: str) -> None:
    path = lock_path(model_dir)
    if _HELD.pop(path, None) is None:
        return
    stop = _HEARTBEAT.pop(path, None)
    if stop is not None:
        stop.set()
    owner = read_lock(model_dir)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release(os.path.dirname(path))
