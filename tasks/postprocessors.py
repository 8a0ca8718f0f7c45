"""Postprocessors: decoded strings -> values the metrics compare.

seqio calls ``postprocess_fn(text, example=ex, is_target=...)`` for predictions and
for targets (``ex['targets_pretokenized']``). These follow T5 (``t5.data.postprocessors``)
to the letter, because what counts as a legal label is part of what the papers report
(Lester et al. Fig. 3c: an output that is no label scores 0):

* a class label is an exact match of the whole decoded string with one of the label
  strings (T5's ``string_label_to_class_id``), else ``INVALID`` (-1), which never
  equals a label, so it counts as wrong: ``' entailment'``, ``'entailment\n'`` and
  ``'<extra_id_0> entailment'`` are illegal for a task whose labels have no sentinel;
* tasks whose targets start with the sentinel (the ``xprompt`` family, like T5's
  ``*_1_sentinel`` tasks) first drop a leading ``<extra_id_0>`` and strip what follows,
  as seqio's ``add_task_with_sentinels`` does; nothing else is forgiven;
* ReCoRD passes the raw text to the SQuAD metric, STS-B reads ``float(text)``, WSC
  (``wsc_simple``) compares words of the raw text: as T5.

Our option (``EvalConfig.label_parsing = 'lenient'``, gin ``LABEL_PARSING``): the
evaluator first removes any leading ``<extra_id_N>`` and surrounding whitespace from a
prediction (as ``strip_sentinel`` here), so ``"<extra_id_0> yes"``, ``" yes"`` and
``"yes\n"`` all give the class of ``yes``.

Strings inside ``example`` are ``bytes`` (numpy), decoded here.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from . import templates as tmpl

INVALID = -1
_SENTINEL_RE = re.compile(r"^\s*<extra_id_\d+>\s*")
# The one sentinel of T5's `*_1_sentinel` tasks and of the xprompt family's targets.
SENTINEL_0 = "<extra_id_0>"

Postprocessor = Callable[..., Any]


def as_text(value: Any) -> str:
    """bytes / numpy bytes / str -> str."""
    if hasattr(value, "item") and not isinstance(value, (bytes, str)):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def strip_sentinel(text: Any) -> str:
    """Removes one leading ``<extra_id_N>`` and surrounding whitespace (lenient)."""
    return _SENTINEL_RE.sub("", as_text(text)).strip()


def remove_sentinel(text: Any) -> str:
    """seqio's ``add_task_with_sentinels`` postprocessing: a string that starts with
    ``<extra_id_0>`` loses it and the whitespace around the rest; any other string is
    returned unchanged."""
    text = as_text(text)
    if text.startswith(SENTINEL_0):
        return text[len(SENTINEL_0):].strip()
    return text


def string_label_to_class_id(text: Any, label_classes: Sequence[str],
                             default: int = INVALID) -> int:
    """T5's: index of ``text`` in ``label_classes`` (exact match) or ``default``."""
    text = as_text(text)
    label_classes = list(label_classes)
    return label_classes.index(text) if text in label_classes else default


def with_sentinel_removed(postprocess_fn: Postprocessor) -> Postprocessor:
    """``postprocess_fn`` reading ``remove_sentinel(text)``: the postprocessor of a task
    whose targets start with ``<extra_id_0>``, as seqio's ``add_task_with_sentinels``
    wraps T5's (targets and predictions alike)."""

    def postprocess(text, example=None, is_target=False):
        return postprocess_fn(remove_sentinel(text), example=example, is_target=is_target)

    postprocess.wrapped = postprocess_fn  # for introspection
    label_classes = getattr(postprocess_fn, "label_classes", None)
    if label_classes is not None:
        postprocess.label_classes = label_classes
    return postprocess


def class_label(label_classes: Sequence[str]) -> Postprocessor:
    """Postprocessor for fixed-label classification tasks (T5's, exact match)."""
    label_classes = tuple(label_classes)

    def postprocess(text, example=None, is_target=False):
        del example, is_target
        return string_label_to_class_id(text, label_classes)

    postprocess.label_classes = label_classes  # for introspection
    return postprocess


def multirc(label_classes: Sequence[str]) -> Postprocessor:
    """MultiRC: ``{'value': class id}``; targets also carry the question ``group``.

    As T5, the group is the question index ``idx/question`` alone (exact match is
    averaged over these groups, ``metrics.multirc_exact_match``); targets also carry
    ``paragraph`` (``idx/paragraph``) for ``metrics.multirc_exact_match_per_paragraph``.
    """
    label_classes = tuple(label_classes)

    def postprocess(text, example=None, is_target=False):
        res = {"value": string_label_to_class_id(text, label_classes)}
        if is_target:
            res["group"] = int(example["idx/question"])
            res["paragraph"] = int(example["idx/paragraph"])
        return res

    return postprocess


def wsc_xprompt(text, example=None, is_target=False) -> int:
    """XPrompt WSC: ``span1_text`` -> 1, ``another word`` -> 0, anything else -> -1
    (exact match, as T5's class labels; the sentinel family wraps it in
    ``with_sentinel_removed``)."""
    del is_target
    pred = as_text(text)
    if pred == tmpl.XPROMPT_WSC_OTHER:
        return 0
    if example is not None and pred == as_text(example["span1_text"]):
        return 1
    return INVALID


_DETERMINERS = frozenset({
    "a", "an", "few", "her", "his", "each", "every", "many", "much", "my",
    "our", "some", "that", "the", "their", "these", "this", "those", "which",
    "whose", "your"
})


def _clean_referent(s: str) -> str:
    """T5's ``clean``: strip, lower case, drop determiners (a sentinel is a word)."""
    s = as_text(s).strip().lower()
    return " ".join(w for w in s.split(" ") if w not in _DETERMINERS)


def wsc_simple(text, example=None, is_target=False) -> int:
    """T5's ``wsc_simple`` postprocessor: did the model generate the candidate referent?

    Targets give the example's label (1 / 0). A prediction gives 1 if it matches the
    candidate (``targets_pretokenized``) ignoring case and determiners (subset match
    either way; a possessive on one side only is no match), 0 otherwise, -1 if empty
    after cleaning. As T5, a bare ``<extra_id_0>`` is a word, not empty: it gives 0.
    """
    if is_target:
        return int(example["label"])
    prediction = _clean_referent(text)
    if not prediction:
        return INVALID
    referent = _clean_referent(as_text(example["targets_pretokenized"]))
    if ("'" in prediction) != ("'" in referent):
        return 0
    pred_words, ref_words = set(prediction.split(" ")), set(referent.split(" "))
    return int(pred_words.issubset(ref_words) or ref_words.issubset(pred_words))


def record(text, example=None, is_target=False):
    """ReCoRD: ``{'value': answer}`` (the raw text, as T5: the SQuAD metric normalises
    it); targets: all answers and the (passage, query) group."""
    if is_target:
        return {
            "value": [as_text(a) for a in example["answers"]],
            "group": (int(example["idx/passage"]), int(example["idx/query"])),
        }
    return {"value": as_text(text)}


def string_to_float(text, example=None, is_target=False,
                    default: float = float(INVALID)) -> float:
    """STS-B: ``float(text)`` (T5's), ``-1.0`` if it is not a number."""
    del example, is_target
    try:
        return float(as_text(text))
    except ValueError:
        return default
