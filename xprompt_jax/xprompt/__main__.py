"""XPrompt pipeline CLI (t5x/train.py flags):

    python -m xprompt_jax.xprompt --gin_file=models/<size>.gin --gin_file=xprompt.gin \
        --gin.MODEL_DIR="'/tmp/xp'" --gin.MIXTURE_OR_TASK_NAME="'xprompt_super_glue_rte_local'"

Runs stage 1 -> scores -> search -> rewind -> final eval (resuming finished stages) and
writes MODEL_DIR/report.md, report.json and the plots (`xprompt_jax.xprompt.pipeline`).
"""

import json
import logging
import sys


def _define_flags(flags) -> None:
    if "allow_config_change" not in flags.FLAGS:
        flags.DEFINE_bool("allow_config_change", False, "rerun a MODEL_DIR whose stage 1 ran "
                          "with other settings (MODEL_DIR/stage1/config.gin records both)")


def main(argv):
    import gin

    from xprompt_jax import gin_utils
    from xprompt_jax.runs.config import configured_run
    from xprompt_jax.runs.flags import configure_from_argv
    from xprompt_jax.xprompt.config import XPromptConfig
    from xprompt_jax.xprompt.pipeline import run_pipeline

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    FLAGS = configure_from_argv(argv, extra_flags=_define_flags)

    def call():
        run, config = configured_run(), gin_utils.configured(XPromptConfig)()
        return run_pipeline(run, config, config_text=gin.config_str(),
                            allow_config_change=FLAGS.allow_config_change)

    report = gin_utils.call_configured(call, "xprompt_jax.xprompt")
    print(json.dumps({"model_dir": report["model_dir"], "final_eval": report["final_eval"].get(
        "main_metric"), "parameters": report["parameters"]}, indent=2, default=str))
    print(f"report: {report['model_dir']}/report.md")


def console_entry():
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.xprompt")


if __name__ == "__main__":
    console_entry()
