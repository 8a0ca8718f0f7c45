"""Evaluate a prompt ensemble (Lester et al. 2021, Table 3) in one batch per step:
`python -m xprompt_jax.ensemble --gin_file=models/<size>.gin --gin_file=prompt_tuning.gin
[--gin_file=ensemble.gin] --gin_file=runs/ensemble_eval.gin --gin.MODEL_DIR=... ...`.

Two sources of the K prompts:
- a joint run (`ensemble.gin`, the model's prompt is a PromptBank): its best / latest / given
  checkpoint in MODEL_DIR;
- K separately trained prompts: `--gin.ENSEMBLE_PROMPT_FILES="['a.npy', 'b.npy', ...]"`
  (`[m, e]` each, e.g. `export`'s prompt.npy or a run's numpy checkpoint): they become a
  soft-prompt bank on the gin model's frozen T5 (the model's own prompt is not used).

Writes MODEL_DIR/ensemble_results.json and ensemble_report.md (each prompt, mean +- std,
best, majority-vote ensemble).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from . import gin_utils
from .errors import ConfigError
from .prompts import bank as bank_lib
from .prompts import initializers
from .prompts.soft_prompt import SoftPrompt
from .train import configure_from_argv, import_task_module
from .training import partitioning
from .training.bank_evaluation import BankEvaluator, table3_markdown
from .training.bank_training import stack_prompt_files
from .training.evaluation import EvalConfig
from .training.params import merge_params, split_params
from .training.pretrained import load_pretrained_params
from .training.trainer import init_variables

logger = logging.getLogger("xprompt_jax")


def bank_model_from_files(model, prompt_files: Sequence[str]):
    """(bank model, trainable params) of K `.npy` prompts on `model`'s frozen T5."""
    stacked = stack_prompt_files(list(prompt_files))  # [K, m, e]
    k, m, e = stacked.shape
    if e != model.config.emb_dim:
        raise ConfigError(f"prompt files have embedding size {e}; the model's is "
                         f"{model.config.emb_dim}")
    bank = bank_lib.PromptBank(SoftPrompt(m, initializers.from_array(stacked[0])),
                               num_prompts=k)
    return model.clone(prompt=bank), {"prompt": {bank_lib.BANK_NAME: {
        "prompt": jnp.asarray(stacked)}}}


def evaluate_ensemble(*, model, model_dir: str, mixture_or_task_name: str,
                      task_feature_lengths: Mapping[str, int],
                      mixture_or_task_module: Optional[str] = None,
                      initial_checkpoint_path: Optional[str] = None,
                      checkpoint_format: str = "auto",
                      eval_mode: str = "rank_classification", eval_split: str = "validation",
                      batch_size: int = 32, max_eval_examples: Optional[int] = None,
                      checkpoint: Union[str, int] = "best",
                      trainable_regex: str = r".*prompt.*",
                      mesh_shape: Sequence[int] = (-1, 1), seed: int = 0,
                      prompt_files: Sequence[str] = (),
                      prompt_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Scores every prompt of the ensemble and their majority vote; writes the report."""
    gin_utils.check_required("ensemble", dict(
        model=model, model_dir=model_dir, mixture_or_task_name=mixture_or_task_name,
        initial_checkpoint_path=initial_checkpoint_path))
    import_task_module(mixture_or_task_module)
    trainable = step = None
    if prompt_files:
        model, trainable = bank_model_from_files(model, prompt_files)
        if not prompt_names:
            prompt_names = [os.path.splitext(os.path.basename(p))[0] for p in prompt_files]
            if len(set(prompt_names)) < len(prompt_names):
                prompt_names = [f"prompt_{k}" for k in range(len(prompt_files))]
    elif not bank_lib.num_prompts(model):
        raise ConfigError("ensemble: the model has no PromptBank (include ensemble.gin) and "
                         "no ENSEMBLE_PROMPT_FILES were given")
    mesh = partitioning.make_mesh(tuple(mesh_shape))
    rules = partitioning.standard_logical_axis_rules()
    pretrained = load_pretrained_params(initial_checkpoint_path, checkpoint_format)
    with partitioning.activate(mesh, rules):
        variables = init_variables(model, pretrained, task_feature_lengths,
                                   jax.random.PRNGKey(seed))
    variables.pop("params_axes", None)
    _, frozen = split_params(variables["params"], trainable_regex)
    if trainable is None:
        from .export import restore_trainable

        trainable, step, collections = restore_trainable(model, model_dir, checkpoint,
                                                         trainable_regex, with_collections=True)
        variables.update(collections)
    variables["params"] = merge_params(trainable, frozen)
    names = prompt_names or [f"prompt_{k}" for k in range(bank_lib.num_prompts(model))]
    evaluator = BankEvaluator(model, mixture_or_task_name, task_feature_lengths,
                              EvalConfig(mode=eval_mode, split=eval_split,
                                         batch_size=batch_size, max_examples=max_eval_examples),
                              prompt_names=names)
    with partitioning.activate(mesh, rules):
        result = evaluator.evaluate(variables)
    result["checkpoint_step"] = None if step is None else int(step)
    result["prompt_files"] = list(prompt_files)
    if jax.process_index() == 0:
        from .training.checkpointing import write_json_atomic, write_text_atomic

        os.makedirs(model_dir, exist_ok=True)
        write_json_atomic(os.path.join(model_dir, "ensemble_results.json"),
                          json.loads(json.dumps(result, default=str)))
        write_text_atomic(os.path.join(model_dir, "ensemble_report.md"),
                          table3_markdown(mixture_or_task_name, result))
    return result


def main(argv: Sequence[str]) -> None:
    import gin

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_from_argv(argv)
    from xprompt_jax import ensemble as ensemble_lib  # the registered function

    result = gin_utils.call_configured(gin.get_configurable(ensemble_lib.evaluate_ensemble),
                                       "xprompt_jax.ensemble")
    print(json.dumps({k: result[k] for k in ("mode", "prompt_names", "per_prompt_main",
                                             "mean_main", "std_main", "best_main",
                                             "ensemble_main")}, indent=2, default=str))


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.ensemble")


if __name__ == "__main__":
    console_entry()
