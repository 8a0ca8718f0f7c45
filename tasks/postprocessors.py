"""Postprocessors: decoded strings -> values the metrics compare.

seqio calls ``postprocess_fn(text, example=ex, is_target=...)`` for predictions and
for targets (``ex['targets_pretokenized']``). Class-label tasks map the string to the
class id; a string that is not a valid label maps to ``INVALID`` (-1), which never
equals a label, so it counts as wrong. A leading T5 sentinel (``<extra_id_N>``) and
surrounding whitespace are ignored, so ``"<extra_id_0> yes"`` and ``"yes"`` both give
the class of ``yes``.

Strings inside ``example`` are ``bytes`` (numpy), decoded here.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from . import templates as tmpl

INVALID = -1
_SENTINEL_RE = re.compile(r"^\s*<extra_id_\d+>\s*")

Postprocessor = Callable[..., Any]


def as_text(value: Any) -> str:
    """bytes / numpy bytes / str -> str."""
    if hasattr(value, "item") and not isinstance(value, (bytes, str)):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def strip_sentinel(text: Any) -> str:
    """Removes one leading ``<extra_id_N>`` and surrounding whitespace."""
    return _SENTINEL_RE.sub("", as_text(text)).strip()


def string_label_to_class_id(text: Any, label_classes: Sequence[str],
                             default: int = INVALID) -> int:
    """Index of the (sentinel-stripped) ``text`` in ``label_classes`` or ``default``."""
    text = strip_sentinel(text)
    try:
        return list(label_classes).index(text)
    except ValueError:
        return default


def class_label(label_classes: Sequence[str]) -> Postprocessor:
    """Postprocessor for fixed-label classification tasks."""
    label_classes = tuple(label_classes)

    def postprocess(text, example=None, is_target=False):
        del example, is_target
        return string_label_to_class_id(text, label_classes)

    postprocess.label_classes = label_classes  # for introspection
    return postprocess


def multirc(label_classes: Sequence[str]) -> Postprocessor:
    """MultiRC: ``{'value': class id}``; targets also carry the question ``group``.

    The group is ``(idx/paragraph, idx/question)`` so exact match is computed per
    question even if question ids repeat across paragraphs.
    """
    label_classes = tuple(label_classes)

    def postprocess(text, example=None, is_target=False):
        res = {"value": string_label_to_class_id(text, label_classes)}
        if is_target:
            res["group"] = (int(example["idx/paragraph"]),
                            int(example["idx/question"]))
        return res

    return postprocess


def wsc_xprompt(text, example=None, is_target=False) -> int:
    """XPrompt WSC: ``span1_text`` -> 1, ``another word`` -> 0, anything else -> -1."""
    del is_target
    pred = strip_sentinel(text)
    if pred == tmpl.XPROMPT_WSC_OTHER:
        return 0
    if example is not None and pred == strip_sentinel(example["span1_text"]):
        return 1
    return INVALID


_DETERMINERS = frozenset({
    "a", "an", "few", "her", "his", "each", "every", "many", "much", "my",
    "our", "some", "that", "the", "their", "these", "this", "those", "which",
    "whose", "your"
})


def _clean_referent(s: str) -> str:
    s = strip_sentinel(s).lower()
    return " ".join(w for w in s.split(" ") if w not in _DETERMINERS)


def wsc_simple(text, example=None, is_target=False) -> int:
    """T5's ``wsc_simple`` postprocessor: did the model generate the candidate referent?

    Targets give the example's label (1 / 0). A prediction gives 1 if it matches the
    candidate (``targets_pretokenized``) ignoring case and determiners (subset match
    either way; a possessive on one side only is no match), 0 otherwise, -1 if empty.
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
    """ReCoRD: ``{'value': answer}``; targets: all answers and the (passage, query) group."""
    if is_target:
        return {
            "value": [as_text(a) for a in example["answers"]],
            "group": (int(example["idx/passage"]), int(example["idx/query"])),
        }
    return {"value": strip_sentinel(text)}


def string_to_float(text, example=None, is_target=False,
                    default: float = float(INVALID)) -> float:
    """STS-B: the number in the string, ``-1.0`` if it is not a number."""
    del example, is_target
    try:
        return float(strip_sentinel(text))
    except ValueError:
        return default
