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

`prompt_file` (the CLI passes prompts/from_file.gin's PROMPT_FILE): a `.npy` prompt `[n, e]`
as it enters the encoder (an export's `prompt.npy`, a numpy checkpoint of a plain soft
prompt) is evaluated in a plain SoftPrompt on the frozen model instead of a checkpoint, and
the results say so (`prompt_file`, `checkpoint_step` None). When the run itself was trained
from that file (its config.gin records the same PROMPT_FILE: the gin files of the run
include from_file.gin as its initializer), the run's checkpoint is evaluated as asked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from .. import gin_utils, interrupts
from ..checkpoints.peft_adapter import read_peft_adapter
from ..errors import ConfigError, DataError
from ..evaluation import domain_shift
from ..fileio import (is_writer, jsonable_loose, read_npy, write_json_atomic,
                      write_text_atomic)
from ..training.params import DEFAULT_TRAINABLE_REGEX
from .build import build_evaluator
from .config import RunConfig
from .config_record import CONFIG_FILE
from .flags import import_task_module
from .frozen import load_frozen_model
from .restore import checked_trainable, restore_trainable

logger = logging.getLogger("xprompt_jax")

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
             prompt_file: Optional[str] = None,
             peft_adapter: Optional[str] = None) -> Dict[str, Any]:
    """Evaluates the run in `run.model_dir`, or `prompt_file`, or the PEFT adapter
    `peft_adapter` (module docstring); returns the results."""
    what = prompt_file or peft_adapter or run.model_dir
    with interrupts.phase(f"evaluation of {what}",
                          f"nothing was written ({RESULTS_FILE} is written at the end); "
                          "rerun the same command to evaluate"):
        return _evaluate(run, checkpoint, transfer_tasks, transfer_label_maps, prompt_file,
                         peft_adapter)


def _evaluate(run: RunConfig, checkpoint, transfer_tasks, transfer_label_maps, prompt_file,
              peft_adapter):
    required = {"model": run.model, "mixture_or_task_name": run.task_name}
    if peft_adapter is None:
        required["model_dir"] = run.model_dir
    gin_utils.check_required("evaluate", required)
    import_task_module(run.task_module, run.task_name)
    if prompt_file and run.model_dir and _run_was_trained_from(run.model_dir, prompt_file):
        logger.info("PROMPT_FILE %s is the prompt this run was initialized from: evaluating "
                    "its checkpoint (EVAL_CHECKPOINT=%r)", prompt_file, checkpoint)
        prompt_file = None
    if peft_adapter is not None:
        frozen, variables, step = adapter_variables(run, peft_adapter)
    elif prompt_file:
        run, frozen, variables = _prompt_file_variables(run, prompt_file)
        step = None
        logger.info("evaluating the prompt file %s (PROMPT_FILE), not a checkpoint of %s",
                    prompt_file, run.model_dir)
    else:
        frozen, variables, step = restored_variables(run, checkpoint)
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
    if prompt_file:
        result["prompt_file"] = os.path.abspath(prompt_file)
    if is_writer() and run.model_dir:
        if transfer_tasks:
            write_json_atomic(os.path.join(run.model_dir, "transfer_results.json"),
                              jsonable_loose(result["transfer"]))
            write_text_atomic(os.path.join(run.model_dir, "transfer_results.md"),
                              domain_shift.transfer_markdown(run.task_name, result,
                                                             result["transfer"]))
        write_json_atomic(os.path.join(run.model_dir, RESULTS_FILE), jsonable_loose(result))
    return result


def _prompt_file_variables(run: RunConfig, prompt_file: str):
    """(run with a plain SoftPrompt of the file's prompt, its frozen model, variables)."""
    from .export import inference_model  # the same plain SoftPrompt an export serves

    prompt = read_npy(prompt_file, "PROMPT_FILE")
    if prompt.ndim != 2 or prompt.shape[1] != run.model.config.emb_dim:
        raise DataError(f"PROMPT_FILE {prompt_file}: shape {list(prompt.shape)}, expected "
                        f"[prompt length, {run.model.config.emb_dim}] (a prompt as it enters "
                        "the encoder, e.g. an export's prompt.npy)")
    run = dataclasses.replace(
        run, model=inference_model(run.model, prompt),
        frozen=dataclasses.replace(run.frozen, trainable_regex=DEFAULT_TRAINABLE_REGEX))
    frozen = load_frozen_model(run.model, run.frozen, run.feature_lengths, run.data.seed)
    return run, frozen, frozen.variables()  # the file's prompt is the initial value


def _run_was_trained_from(model_dir: str, prompt_file: str) -> bool:
    """Whether the run's recorded config (config.gin) initialized its prompt from
    `prompt_file` (the run's own gin files include prompts/from_file.gin)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        return f"PROMPT_FILE = {prompt_file!r}" in {line.strip() for line in f}
