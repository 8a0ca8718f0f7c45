"""Local and `gs://` paths: the few file-system operations the loaders need.

Local paths use `os`; `gs://` paths go through `etils.epath` (installed with
orbax-checkpoint; reading GCS with it needs `gcsfs` or TensorFlow's gfile).
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import List, Optional, Tuple

_GCS = re.compile(r"^gs://([^/]+)/?(.*)$", re.DOTALL)


def fspath(path) -> str:
    """str for `str` / `os.PathLike` / `epath.Path`; a trailing '/' is dropped."""
    s = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if len(s) > 1 and s.endswith("/") and not s.endswith("://"):
        s = s.rstrip("/") or "/"
    return s


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def split_gcs(path: str) -> Optional[Tuple[str, str]]:
    """'gs://bucket/a/b' -> ('bucket', 'a/b'); None for other paths."""
    m = _GCS.match(path)
    return (m.group(1), m.group(2)) if m else None


def local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_remote(base) else os.path.join(local(base), *parts)


def dirname(path: str) -> str:
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(absolute(path))


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def _epath(path: str):
    from etils import epath
    return epath.Path(path)


def exists(path: str) -> bool:
    return _epath(path).exists() if is_remote(path) else os.path.exists(local(path))


def isdir(path: str) -> bool:
    return _epath(path).is_dir() if is_remote(path) else os.path.isdir(local(path))


def isfile(path: str) -> bool:
    return _epath(path).is_file() if is_remote(path) else os.path.isfile(local(path))


def listdir(path: str) -> List[str]:
    if is_remote(path):
        return sorted(p.name for p in _epath(path).iterdir())
    return sorted(os.listdir(local(path)))


def read_bytes(path: str) -> bytes:
    if is_remote(path):
        return _epath(path).read_bytes()
    with open(local(path), "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def absolute(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(local(path))


def inside(base: str, name: str, what: str) -> str:
    """`base`/`name`, where `name` comes from a file someone else made (a checkpoint's
    recorded array path, a shard of an `.index.json`): refused with a CheckpointError
    naming `what` (the file and key) unless it stays inside `base`. `name` must be
    relative without '..'; locally, the path with symlinks resolved must lie inside the
    resolved `base` (a symlink in the folder cannot lead out of it)."""
    from ..errors import CheckpointError

    def refuse(why: str):
        raise CheckpointError(f"{what} = {name!r} {why}; refusing to read outside the "
                              f"checkpoint folder {base}")

    if not isinstance(name, str) or not name.strip("/"):
        refuse("is not a file name")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or "://" in name \
            or re.match(r"^[A-Za-z]:", name):
        refuse("is an absolute path")
    if ".." in re.split(r"[/\\]", name):
        refuse("climbs out with '..'")
    target = join(base, name)
    if not is_remote(base):
        real_base = os.path.realpath(local(base))
        real = os.path.realpath(target)
        if os.path.commonpath([real_base, real]) != real_base:
            refuse(f"leads out of the folder (to {real})")
    return target
