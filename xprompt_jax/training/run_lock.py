"""One run per MODEL_DIR: a lock file `MODEL_DIR/run.lock` holding the owner's host, pid and
start time.

`acquire` creates the file with its record in one atomic step: the record is written to a
temporary file of a unique name, then hard-linked to `run.lock`, which fails if the lock
exists (a plain create-then-write would show a concurrent process an empty file for a
moment). Filesystems without hard links fall back to `O_CREAT | O_EXCL`. If it exists:
- owned by this process (a second `Trainer` in the same program, e.g. a rerun in a
  notebook or the pipeline's stages): kept;
- owned by a process on this host that is provably gone (its pid no longer exists: a
  killed run): taken over with a warning naming the dead owner;
- owned by another host whose heartbeat stopped (the owner touches the file every
  HEARTBEAT_S seconds from a daemon thread; none for STALE_AFTER_S: e.g. a preempted VM
  whose job was relaunched elsewhere): taken over with a warning;
- otherwise (a live process, a process we may not signal, a fresh lock of another host,
  or a lock we cannot read or understand, e.g. another user's): `RunLockedError` naming
  the owner, unless `force` (`--force`), which takes any of them over with a warning.
A takeover removes the old lock under a short-lived second lock (`run.lock.takeover`),
after checking that the file is still the one judged, so that two processes taking over the
same dead owner's lock cannot remove each other's new lock.
`release` removes the file if this process owns it (also at interpreter exit). Only
process 0 of a multi-process run holds the lock; every process learns the outcome (a
broadcast, a no-op in one process) so all of them stop together. The file's mode follows
the user's umask.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict, Optional

import jax

from ..errors import RunLockedError
from ..fileio import is_writer

logger = logging.getLogger("xprompt_jax")

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
TAKEOVER_STALE_S = 10.0
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_HELD: Dict[str, Dict[str, Any]] = {}
_HEARTBEAT: Dict[str, threading.Event] = {}


def lock_path(model_dir: str) -> str:
    return os.path.join(os.fspath(model_dir), LOCK_FILE)


def _owner_record() -> Dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_time": time.time(),
            "start": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


_UNREADABLE, _MISSING = object(), object()


def _read(path: str):
    """(record, identity) of the lock file: record is _MISSING when there is no lock, the
    parsed JSON (any type, `null` too), or _UNREADABLE; identity tells this file from a
    later one."""
    try:
        with open(path, "rb") as f:
            ident = os.fstat(f.fileno())
            data = f.read(65536)
    except FileNotFoundError:
        return _MISSING, None
    except OSError:
        return _UNREADABLE, None
    ident = (ident.st_dev, ident.st_ino, data)
    try:
        return json.loads(data.decode("utf-8")), ident
    except (UnicodeDecodeError, ValueError):
        return _UNREADABLE, ident


def read_lock(model_dir: str) -> Optional[Dict[str, Any]]:
    """The lock's owner record (None if unlocked; {} if unreadable or not a record)."""
    record, _ = _read(lock_path(model_dir))
    if record is _MISSING:
        return None
    return record if isinstance(record, dict) else {}


def _alive(pid: int) -> bool:
    """False only when no process has this pid (a process of another user counts as
    alive: it may be the owner)."""
    if pid <= 0:
        return True  # 0 and negatives address process groups: prove nothing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
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
    """Creates the lock holding `record`, or returns False if it exists."""
    data = json.dumps(record).encode("utf-8")
    tmp = os.path.join(os.path.dirname(path),
                       f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            pass  # no hard links here: an exclusive create, written at once
    finally:
        os.remove(tmp)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def _remove_if_same(path: str, ident) -> bool:
    """Removes the lock if it is still the file judged (`ident`), under the takeover lock;
    False if another process is taking over or the lock changed meanwhile."""
    guard = path + ".takeover"
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o644)
    except FileExistsError:
        if _age(guard) > TAKEOVER_STALE_S:  # its process died inside the few lines below
            try:
                os.remove(guard)
            except FileNotFoundError:
                pass
        time.sleep(0.01)
        return False
    os.close(fd)
    try:
        record, now = _read(path)
        if record is _MISSING:
            return True
        if ident is not None and now != ident:
            return False
        os.remove(path)
        return True
    finally:
        os.remove(guard)


def _takeover_reason(owner, me: Dict[str, Any], path: str, force: bool) -> Optional[str]:
    """Why the lock of `owner` may be taken, or None."""
    if isinstance(owner, dict):
        same_host = owner.get("host") == me["host"]
        pid = owner.get("pid")
        if same_host and isinstance(pid, int) and not isinstance(pid, bool) \
                and not _alive(pid):
            return "its owner is gone"
        if not same_host and isinstance(owner.get("host"), str) \
                and _age(path) > STALE_AFTER_S:
            return f"no heartbeat for {_age(path):.0f} s"
    return "forced (--force)" if force else None


def _try_acquire(model_dir: str, force: bool) -> Optional[str]:
    """Takes the lock; returns None, or the reason it could not."""
    os.makedirs(model_dir, exist_ok=True)
    path = lock_path(model_dir)
    me = _owner_record()
    for _ in range(200):
        if _create(path, me):
            _HELD[path] = me
            _start_heartbeat(path)
            return None
        owner, ident = _read(path)
        if owner is _MISSING:
            continue  # released meanwhile: try again
        if isinstance(owner, dict) and owner.get("host") == me["host"] \
                and owner.get("pid") == me["pid"]:
            _HELD[path] = owner
            return None
        reason = _takeover_reason(owner, me, path, force)
        if reason is None:
            if not isinstance(owner, dict) or owner is _UNREADABLE:
                what = ("an unreadable lock file" if owner is _UNREADABLE else
                        f"a lock file that holds no owner record ({json.dumps(owner)[:80]})")
                return (f"{model_dir} is locked by {what}; if no run uses it, pass --force "
                        f"to take it over (lock file {path})")
            same_host = owner.get("host") == me["host"]
            where = "" if same_host else " (another host: cannot tell whether it still runs)"
            return (f"{model_dir} is in use by another run ({_describe(owner)}{where}); "
                    f"wait for it, use another MODEL_DIR, or pass --force to take it over "
                    f"(lock file {path})")
        try:
            removed = _remove_if_same(path, ident)
        except OSError as e:
            return f"could not take over the lock {path}: {e}"
        if removed:
            logger.warning("taking over the lock of %s from %s: %s", model_dir,
                           _describe(owner) if isinstance(owner, dict) and owner
                           else "an unknown owner", reason)
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
    owner, ident = _read(path)
    if isinstance(owner, dict) and owner.get("pid") == os.getpid() \
            and owner.get("host") == socket.gethostname():
        for _ in range(100):  # the takeover lock is held for a few lines at most
            try:
                if _remove_if_same(path, ident) or _read(path)[1] != ident:
                    break
            except OSError:
                break


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release(os.path.dirname(path))
