"""Run logs: a JSONL metrics file and TensorBoard summaries in MODEL_DIR, plus a progress
bar with loss and examples/s when stderr is a terminal (periodic log lines otherwise)."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from ..fileio import is_writer, open_append

logger = logging.getLogger("xprompt_jax")


def _jsonable(value):
    """A logged value as plain JSON; NaN / Inf as null (a bare NaN is no JSON: readers
    of metrics.jsonl other than Python's would reject the line)."""
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "item"):
        try:
            value = np.asarray(value).item()
        except ValueError:
            value = np.asarray(value).tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def bar_unit(description: str) -> str:
    """The unit a bar counts, from its description `'<stage>: <items> ...'`: the first word
    after the colon, singular (`'token pruning: candidates on dev'` -> `'candidate'`); an
    activity (`'...: rescoring survivors'`) counts rounds."""
    _, colon, rest = description.rpartition(":")
    words = rest.split() if colon else []
    if not words:
        return "it"
    word = words[0]
    if word.endswith("ing"):
        return "round"
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


def _whole_unit_tqdm():
    from tqdm import tqdm

    class WholeUnitTqdm(tqdm):
        """tqdm that shows whole items: `update(x)` with a share of an item (a batched
        pass that advances all candidates together) accumulates, and the bar moves by whole
        items only, ending exactly at the total."""

        def __init__(self, *args, **kwargs):
            self._pending = 0.0
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            self._pending += n
            whole = int(self._pending + 1e-6)
            if whole <= 0:
                return None
            self._pending -= whole
            return super().update(whole)

    return WholeUnitTqdm


def progress_bar(total: int, description: str, enabled: Optional[bool] = None,
                 unit: Optional[str] = None):
    """A tqdm bar of `total` whole items (`unit`, default `bar_unit(description)`), shown
    when `enabled` (None: when stderr is a terminal) on process 0; otherwise a disabled one
    whose `update` / `close` do nothing. Usable as a context manager. Fractional updates
    accumulate (the bar shows whole items)."""
    use_bar = sys.stderr.isatty() if enabled is None else enabled
    return _whole_unit_tqdm()(total=int(total), desc=description, dynamic_ncols=True,
                              unit=unit or bar_unit(description),
                              disable=not use_bar or not is_writer())


LOG_FILE = "train.log"


def append_log_line(model_dir: str, text: str) -> None:
    """Appends `<UTC time> <text>` to MODEL_DIR/train.log (the run's event log)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    with open_append(os.path.join(model_dir, LOG_FILE)) as f:
        f.write(f"{stamp} {text}\n")


METRICS_FILE = "metrics.jsonl"


def repair_torn_last_line(path: str) -> int:
    """Drops a torn last line of a JSONL file (a write cut off by a kill or a full disk:
    no newline at its end) with one warning; returns the bytes dropped (0: none). Every
    complete line is kept, so appending goes on after the last whole record."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return 0
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
    except FileNotFoundError:
        return 0
    dropped = len(data) - keep
    logger.warning("%s: dropped a torn last line (%d bytes, a write cut off: %r); the %d "
                   "complete lines before it are kept", path, dropped,
                   data[keep:keep + 40].decode("utf-8", "replace"),
                   data[:keep].count(b"\n"))
    return dropped


def read_metrics(path: str) -> List[Dict[str, Any]]:
    """The records of a metrics.jsonl file (none if it is missing). A line that is no JSON
    object (a torn last line of a killed write, a damaged line) is skipped with one
    warning naming the file and line; a reader never fails on it."""
    if not os.path.exists(path):
        return []
    records, bad = [], []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(number)
    if bad:
        logger.warning("%s: skipped %d line(s) that are no JSON record (line %s%s; a write "
                       "cut off?)", path, len(bad), bad[0], " ..." if len(bad) > 1 else "")
    return records


class RunLogger:
    """Writes `metrics.jsonl` and TensorBoard events (`tensorboard/<split>`) under model_dir."""

    def __init__(self, model_dir: str, total_steps: int, start_step: int = 0,
                 progress: Optional[bool] = None, tensorboard: bool = True,
                 description: str = "train"):
        self.model_dir = model_dir
        self.is_writer = is_writer()
        os.makedirs(model_dir, exist_ok=True)
        self.jsonl_path = os.path.join(model_dir, METRICS_FILE)
        if self.is_writer:  # a killed run's cut-off record, not glued to the next one
            repair_torn_last_line(self.jsonl_path)
        self._writers = {}
        self._tensorboard = tensorboard and self.is_writer
        bar = progress_bar(total_steps, description, progress, unit="step")
        self._bar = None if bar.disable else bar  # None: periodic log lines instead
        if self._bar is not None and start_step:
            self._bar.update(start_step)
        self._last_time = time.perf_counter()
        self._last_step = start_step

    def _writer(self, split: str):
        if split not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[split] = SummaryWriter(os.path.join(self.model_dir, "tensorboard",
                                                              split))
        return self._writers[split]

    def log(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        if not self.is_writer:
            return
        record = {"step": int(step), "split": split, "time": time.time()}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        with open_append(self.jsonl_path) as f:
            f.write(json.dumps(record, default=str) + "\n")
        if self._tensorboard:
            writer = self._writer(split)
            for key, value in record.items():
                if key in ("step", "split", "time"):
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, int(step))
            writer.flush()

    def train_progress(self, step: int, batch_size: int, metrics: Mapping[str, Any]) -> dict:
        """Adds examples/s since the last call, logs, and moves the progress bar to `step`."""
        now = time.perf_counter()
        steps = max(step - self._last_step, 1)
        rate = steps * batch_size / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        metrics = {k: _jsonable(v) for k, v in metrics.items()}
        metrics["examples_per_sec"] = rate
        self.log(step, "train", metrics)
        bar = self._bar
        if bar is not None:
            bar.n = step
            self._on_terminal(lambda: bar.set_postfix(
                loss=f"{metrics.get('loss', float('nan')):.4f}", ex_s=f"{rate:.1f}"))
        elif self.is_writer:
            logger.info("step %d loss %.4f examples/s %.1f", step, metrics.get("loss", np.nan),
                        rate)
        return metrics

    def message(self, text: str) -> None:
        """A run event (start, resume, eval, stop): the terminal (above the progress bar,
        else the `xprompt_jax` logger) and MODEL_DIR/train.log."""
        if not self.is_writer:
            return
        bar = self._bar
        if bar is None or not self._on_terminal(lambda: bar.write(text)):
            logger.info(text)
        append_log_line(self.model_dir, text)

    def _on_terminal(self, write) -> bool:
        """Runs a write of the progress bar; a terminal that went away (closed: EIO) ends
        the bar instead of the run (events go on to the logger and train.log)."""
        try:
            write()
            return True
        except OSError:
            self._bar = None
            return False

    def close(self) -> None:
        bar = self._bar
        if bar is not None:
            self._on_terminal(bar.close)
        for writer in self._writers.values():
            writer.close()
