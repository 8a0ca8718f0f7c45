"""The evaluator: a task's dev (or any) split scored by generation (greedy decode + task
postprocessor + seqio metrics) or rank classification (every verbalizer scored, the most
likely one picked).

One loop, `Evaluator.predict(variables, variants)`, scores the examples under V variants in
one batch per call (`variants.py`: a bank's prompts, XPrompt's candidate masks, requests
that each carry their own prompt); `evaluate_variants` turns each variant's predictions into
metrics and `evaluate` is the plain case. Options of the same evaluator, never wrappers:

- `label_map` {source label: target label}: a prompt trained on another task answers in
  its own verbalizers (domain shift, Lester et al. Table 2): rank classification scores
  the source labels of the target's classes, generation maps a predicted source label;
- `EvalConfig.heldout_split`: whenever the selection split's main metric reaches or improves
  on the best seen so far, the same variables are also scored on this split (EPT App.
  B.1: select on one split, report another); the result gains `'heldout'` and
  `metrics['heldout_<split>/<name>']`; with `prompts`, per prompt: each prompt whose own
  main metric reached its best gets its held-out result (`'heldout_per_prompt'`);
- `prompts` (a `bank.PromptSelection`): a PromptBank model's prompts scored together, with
  each prompt's metrics, their mean and best, and the majority-vote ensemble (`bank.py`);
- `EvalConfig.label_parsing` (gin LABEL_PARSING): 't5' (default, the papers'): a prediction
  reaches the task's postprocessor as decoded, which reads labels as T5 does (an exact
  match; `' yes'` or `'<extra_id_0> yes'` for a task without the sentinel is no label
  and scores 0); 'lenient' (ours): a leading `<extra_id_N>` and surrounding whitespace
  are removed first (`lenient_text`).

Less padding (`trim_batches`, default): examples are batched by input length and each batch
is cut to its longest row (`data.length_sorted_batches`, `data.bucket_length`); results
are identical and returned in the examples' order.

Results record the mode used: `{'mode', 'split', 'metrics', 'main_metric',
'num_examples', 'predictions_sample'}`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..training import data as data_lib
from . import bank as bank_lib
from . import metrics as metrics_lib
from . import scorers
from .variants import SINGLE, Variants

MODES = ("generation", "rank_classification")
# How a predicted string is read: as decoded (T5's, the papers') or `lenient_text` (ours).
LABEL_PARSING = ("t5", "lenient")
_LEADING_SENTINEL = re.compile(r"^\s*<extra_id_\d+>\s*")


def lenient_text(text: str) -> str:
    """`text` without one leading `<extra_id_N>` and without surrounding whitespace: what
    the postprocessor reads under 'lenient' label parsing."""
    return _LEADING_SENTINEL.sub("", text).strip()
HELDOUT_PREFIX = "heldout_"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How a split is evaluated (gin: EVAL_MODE, EVAL_SPLIT, EVAL_HELDOUT_SPLIT,
    MAX_EVAL_EXAMPLES, MAIN_METRIC, LABEL_PARSING; `batch_size`: examples per call)."""

    mode: str = "rank_classification"
    split: str = "validation"
    batch_size: int = 32
    max_examples: Optional[int] = None
    trim_batches: bool = True
    heldout_split: Optional[str] = None  # also scored when the selection metric improves
    main_metric: Any = None              # None: the task's default; else a `MainMetric` key
    label_parsing: str = "t5"            # 't5' (exact, the papers') or 'lenient' (ours)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"eval mode {self.mode!r} (EVAL_MODE): expected one of {MODES}")
        if self.label_parsing not in LABEL_PARSING:
            raise ConfigError(f"label parsing {self.label_parsing!r} (LABEL_PARSING): expected "
                              f"one of {LABEL_PARSING}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ConfigError(f"eval batch size {self.batch_size!r} (EVAL_BATCH_SIZE): expected "
                              "an int >= 1")


@dataclasses.dataclass
class Predictions:
    """`texts[v][i]`: variant v's prediction for example i (a verbalizer for rank
    classification, decoded text for generation; None where its scores are not finite:
    no answer); `scores[v][i]`: its verbalizer scores (sum of target log-probabilities;
    rank classification only)."""

    texts: List[List[Optional[str]]]
    scores: Optional[List[List[np.ndarray]]] = None


