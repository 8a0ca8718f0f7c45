"""The pipeline's stage records: each stage writes its artifacts under MODEL_DIR/<stage>/
and a `DONE.json` marker when it finishes; a rerun skips finished stages.

Multi-process runs: process 0 writes the files (`fileio.is_writer`); after each mark all
processes meet at a barrier, so that none reads a stage's result before it exists (a
shared MODEL_DIR, as T5X assumes on a pod).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional

from ..fileio import barrier, is_writer, read_json, write_json_atomic

DONE_FILE = "DONE.json"


def done_path(model_dir: str, stage: str) -> str:
    return os.path.join(model_dir, stage, DONE_FILE)


def stage_done(model_dir: str, stage: str) -> Optional[Dict[str, Any]]:
    """The stage's marker (None while it has not finished)."""
    path = done_path(model_dir, stage)
    return read_json(path) if os.path.exists(path) else None


def write_result(path: str, data: Any) -> None:
    """A stage's JSON result (process 0)."""
    if is_writer():
        write_json_atomic(path, data)


def mark_done(model_dir: str, stage: str, info: Mapping[str, Any]) -> None:
    """Marks a stage done, then every process waits for the mark."""
    write_result(done_path(model_dir, stage), dict(info))
    barrier(f"xprompt_jax.pipeline:{model_dir}/{stage}")


class StageClock:
    """Wall seconds of each stage in this invocation (`report['timings_s']`; a stage
    resumed from its files shows the time to load them), `total` their sum."""

    def __init__(self):
        self._last = time.time()
        self.seconds: Dict[str, float] = {"total": 0.0}

    def mark(self, stage: str) -> None:
        now = time.time()
        self.seconds[stage] = round(now - self._last, 1)
        self.seconds["total"] = round(self.seconds["total"] + now - self._last, 1)
        self._last = now
