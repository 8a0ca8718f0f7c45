"""JAX's persistent compilation cache for every CLI, in a folder of the user's own.

A second identical run (the same train / eval steps, shapes and jax version) loads its
compiled programs instead of compiling them again. `cli.run_cli` calls `enable(argv)`
before the CLI's main:

- `--nocompilation_cache` or `--compilation_cache=false` (taken out of argv, anywhere in
  it, like `--verbose`): nothing is set; JAX behaves as without us.
- `$JAX_COMPILATION_CACHE_DIR` set: JAX's own setting wins (CI and users who chose a
  folder).
- otherwise `default_dir()`: `$XDG_CACHE_HOME/xprompt_jax/jax_cache` (default
  `~/.cache/...`), created for the user alone (mode 0700).

JAX loads compiled code from its persistent cache, so whoever can write there controls
code that later runs execute: the folder must be the user's, not a symlink and writable by
nobody else (`private_dir`). A folder that fails that check, or that cannot be created
(a read-only HOME), is never fatal to a run: one warning line, and the run compiles as
without a cache. Entries are written for every compilation (JAX's defaults skip those under
a second, which on a CPU are most of a short run's start-up).
"""

from __future__ import annotations

import logging
import os
import stat
from typing import List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

ENV_DIR = "JAX_COMPILATION_CACHE_DIR"
OFF_FLAGS = ("--nocompilation_cache", "--compilation_cache=false", "--compilation_cache=False",
             "--compilation_cache=0")
ON_FLAGS = ("--compilation_cache", "--compilation_cache=true", "--compilation_cache=True",
            "--compilation_cache=1")


class CacheDirError(RuntimeError):
    """The cache folder is not a private folder of the user's (message names it)."""


def split_flag(argv: Sequence[str]) -> Tuple[List[str], bool]:
    """(argv without the --compilation_cache flags, whether the cache is on); the last
    flag given wins, on by default."""
    rest, on = [], True
    for arg in argv:
        if arg in OFF_FLAGS:
            on = False
        elif arg in ON_FLAGS:
            on = True
        else:
            rest.append(arg)
    return rest, on


def default_dir() -> str:
    """`$XDG_CACHE_HOME/xprompt_jax/jax_cache`, `~/.cache/xprompt_jax/jax_cache` without it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xprompt_jax", "jax_cache")


def private_dir(path: Optional[str] = None) -> str:
    """`path` (default `default_dir()`), created with mode 0700 where absent, checked to be
    a real folder owned by the user that nobody else can write (CacheDirError otherwise;
    OSError where it cannot be created)."""
    path = path or default_dir()
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling symlink: refused below
    info = os.lstat(path)
    if (stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.getuid() or info.st_mode & 0o022):
        raise CacheDirError(f"{path}: the JAX compilation cache folder must be a folder of "
                            "yours that nobody else can write (it holds compiled code the "
                            f"runs load); fix its owner / mode or set ${ENV_DIR}")
    return path


def enable(argv: Sequence[str]) -> List[str]:
    """Turns the cache on as the module docstring says; returns argv without its flags."""
    argv, on = split_flag(argv)
    if not on or os.environ.get(ENV_DIR):
        return argv
    try:
        path = private_dir()
    except (OSError, CacheDirError) as e:
        logger.warning("compiling without a persistent cache: %s", e)
        return argv
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return argv
