"""The main job: a method on a task of the synthetic world, in minutes on a CPU, with a report.

`run(...)`:
1. generates the world's data (official-format SuperGLUE JSONL, deterministic) into a
   cache directory if absent;
2. measures the frozen model's references on the task's dev split - with the task-name
   prefix it was pretrained with (upper reference) and with neither prefix nor prompt
   (lower reference);
3. runs the method on `world_<task>` (T5's format *without* the task name) with the shipped
   pretrained tiny T5.1.1 through the regular gin files (`models/world_tiny.gin` -> the
   method's gin file -> `world/run.gin`), with progress bars: XPrompt, the default, is the
   whole pipeline (prompt tuning -> importance scores -> token and piece pruning search ->
   rewind); `prompt_tuning` is stage 1 only;
4. its report (report.md, report.json and the plots in the run directory) opens with a
   summary: the references, the method's dev accuracy and a training-curve plot.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..errors import TrainingInterrupted
from ..fileio import read_json, runs_dir
from ..markdown import cell
from ..runs.report import Section
from ..training.run_logging import read_metrics

TASKS = ("boolq", "rte", "copa", "wic")
DEFAULT_TASK = "rte"
MODEL_GIN = "models/world_tiny.gin"
RUN_GIN = "world/run.gin"
# gin lines added to the run: progress bars on, whatever the terminal.
PROGRESS_BINDINGS = ("from __gin__ import dynamic_registration\n"
                     "from xprompt_jax.training import trainer\n"
                     "trainer.TrainerConfig.progress = True",)


@dataclasses.dataclass(frozen=True)
class Method:
    """A method's name, its gin file and whether it is the XPrompt pipeline."""

    name: str
    gin_file: str
    pipeline: bool = False


METHODS = {
    "xprompt": Method("XPrompt", "xprompt.gin", pipeline=True),
    "prompt_tuning": Method("prompt tuning", "prompt_tuning.gin"),
}
DEFAULT_METHOD = "xprompt"


def default_output_dir() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(runs_dir(), f"quickstart-{stamp}")


def gin_args(method: Method, run_dir: str, task: str, world_dir: str, seed: int,
             steps: Optional[int] = None, extra: Sequence[str] = (),
             progress: bool = True) -> List[str]:
    """The run's flags, as the CLIs take them (`progress`: bars on, whatever the
    terminal)."""
    args = [f"--gin_file={MODEL_GIN}", f"--gin_file={method.gin_file}",
            f"--gin_file={RUN_GIN}",
            f"--gin.MODEL_DIR={run_dir!r}",
            f"--gin.MIXTURE_OR_TASK_NAME={'world_' + task!r}",
            f"--gin.WORLD_DIR={world_dir!r}",
            f"--gin.RANDOM_SEED={int(seed)}"]
    if steps is not None:
        args.append(f"--gin.TRAIN_STEPS={int(steps)}")
    if progress:
        args += [f"--gin_bindings={b}" for b in PROGRESS_BINDINGS]
    args += [a if a.startswith("--") else f"--gin_bindings={a}" for a in extra]
    return args


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    return read_metrics(path)  # a torn or damaged line is skipped with a warning


def plot_training_curve(run_dir: str, path: str, references: Dict[str, float]) -> Optional[str]:
    """Train loss and dev accuracy against steps (from metrics.jsonl)."""
    records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    train = [r for r in records if r.get("split") == "train" and r.get("loss") is not None]
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


def _acc(value) -> str:
    return cell(value, ".1f")


def _gain(accuracy: Optional[float], references: Dict[str, float]) -> Optional[float]:
    """Points over the frozen model without task name or prompt (None if unknown)."""
    return None if accuracy is None or "bare" not in references else accuracy - references["bare"]


def _reference_rows(references: Dict[str, float], extra_cells: Sequence[str] = ()) -> List[str]:
    """The two reference rows of the summary table (`extra_cells` appended to each)."""
    tail = "".join(f" {c} |" for c in extra_cells)
    return [f"| frozen, with the task name in the input (upper reference) | "
            f"{_acc(references.get('prefixed'))} |{tail}",
            f"| frozen, no task name, no prompt (lower reference) | "
            f"{_acc(references.get('bare'))} |{tail}"]


