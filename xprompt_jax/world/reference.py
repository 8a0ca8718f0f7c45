"""Reference accuracies of the frozen world T5 on a world task (no training).

* `prefixed` - T5's format with the task name (`world_<task>_prefixed`): what the model
  was pretrained on; the upper reference for prompt methods.
* `bare` - the same inputs without the task name and without a prompt (`world_<task>`):
  the lower reference (the model cannot tell a task from its negated twin, and
  pretraining answered bare inputs at random, so without a task cue it is near chance).

Both use the same rank-classification evaluation as training runs (`Evaluator`).
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional

FEATURE_LENGTHS: Dict[str, int] = {"inputs": 48, "targets": 4}


def load_model_and_params(checkpoint: Optional[str] = None):
    """(T5 module, params) of the shipped (or given) world checkpoint."""
    from xprompt_jax.checkpoints import load_t5x_params
    from xprompt_jax.models import T5

    from . import paths, pretraining

    params = load_t5x_params(checkpoint or paths.checkpoint_path())
    return T5(pretraining.model_config()), params


def reference_accuracies(task: str, variants: Iterable[str] = ("prefixed", "bare"),
                         checkpoint: Optional[str] = None, split: str = "validation",
                         max_examples: Optional[int] = None,
                         feature_lengths: Mapping[str, int] = FEATURE_LENGTHS,
                         batch_size: int = 64) -> Dict[str, Dict]:
    """`{variant: evaluator result}` (result['main_metric'] is the accuracy in %)."""
    from xprompt_jax.evaluation import EvalConfig, Evaluator

    from . import seqio_tasks

    model, params = load_model_and_params(checkpoint)
    out = {}
    for variant in variants:
        if variant not in ("prefixed", "bare"):
            raise ValueError(f"unknown reference {variant!r}; expected 'prefixed' or 'bare'")
        name = seqio_tasks.task_name(task, prefixed=variant == "prefixed")
        evaluator = Evaluator(model, name, feature_lengths,
                              EvalConfig(mode="rank_classification", split=split,
                                         batch_size=batch_size, max_examples=max_examples))
        out[variant] = dict(evaluator.evaluate({"params": params}), task=name)
    return out
