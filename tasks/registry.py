"""Bookkeeping for the tasks and mixtures this package registers with seqio.

Records, per task name, what an evaluator needs besides the seqio Task: the label
strings for rank classification, the main (model-selection) metric and its
components, and how the task was built (benchmark, task, family, source, few-shot).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import seqio

from . import metrics as metrics_lib
from . import vocab

_TASKS: Dict[str, "TaskInfo"] = {}
_MIXTURES: Dict[str, Tuple[str, ...]] = {}


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """Metric functions of a task and the key of its main metric.

    ``main`` is ``'average'`` (mean of ``components``) when there are several.
    """
    fns: Tuple[Callable, ...]
    main: str
    components: Tuple[str, ...]

    @classmethod
    def single(cls, fn: Callable, key: str) -> "MetricSpec":
        return cls((fn,), key, (key,))

    @classmethod
    def average(cls, fns: Sequence[Callable], keys: Sequence[str]) -> "MetricSpec":
        return cls((metrics_lib.with_average(fns, keys),), metrics_lib.AVERAGE,
                   tuple(keys))


@dataclasses.dataclass(frozen=True)
class FewShotSpec:
    k: int
    seed: int
    sampling: str  # 'random' | 'balanced' | 'per_class'


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What this package knows about one registered task."""
    name: str
    benchmark: str            # 'super_glue', 'glue', 'ept'
    task: str                 # e.g. 'rte'
    family: str               # 'xprompt', 'xprompt_nosentinel', 'lester'
    source: str               # 'v102', 'v200', 'local', ...
    label_strings: Optional[Tuple[str, ...]]
    per_example_label_strings: bool
    metric: MetricSpec
    label_field: Optional[str] = "label"   # raw field with the class id (if any)
    # Few-shot sampling unit: paths of raw fields identifying a group (MultiRC:
    # (('idx', 'paragraph'), ('idx', 'question'))); None = one example per unit.
    group_fields: Optional[Tuple[Tuple[str, ...], ...]] = None
    fewshot: Optional[FewShotSpec] = None
    base: Optional[str] = None  # the full-data task a few-shot task derives from


