"""The main job: the full XPrompt pipeline on the synthetic world, in minutes on a CPU.

    python -m xprompt_jax.quickstart [--output_dir DIR] [--task rte] [--method xprompt]

1. generates the world's data (official-format SuperGLUE JSONL, deterministic) into a
   cache directory if absent (`--world_dir` to choose it);
2. runs the method on the world task `world_<task>` (T5's format *without* the task
   name) with the shipped pretrained tiny T5.1.1, through the regular gin files
   (`models/world_tiny.gin` -> the method's gin file -> `world/run.gin`) and CLI entry
   point, with progress bars. The default, XPrompt, is the whole pipeline: prompt tuning
   -> importance scores -> token and piece pruning search -> rewind (`--method
   prompt_tuning` runs stage 1 only);
3. measures the frozen model's references on the same dev split - with the task-name
   prefix it was pretrained with (upper reference) and with neither prefix nor prompt
   (lower reference) - and writes `report.md`, `report.json` and the plots into the run
   directory, which it prints at the start (and the report's path at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import io
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

TASKS = ("boolq", "rte", "copa", "wic")
DEFAULT_TASK = "rte"
MODEL_GIN = "models/world_tiny.gin"
RUN_GIN = "world/run.gin"


PROGRESS_BINDINGS = ("from __gin__ import dynamic_registration\n"
                     "from xprompt_jax import train as train_lib\n"
                     "train_lib.build_trainer.progress = True",)


@dataclasses.dataclass(frozen=True)
class Method:
    """A method file and the CLI module whose `main(argv)` runs it (t5x/train.py flags)."""

    name: str
    gin_file: str
    entry: str
    # gin lines added to the run (progress bars on, whatever the terminal).
    bindings: Sequence[str] = PROGRESS_BINDINGS

    @property
    def writes_report(self) -> bool:
        """Whether the entry point writes report.md / report.json itself (the pipeline)."""
        return self.entry == "xprompt_jax.xprompt"


METHODS = {
    "xprompt": Method("XPrompt", "xprompt.gin", "xprompt_jax.xprompt"),
    "prompt_tuning": Method("prompt tuning", "prompt_tuning.gin", "xprompt_jax.train"),
}
DEFAULT_METHOD = "xprompt"
METHOD = METHODS[DEFAULT_METHOD]


def default_output_dir() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("xprompt_runs", f"quickstart-{stamp}")


def gin_args(method: Method, run_dir: str, task: str, world_dir: str, seed: int,
             steps: Optional[int] = None, extra: Sequence[str] = ()) -> List[str]:
    """The entry point's flags for one world run."""
    args = [f"--gin_file={MODEL_GIN}", f"--gin_file={method.gin_file}",
            f"--gin_file={RUN_GIN}",
            f"--gin.MODEL_DIR={run_dir!r}",
            f"--gin.MIXTURE_OR_TASK_NAME={'world_' + task!r}",
            f"--gin.WORLD_DIR={world_dir!r}",
            f"--gin.RANDOM_SEED={int(seed)}"]
    if steps is not None:
        args.append(f"--gin.TRAIN_STEPS={int(steps)}")
    args += [f"--gin_bindings={b}" for b in method.bindings]
    args += [a if a.startswith("--") else f"--gin_bindings={a}" for a in extra]
    return args


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_training_curve(run_dir: str, path: str, references: Dict[str, float]) -> Optional[str]:
    """Train loss and dev accuracy against steps (from metrics.jsonl)."""
    records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    evals = [r for r in records if r.get("split") == "eval" and r.get("main_metric") is not None]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    ax1.set_xlabel("step")
    ax1.set_ylabel("train loss")
    ax1.set_title("training loss")
    ax2.plot([r["step"] for r in evals], [r["main_metric"] for r in evals], "o-",
             color="tab:green", label="prompt")
    styles = {"prefixed": ("tab:gray", "--", "frozen + task name"),
              "bare": ("tab:red", ":", "frozen, no prompt")}
    for key, value in references.items():
        color, style, label = styles.get(key, ("black", "-.", key))
        ax2.axhline(value, color=color, linestyle=style, label=label)
    ax2.set_xlabel("step")
    ax2.set_ylabel("dev accuracy (%)")
    ax2.set_title("dev accuracy")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _gain(accuracy: Optional[float], references: Dict[str, float]) -> Optional[float]:
    """Points over the frozen model without task name or prompt (None if unknown)."""
    return None if accuracy is None or "bare" not in references else accuracy - references["bare"]


def _reference_rows(references: Dict[str, float], extra_cells: Sequence[str] = ()) -> List[str]:
    """The two reference rows of the report table (`extra_cells` appended to each)."""
    tail = "".join(f" {cell} |" for cell in extra_cells)
    return [f"| frozen, with the task name in the input (upper reference) | "
            f"{_fmt(references.get('prefixed'))} |{tail}",
            f"| frozen, no task name, no prompt (lower reference) | "
            f"{_fmt(references.get('bare'))} |{tail}"]