@dataclasses.dataclass
class _Job:
    """One quickstart run: what its summary section needs."""

    run_dir: str
    method: Method
    task: str
    world_dir: str
    seed: int
    references: Dict[str, float]
    start: float

    def wall(self) -> float:
        return time.time() - self.start

    def prompt_tuning_section(self, body: Mapping[str, Any]) -> Section:
        """Summary of a training run (train_summary.json + metrics.jsonl)."""
        del body
        path = os.path.join(self.run_dir, "train_summary.json")
        summary = read_json(path, "training summary") if os.path.exists(path) else {}
        best = summary.get("best_eval") or {}
        evals = [r for r in read_jsonl(os.path.join(self.run_dir, "metrics.jsonl"))
                 if r.get("split") == "eval"]
        refs = self.references
        quick = {
            "method": self.method.name, "task": f"world_{self.task}", "run_dir": self.run_dir,
            "seed": self.seed, "world_dir": self.world_dir,
            "eval_mode": best.get("mode", "rank_classification"),
            "dev_accuracy_best": best.get("main_metric"), "best_step": best.get("step"),
            "dev_accuracy_final": evals[-1].get("main_metric") if evals else None,
            "dev_accuracy_curve": [[r["step"], r.get("main_metric")] for r in evals],
            "train_steps": summary.get("final_step"),
            "num_trainable_params": summary.get("num_trainable_params"),
            "references": refs, "gain_over_no_prompt": _gain(best.get("main_metric"), refs),
            "wall_time_s": round(self.wall(), 1)}
        plot = self._plot(self.run_dir)
        lines = [
            f"# {quick['method']} on the synthetic world: `{quick['task']}`", "",
            f"Frozen tiny T5.1.1 (shipped world checkpoint); dev accuracy (%) by "
            f"{quick['eval_mode'].replace('_', ' ')} on the task's validation split.", "",
            "| model | dev accuracy |", "|---|---|", *_reference_rows(refs),
            f"| **{quick['method']}** (best of {len(quick['dev_accuracy_curve'])} evaluations, "
            f"step {quick['best_step']}) | **{_acc(quick['dev_accuracy_best'])}** |",
            f"| {quick['method']}, last evaluation | {_acc(quick['dev_accuracy_final'])} |", "",
            f"- trainable parameters: {quick['num_trainable_params']}",
            f"- training steps: {quick['train_steps']}; seed {quick['seed']}",
            f"- gain over no prompt: {_acc(quick['gain_over_no_prompt'])} points",
            f"- wall time: {quick['wall_time_s']:.0f} s",
            f"- world data: `{quick['world_dir']}`", ""]
        sweep = os.path.join(self.run_dir, "sweep_report.md")
        if os.path.exists(sweep):  # a sweep (--sweep): the rows above are its entries' mean
            quick["sweep_report"] = sweep
            lines[-1:] = ["- a sweep: the accuracies above are its entries' mean; one row per "
                          "configuration in [sweep_report.md](sweep_report.md)", ""]
        if plot:
            lines += [f"![training curve]({os.path.basename(plot)})", ""]
        return Section(lines, key="quickstart", data=quick, first=True)

    def xprompt_section(self, report: Mapping[str, Any]) -> Section:
        """Summary of the XPrompt pipeline's report."""
        stage1 = (report.get("stage1") or {}).get("eval") or {}
        final = report.get("final_eval") or {}
        params = report.get("parameters") or {}
        best = final.get("main_metric")
        refs = self.references
        ablations = {name: {"accuracy": (row.get("final_eval") or {}).get("main_metric"),
                            "surviving_tokens": row.get("surviving_tokens"),
                            "surviving_pieces": row.get("surviving_pieces"),
                            "parameters": row.get("parameters")}
                     for name, row in (report.get("ablations") or {}).items()}
        quick = {"method": "XPrompt", "task": f"world_{self.task}", "run_dir": self.run_dir,
                 "seed": self.seed, "world_dir": self.world_dir, "references": refs,
                 "prompt_tuning_accuracy": stage1.get("main_metric"),
                 "xprompt_accuracy": best, "gain_over_no_prompt": _gain(best, refs),
                 "chosen": ((report.get("search") or {}).get("xprompt") or {}).get("name"),
                 "surviving_tokens": params.get("surviving_tokens"),
                 "surviving_pieces": params.get("surviving_pieces"),
                 "masking_curve": report.get("masking_curve"), "ablations": ablations,
                 "wall_time_s": round(self.wall(), 1)}
        plot = self._plot(os.path.join(self.run_dir, "stage1"))
        lines = [
            f"# XPrompt on the synthetic world: `world_{self.task}`", "",
            "Frozen tiny T5.1.1 (the shipped world checkpoint); dev accuracy (%) by rank "
            "classification on the task's validation split; the input carries no task name.",
            "", "| model | dev accuracy | trainable parameters |", "|---|---|---|",
            *_reference_rows(refs, extra_cells=("0",)),
            f"| prompt tuning (stage 1) | {_acc(stage1.get('main_metric'))} | "
            f"{params.get('prompt_tuning')} |",
            f"| **XPrompt** (pruned + rewound) | **{_acc(best)}** | {params.get('xprompt')} |",
            *[f"| XPrompt ablation: {name} masks | {_acc(row['accuracy'])} | "
              f"{row['parameters']} |" for name, row in ablations.items()], "",
            f"Wall time {quick['wall_time_s']:.0f} s; seed {self.seed}; world data "
            f"`{self.world_dir}`.", ""]
        if plot:
            lines += [f"![stage-1 training curve]({os.path.basename(plot)})", ""]
        return Section(lines, key="quickstart", data=quick, first=True)

    def _plot(self, metrics_dir: str) -> Optional[str]:
        from ..fileio import is_writer

        if not is_writer():
            return None
        return plot_training_curve(metrics_dir, os.path.join(self.run_dir, "training_curve.png"),
                                   self.references)


