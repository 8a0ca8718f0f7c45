"""Mixed-task evaluation: each task's dev split scored with its own prompt of a
PromptBank (task i <-> prompt id i, `training/bank_tasks.py`).

`MultiTaskEvaluator` holds one `Evaluator` per task, each selecting that task's prompt
(`PromptSelection([i], [task])`); its result records `<task>/<metric>` for every task,
`per_task_main`, and the tasks' mean main metric, on which the run's checkpoint is
selected.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

import numpy as np

from .bank import PromptSelection
from .evaluator import EvalConfig, Evaluator


class MultiTaskEvaluator:
    """Each of `tasks` on its own dev split with its own prompt (see module docstring)."""

    def __init__(self, model, tasks: Sequence[str], feature_lengths: Mapping[str, int],
                 config: EvalConfig):
        self.tasks = list(tasks)
        self.config = config
        self.evaluators = [Evaluator(model, task, feature_lengths, config,
                                     prompts=PromptSelection((i,), (task,)))
                           for i, task in enumerate(self.tasks)]

    def main_metric_fn(self, metrics: Mapping[str, float]) -> float:
        """The tasks' mean main metric from `<task>/<metric>` entries."""
        mains = [ev.main_metric_fn({k[len(t) + 1:]: v for k, v in metrics.items()
                                    if k.startswith(t + "/")})
                 for t, ev in zip(self.tasks, self.evaluators)]
        return float(np.mean(mains))

    def evaluate(self, variables: Mapping[str, Any]) -> Dict[str, Any]:
        metrics: Dict[str, float] = {}
        per_task = {}
        for task, ev in zip(self.tasks, self.evaluators):
            result = ev.evaluate(variables)
            per_task[task] = result["per_prompt_main"][0]
            metrics.update({m: v for m, v in result["metrics"].items()
                            if m.startswith(task + "/")})
        mains = [v for v in per_task.values() if v is not None]
        return {"mode": self.config.mode, "split": self.config.split, "metrics": metrics,
                "main_metric": float(np.mean(mains)) if mains else None,
                "per_task_main": per_task,
                "num_examples": sum(len(ev.examples) for ev in self.evaluators)}
