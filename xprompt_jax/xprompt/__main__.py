"""XPrompt pipeline CLI (t5x/train.py flags):

    python -m xprompt_jax.xprompt --gin_file=models/<size>.gin --gin_file=xprompt.gin \
        --gin.MODEL_DIR="'/tmp/xp'" --gin.MIXTURE_OR_TASK_NAME="'xprompt_super_glue_rte_local'"

Runs stage 1 -> scores -> search -> rewind -> final eval (resuming finished stages) and
writes MODEL_DIR/report.md, report.json and the plots (`xprompt_jax.xprompt.pipeline`).
"""

import json
import logging
import sys


def main(argv):
    from xprompt_jax import gin_utils
    from xprompt_jax.runs.flags import configure_from_argv
    from xprompt_jax.xprompt import pipeline

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_from_argv(argv)
    report = gin_utils.call_configured(gin_utils.configured(pipeline.run_pipeline),
                                       "xprompt_jax.xprompt")
    print(json.dumps({"model_dir": report["model_dir"], "final_eval": report["final_eval"].get(
        "main_metric"), "parameters": report["parameters"]}, indent=2, default=str))
    print(f"report: {report['model_dir']}/report.md")


def console_entry():
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.xprompt")


if __name__ == "__main__":
    console_entry()
