"""Dev-set evaluation: generation (greedy decode + task postprocessor + seqio metrics) or
rank classification (score every verbalizer, take the most likely one).

Rank classification encodes each example once and scores all its L verbalizers from that
encoding (`rank_scorer='shared_encoder'`, default): the verbalizers lie side by side in one
decoder row (`decoder_segment_ids`, block-diagonal causal mask; `data.option_features`),
trimmed to the longest row of verbalizers, so the encoder and the decoder's cross-attention
keys/values run once per example instead of L times. T5 has no absolute positions and its
relative position biases depend only on offsets within a segment, so each verbalizer's score
equals the per-row score of a separate (example, verbalizer) row - `rank_scorer='per_row'`,
the earlier path, kept for comparison (bench/eval_speed.py) - up to float rounding
(tests/test_eval_speed.py). Per-example verbalizers (COPA choices, WSC, ReCoRD entities)
take the same path; examples with fewer options leave empty segments, never picked.

Less padding (`trim_batches=True`, default): examples are batched by input length and each
batch is cut to its longest row (`data.length_sorted_batches`, `data.bucket_length`);
results are identical and returned in the examples' order.

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
RANK_SCORERS = ("shared_encoder", "per_row")


def _host(x) -> np.ndarray:
    """Host copy of a jitted eval output; with several processes the output may span other
    processes' devices, so it is all-gathered (every process passes the same eval rows)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """`batch_size`: examples per call (per (example, verbalizer) row with 'per_row')."""

    mode: str = "rank_classification"
    split: str = "validation"
    batch_size: int = 32
    max_examples: Optional[int] = None
    rank_scorer: str = "shared_encoder"
    trim_batches: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"eval mode {self.mode!r}; expected one of {MODES}")
        if self.rank_scorer not in RANK_SCORERS:
            raise ValueError(f"EvalConfig.rank_scorer {self.rank_scorer!r}; expected one of "
                             f"{RANK_SCORERS}")


def _token_log_probs(logits, targets):
    """`[B, T, V]` logits, `[B, T]` targets -> `[B, T]` log p(target) (float32)."""
    logits = logits.astype(jnp.float32)
    # logit - logsumexp: no [B, T, V] log-softmax buffer (bench/xprompt_search.py).
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32),
                                       axis=-1)[..., 0]
    return target_logit - jax.nn.logsumexp(logits, axis=-1)


def row_scores(model, variables, batch):
    """Per-row scoring: a full forward pass per (example, verbalizer) row; sum of target-token
    log-probabilities `[B]` (batch features `[B, S]` / `[B, T]`)."""
    logits = model.apply(variables, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                         batch["decoder_target_tokens"], enable_dropout=False)
    token_logp = _token_log_probs(logits, batch["decoder_target_tokens"])
    return jnp.sum(token_logp * batch["decoder_loss_weights"], axis=-1)


def option_scores(model, variables, batch, num_options: int):
    """Shared-encoder scoring: `[B, L]` sum of target-token log-probabilities of each of the
    L = `num_options` verbalizers (`data.option_features`: encoder `[B, S]`, decoder rows
    `[B, T]` with segments 1..L); one encoder pass per example; 0 for absent options."""
    tokens = batch["encoder_input_tokens"]
    encoded = model.apply(variables, tokens, enable_dropout=False,
                          method=model.encode)  # [B, S(+m), E]
    logits = model.apply(variables, encoded, tokens, batch["decoder_input_tokens"],
                         batch["decoder_target_tokens"],
                         decoder_segment_ids=batch["decoder_segment_ids"],
                         enable_dropout=False, method=model.decode)  # [B, T, V]
    token_logp = _token_log_probs(logits, batch["decoder_target_tokens"])
    token_logp = token_logp * batch["decoder_loss_weights"]
    segment = batch["decoder_segment_ids"][..., None] == jnp.arange(1, num_options + 1)
    return jnp.sum(jnp.where(segment, token_logp[..., None], 0.0), axis=1)  # [B, L]


def _decode_batch(model, variables, tokens, max_decode_length: int, eos_id: int):
    return decoding.decode_tokens(model, variables, tokens, max_decode_length, eos_id=eos_id)


