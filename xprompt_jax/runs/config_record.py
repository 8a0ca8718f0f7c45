"""A run's config record: MODEL_DIR/config.gin, and the resume policy it enforces.

Resuming a run with settings other than those it trained with is refused, except for the
macros of `RESUMABLE_CHANGES` (a longer run, other eval/save cadence, moved data);
`--allow_config_change` accepts the change and records it (the old file kept as
`config.until_step_<N>.gin`, `{step, time, changes}` appended to config_changes.jsonl).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import time
from typing import Callable, Optional

from ..errors import ConfigError
from ..fileio import is_writer, open_append, write_text_atomic

logger = logging.getLogger("xprompt_jax")

RESUMABLE_CHANGES = ("TRAIN_STEPS", "TRAIN_EPOCHS", "EVAL_PERIOD", "SAVE_PERIOD",
                     "LOG_PERIOD", "KEEP_CHECKPOINTS", "PATIENCE", "MAX_EVAL_EXAMPLES",
                     "MODEL_DIR", "ON_NONFINITE", "WORLD_DIR", "SUPERGLUE_DIR", "GLUE_DIR",
                     "MRQA_DIR")
CONFIG_FILE = "config.gin"
CONFIG_CHANGES_FILE = "config_changes.jsonl"


def _config_lines(text: str) -> list:
    skip = tuple(f"{name} =" for name in RESUMABLE_CHANGES)
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
            and not line.strip().startswith(skip)]


def config_differences(old: str, new: str) -> list:
    """'old -> new' descriptions of the lines that differ (RESUMABLE_CHANGES ignored)."""
    out = []
    matcher = difflib.SequenceMatcher(a=_config_lines(old), b=_config_lines(new))
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            before = " | ".join(matcher.a[i1:i2]) or "(none)"
            after = " | ".join(matcher.b[j1:j2]) or "(none)"
            out.append(f"{before} -> {after}")
    return out


def check_config(model_dir: str, config_text: str, resume_step: Optional[int],
                 allow_config_change: bool = False) -> Callable[[], None]:
    """Checks `config_text` against MODEL_DIR/config.gin: a resume (`resume_step` not None)
    with a config that differs from the saved one raises ConfigError unless
    `allow_config_change`. Writes nothing: returns the function that writes the record
    (config.gin, and for an accepted change the old file and config_changes.jsonl; module
    docstring). Call it only once the run restored its checkpoint under the new config, so
    a change that cannot resume (e.g. another prompt length) leaves the record as it was and
    the original command still resumes. Calling it again does nothing."""
    path = os.path.join(model_dir, CONFIG_FILE)
    old, changes = None, []
    if resume_step is not None and os.path.exists(path):
        with open(path) as f:
            old = f.read()
        changes = config_differences(old, config_text)
        if changes and not allow_config_change:
            shown = "; ".join(changes[:3]) + (" ..." if len(changes) > 3 else "")
            raise ConfigError(f"{path}: resuming at step {resume_step} with a different "
                              f"config ({shown}); use the saved settings, a new MODEL_DIR, "
                              "or --allow_config_change to record the change")
    elif resume_step is not None:
        logger.warning("%s is missing: resuming at step %d without checking that the config "
                       "is the one the run trained with; the current config is recorded",
                       path, resume_step)
    done = []

    def write() -> None:
        if done:
            return
        done.append(True)
        if changes and is_writer():
            logger.warning("config changed at step %d (--allow_config_change): %s",
                           resume_step, "; ".join(changes))
            write_text_atomic(os.path.join(model_dir, f"config.until_step_{resume_step}.gin"),
                              old)
            with open_append(os.path.join(model_dir, CONFIG_CHANGES_FILE)) as f:
                f.write(json.dumps({"step": resume_step, "time": time.time(),
                                    "changes": changes}) + "\n")
        if is_writer():
            write_text_atomic(path, config_text)

    return write


def record_config(model_dir: str, config_text: str, resume_step: Optional[int],
                  allow_config_change: bool = False) -> None:
    """`check_config`, then writes the record at once."""
    check_config(model_dir, config_text, resume_step, allow_config_change)()
