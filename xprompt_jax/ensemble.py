"""Evaluate a prompt ensemble (Lester et al. 2021, Table 3) in one batch per step:
`python -m xprompt_jax.ensemble --gin_file=models/<size>.gin --gin_file=prompt_tuning.gin
[--gin_file=ensemble.gin] --gin_file=runs/ensemble_eval.gin --gin.MODEL_DIR=... ...`.

The K prompts are a joint run's PromptBank (`ensemble.gin`) or K separately trained prompt
files (`--gin.ENSEMBLE_PROMPT_FILES="['a.npy', 'b.npy', ...]"`). Writes
MODEL_DIR/ensemble_results.json and ensemble_report.md (`xprompt_jax.runs.ensemble`).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Sequence

from . import _moved


def main(argv: Sequence[str]) -> None:
    from xprompt_jax import gin_utils
    from xprompt_jax.runs.ensemble import evaluate_ensemble
    from xprompt_jax.runs.flags import configure_from_argv

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_from_argv(argv)
    result = gin_utils.call_configured(gin_utils.configured(evaluate_ensemble),
                                       "xprompt_jax.ensemble")
    print(json.dumps({k: result[k] for k in ("mode", "prompt_names", "per_prompt_main",
                                             "mean_main", "std_main", "best_main",
                                             "ensemble_main")}, indent=2, default=str))


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.ensemble")


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    console_entry()
