"""Metric functions (``fn(targets, predictions) -> {name: value}``, in percent).

Inputs are postprocessed values (see ``postprocessors``): class ids where -1 marks
an invalid prediction, floats for STS-B, ``{'value', 'group'}`` dicts for MultiRC
and ReCoRD. ``with_average`` adds the mean of several metrics under ``'average'``,
the model-selection metric of tasks with several (CB, MultiRC, ReCoRD, MRPC, QQP,
STS-B), as in the papers.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import scipy.stats
import sklearn.metrics

MetricFn = Callable[[Sequence[Any], Sequence[Any]], Dict[str, float]]
AVERAGE = "average"
# Where our key differs from the one T5's metric function returns, the function carries
# `t5_names` {ours: T5's}: CB's macro-F1 (T5: `mean_3class_f1`), MultiRC's F1a (T5: `f1`),
# SQuAD-style exact match (T5: `em`). `registry.t5_metrics` renames a metric dict.
T5_NAMES_ATTR = "t5_names"


def _t5_names(fn: MetricFn, names: Dict[str, str]) -> MetricFn:
    setattr(fn, T5_NAMES_ATTR, dict(names))
    return fn


def t5_names_of(fns: Sequence[MetricFn]) -> Dict[str, str]:
    """{our key: T5's key} over metric functions (those without one keep their keys)."""
    out: Dict[str, str] = {}
    for fn in fns:
        out.update(getattr(fn, T5_NAMES_ATTR, {}))
    return out


def accuracy(targets, predictions) -> Dict[str, float]:
    return {"accuracy": 100 * sklearn.metrics.accuracy_score(targets, predictions)}


def macro_f1(num_classes: int) -> MetricFn:
    """Unweighted mean of per-class F1 over classes ``0..num_classes-1`` (CB).

    Invalid predictions (-1) are not a class: they only cost recall of the true class.
    """
    def f1_macro(targets, predictions):
        return {"f1_macro": 100 * sklearn.metrics.f1_score(
            targets, predictions, labels=list(range(num_classes)), average="macro",
            zero_division=0)}
    return _t5_names(f1_macro, {"f1_macro": f"mean_{num_classes}class_f1"})


def f1_with_invalid(targets, predictions) -> Dict[str, float]:
    """Binary F1 (positive class 1); a prediction other than 0/1 counts as wrong."""
    targets = np.asarray(targets)
    predictions = np.array(predictions, copy=True)
    invalid = (predictions != 0) & (predictions != 1)
    predictions[invalid] = 1 - targets[invalid]
    return {"f1": 100 * sklearn.metrics.f1_score(targets, predictions,
                                                 zero_division=0)}


def matthews_corrcoef(targets, predictions) -> Dict[str, float]:
    return {"matthews_corrcoef":
                100 * sklearn.metrics.matthews_corrcoef(targets, predictions)}


def pearson_corrcoef(targets, predictions) -> Dict[str, float]:
    return {"pearson_corrcoef": 100 * scipy.stats.pearsonr(targets, predictions)[0]}


def spearman_corrcoef(targets, predictions) -> Dict[str, float]:
    return {"spearman_corrcoef":
                100 * scipy.stats.spearmanr(targets, predictions)[0]}


def multirc_f1a(targets, predictions) -> Dict[str, float]:
    """MultiRC F1a: binary F1 over all answer options (invalid counts as wrong)."""
    res = f1_with_invalid([t["value"] for t in targets],
                          [p["value"] for p in predictions])
    return {"f1a": res["f1"]}


_t5_names(multirc_f1a, {"f1a": "f1"})


def _grouped_exact_match(targets, predictions, key) -> Dict[str, float]:
    groups: Dict[Any, List[bool]] = collections.defaultdict(list)
    for t, p in zip(targets, predictions):
        groups[key(t)].append(t["value"] == p["value"])
    if not groups:
        return {"exact_match": 0.0}
    return {"exact_match": 100 * float(np.mean([all(v) for v in groups.values()]))}


def multirc_exact_match(targets, predictions) -> Dict[str, float]:
    """MultiRC EM as T5 (``mean_group_metric(all_match)``): answer options grouped by
    the target's ``group``, the question index ``idx/question`` alone; the share of
    groups whose options are all predicted right.

    Where question ids are unique within a split this equals grouping by (paragraph,
    question), which is what Hugging Face's ``super_glue`` metric does; where an id
    repeats under two paragraphs (a file or reader that numbers questions per
    paragraph) the two differ: T5 merges them into one group, and so do we. Grouping by
    (paragraph, question) is ``multirc_exact_match_per_paragraph``.
    """
    return _grouped_exact_match(targets, predictions, lambda t: t["group"])


def multirc_exact_match_per_paragraph(targets, predictions) -> Dict[str, float]:
    """Our option: MultiRC EM grouped by (``paragraph``, question index), so a question
    id repeated under two paragraphs is two questions."""
    return _grouped_exact_match(targets, predictions,
                                lambda t: (t.get("paragraph"), t["group"]))


# ---------------------------------------------------------------------------
# SQuAD-style EM / F1 (ReCoRD).
# ---------------------------------------------------------------------------
_PUNCT = set(string.punctuation)


def normalize_squad(text: str) -> str:
    """Lowercase, drop punctuation and articles (a, an, the), collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(target: str, prediction: str) -> float:
    t_tokens, p_tokens = target.split(), prediction.split()
    common = collections.Counter(t_tokens) & collections.Counter(p_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(p_tokens)
    recall = num_same / len(t_tokens)
    return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]],
          predictions: Sequence[str]) -> Dict[str, float]:
    """EM and F1, each the max over the example's answers, averaged (percent)."""
    ems, f1s = [], []
    for answers, pred in zip(targets, predictions):
        pred_n = normalize_squad(pred)
        answers_n = [normalize_squad(a) for a in answers]
        if not answers_n:
            ems.append(0.0)
            f1s.append(0.0)
            continue
        ems.append(max(float(a == pred_n) for a in answers_n))
        f1s.append(max(_token_f1(a, pred_n) for a in answers_n))
    if not ems:
        return {"exact_match": 0.0, "f1": 0.0}
    return {"exact_match": 100 * float(np.mean(ems)),
            "f1": 100 * float(np.mean(f1s))}


_t5_names(squad, {"exact_match": "em"})


def record_squad(targets, predictions) -> Dict[str, float]:
    """ReCoRD: keep one example per (passage, query) group, then ``squad``."""
    seen = set()
    dedup_t, dedup_p = [], []
    for t, p in zip(targets, predictions):
        if t["group"] in seen:
            continue
        seen.add(t["group"])
        dedup_t.append(t["value"])
        dedup_p.append(p["value"])
    return squad(dedup_t, dedup_p)


_t5_names(record_squad, {"exact_match": "em"})


# ---------------------------------------------------------------------------
# Combination.
# ---------------------------------------------------------------------------
def with_average(fns: Sequence[MetricFn], keys: Sequence[str]) -> MetricFn:
    """One metric fn running ``fns`` and adding ``'average'`` = mean of ``keys``."""
    fns, keys = tuple(fns), tuple(keys)

    def combined(targets, predictions):
        out: Dict[str, float] = {}
        for fn in fns:
            out.update(fn(targets, predictions))
        out[AVERAGE] = float(np.mean([out[k] for k in keys]))
        return out

    combined.__name__ = "average_of_" + "_".join(keys)
    return _t5_names(combined, t5_names_of(fns))
