"""A quiet terminal for the CLIs: TensorFlow, absl and JAX platform noise off by default.

TensorFlow (used for seqio's data pipelines) and JAX print start-up lines that say nothing
about the run (`Could not find cuda drivers`, `failed call to cuInit`, `Unable to initialize
backend 'tpu'`, `All log messages before absl::InitializeLog() ...`, tf.data cache warnings).
Most come from C++ at import time, so they can only be silenced by environment variables
set before TensorFlow / jax are imported, and two (`All log messages before
absl::InitializeLog()` and `cudart_stub.cc: Could not find cuda drivers`, which TensorFlow
writes before reading any setting) only by importing TensorFlow once with the process's
stderr pointed at /dev/null: `xprompt_jax/__init__.py` calls `setup()` when
the process is one of our CLIs (`python -m xprompt_jax.<cli>` or an `xprompt-*` console
script), before any of them is imported. Library use (`import xprompt_jax` from your own
code, the tests) is left untouched.

`--verbose` (anywhere on the command line) or `XPROMPT_VERBOSE=1` keeps everything. Values
you set yourself (e.g. `TF_CPP_MIN_LOG_LEVEL=0`) are never overridden. Errors still show:
TensorFlow and JAX raise them as Python exceptions.

This module imports only `os`, `sys`, `importlib` and `logging` (and TensorFlow, quietly,
in `setup()`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Optional, Sequence

VERBOSE_ENV = "XPROMPT_VERBOSE"
VERBOSE_FLAGS = ("--verbose", "--verbose=true", "--verbose=True", "-v")

# `python -m <module>` entry points and console scripts that get the quiet terminal.
CLI_MODULES = ("xprompt_jax.train", "xprompt_jax.evaluate", "xprompt_jax.ensemble",
               "xprompt_jax.infer", "xprompt_jax.export", "xprompt_jax.prune",
               "xprompt_jax.quickstart", "xprompt_jax.xprompt", "xprompt_jax.xprompt.__main__",
               "xprompt_jax.demo", "xprompt_jax.world.pretrain")
CONSOLE_SCRIPTS = ("xprompt-train", "xprompt-evaluate", "xprompt-ensemble", "xprompt-infer",
                   "xprompt-pipeline", "xprompt-prune", "xprompt-export", "xprompt-quickstart")

# Set before TensorFlow / jaxlib load (their C++ logging reads them once).
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TF C++: no INFO/WARNING/ERROR lines (cuInit, cudart stub)
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
}
# Python loggers that report the platform search and per-call chatter at INFO/WARNING.
QUIET_LOGGERS = {
    "jax._src.xla_bridge": logging.ERROR,  # "Unable to initialize backend 'tpu'", ...
    "jax._src.compiler": logging.ERROR,
    "absl": logging.ERROR,  # orbax / absl INFO and WARNING chatter (per checkpoint save)
    "orbax": logging.WARNING,
    "tensorflow": logging.ERROR,
    "h5py": logging.WARNING,
    "matplotlib": logging.WARNING,
}

_STATE = {"applied": False}


def verbose_requested(argv: Optional[Sequence[str]] = None) -> bool:
    """`--verbose` in `argv` (default `sys.argv`) or `XPROMPT_VERBOSE` set to a true value."""
    if os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return any(arg in VERBOSE_FLAGS for arg in (sys.argv if argv is None else argv)[1:])


def running_cli(orig_argv: Optional[Sequence[str]] = None,
                argv0: Optional[str] = None) -> bool:
    """Whether this process was started as one of our CLIs (see CLI_MODULES /
    CONSOLE_SCRIPTS), judged from the interpreter's own command line."""
    orig = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    for i, arg in enumerate(orig):
        if arg == "-m" and i + 1 < len(orig):
            return orig[i + 1] in CLI_MODULES
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:] in CLI_MODULES
    name = os.path.basename(sys.argv[0] if argv0 is None else argv0)
    if name.endswith((".exe", "-script.py")):
        name = name.rsplit(".exe", 1)[0].rsplit("-script.py", 1)[0]
    return name in CONSOLE_SCRIPTS


def setup(argv: Optional[Sequence[str]] = None) -> bool:
    """Quiets the terminal unless verbose was asked for; returns whether it did. Call
    before TensorFlow / jax are imported (for the C++ lines); idempotent."""
    if verbose_requested(argv):
        return False
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import_silenced("tensorflow")
    quiet_loggers()
    _STATE["applied"] = True
    return True


def import_silenced(module: str) -> bool:
    """Imports `module` with file descriptor 2 on /dev/null (C++ start-up lines vanish;
    Python exceptions still propagate, printed after stderr is back). False if it is not
    installed."""
    if module in sys.modules:
        return True
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
    try:
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no usable fd 2: nothing to silence
        saved = devnull = None
    try:
        if devnull is not None:
            os.dup2(devnull, 2)
        importlib.import_module(module)
        return True
    except ImportError:
        return False
    finally:
        if devnull is not None:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def quiet_loggers() -> None:
    """Raises the third-party loggers of QUIET_LOGGERS to their quiet level (also useful
    after a library reset them)."""
    for name, level in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.level < level:
            logger.setLevel(level)


def is_quiet() -> bool:
    return _STATE["applied"]


def maybe_setup_for_cli() -> bool:
    """`setup()` if this process is one of our CLIs (called by `xprompt_jax/__init__.py`)."""
    try:
        return setup() if running_cli() else False
    except Exception:  # never let terminal cosmetics break an import
        return False
