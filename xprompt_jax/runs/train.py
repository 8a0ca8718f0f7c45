"""A training run: build the trainer, record the config, train (resuming), write
train_summary.json and the run report (and EPT's mu_t series and plot when recorded; a
sweep's report, `sweep_report.py`)."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Sequence

from .. import interrupts
from ..fileio import is_writer, jsonable_loose, write_json_atomic
from .build import build_trainer
from .config import RunConfig
from .config_record import check_config
from .report import SectionFn, prompt_interpretability, run_markdown, run_report, write_report
from .sweep_report import write_sweep_report

logger = logging.getLogger("xprompt_jax")

SUMMARY_FILE = "train_summary.json"


def train(run: RunConfig, *, config_text: str = "", allow_config_change: bool = False,
          report_sections: Sequence[SectionFn] = ()) -> Dict[str, Any]:
    """Trains `run` in its MODEL_DIR and returns the summary. `config_text` (the parsed gin)
    is recorded as config.gin; a resume with another config is refused unless
    `allow_config_change`. `report_sections`: functions of the finished report that add
    sections to it (e.g. a summary above it)."""
    recorder = None
    if run.record_prompt_norm:
        from ..analysis.prompt_norm import PromptNormRecorder

        recorder = PromptNormRecorder()
    trainer = build_trainer(run, step_callback=recorder)
    model_dir = trainer.config.model_dir
    os.makedirs(model_dir, exist_ok=True)
    # written once the checkpoint restored under this config (a change that cannot resume
    # leaves the record as it was)
    trainer.after_restore = check_config(model_dir, config_text,
                                         trainer.checkpointer.latest_step(), allow_config_change)
    summary = trainer.run()
    with interrupts.phase("writing the summary and report of the finished training",
                          f"the training finished and its checkpoints are kept in "
                          f"{model_dir}; rerun the same command to write the report"):
        _write_outputs(run, trainer, summary, recorder, report_sections)
    return summary


def _write_outputs(run: RunConfig, trainer, summary, recorder, report_sections) -> None:
    model_dir = trainer.config.model_dir
    if is_writer():
        write_json_atomic(os.path.join(model_dir, SUMMARY_FILE), jsonable_loose(summary))
    if recorder is not None and is_writer():
        from ..analysis import prompt_norm

        recorder.write(model_dir)
        prompt_norm.plot_prompt_norm(model_dir, title=run.task_name)
    if run.sweep is not None and trainer.config.eval_period:
        write_sweep_report(model_dir, title=f"Sweep on {run.task_name}")
    write_run_report(trainer, summary, report_sections)


def write_run_report(trainer, summary: Mapping[str, Any],
                     report_sections: Sequence[SectionFn] = ()) -> Dict[str, Any]:
    """report.json / report.md of a finished training run: the best checkpoint's results
    and the nearest vocabulary pieces of its prompt, plus `report_sections`."""
    task_name = trainer.data_config.mixture_or_task_name
    interp = None
    try:  # every process restores (collective); process 0 writes
        if summary.get("best_step") is not None:
            trainer.restore(summary["best_step"])
        interp = prompt_interpretability(trainer.model, trainer.variables(), task_name)
    except Exception as e:  # pylint: disable=broad-except  (the run itself finished)
        logger.warning("nearest-token analysis skipped: %s", e)
    body = run_report(summary, task_name, interp)
    return write_report(trainer.config.model_dir, body, run_markdown(body),
                        [section(body) for section in report_sections])
