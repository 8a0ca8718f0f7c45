"""The world's classification tasks, shaped like SuperGLUE tasks, and their rules.

Each task draws an example *for a requested label* (so splits are exactly balanced) and
returns it with the official SuperGLUE JSONL field names. The rules rest on three bodies
of world knowledge the pretrained model must have learned: 28 cause -> effect rules
between events, the categories of 48 things, and the two senses of 10 ambiguous words.

* `boolq` (BoolQ-like) - a passage with one event and an unrelated fact ("the red cup is
  in the attic . alice dropped the glass ."); question "is it true that the glass
  broke". True iff the asked event is the effect of the passage's event by one of the
  cause -> effect rules; false questions ask for the effect of another rule, about the
  same person.
* `rte` (RTE-like) - a premise saying what someone owns (and an unrelated fact); the
  hypothesis names a category or a thing ("alice has a flower ."). Entailment iff the
  owned thing is that thing or belongs to that category (tulip -> flower). The named
  word never appears in the premise for category hypotheses, so overlap gives nothing
  away.
* `copa` (COPA-like) - a premise event, `question` 'cause' or 'effect' and two
  alternatives; the answer is the alternative linked to the premise by a cause -> effect
  rule, the distractor comes from another rule (same person).
* `wic` (WiC-like) - an ambiguous word (bank, bat, bark, ...) in two sentences; its sense
  in each sentence is set by one context word (bank near 'river' vs near 'money'); True
  iff both senses agree. The two context words always differ, so word overlap gives
  nothing away.

Every task also has a *negated twin*: the same inputs behind the prefix `not <task>`
with the opposite answer. Pretraining teaches both twins and shows some inputs with no
prefix at all labelled at random, so the frozen model knows every rule but, given a
bare input, cannot tell which twin is wanted: a prompt has to select the task.

Class ids follow TFDS (BoolQ / WiC 0=False 1=True, RTE 0=entailment 1=not_entailment,
COPA 0=choice1 1=choice2).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from . import grammar as g

# The input formats and label strings of T5 without the task name (the `lester` family
# of `xprompt_jax.tasks.templates`; tests check that they agree).
LESTER_FORMATS: Dict[str, str] = {
    "boolq": "passage: {passage} question: {question}",
    "rte": "hypothesis: {hypothesis} premise: {premise}",
    "copa": "choice1: {choice1} choice2: {choice2} premise: {premise} question: {question}",
    "wic": "sentence1: {sentence1} sentence2: {sentence2} word: {word}",
}
LESTER_LABELS: Dict[str, Tuple[str, ...]] = {
    "boolq": ("False", "True"),
    "rte": ("entailment", "not_entailment"),
    "copa": ("choice1", "choice2"),
    "wic": ("False", "True"),
}
# Official SuperGLUE directory of each task.
DIRECTORIES: Dict[str, str] = {"boolq": "BoolQ", "rte": "RTE", "copa": "COPA", "wic": "WiC"}

Fields = Dict[str, Any]


# --------------------------------------------------------------------------- BoolQ-like
BOOLQ_QUESTION = "is it true that {event}"


def place_fact(rng: random.Random) -> str:
    return g.fill(rng.choice(g.PLACE_TEMPLATES), color=rng.choice(g.COLORS),
                  obj=rng.choice(g.OBJECTS), place=rng.choice(g.PLACES), p=rng.choice(g.PEOPLE))


def _distractor_pair(rng: random.Random, k: int, side: int) -> int:
    """Another cause -> effect rule whose `side` event (0 cause, 1 effect) mentions a
    person iff rule k's does, so that a person's name never gives the answer away."""
    has_person = "{p}" in g.CAUSAL_PAIRS[k][side]
    pool = [j for j, pair in enumerate(g.CAUSAL_PAIRS)
            if j != k and ("{p}" in pair[side]) == has_person]
    return rng.choice(pool)


def sample_boolq(rng: random.Random, label: int) -> Fields:
    """A short story with one event and a yes/no question about a consequence
    (label 1 = True: the asked event is what the story's event leads to)."""
    k = rng.randrange(len(g.CAUSAL_PAIRS))
    other = _distractor_pair(rng, k, 1)
    person = rng.choice(g.PEOPLE)
    cause = g.CAUSAL_PAIRS[k][0].format(p=person) + " ."
    sentences = [cause, place_fact(rng)]
    rng.shuffle(sentences)
    asked = g.CAUSAL_PAIRS[k if label == 1 else other][1].format(p=person)
    return {"question": BOOLQ_QUESTION.format(event=asked), "passage": " ".join(sentences)}


# --------------------------------------------------------------------------- RTE-like
def _thing_phrase(word: str) -> str:
    return g.with_article(word)


def sample_rte(rng: random.Random, label: int) -> Fields:
    """A premise saying what someone owns (and an unrelated fact); a hypothesis that the
    person has a thing of some category, or that very thing (label 0 = entailment)."""
    person = rng.choice(g.PEOPLE)
    category = rng.choice(sorted(g.CATEGORIES))
    thing = rng.choice(g.CATEGORIES[category])
    fact = f"{person} {rng.choice(g.OWN_VERBS)} {_thing_phrase(thing)} ."
    sentences = [fact, place_fact(rng)]
    rng.shuffle(sentences)
    by_category = rng.random() < 0.7
    if label == 0:
        named = category if by_category else thing
    elif by_category:
        named = rng.choice([c for c in sorted(g.CATEGORIES) if c != category])
    else:  # another thing: of the same category half of the time
        pool = (g.CATEGORIES[category] if rng.random() < 0.5 else
                g.CATEGORIES[rng.choice([c for c in sorted(g.CATEGORIES) if c != category])])
        named = rng.choice([t for t in pool if t != thing])
    hypothesis = f"{person} {rng.choice(('has', 'owns'))} {_thing_phrase(named)} ."
    return {"premise": " ".join(sentences), "hypothesis": hypothesis}


# --------------------------------------------------------------------------- COPA-like
def sample_copa(rng: random.Random, label: int) -> Fields:
    """A premise, 'cause' or 'effect', and two alternatives (label = correct one)."""
    k = rng.randrange(len(g.CAUSAL_PAIRS))
    person = rng.choice(g.PEOPLE)
    question = rng.choice(("cause", "effect"))
    cause, effect = g.CAUSAL_PAIRS[k]
    side = 1 if question == "effect" else 0
    other = _distractor_pair(rng, k, side)
    premise = (cause if question == "effect" else effect).format(p=person) + " ."
    correct = g.CAUSAL_PAIRS[k][side].format(p=person) + " ."
    wrong = g.CAUSAL_PAIRS[other][side].format(p=person) + " ."
    choice1, choice2 = (correct, wrong) if label == 0 else (wrong, correct)
    return {"premise": premise, "choice1": choice1, "choice2": choice2,
            "question": question}


# --------------------------------------------------------------------------- WiC-like
def _wic_sentence(rng: random.Random, word: str, cue: str, template: str
                  ) -> Tuple[str, int, int]:
    """Renders a WiC sentence; returns it with the character span of `word`."""
    person = rng.choice(g.PEOPLE)
    out, start = [], None
    for token in template.split(" "):
        if token == "{w}":
            start = len(" ".join(out)) + (1 if out else 0)
            out.append(word)
        else:
            out.append(token.format(p=person, c=cue, ac=g.with_article(cue)))
    return " ".join(out), start, start + len(word)


def sample_wic(rng: random.Random, label: int) -> Fields:
    """An ambiguous word in two sentences (label 1 = same sense)."""
    word = rng.choice(sorted(g.SENSES))
    sense1 = rng.randrange(2)
    sense2 = sense1 if label == 1 else 1 - sense1
    cue1 = rng.choice(g.SENSES[word][sense1])
    cue2 = rng.choice([c for c in g.SENSES[word][sense2] if c != cue1])
    t1, t2 = rng.sample(g.WIC_TEMPLATES, 2)
    s1, start1, end1 = _wic_sentence(rng, word, cue1, t1)
    s2, start2, end2 = _wic_sentence(rng, word, cue2, t2)
    return {"word": word, "sentence1": s1, "sentence2": s2, "start1": start1,
            "end1": end1, "start2": start2, "end2": end2}


# --------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class WorldTask:
    """One world task: its SuperGLUE shape, generator and rule."""

    name: str                                   # 'boolq'
    sampler: Callable[[random.Random, int], Fields]
    rule: str                                   # one-line description of the rule

    @property
    def directory(self) -> str:
        return DIRECTORIES[self.name]

    @property
    def labels(self) -> Tuple[str, ...]:
        return LESTER_LABELS[self.name]

    def sample(self, rng: random.Random, label: int) -> Fields:
        return self.sampler(rng, label)

    def render(self, fields: Mapping[str, Any], prefix: Optional[str] = None) -> str:
        """The model input: T5's format without (or with) a task-name prefix."""
        text = LESTER_FORMATS[self.name].format(**fields)
        return f"{prefix} {text}" if prefix else text

    def target(self, label: int, negated: bool = False) -> str:
        """The label string; the opposite one for the negated twin."""
        return self.labels[1 - label if negated else label]

    def to_json(self, fields: Mapping[str, Any], label: Optional[int], idx: int) -> Dict:
        """One line of the official JSONL file (no `label` for test examples)."""
        row = dict(fields)
        row["idx"] = idx
        if self.name == "wic":
            row["version"] = 1.1
        if label is not None:
            if self.name in ("boolq", "wic"):
                row["label"] = bool(label)
            elif self.name == "rte":
                row["label"] = self.labels[label]
            else:
                row["label"] = int(label)
        return row


TASKS: Dict[str, WorldTask] = {
    "boolq": WorldTask("boolq", sample_boolq,
                       "True iff the asked event is the effect of the passage's event"),
    "rte": WorldTask("rte", sample_rte,
                     "entailment iff the owned thing is the named thing or belongs to the "
                     "named category"),
    "copa": WorldTask("copa", sample_copa,
                      "the alternative linked to the premise by a cause -> effect rule"),
    "wic": WorldTask("wic", sample_wic,
                     "True iff the word's sense (set by its context word) agrees"),
}
TASK_NAMES: Tuple[str, ...] = tuple(TASKS)


def prefix(task: str, negated: bool = False) -> str:
    """T5's task-name prefix of a world task, used in pretraining: `boolq`, or
    `not boolq` for its negated twin (opposite answers)."""
    return f"not {task}" if negated else task
