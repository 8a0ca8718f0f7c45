"""Signals in every CLI: SIGTERM, SIGHUP (a closed terminal) and SIGINT end a CLI with one
line saying what was interrupted and what is kept, never a traceback or a silent exit.

`cli.run_cli` runs the CLI inside `handled(prog)`: each of the three signals raises
`Interrupted` (a `KeyboardInterrupt`, so `except Exception` in library code never swallows
it, and cleanups written for Ctrl-C, such as keeping an output's written lines, run for
every signal); `run_cli` prints `<prog>: stopped: <SIGNAL> during <phase>: <what is kept>`
and exits 128 + the signal number (143 SIGTERM, 130 SIGINT, 129 SIGHUP). The library names
its long phases with `phase(what, kept)` (setup, training, scoring, search, export,
evaluation, inference); outside any, the phase is the CLI's setup. A SIGHUP the user chose
to ignore (`nohup`) stays ignored.

The training loop handles the first signal itself (`training.trainer`: save after the
current step and stop, exit 0). A second signal, in any phase, ends the process at once,
even while the main thread is inside a long XLA call or checkpoint write that Python's
own handlers would wait for (and where two quick signals would count as one): a thread
woken through `signal.set_wakeup_fd` counts every delivery, and at the second prints the
phase's line and exits. Checkpoints finished before are whole (a checkpoint is renamed
into place only when complete).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, List, Tuple

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP")
                if hasattr(signal, name))

SETUP = ("setup (reading the settings, loading the model and data)",
         "nothing was written by this command; rerun it to start over (a training run "
         "resumes from its latest checkpoint)")


class Interrupted(KeyboardInterrupt):
    """A stopping signal arrived outside the training loop; `exit_code` 128 + signal."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + self.signum
        self.where = describe(self.signal_name)  # the phase it hit (left as it unwinds)
        super().__init__(self.where)


_phases: List[Tuple[str, str]] = []
_prog: List[str] = []
# Held by whoever prints the process's last line (run_cli or the second-signal thread):
# one line, never two.
_last_line = threading.Lock()


@contextlib.contextmanager
def phase(what: str, kept: str) -> Iterator[None]:
    """Names the work under way (`what`) and what a signal now leaves (`kept`: the files
    kept and how to resume) for the line a signal prints."""
    _phases.append((what, kept))
    try:
        yield
    finally:
        _phases.pop()


def describe(signal_name: str) -> str:
    """`<SIGNAL> during <phase>: <what is kept>` for the innermost phase."""
    what, kept = _phases[-1] if _phases else SETUP
    return f"{signal_name} during {what}: {kept}"


def print_last_line(text: str) -> None:
    """`text` on stderr as the CLI's last line (a closed terminal is no error)."""
    with _last_line:
        _print(text)


def _print(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _raise(signum, frame):
    del frame
    leave_closed_terminal(signum)
    raise Interrupted(signum)


_terminal_fds: List[int] = []


def note_terminal() -> None:
    """Records which of stdout / stderr are a terminal now (after a hangup a terminal may
    no longer say that it is one)."""
    _terminal_fds[:] = [fd for fd in (1, 2) if _isatty(fd)]


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def leave_closed_terminal(signum: int) -> None:
    """After SIGHUP (the terminal was closed) stdout / stderr that were that terminal write
    to /dev/null: every write there would fail (EIO) and end the run before it saved."""
    if signum != getattr(signal, "SIGHUP", None) or not _terminal_fds:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in _terminal_fds:
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)


def ignored_by_user(signum: int) -> bool:
    """SIGHUP under `nohup` (SIG_IGN): a closed terminal must not stop that run."""
    return signum == getattr(signal, "SIGHUP", None) and \
        signal.getsignal(signum) is signal.SIG_IGN


@contextlib.contextmanager
def handled(prog: str) -> Iterator[None]:
    """Within the block each stopping signal raises `Interrupted` and a second one ends
    the process at once (main thread only; elsewhere handlers cannot be installed and
    nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS if not ignored_by_user(s)}
    note_terminal()
    for signum in previous:
        signal.signal(signum, _raise)
    _prog.append(prog)
    watcher = _SecondSignal()
    try:
        yield
    finally:
        watcher.close()
        _prog.pop()
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class _SecondSignal:
    """A thread counting stopping signals as they are delivered (through the wakeup fd,
    written by the C-level handler: neither a busy main thread nor two deliveries before
    Python's handler ran hide one); at the second it prints the line and exits."""

    def __init__(self):
        self._fds = None
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            self._old = signal.set_wakeup_fd(write_fd)
        except ValueError:  # not the main thread
            os.close(read_fd)
            os.close(write_fd)
            return
        self._fds = (read_fd, write_fd)
        self._closed = False
        threading.Thread(target=self._watch, args=(read_fd,), daemon=True,
                         name="xprompt-second-signal").start()

    def _watch(self, read_fd: int) -> None:
        wanted = {int(s) for s in SIGNALS}
        seen = 0
        while True:
            try:
                data = os.read(read_fd, 1)
            except OSError:
                return
            if not data:  # closed: the CLI ended
                os.close(read_fd)
                return
            if data[0] not in wanted:
                continue
            seen += 1
            if seen >= 2:
                _last_line.acquire()  # never released: the process ends here
                if self._closed:  # the CLI is ending on its own, with its own line
                    _last_line.release()
                    os.close(read_fd)
                    return
                prog = _prog[-1] if _prog else "xprompt_jax"
                _print(f"{prog}: stopped at once by a second signal: "
                       f"{describe(signal.Signals(data[0]).name)}")
                os._exit(128 + data[0])

    def close(self) -> None:
        if self._fds is None:
            return
        with _last_line:  # after this the thread prints nothing
            self._closed = True
        try:
            signal.set_wakeup_fd(self._old)
        except ValueError:
            pass
        os.close(self._fds[1])  # the thread reads EOF and closes its end
        self._fds = None
