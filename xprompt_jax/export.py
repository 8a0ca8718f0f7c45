"""Export a trained prompt for inference: the prompt as it enters the encoder (`.npy`), an
inference gin file for a plain SoftPrompt, parameter counts and a similarity heatmap; a
PromptBank run exports every entry; `--format=peft` adds a Hugging Face PEFT adapter.

    python -m xprompt_jax.export --gin_file=models/t5_1_1_base.gin --gin_file=ept.gin \
        --gin.MODEL_DIR="'/tmp/ept_run'" --output_dir=/tmp/ept_export [--checkpoint=best]

Takes the same gin files and flags as `python -m xprompt_jax.train` (the run's MODEL_DIR,
MODEL, TRAINABLE_REGEX; MIXTURE_OR_TASK_NAME is not needed) plus `--output_dir` (default
MODEL_DIR/export), `--checkpoint` ('best' | 'latest' | a step; default 'best', falling
back to the latest when no checkpoint has an eval metric), `--verify` (also load the frozen
model from INITIAL_CHECKPOINT_PATH and check that the exported prompt in a plain SoftPrompt
model gives the same logits as the trained module), `--format` and `--peft_base_model`.
What is written: `xprompt_jax.runs.export`.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Sequence

from . import _moved

FORMATS = ("npy", "peft")


def _define_flags(flags) -> None:
    from xprompt_jax.runs.flags import define_checkpoint_flag

    define_checkpoint_flag(flags)
    if "output_dir" not in flags.FLAGS:
        flags.DEFINE_string("output_dir", None, "export directory (default MODEL_DIR/export)")
    if "verify" not in flags.FLAGS:
        flags.DEFINE_bool("verify", False, "load the frozen model and check that the "
                          "exported prompt reproduces the trained module's logits")
        flags.DEFINE_enum("format", "npy", list(FORMATS), "'npy' (prompt.npy + "
                          "inference.gin) or 'peft' (also a Hugging Face PEFT prompt-tuning "
                          "adapter: adapter_config.json + adapter_model.safetensors)")
        flags.DEFINE_string("peft_base_model", None, "base_model_name_or_path of the PEFT "
                            "adapter (default: INITIAL_CHECKPOINT_PATH)")


def main(argv: Sequence[str]) -> None:
    from xprompt_jax import gin_utils
    from xprompt_jax.analysis.param_counts import format_param_counts
    from xprompt_jax.runs.config import configured_run
    from xprompt_jax.runs.export import export_run
    from xprompt_jax.runs.flags import checkpoint_step, configure_from_argv

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    FLAGS = configure_from_argv(argv, extra_flags=_define_flags)
    gin_utils.unset_required_macros(("MIXTURE_OR_TASK_NAME",))  # only the prompt is read
    record = gin_utils.call_configured(
        lambda: export_run(configured_run(), output_dir=FLAGS.output_dir,
                           checkpoint=checkpoint_step(FLAGS.checkpoint), verify=FLAGS.verify,
                           export_format=FLAGS.format, peft_base_model=FLAGS.peft_base_model),
        "xprompt_jax.export")
    print(format_param_counts(record["param_counts"], record["method"]))
    keys = ("method", "prompt_shape", "checkpoint_step", "files") + (
        ("prompts",) if "prompts" in record else ())
    print(json.dumps({k: record[k] for k in keys}, indent=2))


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.export")


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    console_entry()
