"""Evaluate a saved run: the frozen model from INITIAL_CHECKPOINT_PATH, the trainable params
of the run's best / latest / given checkpoint, the run's evaluation settings; writes
MODEL_DIR/eval_results.json. A PromptBank run scores every prompt in one batch.

`transfer_tasks` (gin EVAL_TRANSFER_TASKS): other tasks to score the same prompt on (domain
shift, Lester et al. Tables 1-2; `evaluation/domain_shift.py`), with the source's
verbalizers mapped onto theirs (QQP <-> MRPC by default, or `transfer_label_maps` {target
task: {source label: target label}}); written to transfer_results.json / .md.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from .. import gin_utils, interrupts
from ..evaluation import domain_shift
from ..fileio import is_writer, jsonable_loose, write_json_atomic, write_text_atomic
from .build import build_evaluator
from .config import RunConfig
from .flags import import_task_module
from .frozen import load_frozen_model
from .restore import restore_trainable

RESULTS_FILE = "eval_results.json"


def restored_variables(run: RunConfig, checkpoint: Union[str, int] = "best", model=None):
    """(frozen model, full variables of the run's checkpoint, its step): the frozen model
    loaded once, the run's trainable params and saved collections in place."""
    model = run.model if model is None else model
    frozen = load_frozen_model(model, run.frozen, run.feature_lengths, run.data.seed)
    restored = restore_trainable(model, run.model_dir, checkpoint, run.frozen.trainable_regex)
    return frozen, frozen.variables(restored.trainable, restored.collections), restored.step


def evaluate(run: RunConfig, *, checkpoint: Union[str, int] = "best",
             transfer_tasks: Sequence[str] = (),
             transfer_label_maps: Optional[Mapping[str, Mapping[str, str]]] = None
             ) -> Dict[str, Any]:
    """Evaluates the run in `run.model_dir` (module docstring); returns the results."""
    with interrupts.phase(f"evaluation of {run.model_dir}",
                          f"nothing was written ({RESULTS_FILE} is written at the end); "
                          "rerun the same command to evaluate"):
        return _evaluate(run, checkpoint, transfer_tasks, transfer_label_maps)


def _evaluate(run: RunConfig, checkpoint, transfer_tasks, transfer_label_maps):
    gin_utils.check_required("evaluate", {"model": run.model, "model_dir": run.model_dir,
                                          "mixture_or_task_name": run.task_name})
    import_task_module(run.task_module)
    frozen, variables, step = restored_variables(run, checkpoint)
    evaluator = build_evaluator(run)
    with frozen.activate():
        result = evaluator.evaluate(variables)
        if transfer_tasks:
            result["transfer"] = domain_shift.run_transfers(
                run.model, variables, run.task_name, list(transfer_tasks), run.feature_lengths,
                run.evaluation, transfer_label_maps)
    result["checkpoint_step"] = int(step)
    if is_writer():
        if transfer_tasks:
            write_json_atomic(os.path.join(run.model_dir, "transfer_results.json"),
                              jsonable_loose(result["transfer"]))
            write_text_atomic(os.path.join(run.model_dir, "transfer_results.md"),
                              domain_shift.transfer_markdown(run.task_name, result,
                                                             result["transfer"]))
        write_json_atomic(os.path.join(run.model_dir, RESULTS_FILE), jsonable_loose(result))
    return result
