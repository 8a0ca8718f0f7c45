"""Dev-set evaluation: generation (greedy decode + task postprocessor + seqio metrics) or
rank classification (score every verbalizer, take the most likely one).

Results record the mode used: `{'mode': ..., 'metrics': {...}, 'main_metric': float,
'num_examples': int}`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..models import decoding
from . import data as data_lib

MODES = ("generation", "rank_classification")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    mode: str = "rank_classification"
    split: str = "validation"
    batch_size: int = 32
    max_examples: Optional[int] = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"eval mode {self.mode!r}; expected one of {MODES}")


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
    metrics where several) or a `MainMetric` override (gin `MAIN_METRIC`)."""
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


def _scalar_metrics(results: Mapping[str, Any]) -> Dict[str, float]:
    out = {}
    for key, value in results.items():
        value = getattr(value, "value", value)  # seqio.metrics.Scalar
        if np.ndim(value) == 0:
            out[key] = float(value)
    return out


class Evaluator:
    """Evaluates a model's variables on a seqio task's dev split."""

    def __init__(self, model, task_name: str, feature_lengths: Mapping[str, int],
                 config: EvalConfig = EvalConfig(),
                 label_strings_fn: Optional[Callable[[Mapping[str, Any]], List[str]]] = None,
                 main_metric_fn: Optional[Callable[[Mapping[str, float]], float]] = None):
        import seqio

        self.model = model
        self.task_name = task_name
        self.task = seqio.get_mixture_or_task(task_name)
        self.feature_lengths = dict(feature_lengths)
        self.config = config
        self.vocab = self.task.output_features["targets"].vocabulary
        self.examples = data_lib.load_examples(self.task, config.split, self.feature_lengths,
                                               config.max_examples)
        if not self.examples:
            raise ValueError(f"task {task_name!r} split {config.split!r} has no examples")
        self.label_strings_fn = label_strings_fn or default_label_strings_fn(task_name)
        if config.mode == "rank_classification" and self.label_strings_fn is None:
            raise ValueError(f"rank classification needs label strings for task {task_name!r}; "
                             "pass label_strings_fn or use mode='generation'")
        self.main_metric_fn = main_metric_fn or (
            lambda metrics: default_main_metric(task_name, metrics))
        self.targets = [self._postprocess(ex["targets_pretokenized"], ex, True)
                        for ex in self.examples]
        self._decode = jax.jit(lambda variables, tokens: decoding.decode_tokens(
            model, variables, tokens, self.feature_lengths["targets"],
            eos_id=self.vocab.eos_id))
        self._score = jax.jit(self._score_batch)

    def _postprocess(self, text: str, example, is_target: bool):
        return self.task.postprocess_fn(text, example=example, is_target=is_target)

    def _score_batch(self, variables, batch):
        """Sum of target-token log-probabilities per row: `[B]`."""
        logits = self.model.apply(variables, batch["encoder_input_tokens"],
                                  batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                                  enable_dropout=False)
        logits = logits.astype(jnp.float32)
        # logit - logsumexp: no [B, T, V] log-softmax buffer (bench/xprompt_search.py).
        target_logit = jnp.take_along_axis(logits, batch["decoder_target_tokens"][..., None],
                                           axis=-1)[..., 0]
        token_logp = target_logit - jax.nn.logsumexp(logits, axis=-1)
        return jnp.sum(token_logp * batch["decoder_loss_weights"], axis=-1)

    def _batches(self, rows: Sequence[Mapping[str, Any]]):
        size = self.config.batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            yield len(chunk), data_lib.examples_to_features(chunk, self.feature_lengths, size)

    def _predict_generation(self, variables) -> List[str]:
        texts = []
        for n, batch in self._batches(self.examples):
            tokens = np.asarray(self._decode(variables, jnp.asarray(batch["encoder_input_tokens"])))
            for row in tokens[:n]:
                ids = [int(t) for t in row]
                if self.vocab.eos_id in ids:
                    ids = ids[: ids.index(self.vocab.eos_id)]
                texts.append(self.vocab.decode(ids))
        return texts

    def rank_rows(self):
        """(rows, options): one tokenized row per (example, verbalizer), and each example's
        verbalizers, in order."""
        rows, options = [], []
        for ex in self.examples:
            labels = self.label_strings_fn(ex)
            options.append(labels)
            for label in labels:
                rows.append({"inputs": ex["inputs"],
                             "targets": list(self.vocab.encode(label)) + [self.vocab.eos_id]})
        return rows, options

    @staticmethod
    def pick_labels(scores: Sequence[float], options: Sequence[Sequence[str]]) -> List[str]:
        """The highest-scoring verbalizer of each example (first on ties)."""
        offsets = np.cumsum([0] + [len(o) for o in options])
        return [labels[int(np.argmax(scores[offsets[i]:offsets[i + 1]]))]
                for i, labels in enumerate(options)]

    def _predict_rank(self, variables) -> List[str]:
        rows, options = self.rank_rows()
        scores = []
        for n, batch in self._batches(rows):
            scores.extend(np.asarray(self._score(variables, batch))[:n].tolist())
        return self.pick_labels(scores, options)

    def result_from_texts(self, texts: Sequence[str]) -> Dict[str, Any]:
        """Postprocesses predicted texts and computes the task's metrics."""
        predictions = [self._postprocess(t, ex, False) for t, ex in zip(texts, self.examples)]
        metrics: Dict[str, float] = {}
        for metric_fn in self.task.predict_metric_fns:
            metrics.update(_scalar_metrics(metric_fn(self.targets, predictions)))
        main = self.main_metric_fn(metrics)
        return {"mode": self.config.mode, "split": self.config.split, "metrics": metrics,
                "main_metric": None if math.isnan(main) else main,
                "num_examples": len(self.examples), "predictions_sample": list(texts[:5])}

    def evaluate(self, variables: Mapping[str, Any]) -> Dict[str, Any]:
        variables = {k: v for k, v in variables.items() if k != "cache"}
        if self.config.mode == "generation":
            texts = self._predict_generation(variables)
        else:
            texts = self._predict_rank(variables)
        return self.result_from_texts(texts)
