"""What a damaged checkpoint (run or pretrained) looks like to a user: one reason in a few
words (`unreadable_reason`: truncated, missing files, bad metadata, corrupt data, with the
file), and none of the dependency noise a failed read leaves behind (`quiet_failed_reads`:
the "Event loop is closed" / "Encountered error while reading array index" tracebacks
TensorStore's outstanding reads print after orbax gave up)."""

from __future__ import annotations

import re
import sys


def _is_closed_loop_callback(unraisable) -> bool:
    """TensorStore reads still running when orbax gave up: their callbacks into a closed
    event loop, and orbax's read coroutines closed with their error."""
    value = getattr(unraisable, "exc_value", None)
    text = str(value)
    return (isinstance(value, RuntimeError) and text == "Event loop is closed") or \
        text.startswith("Encountered error while reading array index")


def quiet_failed_reads() -> None:
    """After orbax gives up on a damaged checkpoint, TensorStore still completes the other
    reads it had started, each calling back into orbax's event loop, which is closed by
    then: Python prints a "RuntimeError: Event loop is closed" traceback for each (dozens
    of lines that say nothing about the checkpoint). Those, and only those, are dropped;
    installed once per process."""
    previous = sys.unraisablehook
    if getattr(previous, "_xprompt_quiet", False):
        return

    def hook(unraisable):
        if not _is_closed_loop_callback(unraisable):
            previous(unraisable)

    hook._xprompt_quiet = True
    sys.unraisablehook = hook


def unreadable_reason(error: BaseException) -> str:
    """Why a checkpoint did not restore, in a few words: the kind of damage and the file it
    was found in, read from the innermost error of the chain that says (orbax wraps
    TensorStore's error in one that carries a full JSON spec and says nothing)."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for cause in reversed(chain):
        if str(cause).startswith("Encountered error while reading array index"):
            continue
        reason = _kind_of_damage(cause)
        if reason:
            return reason
    return first_line(chain[0])


def _kind_of_damage(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    file = re.search(r'local file "([^"]+)"', text)
    where = f" ({file.group(1)})" if file else ""
    lower = text.lower()
    if "byte range" in lower and "not valid for value of size" in lower or \
            "out_of_range" in lower or "truncated" in lower:
        return "a data file is shorter than recorded (truncated)" + where
    if "not_found" in lower or isinstance(error, FileNotFoundError) or \
            "no such file" in lower:
        return "files are missing" + where
    if "json" in lower or "expecting" in lower or "decode" in lower:
        return "its metadata is not valid JSON" + where
    if "data_loss" in lower or "checksum" in lower or "crc" in lower:
        return "a data file is damaged" + where
    return ""


def first_line(error: BaseException, limit: int = 200) -> str:
    """`error`'s type and the first line of its message, cut to `limit` characters."""
    text = f"{type(error).__name__}: {str(error).strip()}".splitlines()[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
