"""Evaluate a saved run: `python -m xprompt_jax.evaluate --gin_file=models/<size>.gin
--gin_file=prompt_tuning.gin --gin_file=runs/eval.gin --gin.MODEL_DIR=... ...`.

Loads the frozen model from INITIAL_CHECKPOINT_PATH, the trainable params from the run's
best / latest / given checkpoint (EVAL_CHECKPOINT), evaluates, and writes
MODEL_DIR/eval_results.json (`xprompt_jax.runs.evaluate`). With `runs/eval_peft.gin` instead
of `runs/eval.gin` it evaluates a Hugging Face PEFT adapter (PEFT_ADAPTER), no run needed
(docs/peft.md). With `--gin_file=prompts/from_file.gin --gin.PROMPT_FILE="'<prompt.npy>'"`
that prompt file is evaluated instead (unless the run was trained from it).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Sequence

from . import _moved


def main(argv: Sequence[str]) -> None:
    from xprompt_jax import gin_utils
    from xprompt_jax.runs.evaluate import evaluate
    from xprompt_jax.runs.flags import configure_from_argv

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_from_argv(argv)
    # prompts/from_file.gin's PROMPT_FILE: that prompt is what gets evaluated
    prompt_file = gin_utils.macro_values().get("PROMPT_FILE")
    result = gin_utils.call_configured(
        lambda: gin_utils.configured(evaluate)(
            prompt_file=prompt_file if isinstance(prompt_file, str) else None),
        "xprompt_jax.evaluate")
    print(json.dumps({k: result[k] for k in ("mode", "metrics", "main_metric",
                                            "checkpoint_step")}, indent=2, default=str))


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.evaluate")


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    console_entry()