def summarize(run_dir: str, method: Method, task: str, references: Dict[str, float],
              wall_time_s: float, world_dir: str, seed: int) -> Dict[str, Any]:
    """The report dict of a training run (train_summary.json + metrics.jsonl)."""
    summary_path = os.path.join(run_dir, "train_summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    best = summary.get("best_eval") or {}
    evals = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
             if r.get("split") == "eval"]
    final = evals[-1].get("main_metric") if evals else None
    best_acc = best.get("main_metric")
    report = {
        "method": method.name,
        "task": f"world_{task}",
        "run_dir": run_dir,
        "seed": seed,
        "world_dir": world_dir,
        "eval_mode": best.get("mode", "rank_classification"),
        "dev_accuracy_best": best_acc,
        "best_step": best.get("step"),
        "dev_accuracy_final": final,
        "dev_accuracy_curve": [[r["step"], r.get("main_metric")] for r in evals],
        "train_steps": summary.get("final_step"),
        "num_trainable_params": summary.get("num_trainable_params"),
        "references": references,
        "gain_over_no_prompt": _gain(best_acc, references),
        "wall_time_s": round(wall_time_s, 1),
    }
    return report


def write_report(run_dir: str, report: Dict[str, Any], plot: Optional[str]) -> None:
    with open(os.path.join(run_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)

    refs = report["references"]
    lines = [
        f"# {report['method']} on the synthetic world: `{report['task']}`",
        "",
        f"Frozen tiny T5.1.1 (shipped world checkpoint); dev accuracy (%) by "
        f"{report['eval_mode'].replace('_', ' ')} on the task's validation split.",
        "",
        "| model | dev accuracy |",
        "|---|---|",
        *_reference_rows(refs),
        f"| **{report['method']}** (best of {len(report['dev_accuracy_curve'])} evaluations, "
        f"step {report['best_step']}) | **{_fmt(report['dev_accuracy_best'])}** |",
        f"| {report['method']}, last evaluation | {_fmt(report['dev_accuracy_final'])} |",
        "",
        f"- trainable parameters: {report['num_trainable_params']}",
        f"- training steps: {report['train_steps']}; seed {report['seed']}",
        f"- gain over no prompt: {_fmt(report['gain_over_no_prompt'])} points",
        f"- wall time: {report['wall_time_s']:.0f} s",
        f"- world data: `{report['world_dir']}`",
    ]
    if plot:
        lines += ["", f"![training curve]({os.path.basename(plot)})"]
    with open(os.path.join(run_dir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def merge_pipeline_report(run_dir: str, task: str, references: Dict[str, float],
                          wall_time_s: float, world_dir: str, seed: int) -> Dict[str, Any]:
    """Adds the references and a summary to the pipeline's report.json / report.md."""
    from xprompt_jax.training.checkpointing import write_json_atomic

    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    stage1 = (report.get("stage1") or {}).get("eval") or {}
    final = report.get("final_eval") or {}
    params = report.get("parameters") or {}
    best = final.get("main_metric")
    ablations = {name: {"accuracy": (row.get("final_eval") or {}).get("main_metric"),
                        "surviving_tokens": row.get("surviving_tokens"),
                        "surviving_pieces": row.get("surviving_pieces"),
                        "parameters": row.get("parameters")}
                 for name, row in (report.get("ablations") or {}).items()}
    quick = {"method": "XPrompt", "task": f"world_{task}", "run_dir": run_dir, "seed": seed,
             "world_dir": world_dir, "references": references,
             "prompt_tuning_accuracy": stage1.get("main_metric"),
             "xprompt_accuracy": best,
             "gain_over_no_prompt": _gain(best, references),
             "chosen": ((report.get("search") or {}).get("xprompt") or {}).get("name"),
             "surviving_tokens": params.get("surviving_tokens"),
             "surviving_pieces": params.get("surviving_pieces"),
             "masking_curve": report.get("masking_curve"), "ablations": ablations,
             "wall_time_s": round(wall_time_s, 1)}
    report["quickstart"] = quick
    write_json_atomic(os.path.join(run_dir, "report.json"), report)
    plot = plot_training_curve(os.path.join(run_dir, "stage1"),
                               os.path.join(run_dir, "training_curve.png"), references)

    lines = [
        f"# XPrompt on the synthetic world: `world_{task}`", "",
        "Frozen tiny T5.1.1 (the shipped world checkpoint); dev accuracy (%) by rank "
        "classification on the task's validation split; the input carries no task name.", "",
        "| model | dev accuracy | trainable parameters |", "|---|---|---|",
        *_reference_rows(references, extra_cells=("0",)),
        f"| prompt tuning (stage 1) | {_fmt(stage1.get('main_metric'))} | "
        f"{params.get('prompt_tuning')} |",
        f"| **XPrompt** (pruned + rewound) | **{_fmt(best)}** | {params.get('xprompt')} |",
        *[f"| XPrompt ablation: {name} masks | {_fmt(row['accuracy'])} | {row['parameters']} |"
          for name, row in ablations.items()], "",
        f"Wall time {wall_time_s:.0f} s; seed {seed}; world data `{world_dir}`.", "",
    ]
    if plot:
        lines += [f"![stage-1 training curve]({os.path.basename(plot)})", ""]
    path = os.path.join(run_dir, "report.md")
    with open(path) as f:
        pipeline_md = f.read()
    pipeline_md = pipeline_md.replace("# XPrompt report", "# Pipeline details", 1)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n" + pipeline_md)
    os.replace(tmp, path)
    return quick


def run(output_dir: Optional[str] = None, task: str = DEFAULT_TASK,
        world_dir: Optional[str] = None, seed: int = 0, steps: Optional[int] = None,
        references: bool = True, method: Method = METHOD,
        extra_gin: Sequence[str] = ()) -> Dict[str, Any]:
    """Runs the main job; returns the summary dict (`dev_accuracy`, `references`, ...)."""
    from xprompt_jax.world import writer

    if task not in TASKS:
        raise ValueError(f"unknown world task {task!r}; expected one of {TASKS}")
    start = time.time()
    run_dir = os.path.abspath(output_dir or default_output_dir())
    os.makedirs(run_dir, exist_ok=True)
    print(f"run directory: {run_dir}", flush=True)
    world_dir = writer.ensure_world_data(world_dir)
    print(f"world data: {world_dir}", flush=True)
    print(f"{method.name} on world_{task} (gin: {MODEL_GIN}, {method.gin_file}, {RUN_GIN})",
          flush=True)

    argv = [f"{__name__}"] + gin_args(method, run_dir, task, world_dir, seed, steps, extra_gin)
    module = importlib.import_module(method.entry)
    if not hasattr(module, "main"):  # a package run with `python -m`: its __main__
        module = importlib.import_module(method.entry + ".__main__")
    with contextlib.redirect_stdout(io.StringIO()):  # its summary: printed once, below
        module.main(argv)

    refs: Dict[str, float] = {}
    if references:
        from xprompt_jax.world import reference

        print("evaluating the frozen model's references (with task name; no prompt)",
              flush=True)
        results = reference.reference_accuracies(task)
        refs = {k: v["main_metric"] for k, v in results.items()}
    wall = time.time() - start
    if method.writes_report:
        quick = merge_pipeline_report(run_dir, task, refs, wall, world_dir, seed)
        return dict(quick, dev_accuracy=quick["xprompt_accuracy"])
    report = summarize(run_dir, method, task, refs, wall, world_dir, seed)
    plot = plot_training_curve(run_dir, os.path.join(run_dir, "training_curve.png"), refs)
    write_report(run_dir, report, plot)
    return dict(report, dev_accuracy=report["dev_accuracy_best"])


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m xprompt_jax.quickstart",
        description="Runs the XPrompt pipeline (or prompt tuning) on a task of the synthetic "
                    "world with the shipped tiny T5 and writes report.md / report.json / "
                    "plots to a run directory.")
    parser.add_argument("--output_dir", default=None,
                        help="run directory (default ./xprompt_runs/quickstart-<timestamp>)")
    parser.add_argument("--task", default=DEFAULT_TASK, choices=TASKS)
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(METHODS))
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
    parser.add_argument("--gin", action="append", default=[],
                        help="extra gin binding, e.g. --gin \"LEARNING_RATE = 0.1\"")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("absl", "orbax"):  # per-save checkpoint chatter; progress bars say enough
        logging.getLogger(noisy).setLevel(logging.WARNING)
    extra = list(args.gin)
    if args.ablations:
        names = tuple(a.strip() for a in args.ablations.split(",") if a.strip())
        extra.append(f"ABLATIONS = {names!r}")
    report = run(args.output_dir, args.task, args.world_dir, args.seed, args.steps,
                 not args.no_references, METHODS[args.method], extra_gin=extra)
    run_dir = report["run_dir"]
    refs = report["references"]
    accuracy = report["dev_accuracy"]
    print(f"\n{report['method']} on {report['task']}: dev accuracy "
          f"{float('nan') if accuracy is None else accuracy:.1f} "
          f"(no prompt: {refs.get('bare', float('nan')):.1f}, "
          f"with task name: {refs.get('prefixed', float('nan')):.1f}) in "
          f"{report['wall_time_s']:.0f} s")
    print_xprompt_summary(report)
    print(f"report: {os.path.join(run_dir, 'report.md')}")  # the run directory: at the start
    return report


def print_xprompt_summary(report: Dict[str, Any]) -> None:
    """The masking curve (the paper's Figure 2), the chosen masks and the ablations."""
    curve = report.get("masking_curve")
    if not curve:
        return
    from xprompt_jax.xprompt.report import curve_lines

    print(f"\nmasking curve (stage-1 prompt, no retraining; dev {curve.get('metric')}):")
    for line in curve_lines(curve):
        print("  " + line)
    print(f"XPrompt chose {report.get('chosen')}: {report.get('surviving_tokens')} tokens, "
          f"{report.get('surviving_pieces')} pieces kept")
    for name, row in (report.get("ablations") or {}).items():
        print(f"  {name} masks: {row['surviving_tokens']} tokens, {row['surviving_pieces']} "
              f"pieces -> dev accuracy {_fmt(row['accuracy'])}")


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv[1:], prog="xprompt_jax.quickstart")


if __name__ == "__main__":
    console_entry()
