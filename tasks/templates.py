"""Prompt templates (verbalized inputs and label words) and their TF rendering.

A ``Template`` is data: an input format string with ``{field}`` placeholders and an
optional ``{mask}`` placeholder, plus the label strings in class-id order. Two
families are defined here:

* ``XPROMPT`` - the XPrompt paper's Table 10 (no task name; ``{mask}`` is T5's first
  sentinel ``<extra_id_0>`` and targets are ``<extra_id_0> <label>``; the sentinel can
  be dropped, see ``Template.inputs_format``).
* ``LESTER`` - T5's own (Super)GLUE formats and label strings (``t5.data.
  preprocessors.glue``: ``"<benchmark> key1: v1 key2: v2 ..."`` with keys sorted
  unless given) with the leading task name removed ("taskless", as in Lester et al.
  2021 / google-research/prompt-tuning). No sentinel.

Rendering is pure TF string ops (``render``), so the same templates serve TFDS and
local sources.
"""

from __future__ import annotations

import dataclasses
import re
import string
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from .vocab import SENTINEL

UNK_TARGET = "<unk>"  # T5's target string for unlabeled (test) examples


@dataclasses.dataclass(frozen=True)
class Template:
    """An input format and the label strings (class-id order; None if per-example).

    Attributes:
      inputs: format string, e.g. ``"sentence1: {premise} sentence2: {hypothesis}
        {mask}"``. ``{mask}`` marks where the sentinel goes.
      labels: label strings indexed by class id, or None (per-example / generation).
    """
    inputs: str
    labels: Optional[Tuple[str, ...]] = None

    def fields(self) -> Tuple[str, ...]:
        """The placeholder names used by ``inputs`` (without 'mask')."""
        names = []
        for _, name, spec, conv in string.Formatter().parse(self.inputs):
            if name is None:
                continue
            if spec or conv or not name.isidentifier():
                raise ValueError(f"Template {self.inputs!r}: only plain {{field}} "
                                 f"placeholders are supported, got {{{name}}}")
            if name != "mask":
                names.append(name)
        return tuple(names)

    def inputs_format(self, sentinel: bool) -> str:
        """The format string with ``{mask}`` kept (sentinel) or removed with its space."""
        if sentinel:
            return self.inputs
        s = self.inputs.replace(" {mask}", "").replace("{mask} ", "")
        return s.replace("{mask}", "")


def target_prefix(sentinel: bool) -> str:
    """``'<extra_id_0> '`` when the sentinel is used, else ``''``."""
    return SENTINEL + " " if sentinel else ""


def render(fmt: str, fields: Mapping[str, tf.Tensor],
           mask: Optional[str] = None) -> tf.Tensor:
    """Renders ``fmt`` with scalar string tensors ``fields``; ``{mask}`` -> ``mask``."""
    parts: List = []
    for literal, name, _, _ in string.Formatter().parse(fmt):
        if literal:
            parts.append(literal)
        if name is None:
            continue
        if name == "mask":
            if mask is None:
                raise ValueError(f"Template {fmt!r} has {{mask}} but no mask was given")
            parts.append(mask)
        else:
            if name not in fields:
                raise KeyError(f"Template {fmt!r} needs field {name!r}; example has "
                               f"{sorted(fields)}")
            parts.append(fields[name])
    if not parts:
        return tf.constant("")
    parts = [tf.constant(p) if isinstance(p, str) else p for p in parts]
    return tf.strings.join(parts)


def label_target(label: tf.Tensor, labels: Sequence[str],
                 prefix: str = "") -> tf.Tensor:
    """``prefix + labels[label]``; ``prefix + '<unk>'`` when ``label`` is -1."""
    table = tf.constant([prefix + l for l in labels])
    label = tf.cast(label, tf.int32)
    safe = tf.clip_by_value(label, 0, len(labels) - 1)
    return tf.where(label < 0, tf.constant(prefix + UNK_TARGET),
                    tf.gather(table, safe))


def strip_multirc_html(text: tf.Tensor) -> tf.Tensor:
    """T5's MultiRC cleanup: ``<br>`` -> space, ``<b>``/``</b>`` removed."""
    text = tf.strings.regex_replace(text, "<br>", " ")
    return tf.strings.regex_replace(text, "<(/)?b>", "")


