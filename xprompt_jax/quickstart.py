"""The main job: the full XPrompt pipeline on the synthetic world, in minutes on a CPU.

    python -m xprompt_jax.quickstart [--output_dir DIR] [--task rte] [--method xprompt]
        [--sweep "{'seed': [0, 1], 'learning_rate': [0.1, 0.3]}"  (with --method prompt_tuning)]

Generates the world's data if absent, measures the frozen model's references, runs the
method on `world_<task>` with the shipped pretrained tiny T5.1.1 through the regular gin
files, and writes report.md / report.json / plots into the run directory, which it prints
at the start (and the report's path at the end). The job is `xprompt_jax.world.quickstart`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Dict, Optional, Sequence

from . import _moved


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    from xprompt_jax.world import quickstart as job

    parser = argparse.ArgumentParser(
        prog="python -m xprompt_jax.quickstart",
        description="Runs the XPrompt pipeline (or prompt tuning) on a task of the synthetic "
                    "world with the shipped tiny T5 and writes report.md / report.json / "
                    "plots to a run directory.")
    parser.add_argument("--output_dir", default=None,
                        help="run directory (default $XPROMPT_RUNS_DIR/quickstart-<timestamp>, "
                             "$XPROMPT_RUNS_DIR defaulting to ~/xprompt_runs)")
    parser.add_argument("--task", default=job.DEFAULT_TASK, choices=job.TASKS)
    parser.add_argument("--method", default=job.DEFAULT_METHOD, choices=sorted(job.METHODS))
    parser.add_argument("--world_dir", default=None,
                        help="where the world's JSONL files are (generated if absent); "
                             "default $XPROMPT_WORLD_DIR or ~/.cache/xprompt_jax/world/...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None,
                        help="override TRAIN_STEPS of gin/world/run.gin (each training stage)")
    parser.add_argument("--no_references", action="store_true",
                        help="skip evaluating the frozen model's references")
    parser.add_argument("--ablations", default="",
                        help="XPrompt: comma-separated mask variants rewound in addition from "
                             "the same stage 1 and search (reversed,random,length): the "
                             "paper's Figure 5")
    parser.add_argument("--sweep", default=None,
                        help="with --method prompt_tuning: a sweep trained as one run (the "
                             "SWEEP macro as a Python literal); sweep_report.md in the run "
                             "directory")
    parser.add_argument("--gin", action="append", default=[],
                        help="extra gin binding, e.g. --gin \"LEARNING_RATE = 0.1\"")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("absl", "orbax"):  # per-save checkpoint chatter; progress bars say enough
        logging.getLogger(noisy).setLevel(logging.WARNING)
    extra = list(args.gin)
    if args.sweep is not None:
        from xprompt_jax.errors import ConfigError
        from xprompt_jax.runs.flags import sweep_binding

        if job.METHODS[args.method].pipeline:
            raise ConfigError(f"--sweep: --method {args.method} (the XPrompt pipeline) does "
                              "not train sweeps yet; add --method prompt_tuning")
        extra.append(sweep_binding(args.sweep, extra))
    if args.ablations:
        names = tuple(a.strip() for a in args.ablations.split(",") if a.strip())
        extra.append(f"ABLATIONS = {names!r}")
    report = job.run(args.output_dir, args.task, args.world_dir, args.seed, args.steps,
                     not args.no_references, job.METHODS[args.method], extra_gin=extra)
    refs, accuracy = report["references"], report["dev_accuracy"]
    print(f"\n{report['method']} on {report['task']}: dev accuracy "
          f"{float('nan') if accuracy is None else accuracy:.1f} "
          f"(no prompt: {refs.get('bare', float('nan')):.1f}, "
          f"with task name: {refs.get('prefixed', float('nan')):.1f}) in "
          f"{report['wall_time_s']:.0f} s")
    for line in job.summary_lines(report):
        print(line)
    if report.get("sweep_report"):  # --sweep: the accuracy above is its entries' mean
        print(f"sweep (the accuracy above is its entries' mean): {report['sweep_report']}")
    print(f"report: {os.path.join(report['run_dir'], 'report.md')}")
    return report


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv[1:], prog="xprompt_jax.quickstart")


__getattr__ = _moved.module_getattr(__name__)

if __name__ == "__main__":
    console_entry()
