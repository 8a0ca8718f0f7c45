"""Prompt-tuning CLI, T5X style.

    python -m xprompt_jax.train --gin_file=prompt_tuning.gin \
        --gin.MODEL_DIR="'/tmp/run'" --gin.MIXTURE_OR_TASK_NAME="'xprompt_super_glue_rte_local'" \
        --gin.INITIAL_CHECKPOINT_PATH="'/path/to/checkpoint_1100000'"

Flags as t5x/train.py: --gin_file (repeatable), --gin.NAME=VALUE, --gin_bindings,
--gin_search_paths, --tfds_data_dir, the multi-process flags; plus --force (take over a
MODEL_DIR another live run holds), --allow_config_change (resume with other settings,
recorded) and --sweep (a sweep as one run: the SWEEP macro as a Python literal,
--sweep="{'seed': [0, 1], 'learning_rate': [0.1, 0.3]}"). The run is `xprompt_jax.runs.train`.
"""

from __future__ import annotations

import logging
import sys
from typing import Sequence

from . import _moved


def _define_flags(flags) -> None:
    if "force" not in flags.FLAGS:
        flags.DEFINE_bool("force", False, "take over MODEL_DIR even if another live run "
                          "holds its lock")
    if "allow_config_change" not in flags.FLAGS:  # also defined by the XPrompt CLI
        flags.DEFINE_bool("allow_config_change", False, "resume with a config that differs "
                          "from MODEL_DIR/config.gin (both are recorded)")


def main(argv: Sequence[str]) -> None:
    import gin

    from xprompt_jax import gin_utils
    from xprompt_jax.runs.config import configured_run
    from xprompt_jax.runs.flags import configure_from_argv
    from xprompt_jax.runs.train import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    FLAGS = configure_from_argv(argv, extra_flags=_define_flags, sweep=True)
    gin_utils.call_configured(
        lambda: train(configured_run().with_trainer(force=FLAGS.force),
                      config_text=gin.config_str(),
                      allow_config_change=FLAGS.allow_config_change), "xprompt_jax.train")


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.train")


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    console_entry()