def record_passage(passage: tf.Tensor) -> tf.Tensor:
    """T5's ReCoRD cleanup of ``@highlight`` markers."""
    passage = tf.strings.regex_replace(
        passage, r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
    return tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")


_TRAILING_PUNCT = re.compile(r"[^\w]+$")

# The two SuperGLUE WSC texts whose span2_index T5's `_wsc_inputs` does not use: T5 maps
# each to a fixed blanked text (the pronoun as "X"), quoted here as data.
_T5_WSC_FIXED_BLANKS = {
    'The boy continued to whip the pony , and eventually the pony threw him over. John '
    'laughed out quite loud. "Good for him," he said. ':
        'The boy continued to whip the pony , and eventually the pony threw him over. '
        'John laughed out quite loud. "Good for X ," he said.',
    'When they had eventually calmed down a bit , and had gotten home, Mr. Farley put '
    'the magic pebble in an iron safe . Some day they might want to use it , but really '
    'for now, what more could they wish for?':
        'When they had eventually calmed down a bit , and had gotten home, Mr. Farley put '
        'the magic pebble in an iron safe . Some day they might want to use X , but '
        'really for now, what more could they wish for?',
}


def wsc_simple_text(text: str, span2_index: int, span2_text: str) -> str:
    """T5's ``wsc_simple`` input text (without the ``wsc:`` task name), to the letter.

    T5 (``_wsc_inputs``): the text split on single spaces, the word at ``span2_index``
    replaced by ``X`` (``words[:i]``, ``X``, ``words[i+1:]`` joined by spaces, so a
    trailing space survives), two texts of the data mapped to fixed blanked texts; then
    every ``' X '`` becomes ``' *<span2_text>* '``. T5 asserts 0 < ``span2_index`` < number
    of words and that word == ``span2_text``; where that does not hold (and the text is not
    one of the two), ours goes on gracefully: the nearest word equal to ``span2_text``
    (ignoring trailing punctuation) is blanked, its trailing punctuation kept after a space
    as in T5's fixed texts (``*him* ,"``).
    """
    marked = " *" + span2_text + "* "
    if text in _T5_WSC_FIXED_BLANKS:
        return _T5_WSC_FIXED_BLANKS[text].replace(" X ", marked)
    words = text.split(" ")
    if 0 < span2_index < len(words) and words[span2_index] == span2_text:
        blanked = (" ".join(words[:span2_index]) + " X "
                   + " ".join(words[span2_index + 1:]))
        return blanked.replace(" X ", marked)
    return _mark_nearest(words, span2_index, span2_text)


def _mark_nearest(words, span2_index: int, span2_text: str) -> str:
    """Our fallback where T5 asserts: the nearest match of ``span2_text`` marked."""
    n_span = max(1, len(span2_text.split(" ")))

    def matches(j: int) -> bool:
        cand = " ".join(words[j:j + n_span])
        return cand == span2_text or _TRAILING_PUNCT.sub("", cand) == span2_text

    index = span2_index
    if not (0 <= index < len(words) and matches(index)):
        hits = [j for j in range(len(words)) if matches(j)]
        if hits:
            index = min(hits, key=lambda j: (abs(j - span2_index), j))
        elif not 0 <= index < len(words):
            raise ValueError(f"WSC: span2_index {span2_index} outside the text "
                             f"({len(words)} words) and {span2_text!r} not found")
    cand = " ".join(words[index:index + n_span])
    suffix = cand[len(span2_text):] if cand.startswith(span2_text) else ""
    return " ".join(words[:index] + ["*" + span2_text + "*"] + ([suffix] if suffix else [])
                    + words[index + n_span:])


def tf_wsc_marked_spans(text: tf.Tensor, span1_text: tf.Tensor, span1_index: tf.Tensor,
                        span2_text: tf.Tensor, span2_index: tf.Tensor) -> tf.Tensor:
    """T5's ``preprocessors.wsc`` text: ``' * '`` around the candidate (span 1) and
    ``' # '`` around the pronoun (span 2), each found by T5's regular expression
    ``^((?:\\S+\\s){index})(span)`` (the span text used as a pattern, as T5 does), the
    pronoun's index moved by the two words the first mark added before it."""

    def mark(t, span, index, symbol):
        pattern = tf.strings.regex_replace(r"^((?:\S+\s){N})(W)", "N",
                                           tf.strings.as_string(index))
        pattern = tf.strings.regex_replace(pattern, "W", span)
        return tf.strings.regex_replace(t, pattern, r"\1{0} \2 {0}".format(symbol))

    text = mark(text, span1_text, span1_index, "*")
    span2_index = span2_index + 2 * tf.cast(span1_index < span2_index, span2_index.dtype)
    return mark(text, span2_text, span2_index, "#")


def tf_wsc_simple_text(text: tf.Tensor, span2_index: tf.Tensor,
                       span2_text: tf.Tensor) -> tf.Tensor:
    """``wsc_simple_text`` inside a tf.data pipeline (via ``tf.py_function``)."""

    def fn(t, i, s):
        return wsc_simple_text(t.numpy().decode("utf-8"), int(i.numpy()),
                               s.numpy().decode("utf-8")).encode("utf-8")

    out = tf.py_function(fn, [text, span2_index, span2_text], tf.string)
    out.set_shape([])
    return out


# ---------------------------------------------------------------------------
# The two template families for SuperGLUE.
# ---------------------------------------------------------------------------
# Class-id order follows TFDS: BoolQ/MultiRC/WiC/WSC 0=False 1=True; CB
# entailment/contradiction/neutral; COPA choice1/choice2; RTE
# entailment/not_entailment (XPrompt verbalizes not_entailment as "contradiction").
XPROMPT: Dict[str, Template] = {
    "boolq": Template("hypothesis: {question}. premise: {passage} {mask}",
                      ("no", "yes")),
    "cb": Template("hypothesis: {hypothesis}. premise: {premise} {mask}",
                   ("entailment", "contradiction", "neutral")),
    "copa": Template("choice1: {choice1} choice2: {choice2} premise: {premise} "
                     "question: {question} {mask}", ("choice1", "choice2")),
    "multirc": Template("question: {question} answer: {answer}. paragraph: "
                        "{paragraph} {mask}", ("no", "yes")),
    "rte": Template("sentence1: {premise} sentence2: {hypothesis} {mask}",
                    ("entailment", "contradiction")),
    "wic": Template("sentence1: {sentence1} sentence2: {sentence2} word: "
                    "{word} {mask}", ("no", "yes")),
    # Per-example labels: class 0 (False) -> "another word", 1 -> span1_text.
    "wsc": Template('{text} "{span2_text}" refers to "{span1_text}" or another '
                    "word ? {mask}", None),
    # Generation (not in XPrompt's Table 10): the answer entity after the sentinel.
    "record": Template("query: {query} entities: {entities} passage: {passage} "
                       "{mask}", None),
}
XPROMPT_WSC_OTHER = "another word"

LESTER: Dict[str, Template] = {
    "boolq": Template("passage: {passage} question: {question}",
                      ("False", "True")),
    "cb": Template("hypothesis: {hypothesis} premise: {premise}",
                   ("entailment", "contradiction", "neutral")),
    "copa": Template("choice1: {choice1} choice2: {choice2} premise: {premise} "
                     "question: {question}", ("choice1", "choice2")),
    "multirc": Template("question: {question} answer: {answer} paragraph: "
                        "{paragraph}", ("False", "True")),
    "rte": Template("hypothesis: {hypothesis} premise: {premise}",
                    ("entailment", "not_entailment")),
    "wic": Template("sentence1: {sentence1} sentence2: {sentence2} word: {word}",
                    ("False", "True")),
    # T5's wsc_simple: the marked text; target = span1_text (train: correct only).
    "wsc": Template("{wsc_text}", None),
    "record": Template("query: {query} entities: {entities} passage: {passage}",
                       None),
}

# T5's `wsc` (not `wsc_simple`) format without the task name: both spans marked, the
# label as False / True; every training example is used (EPT Table 5: 554).
LESTER_WSC_TRUE_FALSE = Template("text: {wsc_marked}", ("False", "True"))

# T5's GLUE formats (taskless) and the EPT paper's extra TFDS tasks in the same style.
GLUE_LESTER: Dict[str, Template] = {
    "cola": Template("sentence: {sentence}", ("unacceptable", "acceptable")),
    "sst2": Template("sentence: {sentence}", ("negative", "positive")),
    "mrpc": Template("sentence1: {sentence1} sentence2: {sentence2}",
                     ("not_equivalent", "equivalent")),
    "qqp": Template("question1: {question1} question2: {question2}",
                    ("not_duplicate", "duplicate")),
    "stsb": Template("sentence1: {sentence1} sentence2: {sentence2}", None),
    "mnli": Template("hypothesis: {hypothesis} premise: {premise}",
                     ("entailment", "neutral", "contradiction")),
    "qnli": Template("question: {question} sentence: {sentence}",
                     ("entailment", "not_entailment")),
    "rte": Template("sentence1: {sentence1} sentence2: {sentence2}",
                    ("entailment", "not_entailment")),
    "scitail": Template("hypothesis: {hypothesis} premise: {premise}",
                        ("entails", "neutral")),
    "paws": Template("sentence1: {sentence1} sentence2: {sentence2}",
                     ("different_meaning", "paraphrase")),
    "yelp": Template("text: {text}", ("negative", "positive")),
    "winogrande": Template("option1: {option1} option2: {option2} sentence: "
                           "{sentence}", ("option1", "option2")),
}

# STS-B as T5 does it: score rounded to the nearest 0.2, printed with one decimal.
STSB_LABELS: Tuple[str, ...] = tuple(f"{i / 5:.1f}" for i in range(26))


def stsb_target(score: tf.Tensor) -> tf.Tensor:
    """T5's STS-B target: ``tf.round(score * 5) / 5`` formatted with 1 decimal.

    (``tf.round`` rounds half to even, as in T5: 2.5 -> "2.4", 2.7 -> "2.8".)
    """
    return tf.strings.as_string(tf.round(score * 5) / 5, precision=1)
