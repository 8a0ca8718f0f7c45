"""The world's classification tasks, shaped like SuperGLUE tasks, and their rules.

Each task draws an example *for a requested label* (so splits are exactly balanced) and
returns it with the official SuperGLUE JSONL field names:

* `boolq` (BoolQ-like) - a passage of 3-4 sentences placing objects in rooms, sometimes
  followed by a move ("then bob moved the cup to the attic ."); question "is the cup in
  the attic". True iff the object's *last* stated place is the asked place. The asked
  place is always mentioned in the passage, and for a moved object the wrong answer is
  often its earlier place, so neither "the place is mentioned" nor "the object is
  mentioned" gives the answer away.
* `rte` (RTE-like) - a premise of 2-4 people owning things ("alice owns a tulip ."); a
  hypothesis "<person> has a <category or thing>". Entailment iff that person's thing is
  (a member of) the named category. Needs the category knowledge (tulip -> flower) and
  the person/thing binding: most non-entailed hypotheses name a category or a thing
  that *another* person of the premise has.
* `copa` (COPA-like) - a premise event, `question` 'cause' or 'effect' and two
  alternatives; the answer is the alternative linked to the premise by one of the
  world's 28 cause -> effect rules, the distractor comes from another rule (same
  person).
* `wic` (WiC-like) - an ambiguous word (bank, bat, bark, ...) in two sentences; its sense
  in each sentence is set by one context word (bank near 'river' vs near 'money'); True
  iff both senses agree. The two context words always differ, so word overlap gives
  nothing away.

Every task also has a *negated twin* (`negated=True`): the same inputs with the opposite
answer. The pretraining mixture teaches both, each behind its own task-name prefix, and
shows some inputs without any prefix labelled by either; so the frozen model knows every
rule but, given a bare input, cannot tell which of the twins is wanted. A prompt has to
select the task - that is what prompt tuning must learn on this world.

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
BOOLQ_MOVE_PROB = 0.5
BOOLQ_QUESTIONS = ("is the {obj} in the {place}", "can the {obj} be found in the {place}")


def sample_boolq(rng: random.Random, label: int) -> Fields:
    """A passage about where things are and a yes/no question (label 1 = True)."""
    n = rng.randint(3, 4)
    objects = g.sample_distinct(rng, g.OBJECTS, n)
    people = g.sample_distinct(rng, g.PEOPLE, n + 1)
    while True:
        places = [rng.choice(g.PLACES) for _ in objects]
        if len(set(places)) >= 2:
            break
    sentences = []
    for obj, place, person in zip(objects, places, people):
        template = rng.choice(g.PLACE_TEMPLATES)
        sentences.append(g.fill(template, color=rng.choice(g.COLORS), obj=obj, place=place,
                                p=person))
    current = dict(zip(objects, places))
    earlier: Dict[str, str] = {}
    moved = None
    if rng.random() < BOOLQ_MOVE_PROB:
        moved = rng.choice(objects)
        # Prefer a destination already mentioned (so the destination is not new text).
        options = [p for p in set(places) if p != current[moved]]
        if not options or rng.random() < 0.3:
            options = [p for p in g.PLACES if p != current[moved]]
        destination = rng.choice(sorted(options))
        sentences.append(g.fill(rng.choice(g.MOVE_TEMPLATES), obj=moved, place=destination,
                                p=people[-1]))
        earlier[moved] = current[moved]
        current[moved] = destination
    target = moved if (moved is not None and rng.random() < 0.6) else rng.choice(objects)
    mentioned = sorted(set(places) | set(current.values()))
    if label == 1:
        place = current[target]
    elif target in earlier and rng.random() < 0.7:
        place = earlier[target]
    else:
        place = rng.choice([p for p in mentioned if p != current[target]])
    question = g.fill(rng.choice(BOOLQ_QUESTIONS), obj=target, place=place)
    return {"question": question, "passage": " ".join(sentences)}


# --------------------------------------------------------------------------- RTE-like
def _thing_phrase(word: str) -> str:
    return g.with_article(word)


def sample_rte(rng: random.Random, label: int) -> Fields:
    """Ownership facts and a hypothesis about one person (label 0 = entailment)."""
    n = rng.randint(2, 4)
    people = g.sample_distinct(rng, g.PEOPLE, n + 1)
    owners, outsider = people[:n], people[n]
    categories = g.sample_distinct(rng, sorted(g.CATEGORIES), n)
    things = [rng.choice(g.CATEGORIES[c]) for c in categories]
    premise = " ".join(f"{p} {rng.choice(g.OWN_VERBS)} {_thing_phrase(t)} ."
                       for p, t in zip(owners, things))
    i = rng.randrange(n)
    by_category = rng.random() < 0.6
    person = owners[i]
    if label == 0:
        named = categories[i] if by_category else things[i]
    else:
        r = rng.random()
        if r < 0.6:  # another owner's category / thing (binding)
            j = rng.choice([k for k in range(n) if k != i])
            named = categories[j] if by_category else things[j]
        elif r < 0.7:  # someone not in the premise, with a category / thing that is
            person = outsider
            named = categories[i] if by_category else things[i]
        elif by_category:  # a category nobody has
            named = rng.choice([c for c in sorted(g.CATEGORIES) if c not in categories])
        else:  # another member of the same category
            named = rng.choice([t for t in g.CATEGORIES[categories[i]] if t != things[i]])
    verb = rng.choice(("has", "owns"))
    hypothesis = f"{person} {verb} {_thing_phrase(named)} ."
    return {"premise": premise, "hypothesis": hypothesis}


# --------------------------------------------------------------------------- COPA-like
def sample_copa(rng: random.Random, label: int) -> Fields:
    """A premise, 'cause' or 'effect', and two alternatives (label = correct one)."""
    k, other = rng.sample(range(len(g.CAUSAL_PAIRS)), 2)
    person = rng.choice(g.PEOPLE)
    question = rng.choice(("cause", "effect"))
    cause, effect = g.CAUSAL_PAIRS[k]
    side = 1 if question == "effect" else 0
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
                       "True iff the object's last stated place is the asked place"),
    "rte": WorldTask("rte", sample_rte,
                     "entailment iff that person's thing is (a member of) the named "
                     "category or thing"),
    "copa": WorldTask("copa", sample_copa,
                      "the alternative linked to the premise by a cause -> effect rule"),
    "wic": WorldTask("wic", sample_wic,
                     "True iff the word's sense (set by its context word) agrees"),
}
TASK_NAMES: Tuple[str, ...] = tuple(TASKS)


def prefix(task: str, negated: bool = False) -> str:
    """Task-name prefix used in pretraining: 'boolq' or 'boolq negated'."""
    return f"{task} negated" if negated else task
