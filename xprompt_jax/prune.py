"""XPrompt pruning of a prompt trained by `t5x/train.py` (stage 2 of XPrompt with T5X).

    python -m xprompt_jax.prune --t5x_checkpoint=$RUN1/checkpoint_1030000 \
        [--prompt_file=$RUN1/numpy_checkpoints/checkpoint_<best>/prompt.prompt.npy] \
        --gin_file=models/t5_1_1_base.gin --gin_file=xprompt.gin \
        --gin.MIXTURE_OR_TASK_NAME="'xprompt_super_glue_rte'" --output_dir=$PRUNE

Our own gin files (not gin/t5x): a `models/<size>.gin` and `xprompt.gin` give the model, the
task, data and evaluation settings and the XPrompt settings (NUM_SCORE_EXAMPLES, TOKEN_RATIOS,
PIECE_RATIOS, PIECE_RANKING, PRUNE_LEVELS, MASK_VARIANT, ...). The prompt length is taken
from the checkpoint; INITIAL_CHECKPOINT_PATH and PROMPT_INIT are not used (the frozen model
and the prompt come from --t5x_checkpoint). Writes `masks.npz`, `rewound_prompt.npy` (the
inputs of gin/t5x/xprompt_rewind.gin), `scores.json`, `search.json`, the report and its
plots to --output_dir (`xprompt_jax.xprompt.t5x_stage2`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Dict, Sequence

from . import _moved


def _define_flags(flags) -> None:
    if "t5x_checkpoint" in flags.FLAGS:
        return
    flags.DEFINE_string("t5x_checkpoint", None, "a T5X run checkpoint (checkpoint_N directory "
                        "of t5x/train.py, orbax or legacy; or a MODEL_DIR: latest step)")
    flags.DEFINE_string("output_dir", None, "where masks.npz, rewound_prompt.npy and the "
                        "report are written")
    flags.DEFINE_string("prompt_file", None, "optional stage-1 prompt .npy (e.g. "
                        "MODEL_DIR/numpy_checkpoints/checkpoint_<best>/prompt.prompt.npy) "
                        "instead of the checkpoint's target/prompt/prompt")


def main(argv: Sequence[str]) -> Dict[str, Any]:
    from xprompt_jax import gin_utils
    from xprompt_jax.runs.flags import configure_from_argv
    from xprompt_jax.xprompt.t5x_stage2 import prune_configured

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    FLAGS = configure_from_argv(argv, extra_flags=_define_flags)
    missing = [name for name in ("t5x_checkpoint", "output_dir") if not FLAGS[name].value]
    if missing:
        raise gin_utils.GinConfigError("xprompt_jax.prune: required flags not given: " +
                                       ", ".join(f"--{name}" for name in missing))
    report = prune_configured(FLAGS.t5x_checkpoint, FLAGS.output_dir, FLAGS.prompt_file)
    print(json.dumps({"output_dir": report["model_dir"], "chosen": report["search"]["chosen"]
                      .get("name"), "parameters": report["parameters"],
                      "outputs": report["outputs"]}, indent=2, default=str))
    print(f"report: {os.path.join(report['model_dir'], 'report.md')}")
    return report


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.prune")


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    console_entry()
