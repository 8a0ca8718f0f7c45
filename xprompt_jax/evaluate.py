"""Evaluate a saved run: `python -m xprompt_jax.evaluate --gin_file=models/<size>.gin
--gin_file=prompt_tuning.gin --gin_file=runs/eval.gin --gin.MODEL_DIR=... ...`.

Loads the frozen model from INITIAL_CHECKPOINT_PATH, the trainable params from the run's
best / latest / given checkpoint, evaluates, and writes MODEL_DIR/eval_results.json.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import jax

from . import gin_utils
from .export import restore_trainable
from .train import configure_from_argv, frozen_shardings, import_task_module
from .training import partitioning
from .training.evaluation import EvalConfig, Evaluator
from .training.params import merge_params, split_params
from .training.pretrained import load_pretrained_params
from .training.trainer import init_variables

logger = logging.getLogger("xprompt_jax")


def evaluate(*, model, model_dir: str, mixture_or_task_name: str,
             task_feature_lengths: Mapping[str, int],
             mixture_or_task_module: Optional[str] = None,
             initial_checkpoint_path: Optional[str] = None, checkpoint_format: str = "auto",
             eval_mode: str = "rank_classification", eval_split: str = "validation",
             batch_size: int = 32, max_eval_examples: Optional[int] = None,
             checkpoint: Union[str, int] = "best", trainable_regex: str = r".*prompt.*",
             mesh_shape: Sequence[int] = (-1, 1), seed: int = 0,
             transfer_tasks: Sequence[str] = (),
             transfer_label_maps: Optional[Mapping[str, Mapping[str, str]]] = None
             ) -> Dict[str, Any]:
    """Evaluates the run in `model_dir`; returns and writes the results.

    `transfer_tasks` (gin EVAL_TRANSFER_TASKS): other tasks to score the same prompt on
    (domain shift, Lester et al. Tables 1-2; `domain_shift.py`), with the source's
    verbalizers mapped onto theirs (QQP <-> MRPC by default, or `transfer_label_maps`
    {target task: {source label: target label}}); written to transfer_results.json/.md
    and returned under 'transfer'."""
    gin_utils.check_required("evaluate", dict(
        model=model, model_dir=model_dir, mixture_or_task_name=mixture_or_task_name,
        initial_checkpoint_path=initial_checkpoint_path))
    import_task_module(mixture_or_task_module)
    mesh = partitioning.make_mesh(tuple(mesh_shape))
    rules = partitioning.standard_logical_axis_rules()
    pretrained = None
    if initial_checkpoint_path:
        shardings = frozen_shardings(model, task_feature_lengths, mesh, rules, trainable_regex)
        pretrained = load_pretrained_params(initial_checkpoint_path, checkpoint_format,
                                            shardings=shardings)
    with partitioning.activate(mesh, rules):
        variables = init_variables(model, pretrained, task_feature_lengths,
                                   jax.random.PRNGKey(seed))
    variables.pop("params_axes", None)
    _, frozen = split_params(variables["params"], trainable_regex)
    trainable, step, collections = restore_trainable(model, model_dir, checkpoint,
                                                     trainable_regex, with_collections=True)
    variables["params"] = merge_params(trainable, frozen)
    variables.update(collections)  # e.g. XPrompt's prompt_masks of a rewound run
    evaluator = Evaluator(model, mixture_or_task_name, task_feature_lengths,
                          EvalConfig(mode=eval_mode, split=eval_split, batch_size=batch_size,
                                     max_examples=max_eval_examples))
    from .prompts.bank import num_prompts

    if num_prompts(model):  # a PromptBank run: every prompt, in one batch (issue #17)
        from .training.bank_evaluation import BankEvaluator

        evaluator = BankEvaluator.from_evaluator(evaluator)
    with partitioning.activate(mesh, rules):
        result = evaluator.evaluate(variables)
        if transfer_tasks:
            from . import domain_shift

            result["transfer"] = domain_shift.run_transfers(
                model, variables, mixture_or_task_name, list(transfer_tasks),
                task_feature_lengths, evaluator.config, transfer_label_maps)
    result["checkpoint_step"] = int(step)
    if jax.process_index() == 0 and transfer_tasks:
        from . import domain_shift
        from .training.checkpointing import write_json_atomic

        write_json_atomic(os.path.join(model_dir, "transfer_results.json"),
                          json.loads(json.dumps(result["transfer"], default=str)))
        with open(os.path.join(model_dir, "transfer_results.md"), "w") as f:
            f.write(domain_shift.transfer_markdown(mixture_or_task_name, result,
                                                   result["transfer"]))
    if jax.process_index() == 0:
        from .training.checkpointing import write_json_atomic

        write_json_atomic(os.path.join(model_dir, "eval_results.json"),
                          json.loads(json.dumps(result, default=str)))
    return result


def main(argv: Sequence[str]) -> None:
    import gin

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_from_argv(argv)
    from xprompt_jax import evaluate as evaluate_lib  # the registered function

    result = gin_utils.call_configured(gin.get_configurable(evaluate_lib.evaluate),
                                       "xprompt_jax.evaluate")
    print(json.dumps({k: result[k] for k in ("mode", "metrics", "main_metric",
                                            "checkpoint_step")}, indent=2, default=str))


def console_entry() -> None:
    from xprompt_jax import cli

    cli.run_cli(main, sys.argv, prog="xprompt_jax.evaluate")


if __name__ == "__main__":
    console_entry()
