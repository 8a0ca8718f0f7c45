"""A prompt ensemble (Lester et al. 2021, Table 3) evaluated in one batch per step.

Two sources of the K prompts:
- a joint run (`ensemble.gin`, the model's prompt is a PromptBank): its best / latest / given
  checkpoint in MODEL_DIR;
- K separately trained prompts (`prompt_files`, gin ENSEMBLE_PROMPT_FILES): they become a
  soft-prompt bank on the model's frozen T5 (`prompt_files.bank_model_from_files`).

Writes MODEL_DIR/ensemble_results.json and ensemble_report.md (each prompt, mean +- std,
best, majority-vote ensemble).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Union

from .. import gin_utils
from ..errors import ConfigError
from ..evaluation.bank import PromptSelection, table3_markdown
from ..evaluation.evaluator import Evaluator
from ..fileio import is_writer, jsonable_loose, write_json_atomic, write_text_atomic
from ..prompts import bank as prompt_bank
from .build import bank_config
from .config import RunConfig
from .evaluate import restored_variables
from .flags import import_task_module
from .frozen import load_frozen_model
from .prompt_files import bank_model_from_files


def file_prompt_names(prompt_files: Sequence[str]) -> list:
    """Names of prompt files: their base names, or `prompt_<k>` where two coincide."""
    names = [os.path.splitext(os.path.basename(p))[0] for p in prompt_files]
    if len(set(names)) < len(names):
        names = [f"prompt_{k}" for k in range(len(prompt_files))]
    return names


def evaluate_ensemble(run: RunConfig, *, checkpoint: Union[str, int] = "best",
                      prompt_files: Sequence[str] = (),
                      prompt_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Scores every prompt of the ensemble and their majority vote; writes the report."""
    gin_utils.check_required("ensemble", {"model": run.model, "model_dir": run.model_dir,
                                          "mixture_or_task_name": run.task_name})
    import_task_module(run.task_module, run.task_name)
    step = None
    if prompt_files:
        model, trainable = bank_model_from_files(run.model, prompt_files)
        frozen = load_frozen_model(model, run.frozen, run.feature_lengths, run.data.seed)
        variables = frozen.variables(trainable)
        names = list(prompt_names or file_prompt_names(prompt_files))
    elif prompt_bank.num_prompts(run.model):
        model = run.model
        frozen, variables, step = restored_variables(run, checkpoint)
        names = list(prompt_names or bank_config(run).names(model))
    else:
        raise ConfigError("ensemble: the model has no PromptBank (include ensemble.gin) and "
                          "no ENSEMBLE_PROMPT_FILES were given")
    evaluator = Evaluator(model, run.task_name, run.feature_lengths, run.evaluation,
                          prompts=PromptSelection.all(model, names))
    with frozen.activate():
        result = evaluator.evaluate(variables)
    result["checkpoint_step"] = None if step is None else int(step)
    result["prompt_files"] = list(prompt_files)
    if is_writer():
        write_json_atomic(os.path.join(run.model_dir, "ensemble_results.json"),
                          jsonable_loose(result))
        write_text_atomic(os.path.join(run.model_dir, "ensemble_report.md"),
                          table3_markdown(run.task_name, result))
    return result