def register_task(info: TaskInfo, source: seqio.DataSource,
                  preprocessors: Sequence[Callable], postprocess_fn: Callable
                  ) -> seqio.Task:
    """Registers (or re-registers) a seqio Task and records ``info``."""
    seqio.TaskRegistry.remove(info.name)
    task = seqio.TaskRegistry.add(
        info.name,
        source=source,
        preprocessors=list(preprocessors) + [
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=vocab.output_features(),
        postprocess_fn=postprocess_fn,
        metric_fns=list(info.metric.fns),
    )
    _TASKS[info.name] = info
    return task


def register_derived_task(info: TaskInfo, base: seqio.Task,
                          source: seqio.DataSource,
                          metric_fns: Optional[Sequence[Callable]] = None) -> seqio.Task:
    """Registers a copy of ``base`` reading from ``source`` (e.g. a few-shot subset);
    ``metric_fns`` replaces the base's metric functions (e.g. EPT's metric)."""
    seqio.TaskRegistry.remove(info.name)
    extra = {} if metric_fns is None else {"metric_fns": list(metric_fns)}
    task = base.replace(name=info.name, source=source, **extra)
    seqio.TaskRegistry.add_provider(info.name, task)
    _TASKS[info.name] = info
    return task


def register_mixture(name: str, task_names: Sequence[str],
                     default_rate=seqio.mixing_rate_num_examples) -> seqio.Mixture:
    """Registers (or re-registers) a mixture of our tasks."""
    seqio.MixtureRegistry.remove(name)
    mixture = seqio.MixtureRegistry.add(name, list(task_names),
                                        default_rate=default_rate)
    _MIXTURES[name] = tuple(task_names)
    return mixture


def task_info(task_name: str) -> TaskInfo:
    """The ``TaskInfo`` of a task registered by this package."""
    if task_name not in _TASKS:
        raise KeyError(f"{task_name!r} is not a task registered by xprompt_jax.tasks "
                       f"(see registered_task_names())")
    return _TASKS[task_name]


def require_task(name: str, module: Optional[str] = None) -> None:
    """Raises ConfigError naming MIXTURE_OR_TASK_NAME and the closest registered task or
    mixture names (difflib) when seqio knows no task or mixture `name`; `module`: the
    MIXTURE_OR_TASK_MODULE that was imported to register it."""
    import difflib

    from xprompt_jax.errors import ConfigError

    known = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
    if name in known:
        return
    close = difflib.get_close_matches(str(name), sorted(known), n=3, cutoff=0.6)
    hint = (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else
            "; `python -m xprompt_jax.tasks` lists this package's tasks")
    where = f" after importing {module}" if module else ""
    raise ConfigError(f"MIXTURE_OR_TASK_NAME = {name!r}: no seqio task or mixture of that "
                      f"name is registered{where}{hint} (a task of your own: set "
                      "MIXTURE_OR_TASK_MODULE to the module that registers it)")


def registered_task_names() -> List[str]:
    """Every task name registered by this package (sorted)."""
    return sorted(_TASKS)


def registered_mixture_names() -> List[str]:
    """Every mixture name registered by this package (sorted)."""
    return sorted(_MIXTURES)


def mixture_tasks(mixture_name: str) -> Tuple[str, ...]:
    return _MIXTURES[mixture_name]


def get_label_strings(task_name: str) -> Optional[List[str]]:
    """Target strings of the classes in class-id order, exactly as rendered.

    ``None`` when the candidates depend on the example (XPrompt WSC: ``['<extra_id_0>
    another word', '<extra_id_0> <span1_text>']``; ReCoRD: the entities) - then read
    the ``label_strings`` feature of each preprocessed example - or when the task is
    generation only (T5-style WSC). See ``has_per_example_label_strings``.
    """
    info = task_info(task_name)
    return None if info.label_strings is None else list(info.label_strings)


def get_example_label_strings(task_name: str, example) -> List[str]:
    """The candidate target strings of one preprocessed ``example`` (class-id order).

    The task's fixed label strings when it has them, else the example's
    ``label_strings`` feature (bytes are decoded). Raises ``ValueError`` for
    generation-only tasks (T5-style WSC).
    """
    static = get_label_strings(task_name)
    if static is not None:
        return static
    if not has_per_example_label_strings(task_name):
        raise ValueError(f"{task_name!r} has no label strings (generation only); "
                         "evaluate it by generation")
    if "label_strings" not in example:
        raise ValueError(f"{task_name!r}: the example has no 'label_strings' feature "
                         f"(keys: {sorted(example)})")
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s)
            for s in list(example["label_strings"])]


def main_metric_value(task_name: str, metrics) -> float:
    """The main metric's value in a metric dict (mean of the components if needed)."""
    spec = task_info(task_name).metric
    if spec.main in metrics:
        return float(metrics[spec.main])
    missing = [k for k in spec.components if k not in metrics]
    if missing:
        raise KeyError(f"{task_name!r}: metrics lack {missing} (have {sorted(metrics)})")
    return float(sum(float(metrics[k]) for k in spec.components)
                 / len(spec.components))


def has_per_example_label_strings(task_name: str) -> bool:
    """Whether preprocessed examples carry a ``label_strings`` feature."""
    return task_info(task_name).per_example_label_strings


def get_main_metric(task_name: str) -> str:
    """Key of the model-selection metric in the task's metric dict.

    ``'average'`` = mean of ``get_metric_components(task_name)`` for tasks with
    several metrics (CB: accuracy + macro-F1; MultiRC: F1a + EM; ReCoRD: EM + F1;
    MRPC/QQP: F1 + accuracy; STS-B: Pearson + Spearman).
    """
    return task_info(task_name).metric.main


def t5_metric_names(task_name: str) -> Dict[str, str]:
    """{our metric key: T5's key} where they differ for this task (CB `f1_macro` ->
    `mean_3class_f1`, MultiRC `f1a` -> `f1`, ReCoRD / SQuAD / MRQA `exact_match` -> `em`)."""
    return metrics_lib.t5_names_of(task_info(task_name).metric.fns)


def t5_metrics(task_name: str, metrics: Dict[str, float]) -> Dict[str, float]:
    """A metric dict of this task under T5's key names (others unchanged)."""
    names = t5_metric_names(task_name)
    return {names.get(k, k): v for k, v in metrics.items()}


def get_metric_components(task_name: str) -> Tuple[str, ...]:
    """The metric keys whose mean is the main metric (one key if single)."""
    return task_info(task_name).metric.components