# Module-level jits with the (hashable) model static: evaluators of equal models (stage 1
# and rewind trainers, the references) share compiled executables.
_row_scores = jax.jit(row_scores, static_argnums=(0,))
_option_scores = jax.jit(option_scores, static_argnums=(0, 3))
_decode_jit = jax.jit(_decode_batch, static_argnums=(0, 3, 4))


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
        self._options = None
        self._input_lengths = [min(len(ex["inputs"]), self.feature_lengths["inputs"])
                               for ex in self.examples]

    def _postprocess(self, text: str, example, is_target: bool):
        return self.task.postprocess_fn(text, example=example, is_target=is_target)

    # ------------------------------------------------------------------ batching
    def example_batches(self, size: int) -> List[np.ndarray]:
        """Index arrays of `size` examples: by decreasing input length with
        `trim_batches`, else in order."""
        if self.config.trim_batches:
            return data_lib.length_sorted_batches(self._input_lengths, size)
        return [np.arange(i, min(i + size, len(self.examples)))
                for i in range(0, len(self.examples), size)]

    def _batches(self, rows: Sequence[Mapping[str, Any]]):
        size = self.config.batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            yield len(chunk), data_lib.examples_to_features(chunk, self.feature_lengths, size)

    # ------------------------------------------------------------------ generation
    def decode_batch(self, variables, encoder_input_tokens) -> np.ndarray:
        """Greedy decode `[B, S]` -> `[B, targets length]` tokens (jitted)."""
        return _host(_decode_jit(self.model, variables, jnp.asarray(encoder_input_tokens),
                                 self.feature_lengths["targets"], self.vocab.eos_id))

    def tokens_to_text(self, row) -> str:
        ids = [int(t) for t in row]
        if self.vocab.eos_id in ids:
            ids = ids[: ids.index(self.vocab.eos_id)]
        return self.vocab.decode(ids)

    def input_batch(self, indices: Sequence[int], rows: int) -> Dict[str, np.ndarray]:
        """Model features of the examples `indices`, `rows` rows (trimmed if configured)."""
        return data_lib.examples_to_features([self.examples[i] for i in indices],
                                             self.feature_lengths, rows,
                                             trim=self.config.trim_batches)

    def _predict_generation(self, variables) -> List[str]:
        texts: List[Optional[str]] = [None] * len(self.examples)
        size = self.config.batch_size
        for indices in self.example_batches(size):
            batch = self.input_batch(indices, size)
            tokens = self.decode_batch(variables, batch["encoder_input_tokens"])
            for i, row in zip(indices, tokens):
                texts[i] = self.tokens_to_text(row)
        return texts

    # ------------------------------------------------------------------ rank classification
    def rank_options(self):
        """(labels, token ids): each example's verbalizers and their target ids (EOS
        appended), in order; computed once."""
        if self._options is None:
            labels = [list(self.label_strings_fn(ex)) for ex in self.examples]
            for i, ex_labels in enumerate(labels):
                if not ex_labels:
                    raise ValueError(f"task {self.task_name!r}: example {i} of split "
                                     f"{self.config.split!r} has no label strings to rank")
            ids = [[list(self.vocab.encode(label)) + [self.vocab.eos_id] for label in ex_labels]
                   for ex_labels in labels]
            self._options = (labels, ids)
        return self._options

    @property
    def num_options(self) -> int:
        """The largest number of verbalizers of an example (L of the `[B, L]` scores)."""
        return max(len(o) for o in self.rank_options()[0])

    def rank_rows(self):
        """(rows, options): one tokenized row per (example, verbalizer), and each example's
        verbalizers, in order (the per-row scorer's input)."""
        labels, ids = self.rank_options()
        rows = [{"inputs": ex["inputs"], "targets": t}
                for ex, ex_ids in zip(self.examples, ids) for t in ex_ids]
        return rows, labels

    def option_batch(self, indices: Sequence[int], rows: int) -> Dict[str, np.ndarray]:
        """Shared-encoder features (`data.option_features`) of the examples `indices`."""
        ids = self.rank_options()[1]
        return data_lib.option_features([self.examples[i] for i in indices],
                                        [ids[i] for i in indices], self.feature_lengths, rows,
                                        trim=self.config.trim_batches)

    def score_option_batch(self, variables, features) -> np.ndarray:
        """`[rows, L]` verbalizer scores of an `option_batch` (jitted `option_scores`)."""
        return _host(_option_scores(self.model, variables, features, self.num_options))

    def score_row_batch(self, variables, features) -> np.ndarray:
        """`[rows]` scores of (example, verbalizer) rows (per-row scorer, jitted)."""
        return _host(_row_scores(self.model, variables, features))

    def rank_scores(self, variables) -> List[np.ndarray]:
        """Each example's verbalizer scores (sum of target log-probabilities), in order."""
        labels = self.rank_options()[0]
        if self.config.rank_scorer == "per_row":
            rows, _ = self.rank_rows()
            flat = []
            for n, batch in self._batches(rows):
                flat.extend(self.score_row_batch(variables, batch)[:n].tolist())
            offsets = np.cumsum([0] + [len(o) for o in labels])
            return [np.asarray(flat[offsets[i]:offsets[i + 1]]) for i in range(len(labels))]
        scores: List[Optional[np.ndarray]] = [None] * len(self.examples)
        size = self.config.batch_size
        for indices in self.example_batches(size):
            out = self.score_option_batch(variables, self.option_batch(indices, size))
            for i, row in zip(indices, out):
                scores[i] = row[:len(labels[i])]
        return scores

    @staticmethod
    def flat_scores(scores: Sequence[Sequence[float]]) -> List[float]:
        """Per-example score lists -> the flat (example, verbalizer) list of `pick_labels`."""
        return [float(x) for row in scores for x in row]

    @staticmethod
    def pick_labels(scores: Sequence[float], options: Sequence[Sequence[str]]) -> List[str]:
        """The highest-scoring verbalizer of each example (first on ties)."""
        offsets = np.cumsum([0] + [len(o) for o in options])
        return [labels[int(np.argmax(scores[offsets[i]:offsets[i + 1]]))]
                for i, labels in enumerate(options)]

    def _predict_rank(self, variables) -> List[str]:
        scores = self.rank_scores(variables)
        return self.pick_labels(self.flat_scores(scores), self.rank_options()[0])

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
