"""gin plumbing for the CLIs, with t5x/train.py's flags.

`--gin_file` (repeatable), `--gin_bindings` (repeatable), `--gin_search_paths`
(comma-separated), and `--gin.NAME=VALUE` (rewritten to a binding `NAME = VALUE`, as T5X's
`gin_utils.rewrite_gin_args` does). The package's own `gin/` directory is always on the
search path. Errors name the file or binding at fault.
"""

from __future__ import annotations

import logging
import os
import re
from typing import List, Optional, Sequence

import gin

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# An installed wheel ships the repository's top-level `gin/` as `xprompt_jax/gin/`
# (setup.py `package_dir`); a checkout (plain or `pip install -e`) has it beside the package.
PACKAGE_GIN_DIR = os.path.join(_PACKAGE_DIR, "gin")
REPO_GIN_DIR = os.path.join(os.path.dirname(_PACKAGE_DIR), "gin")
_MARKER = "prompt_tuning.gin"  # tells our gin folder from others (site-packages/gin is gin-config)


class GinConfigError(ValueError):
    """A gin file or binding could not be parsed or applied."""


def packaged_gin_dir() -> str:
    """The folder holding the package's gin configs (`prompt_tuning.gin`, `models/`, ...):
    `xprompt_jax/gin/` of an installed wheel, else the checkout's top-level `gin/`."""
    for path in (PACKAGE_GIN_DIR, REPO_GIN_DIR):
        if os.path.isfile(os.path.join(path, _MARKER)):
            return path
    raise GinConfigError(f"the package's gin configs are missing: no {_MARKER} in "
                         f"{PACKAGE_GIN_DIR} (installed wheel) or {REPO_GIN_DIR} (checkout); "
                         "reinstall xprompt_jax")


def default_search_paths() -> List[str]:
    return [packaged_gin_dir()]


def rewrite_gin_args(argv: Sequence[str]) -> List[str]:
    """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE` (other args unchanged)."""
    out = []
    for arg in argv:
        match = re.fullmatch(r"--gin\.([^=]+)=(.*)", arg, flags=re.S)
        if match:
            name, value = match.groups()
            out.append(f"--gin_bindings={name} = {value}")
        else:
            out.append(arg)
    return out


def _resolve(path: str, search_paths: Sequence[str]) -> str:
    if os.path.exists(path):
        return path
    for base in search_paths:
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    raise GinConfigError(f"gin file {path!r} not found (searched: current directory, "
                         f"{', '.join(search_paths) or 'no search paths'})")


class _QuietSearchMisses(logging.Filter):
    """gin logs an ERROR for every search path that lacks an included file, even when a
    later path has it; those are noise (a file found nowhere still raises)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # also gin's INFO line for every file it opens (`system_path_file_exists:<path>`)
        return not str(record.getMessage()).startswith(("Path not found:",
                                                        "system_path_file_exists:"))


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
              gin_search_paths: Sequence[str] = (), finalize: bool = True) -> None:
    """Parses files then bindings; raises GinConfigError naming the culprit."""
    quiet = _QuietSearchMisses()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        _parse_gin(gin_files, gin_bindings, gin_search_paths, finalize)
    finally:
        root.removeFilter(quiet)


def _parse_gin(gin_files, gin_bindings, gin_search_paths, finalize) -> None:
    search_paths = [p for p in gin_search_paths if p] + default_search_paths()
    for path in search_paths:
        gin.add_config_file_search_path(path)
    for gin_file in gin_files:
        resolved = _resolve(gin_file, search_paths)
        try:
            gin.parse_config_file(resolved, skip_unknown=False)
        except Exception as e:  # gin raises many types; keep the message, add the file
            raise GinConfigError(f"error in gin file {resolved}: {type(e).__name__}: {e}") from e
    for binding in gin_bindings:
        try:
            gin.parse_config(binding)
        except Exception as e:
            raise GinConfigError(f"error in gin binding {binding!r}: {type(e).__name__}: {e}") \
                from e
    if finalize:
        gin.finalize()


def split_search_paths(value: Optional[str | Sequence[str]]) -> List[str]:
    if not value:
        return []
    if isinstance(value, str):
        value = [value]
    paths = []
    for item in value:
        paths.extend(p for p in item.split(",") if p)
    return paths


def call_configured(fn, what: str):
    """Calls a gin-configured function, turning missing REQUIRED values into clear errors."""
    try:
        return fn()
    except (ValueError, TypeError, RuntimeError) as e:
        text = str(e)
        if "REQUIRED" in text or "missing" in text and "argument" in text:
            raise GinConfigError(f"{what}: a required gin binding or macro is missing: {text}") \
                from e
        raise


def check_required(function_name: str, values) -> None:
    """Raises GinConfigError for arguments still bound to `gin.REQUIRED` (a macro such as
    `MODEL_DIR = %gin.REQUIRED` that no flag overrode), naming the macro to set."""
    missing = [name for name, value in values.items() if value is gin.REQUIRED]
    if missing:
        flags = ", ".join(f"--gin.{name.upper()}=..." for name in missing)
        raise GinConfigError(f"{function_name}: required gin settings not given: "
                             f"{', '.join(name.upper() for name in missing)} (pass {flags})")


def configured(fn):
    """The gin-configured version of `fn` if gin knows it (bindings apply, explicit call
    arguments win), else `fn` itself."""
    try:
        return gin.get_configurable(fn)
    except ValueError:
        return fn
