"""The top-level wrapper of every CLI: our errors as one line and exit 2, `--verbose`.

    def console_entry():
        cli.run_cli(main, sys.argv)

`run_cli` takes `--verbose` (anywhere in argv) out of the arguments, turns on JAX's
persistent compilation cache (`compile_cache.enable`: `--nocompilation_cache` turns it
off), calls `main(argv)`,
and turns an `XPromptError` (data, config, checkpoint, non-finite, locked run dir) into
`<prog>: error: <message on one line>` on stderr and its exit code (2; 0 for a run that
was interrupted by SIGTERM/SIGINT/SIGHUP after saving). SIGTERM, SIGHUP and SIGINT anywhere
else end the CLI with `<prog>: stopped: <SIGNAL> during <phase>: <what is kept>` and exit
128 + the signal's number; a second signal ends it at once (`interrupts`). It also sends
the `xprompt_jax` loggers' INFO lines to stderr (`configure_logging`), so a run whose
output goes to a file still shows its start, resume, evaluations, stages and progress.
With `--verbose` the traceback is printed as well. Other exceptions (bugs) keep their
traceback and exit 1 as usual. gin wraps exceptions raised inside configurables in its own
message; the original `XPromptError` is found on the exception's `__cause__` /
`__context__` chain. A full disk, a read-only folder (OSError ENOSPC / EROFS / EACCES,
naming the path) and running out of memory (naming what to lower) are reported the same
way, exit 1 (`errors.as_user_error`). The line is capped at `errors.MAX_LINE_CHARS`
characters.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable, List, Optional, Sequence

from . import compile_cache, interrupts
from .errors import XPromptError, as_user_error, capped, one_line

VERBOSE_FLAGS = ("--verbose", "--verbose=true", "--verbose=True", "-v")


def split_verbose(argv: Sequence[str]) -> tuple:
    """(argv without --verbose, whether it was given)."""
    rest = [a for a in argv if a not in VERBOSE_FLAGS]
    return rest, len(rest) != len(argv)


def find_our_error(error: BaseException) -> Optional[XPromptError]:
    """`error` itself or the first error on its cause/context chain a user can act on, as
    an `XPromptError` (ours; a full disk or read-only folder; out of memory)."""
    return as_user_error(error)


def _prog(argv: Sequence[str]) -> str:
    name = os.path.basename(argv[0]) if argv else "xprompt_jax"
    if name in ("__main__.py", "-m", "-c", ""):
        name = "xprompt_jax"
    return name


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stderr` is when a record is emitted (as logging's
    own last-resort handler), not the stream of the moment it was made: a CLI called in
    process (tests, notebooks) may run while stderr is temporarily replaced and closed."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        del value


class _QuietThreadReports(logging.Filter):
    """orbax logs an error raised in one of its writer threads (a full disk while saving a
    checkpoint) with its whole traceback, once per thread, before the same error reaches
    the caller, where it is reported on one line: those thread reports are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "_SignalingThread.run() raised an exception" not in str(record.getMessage())


class _QuietLeftoverAsyncErrors(logging.Filter):
    """After the one-line error, orbax's other writes of the same failed save (a full disk)
    end as futures nobody awaits: asyncio reports each, with a traceback, when the process
    exits ("... exception was never retrieved"). The line already said what failed: those
    reports are dropped (`--verbose` keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in str(record.getMessage())


def configure_logging() -> None:
    """INFO lines of the `xprompt_jax` loggers (start, resume, evals, stages, progress
    without a terminal) to stderr. Our own handler: importing jax / tensorflow installs a
    root handler at WARNING, which made `logging.basicConfig` a no-op and dropped them."""
    log = logging.getLogger("xprompt_jax")
    if any(getattr(h, "_xprompt_cli", False) for h in log.handlers):
        return
    logging.getLogger("absl").addFilter(_QuietThreadReports())
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler._xprompt_cli = True  # pylint: disable=protected-access
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _flush_log_handlers() -> None:
    for logger in (logging.getLogger(), logging.getLogger("xprompt_jax")):
        for handler in logger.handlers:
            try:
                handler.flush()
            except (OSError, ValueError):
                pass


def run_cli(main: Callable[[List[str]], object], argv: Sequence[str],
            prog: Optional[str] = None) -> None:
    """Runs `main(argv)` and exits with the one-line handling described above."""
    argv, verbose = split_verbose(list(argv))
    prog = prog or _prog(argv)
    configure_logging()
    argv = compile_cache.enable(argv)
    try:
        with interrupts.handled(prog):
            main(argv)
    except interrupts.Interrupted as e:  # outside a training loop (which saves and stops)
        _flush_log_handlers()
        interrupts.print_last_line(f"{prog}: stopped: {e.where}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # SIGINT with no handler of ours (not the main thread)
        interrupts.print_last_line(f"{prog}: interrupted")
        sys.exit(130)
    except Exception as e:  # pylint: disable=broad-except
        ours = find_our_error(e)
        if ours is None:
            raise
        if verbose:
            traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        if not verbose:
            logging.getLogger("asyncio").addFilter(_QuietLeftoverAsyncErrors())
        _flush_log_handlers()  # log lines first; not logging.shutdown(): that closes
        # every handler of the process (absl's, a test runner's), not only ours
        kind = "error" if ours.exit_code else "stopped"
        interrupts.print_last_line(f"{prog}: {kind}: {capped(one_line(ours))}")
        sys.exit(ours.exit_code)
