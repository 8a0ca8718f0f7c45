"""Evaluate a saved run: the frozen model from INITIAL_CHECKPOINT_PATH, the trainable params
of the run's best / latest / given checkpoint, the run's evaluation settings; writes
MODEL_DIR/eval_results.json. A PromptBank run scores every prompt in one batch.

`peft_adapter` (gin runs/eval_peft.gin): evaluate a Hugging Face PEFT prompt adapter
directly, no run: its encoder prompt (`checkpoints/peft_adapter.py`) is the prompt, the
frozen model is INITIAL_CHECKPOINT_PATH or, when that is None, the adapter's
`base_model_name_or_path` (a path, or a Hub name read from the local HF cache);
eval_results.json is written to MODEL_DIR only when one is given.

`transfer_tasks` (gin EVAL_TRANSFER_TASKS): other tasks to score the same prompt on (domain
shift, Lester et al. Tables 1-2; `evaluation/domain_shift.py`), with the source's
verbalizers mapped onto theirs (QQP <-> MRPC by default, or `transfer_label_maps` {target
task: {source label: target label}}); written to transfer_results.json / .md.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from .. import gin_utils
from ..checkpoints.peft_adapter import read_peft_adapter
from ..errors import ConfigError
from ..evaluation import domain_shift
from ..fileio import is_writer, jsonable_loose, write_json_atomic, write_text_atomic
from .build import build_evaluator
from .config import RunConfig
from .flags import import_task_module
from .frozen import load_frozen_model
from .restore import checked_trainable, restore_trainable

RESULTS_FILE = "eval_results.json"


def restored_variables(run: RunConfig, checkpoint: Union[str, int] = "best", model=None):
    """(frozen model, full variables of the run's checkpoint, its step): the frozen model
    loaded once, the run's trainable params and saved collections in place."""
    model = run.model if model is None else model
    frozen = load_frozen_model(model, run.frozen, run.feature_lengths, run.data.seed)
    restored = restore_trainable(model, run.model_dir, checkpoint, run.frozen.trainable_regex)
    return frozen, frozen.variables(restored.trainable, restored.collections), restored.step


def adapter_variables(run: RunConfig, peft_adapter: str):
    """(frozen model, full variables, None) of a PEFT adapter's prompt on the run's model:
    the frozen model from INITIAL_CHECKPOINT_PATH, else the adapter's base model."""
    adapter = read_peft_adapter(peft_adapter)
    frozen_config = run.frozen
    if not frozen_config.initial_checkpoint_path:
        base = adapter.config.get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"PEFT adapter {adapter.path} names no base_model_name_or_path: "
                              "set INITIAL_CHECKPOINT_PATH to its frozen model")
        frozen_config = dataclasses.replace(frozen_config, initial_checkpoint_path=base)
    frozen = load_frozen_model(run.model, frozen_config, run.feature_lengths, run.data.seed)
    trainable = checked_trainable(run.model, {"prompt": {"prompt": adapter.prompt}},
                                  frozen_config.trainable_regex,
                                  f"PEFT adapter {adapter.path} (a [num_virtual_tokens, "
                                  "token_dim] prompt)")
    return frozen, frozen.variables(trainable), None


def evaluate(run: RunConfig, *, checkpoint: Union[str, int] = "best",
             transfer_tasks: Sequence[str] = (),
             transfer_label_maps: Optional[Mapping[str, Mapping[str, str]]] = None,
             peft_adapter: Optional[str] = None) -> Dict[str, Any]:
    """Evaluates the run in `run.model_dir`, or the PEFT adapter `peft_adapter` (module
    docstring); returns the results."""
    required = {"model": run.model, "mixture_or_task_name": run.task_name}
    if peft_adapter is None:
        required["model_dir"] = run.model_dir
    gin_utils.check_required("evaluate", required)
    import_task_module(run.task_module)
    if peft_adapter is None:
        frozen, variables, step = restored_variables(run, checkpoint)
    else:
        frozen, variables, step = adapter_variables(run, peft_adapter)
    evaluator = build_evaluator(run)
    with frozen.activate():
        result = evaluator.evaluate(variables)
        if transfer_tasks:
            result["transfer"] = domain_shift.run_transfers(
                run.model, variables, run.task_name, list(transfer_tasks), run.feature_lengths,
                run.evaluation, transfer_label_maps)
    result["checkpoint_step"] = None if step is None else int(step)
    if peft_adapter is not None:
        result["peft_adapter"] = os.fspath(peft_adapter)
    if is_writer() and run.model_dir:
        if transfer_tasks:
            write_json_atomic(os.path.join(run.model_dir, "transfer_results.json"),
                              jsonable_loose(result["transfer"]))
            write_text_atomic(os.path.join(run.model_dir, "transfer_results.md"),
                              domain_shift.transfer_markdown(run.task_name, result,
                                                             result["transfer"]))
        write_json_atomic(os.path.join(run.model_dir, RESULTS_FILE), jsonable_loose(result))
    return result
