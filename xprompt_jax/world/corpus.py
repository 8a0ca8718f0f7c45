"""The world's plain-text corpus and its SentencePiece vocabulary.

`documents(rng)` yields short documents (a few sentences of the world's grammar: stories
about things in rooms, ownership facts, cause-and-effect statements, sentences with
ambiguous words). They feed span corruption in pretraining and, with the task formats,
prefixes and label words, the SentencePiece training text.

`train_sentencepiece(prefix)` trains the world's vocabulary with T5's special ids (pad 0,
eos 1, unk 2, no bos), used as `seqio.SentencePieceVocabulary(path, extra_ids=100)` so
span corruption has T5's sentinels. It is a BPE model: on this closed corpus (about 370
distinct words) sentencepiece's unigram trainer stops near 330 pieces and splits even
frequent words ('is' -> '_' 'is'), while BPE with 600 pieces keeps the frequent words,
the label words and the task names whole (rarer words are split into subwords).
"""

from __future__ import annotations

import random
from typing import Iterator, List

from . import grammar as g
from . import tasks as tasks_lib

SPM_VOCAB_SIZE = 600
EXTRA_IDS = 100


def causal_statement(rng: random.Random) -> str:
    cause, effect = rng.choice(g.CAUSAL_PAIRS)
    person = rng.choice(g.PEOPLE)
    cause, effect = cause.format(p=person), effect.format(p=person)
    form = rng.randrange(3)
    if form == 0:
        return f"{cause} , so {effect} ."
    if form == 1:
        return f"{effect} because {cause} ."
    return f"{cause} . as a result , {effect} ."


def _sentences(text: str) -> List[str]:
    parts = [s.strip() for s in text.split(" .") if s.strip()]
    return [p + " ." for p in parts]


def document(rng: random.Random) -> str:
    """A short document of world sentences (3-6 sentences)."""
    pieces: List[str] = []
    kinds = ["story", "owners", "causal", "senses"]
    for kind in rng.sample(kinds, rng.randint(1, 3)):
        label = rng.randrange(2)
        if kind == "story":
            pieces += [tasks_lib.place_fact(rng) for _ in range(rng.randint(1, 3))]
        elif kind == "owners":
            pieces += _sentences(tasks_lib.sample_rte(rng, label)["premise"])
        elif kind == "causal":
            pieces += [causal_statement(rng) for _ in range(rng.randint(1, 2))]
        else:
            ex = tasks_lib.sample_wic(rng, label)
            pieces += [ex["sentence1"], ex["sentence2"]][: rng.randint(1, 2)]
    return " ".join(pieces[:6])


def documents(rng: random.Random) -> Iterator[str]:
    while True:
        yield document(rng)


def spm_training_lines(seed: int = 0, num_documents: int = 20000) -> List[str]:
    """Corpus documents, every task's inputs (with and without prefixes), and the label
    words, task names and field names repeated so that they become whole pieces."""
    rng = random.Random(f"{seed}/spm")
    lines = [document(rng) for _ in range(num_documents)]
    for name, task in tasks_lib.TASKS.items():
        for i in range(500):
            label = i % 2
            fields = task.sample(rng, label)
            lines.append(task.render(fields, tasks_lib.prefix(name) if i % 2 else None))
            lines.append(task.target(label))
        fields_line = tasks_lib.LESTER_FORMATS[name].replace("{", "").replace("}", "")
        lines += [fields_line, tasks_lib.prefix(name)] * 2000
        lines += list(task.labels) * 2000
    return lines


def train_sentencepiece(model_prefix: str, seed: int = 0,
                        vocab_size: int = SPM_VOCAB_SIZE) -> str:
    """Trains the world's SentencePiece model; returns the `.model` path."""
    import sentencepiece as spm

    lines = spm_training_lines(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=model_prefix, model_type="bpe",
        vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)
    return model_prefix + ".model"


def check_vocab_coverage(model_path: str) -> List[str]:
    """Words of the grammar that the model cannot encode without <unk> (should be [])."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path)
    words = g.all_words() + [w for labels in tasks_lib.LESTER_LABELS.values() for w in labels]
    return [w for w in words if sp.unk_id() in sp.encode(w)]

