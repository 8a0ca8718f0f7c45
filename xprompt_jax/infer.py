"""Serve many prompts on one frozen model: `python -m xprompt_jax.infer
--gin_file=models/<size>.gin --gin_file=prompt_tuning.gin --gin_file=runs/infer.gin
--gin.INFER_PROMPTS="{'world_rte': '/p/rte.npy', 'world_boolq': '/p/boolq.npy'}"
--gin.INFER_INPUT=requests.jsonl --gin.INFER_OUTPUT=predictions.jsonl`.

Requests are JSONL objects naming a `"prompt"` (or a `"task"`) and the task's input fields;
predictions are written in input order, one line per request line (`xprompt_jax.runs.infer`
says more). Bad lines are reported with their line number and field, written as errors and
skipped; exit status 2 if any line was skipped (the counts on stdout either way).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Sequence

from . import _moved


def main(argv: Sequence[str]) -> None:
    from xprompt_jax import gin_utils
    from xprompt_jax.runs.flags import configure_from_argv
    from xprompt_jax.runs.infer import infer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_from_argv(argv)
    result = gin_utils.call_configured(gin_utils.configured(infer), "xprompt_jax.infer")
    print(json.dumps({k: result[k] for k in ("answered", "skipped")}))
    if result["skipped"]:
        print(f"xprompt_jax.infer: {result['skipped']} bad line(s) of {result['input']} "
              f"skipped (written as errors to the output): {result['errors'][0]}"
              f"{' ...' if result['skipped'] > 1 else ''}", file=sys.stderr)
        sys.exit(2)


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.infer")


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    console_entry()
