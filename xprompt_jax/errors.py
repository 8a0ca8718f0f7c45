"""The error types a user can act on (bad input, bad config, bad files, a busy run dir).

Every CLI catches `XPromptError` at the top (`xprompt_jax.cli.run_cli`) and prints its
message on one line, then exits with `exit_code` (2 for bad input); the traceback is shown
only with `--verbose`. Messages name the file (and line), field or setting at fault and
what was expected. Anything else is a bug and keeps its traceback.

This module imports nothing heavy: the data readers, gin helpers and checkpoint loaders
all raise these types.
"""

from __future__ import annotations

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