def _unlabelled(example: Mapping[str, Any]) -> bool:
    """T5's preprocessors give an unlabelled example (a GLUE / SuperGLUE test split, label
    -1) the target '<unk>'."""
    target = example.get("targets_pretokenized")
    if isinstance(target, bytes):
        target = target.decode("utf-8", "replace")
    return target == "<unk>"


class Evaluator:
    """Evaluates a model's variables on a seqio task's split (see module docstring).

    `examples`: tokenized examples to use instead of reading the split (serving requests);
    their metrics need `targets`. `label_strings_fn(example) -> [verbalizer, ...]`
    (default: the task's), `main_metric_fn(metrics) -> float` (default: from
    `config.main_metric`)."""

    def __init__(self, model, task_name: str, feature_lengths: Mapping[str, int],
                 config: EvalConfig = EvalConfig(), *,
                 label_strings_fn: Optional[Callable[[Mapping[str, Any]], List[str]]] = None,
                 main_metric_fn: Optional[Callable[[Mapping[str, float]], float]] = None,
                 label_map: Optional[Mapping[str, str]] = None,
                 prompts: Optional[bank_lib.PromptSelection] = None,
                 examples: Optional[Sequence[Mapping[str, Any]]] = None):
        import seqio

        self.model = model
        self.task_name = task_name
        self.task = seqio.get_mixture_or_task(task_name)
        self.feature_lengths = dict(feature_lengths)
        self.config = config
        self.vocab = self.task.output_features["targets"].vocabulary
        self.examples = list(examples) if examples is not None else data_lib.load_examples(
            self.task, config.split, self.feature_lengths, config.max_examples)
        if not self.examples and examples is None:
            raise ValueError(f"task {task_name!r} split {config.split!r} has no examples")
        if examples is None and all(_unlabelled(e) for e in self.examples):
            raise ConfigError(
                f"split {config.split!r} of task {task_name!r} has no labels (every target is "
                "'<unk>', T5's mark for an unlabelled example): its scores would mean nothing;"
                " set EVAL_SPLIT (or EVAL_HELDOUT_SPLIT) to a labelled split, e.g. "
                "'validation'")
        self.label_map = None if label_map is None else {str(k): str(v)
                                                         for k, v in label_map.items()}
        target_labels = label_strings_fn or metrics_lib.default_label_strings_fn(task_name)
        self.label_strings_fn = (target_labels if self.label_map is None or target_labels
                                 is None else self._source_labels_fn(target_labels))
        if config.mode == "rank_classification" and self.label_strings_fn is None:
            raise ValueError(f"rank classification needs label strings for task {task_name!r}; "
                             "pass label_strings_fn or use mode='generation'")
        self.main_metric_fn = main_metric_fn or metrics_lib.main_metric_fn(task_name,
                                                                           config.main_metric)
        self.prompts = prompts
        if prompts is not None:
            prompts.check(model)
        self._targets = None
        self._options = None
        self._input_lengths = [min(len(ex["inputs"]), self.feature_lengths["inputs"])
                               for ex in self.examples]
        self.heldout: Optional[Evaluator] = None
        self._best_main: Optional[float] = None
        self._best_per_prompt: Dict[str, float] = {}
        if config.heldout_split:
            self.heldout = Evaluator(
                model, task_name, feature_lengths,
                dataclasses.replace(config, split=config.heldout_split, heldout_split=None),
                label_strings_fn=target_labels, main_metric_fn=self.main_metric_fn,
                label_map=label_map, prompts=prompts)

    # ------------------------------------------------------------------ labels
    def _source_labels_fn(self, target_fn):
        inverse = {v: k for k, v in self.label_map.items()}

        def source_labels(example):
            labels = target_fn(example)
            missing = [label for label in labels if label not in inverse]
            if missing:
                raise ValueError(f"label map {self.label_map} has no source label for "
                                 f"target label(s) {missing}")
            return [inverse[label] for label in labels]

        return source_labels

    def _postprocess(self, text: str, example, is_target: bool):
        return self.task.postprocess_fn(text, example=example, is_target=is_target)

    @property
    def targets(self) -> List[Any]:
        """The examples' postprocessed targets (what the metrics compare with)."""
        if self._targets is None:
            self._targets = [self._postprocess(ex["targets_pretokenized"], ex, True)
                             for ex in self.examples]
        return self._targets

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

    # ------------------------------------------------------------------ batches
    def example_batches(self, size: int) -> List[np.ndarray]:
        """Index arrays of `size` examples: by decreasing input length with
        `trim_batches`, else in order."""
        if self.config.trim_batches:
            return data_lib.length_sorted_batches(self._input_lengths, size)
        return [np.arange(i, min(i + size, len(self.examples)))
                for i in range(0, len(self.examples), size)]

    def input_batch(self, indices: Sequence[int], rows: int) -> Dict[str, np.ndarray]:
        """Model features of the examples `indices`, `rows` rows (trimmed if configured)."""
        return data_lib.examples_to_features([self.examples[i] for i in indices],
                                             self.feature_lengths, rows,
                                             trim=self.config.trim_batches)

    def option_batch(self, indices: Sequence[int], rows: int) -> Dict[str, np.ndarray]:
        """Shared-encoder features (`data.option_features`) of the examples `indices`."""
        ids = self.rank_options()[1]
        return data_lib.option_features([self.examples[i] for i in indices],
                                        [ids[i] for i in indices], self.feature_lengths, rows,
                                        trim=self.config.trim_batches)

    def tokens_to_text(self, row) -> str:
        ids = [int(t) for t in row]
        if self.vocab.eos_id in ids:
            ids = ids[: ids.index(self.vocab.eos_id)]
        return self.vocab.decode(ids)

    # ------------------------------------------------------------------ the loop
    def predict(self, variables: Mapping[str, Any], variants: Variants = SINGLE,
                examples_per_call: Optional[int] = None,
                progress: Optional[Callable[[int], Any]] = None) -> Predictions:
        """Every example's prediction under each of the V `variants`, all variants of a
        chunk of `examples_per_call` examples (default `config.batch_size`) in one call of
        V x that many rows. `progress(k)` is called after each call with the number of
        (example, variant) pairs it scored."""
        variables = variants.variables({k: v for k, v in variables.items() if k != "cache"})
        size = examples_per_call or self.config.batch_size
        count, n = variants.count, len(self.examples)
        texts: List[List[Optional[str]]] = [[None] * n for _ in range(count)]
        rank = self.config.mode == "rank_classification"
        scores: List[List[Optional[np.ndarray]]] = [[None] * n for _ in range(count)]
        labels = self.rank_options()[0] if rank else None
        for indices in self.example_batches(size):
            if rank:
                out = scorers.score_options(
                    self.model, variables, variants.expand(self.option_batch(indices, size),
                                                           indices), self.num_options)
            else:
                features = variants.expand(self.input_batch(indices, size), indices)
                out = scorers.generate(self.model, variables,
                                            features["encoder_input_tokens"],
                                            self.feature_lengths["targets"], self.vocab.eos_id)
            out = variants.split(out, size)
            for v in range(count):
                for j, i in enumerate(indices):
                    if rank:
                        row = out[v, j, :len(labels[i])]
                        scores[v][i] = row
                        # NaN/Inf scores are no answer (argmax would pick the first label).
                        texts[v][i] = labels[i][int(np.argmax(row))] \
                            if np.isfinite(row).all() else None  # first on ties
                    else:
                        texts[v][i] = self.tokens_to_text(out[v, j])
            if progress is not None:
                progress(count * len(indices))
        return Predictions(texts, scores if rank else None)

    def rank_scores(self, variables) -> List[np.ndarray]:
        """Each example's verbalizer scores (sum of target log-probabilities), in order."""
        return self.predict(variables).scores[0]

    # ------------------------------------------------------------------ metrics
    def map_text(self, text: str) -> str:
        """A prediction as the task's postprocessor reads it: with 'lenient' label parsing
        its leading sentinel and surrounding whitespace removed; then in the target task's
        labels (`label_map`: the exact source label; else unchanged)."""
        if self.config.label_parsing == "lenient":
            text = lenient_text(text)
        if self.label_map is None:
            return text
        return self.label_map.get(text, text)

    def result_from_texts(self, texts: Sequence[str]) -> Dict[str, Any]:
        """Postprocesses predicted texts and computes the task's metrics. A None text (an
        example whose scores were not finite) makes the whole result non-finite: no
        metrics, `main_metric` None and `nonfinite_scores` the count, so it is never
        reported as an accuracy nor picked as the best checkpoint."""
        missing = sum(t is None for t in texts)
        if missing:
            return {"mode": self.config.mode, "split": self.config.split, "metrics": {},
                    "main_metric": None, "nonfinite_scores": missing,
                    "num_examples": len(self.examples),
                    "predictions_sample": list(texts[:5])}
        mapped = [self.map_text(t) for t in texts]
        predictions = [self._postprocess(t, ex, False) for t, ex in zip(mapped, self.examples)]
        metrics: Dict[str, float] = {}
        for metric_fn in self.task.predict_metric_fns:
            metrics.update(metrics_lib.scalar_metrics(metric_fn(self.targets, predictions)))
        main = self.main_metric_fn(metrics)
        result = {"mode": self.config.mode, "split": self.config.split, "metrics": metrics,
                  "main_metric": None if math.isnan(main) else main,
                  "num_examples": len(self.examples), "predictions_sample": list(texts[:5])}
        if self.label_map is not None:
            result["label_map"] = dict(self.label_map)
        return result

    def evaluate_variants(self, variables: Mapping[str, Any], variants: Variants,
                          examples_per_call: Optional[int] = None,
                          progress: Optional[Callable[[int], Any]] = None
                          ) -> List[Dict[str, Any]]:
        """One result (as `evaluate`) per variant, in order."""
        predictions = self.predict(variables, variants, examples_per_call, progress)
        return [self.result_from_texts(texts) for texts in predictions.texts]

    def evaluate(self, variables: Mapping[str, Any]) -> Dict[str, Any]:
        """The split's result; a bank's aggregate with `prompts`; the held-out split's
        result too when configured and the main metric did not get worse."""
        if self.prompts is not None:
            result = bank_lib.bank_result(self, variables)
            return result if self.heldout is None else self._with_bank_heldout(result,
                                                                                variables)
        result = self.evaluate_variants(variables, SINGLE)[0]
        main = result.get("main_metric")
        # >=: re-evaluating the best variables (the XPrompt pipeline's final evaluation of
        # its best checkpoint) reports the held-out split too.
        if self.heldout is not None and main is not None and (
                self._best_main is None or main >= self._best_main):
            self._best_main = main
            result = self._with_heldout(result, self.heldout.evaluate(variables))
        return result

    def _with_bank_heldout(self, result: Dict[str, Any], variables) -> Dict[str, Any]:
        """A bank's result with the held-out split of every prompt whose own main metric
        reached or improved on its best so far (`heldout_per_prompt`: {name: {'split',
        'main_metric', 'metrics'}}, and `metrics['heldout_<split>/<name>/<metric>']`);
        all prompts are scored in one batch when any qualifies."""
        names = result["prompt_names"]
        better = [name for name, main in zip(names, result["per_prompt_main"])
                  if main is not None and main >= self._best_per_prompt.get(name, -np.inf)]
        if not better:
            return result
        held = self.heldout.evaluate(variables)
        split = held["split"]
        result, metrics = dict(result), dict(result["metrics"])
        per_prompt = {}
        for name in better:
            self._best_per_prompt[name] = result["per_prompt_main"][names.index(name)]
            own = {k[len(name) + 1:]: v for k, v in held["metrics"].items()
                   if k.startswith(name + "/")}
            per_prompt[name] = {"split": split, "metrics": own,
                                "main_metric": held["per_prompt_main"][names.index(name)]}
            metrics.update({f"{HELDOUT_PREFIX}{split}/{name}/{k}": v for k, v in own.items()})
        result["heldout_per_prompt"], result["metrics"] = per_prompt, metrics
        return result

    @staticmethod
    def _with_heldout(result: Dict[str, Any], held: Mapping[str, Any]) -> Dict[str, Any]:
        result = dict(result)
        split = held["split"]
        result["heldout"] = {"split": split, "mode": held.get("mode"),
                             "metrics": dict(held["metrics"]),
                             "main_metric": held.get("main_metric"),
                             "num_examples": held.get("num_examples")}
        metrics = dict(result["metrics"])
        metrics.update({f"{HELDOUT_PREFIX}{split}/{k}": v for k, v in held["metrics"].items()})
        metrics[f"{HELDOUT_PREFIX}{split}/main_metric"] = held.get("main_metric")
        result["metrics"] = metrics
        return result