def run(output_dir: Optional[str] = None, task: str = DEFAULT_TASK,
        world_dir: Optional[str] = None, seed: int = 0, steps: Optional[int] = None,
        references: bool = True, method: Method = METHODS[DEFAULT_METHOD],
        extra_gin: Sequence[str] = ()) -> Dict[str, Any]:
    """Runs the main job (module docstring); returns its summary (report.json's
    'quickstart', plus `dev_accuracy`)."""
    import gin

    from .. import gin_utils
    from ..runs.config import configured_run
    from ..runs.flags import configure_from_argv
    from . import writer

    if task not in TASKS:
        raise ValueError(f"unknown world task {task!r}; expected one of {TASKS}")
    start = time.time()
    run_dir = os.path.abspath(output_dir or default_output_dir())
    os.makedirs(run_dir, exist_ok=True)
    print(f"run directory: {run_dir}", flush=True)
    world_dir = writer.ensure_world_data(world_dir)
    print(f"world data: {world_dir}", flush=True)
    refs: Dict[str, float] = {}
    if references:
        from . import reference

        print("evaluating the frozen model's references (with task name; no prompt)",
              flush=True)
        refs = {k: v["main_metric"] for k, v in reference.reference_accuracies(task).items()}
    print(f"{method.name} on world_{task} (gin: {MODEL_GIN}, {method.gin_file}, {RUN_GIN})",
          flush=True)
    job = _Job(run_dir, method, task, world_dir, seed, refs, start)
    configure_from_argv(["quickstart"] + gin_args(method, run_dir, task, world_dir, seed,
                                                  steps, extra_gin))

    def work() -> Dict[str, Any]:
        if method.pipeline:
            from ..xprompt.config import XPromptConfig
            from ..xprompt.pipeline import run_pipeline

            report = gin_utils.call_configured(
                lambda: run_pipeline(configured_run(), gin_utils.configured(XPromptConfig)(),
                                     report_sections=[job.xprompt_section],
                                     config_text=gin.config_str()), "quickstart")
            quick = report["quickstart"]
            return dict(quick, dev_accuracy=quick["xprompt_accuracy"])
        from ..runs.train import train

        gin_utils.call_configured(
            lambda: train(configured_run(), config_text=gin.config_str(),
                          report_sections=[job.prompt_tuning_section]), "quickstart")
        quick = read_json(os.path.join(run_dir, "report.json"), "report")["quickstart"]
        return dict(quick, dev_accuracy=quick["dev_accuracy_best"])

    try:
        return work()
    except TrainingInterrupted as stop:
        if output_dir:  # the same command names the same folder: it resumes
            raise
        raise stop.with_hint(f"rerun with --output_dir={run_dir} to resume from step "
                             f"{stop.step} (without it the quickstart starts a new "
                             "folder)") from None


def summary_lines(report: Mapping[str, Any]) -> List[str]:
    """The masking curve (the paper's Figure 2), the chosen masks and the ablations, as the
    quickstart prints them."""
    curve = report.get("masking_curve")
    if not curve:
        return []
    from ..xprompt.report import curve_lines

    lines = ["", f"masking curve (stage-1 prompt, no retraining; dev {curve.get('metric')}):"]
    lines += ["  " + line for line in curve_lines(curve)]
    lines.append(f"XPrompt chose {report.get('chosen')}: {report.get('surviving_tokens')} "
                 f"tokens, {report.get('surviving_pieces')} pieces kept")
    for name, row in (report.get("ablations") or {}).items():
        lines.append(f"  {name} masks: {row['surviving_tokens']} tokens, "
                     f"{row['surviving_pieces']} pieces -> dev accuracy {_acc(row['accuracy'])}")
    return lines
