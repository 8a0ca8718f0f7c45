"""What a task's evaluation needs from the task registry: its verbalizers and its main
(selection) metric, and the `MAIN_METRIC` override."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np


def _task_helpers():
    try:
        from xprompt_jax import tasks as tasks_module
    except ImportError:  # tasks are optional for custom seqio tasks
        return None
    return tasks_module


def default_label_strings_fn(task_name: str) -> Optional[Callable[[Mapping[str, Any]], List[str]]]:
    """Verbalizers from `xprompt_jax.tasks` (static list or per-example), if it knows the task."""
    tasks_module = _task_helpers()
    if tasks_module is None:
        return None
    per_example = getattr(tasks_module, "get_example_label_strings", None)
    static = getattr(tasks_module, "get_label_strings", None)
    try:
        labels = static(task_name) if static else None
    except (KeyError, ValueError):
        labels = None
    if labels:
        return lambda example: list(labels)
    if per_example is not None:
        return lambda example: list(per_example(task_name, example))
    return None


def default_main_metric(task_name: str, metrics: Mapping[str, float]) -> float:
    """The task's main metric (mean of its metrics when several), as in the papers."""
    tasks_module = _task_helpers()
    getter = getattr(tasks_module, "main_metric_value", None) if tasks_module else None
    if getter is not None:
        try:
            return float(getter(task_name, metrics))
        except (KeyError, ValueError):
            pass
    values = [float(v) for v in metrics.values() if isinstance(v, (int, float, np.floating))]
    return float(np.mean(values)) if values else float("nan")


class MainMetric:
    """`MAIN_METRIC` override: `fn(metrics) -> float` reading one metric key.

    `keys`: a metric key (`'accuracy'`) or a sequence of keys, the first one present in the
    task's metric dict is used (`('f1a', 'accuracy')`: MultiRC's F1a, every other task's
    accuracy - XPrompt's Tables 1 and 9). `name` says what was used, for reports.
    """

    def __init__(self, keys: Any, task_name: str = ""):
        self.keys = (keys,) if isinstance(keys, str) else tuple(
            keys if isinstance(keys, (list, tuple)) else ())
        if not self.keys or not all(isinstance(k, str) for k in self.keys):
            raise ValueError(f"MAIN_METRIC={keys!r}: expected a metric key or a sequence of "
                             "keys (e.g. 'accuracy' or ('f1a', 'accuracy'))")
        self.task_name = task_name
        self.name = self.keys[0] if len(self.keys) == 1 else " | ".join(self.keys)

    def __call__(self, metrics: Mapping[str, float]) -> float:
        for key in self.keys:
            if key in metrics:
                self.name = key
                return float(metrics[key])
        raise KeyError(f"MAIN_METRIC={self.keys!r}: task {self.task_name!r} reports none of "
                       f"these metrics (it has {sorted(metrics)})")


def main_metric_fn(task_name: str, main_metric: Any = None) -> Callable[[Mapping[str, float]],
                                                                        float]:
    """The dev selection metric: the task's default (`main_metric=None`, mean of its
    metrics where several) or a `MainMetric` override (gin `MAIN_METRIC`). `fn.name` says
    which, for reports."""
    if main_metric is None:
        fn = lambda metrics: default_main_metric(task_name, metrics)  # noqa: E731
        fn.name = "task default"
        tasks_module = _task_helpers()
        try:
            fn.name = f"task default ({tasks_module.get_main_metric(task_name)})"
        except (AttributeError, KeyError, ValueError):
            pass
        return fn
    return MainMetric(main_metric, task_name)


def metric_name(fn: Callable) -> str:
    """What a main-metric function reads, for reports."""
    return getattr(fn, "name", "task default")


def scalar_metrics(results: Mapping[str, Any]) -> Dict[str, float]:
    """The scalar entries of a seqio metric result (`seqio.metrics.Scalar` unwrapped)."""
    out = {}
    for key, value in results.items():
        value = getattr(value, "value", value)
        if np.ndim(value) == 0:
            out[key] = float(value)
    return out
