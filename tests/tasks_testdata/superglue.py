"""Invented SuperGLUE examples in the official JSONL layout (``<Task>/{train,val,test}.jsonl``).

Field names and nesting follow the official SuperGLUE v2 zips. Nothing here is real
data. ``write_superglue(root)`` writes every task; tests state the expected strings.
"""

import json
import pathlib

BOOLQ = {
    "train": [
        {"question": "is the sky blue", "passage": "The sky is blue.",
         "idx": 0, "label": True},
        {"question": "do fish fly", "passage": "Fish swim in water.",
         "idx": 1, "label": False},
        {"question": "is snow cold", "passage": "Snow is frozen water.",
         "idx": 2, "label": True},
    ],
    "val": [
        {"question": "is grass green", "passage": "Grass is green.",
         "idx": 0, "label": True},
        {"question": "can cats talk", "passage": "Cats meow.",
         "idx": 1, "label": False},
    ],
    "test": [
        {"question": "is water wet", "passage": "Water is a liquid.", "idx": 0},
    ],
}

CB = {
    "train": [
        {"premise": "A said it rained.", "hypothesis": "it rained",
         "label": "entailment", "idx": 0},
        {"premise": "B denied it rained.", "hypothesis": "it rained",
         "label": "contradiction", "idx": 1},
        {"premise": "C wondered.", "hypothesis": "it rained",
         "label": "neutral", "idx": 2},
        {"premise": "D knew it rained.", "hypothesis": "it rained",
         "label": "entailment", "idx": 3},
    ],
    "val": [
        {"premise": "E thought so.", "hypothesis": "it is so",
         "label": "neutral", "idx": 0},
        {"premise": "F said no.", "hypothesis": "it is so",
         "label": "contradiction", "idx": 1},
    ],
    "test": [{"premise": "G said yes.", "hypothesis": "it is so", "idx": 0}],
}

COPA = {
    "train": [
        {"premise": "The man fell.", "choice1": "He slipped.",
         "choice2": "He sang.", "question": "cause", "label": 0, "idx": 0},
        {"premise": "It rained.", "choice1": "The road dried.",
         "choice2": "The road got wet.", "question": "effect", "label": 1,
         "idx": 1},
    ],
    "val": [
        {"premise": "I was hungry.", "choice1": "I ate.", "choice2": "I slept.",
         "question": "effect", "label": 0, "idx": 0},
    ],
    "test": [
        {"premise": "She laughed.", "choice1": "A joke.", "choice2": "A loss.",
         "question": "cause", "idx": 0},
    ],
}

_MRC_TEXT = "<b>Sent 1: </b>Tom has two cats.<br><b>Sent 2: </b>He likes them.<br>"
MULTIRC = {
    "train": [
        {"idx": 0, "version": 1.1, "passage": {
            "text": _MRC_TEXT,
            "questions": [
                {"question": "What does Tom have?", "idx": 0, "answers": [
                    {"text": "Cats", "idx": 0, "label": 1},
                    {"text": "Dogs", "idx": 1, "label": 0},
                    {"text": "Two cats", "idx": 2, "label": 1}]},
                {"question": "Who likes them?", "idx": 1, "answers": [
                    {"text": "Tom", "idx": 3, "label": 1},
                    {"text": "Ann", "idx": 4, "label": 0}]},
            ]}},
        {"idx": 1, "version": 1.1, "passage": {
            "text": "Ann runs.",
            "questions": [
                {"question": "Who runs?", "idx": 2, "answers": [
                    {"text": "Ann", "idx": 5, "label": 1}]},
            ]}},
    ],
    "val": [
        {"idx": 0, "version": 1.1, "passage": {
            "text": "<b>Sent 1: </b>Bo sings.<br>",
            "questions": [
                {"question": "Who sings?", "idx": 0, "answers": [
                    {"text": "Bo", "idx": 0, "label": 1},
                    {"text": "Al", "idx": 1, "label": 0}]},
                {"question": "What does Bo do?", "idx": 1, "answers": [
                    {"text": "Sings", "idx": 2, "label": 1}]},
            ]}},
    ],
    "test": [
        {"idx": 0, "version": 1.1, "passage": {
            "text": "Cy reads.",
            "questions": [
                {"question": "Who reads?", "idx": 0, "answers": [
                    {"text": "Cy", "idx": 0}]},
            ]}},
    ],
}

# "Rex barked at Max." entities: Rex [0, 2], Max [14, 16]
_REC_PASSAGE = "Rex barked at Max.\n@highlight\nDogs bark\n@highlight\nMax ran"
RECORD = {
    "train": [
        {"source": "synthetic", "idx": 0, "passage": {
            "text": _REC_PASSAGE,
            "entities": [{"start": 0, "end": 2}, {"start": 14, "end": 16},
                         {"start": 0, "end": 2}]},
         "qas": [
             {"query": "@placeholder barked.", "idx": 0,
              "answers": [{"start": 0, "end": 2, "text": "Rex"}]},
             {"query": "They saw @placeholder.", "idx": 1,
              "answers": [{"start": 14, "end": 16, "text": "Max"},
                          {"start": 0, "end": 2, "text": "Rex"}]},
         ]},
    ],
    "val": [
        {"source": "synthetic", "idx": 0, "passage": {
            "text": "Ida met Joe.", "entities": [{"start": 8, "end": 10},
                                                {"start": 0, "end": 2}]},
         "qas": [{"query": "@placeholder met Joe.", "idx": 0,
                  "answers": [{"start": 0, "end": 2, "text": "Ida"}]}]},
    ],
    "test": [
        {"source": "synthetic", "idx": 0, "passage": {
            "text": "Kim saw Lee.", "entities": [{"start": 0, "end": 2}]},
         "qas": [{"query": "@placeholder saw Lee.", "idx": 0}]},
    ],
}

RTE = {
    "train": [
        {"premise": "Paris is in France.", "hypothesis": "Paris is French.",
         "label": "entailment", "idx": 0},
        {"premise": "Rome is old.", "hypothesis": "Rome is new.",
         "label": "not_entailment", "idx": 1},
        {"premise": "Oslo is cold.", "hypothesis": "Oslo is a city.",
         "label": "entailment", "idx": 2},
        {"premise": "Lima is big.", "hypothesis": "Lima is tiny.",
         "label": "not_entailment", "idx": 3},
        {"premise": "Bern is calm.", "hypothesis": "Bern is loud.",
         "label": "not_entailment", "idx": 4},
    ],
    "val": [
        {"premise": "Kyiv has parks.", "hypothesis": "Kyiv has trees.",
         "label": "entailment", "idx": 0},
        {"premise": "Riga is wet.", "hypothesis": "Riga is dry.",
         "label": "not_entailment", "idx": 1},
    ],
    "test": [{"premise": "Baku is windy.", "hypothesis": "Baku is calm.",
              "idx": 0}],
}

WIC = {
    "train": [
        {"word": "bank", "sentence1": "He sat by the bank.",
         "sentence2": "The bank lent money.", "idx": 0, "label": False,
         "start1": 14, "start2": 4, "end1": 18, "end2": 8, "version": 1.1},
        {"word": "run", "sentence1": "I run daily.", "sentence2": "We run fast.",
         "idx": 1, "label": True, "start1": 2, "start2": 3, "end1": 5,
         "end2": 6, "version": 1.1},
    ],
    "val": [
        {"word": "bat", "sentence1": "A bat flew.", "sentence2": "Swing the bat.",
         "idx": 0, "label": False, "start1": 2, "start2": 10, "end1": 5,
         "end2": 13, "version": 1.1},
    ],
    "test": [
        {"word": "set", "sentence1": "Set it down.", "sentence2": "A chess set.",
         "idx": 0, "start1": 0, "start2": 8, "end1": 3, "end2": 11,
         "version": 1.1},
    ],
}

WSC = {
    "train": [
        {"text": "Mark told Pete lies about himself and he was sorry .",
         "target": {"span1_index": 0, "span1_text": "Mark", "span2_index": 7,
                    "span2_text": "he"}, "idx": 0, "label": True},
        {"text": "Mark told Pete lies about himself and he was sorry .",
         "target": {"span1_index": 2, "span1_text": "Pete", "span2_index": 7,
                    "span2_text": "he"}, "idx": 1, "label": False},
        {"text": "The cup hit the glass and it broke .",
         "target": {"span1_index": 3, "span1_text": "the glass",
                    "span2_index": 6, "span2_text": "it"}, "idx": 2,
         "label": True},
    ],
    "val": [
        # span1_text with a trailing '.' and wrong case: fixed as TFDS wsc.fixed.
        {"text": "Anna thanked Beth because she helped her .",
         "target": {"span1_index": 2, "span1_text": "beth.", "span2_index": 4,
                    "span2_text": "she"}, "idx": 0, "label": True},
        {"text": "Anna thanked Beth because she helped her .",
         "target": {"span1_index": 0, "span1_text": "Anna", "span2_index": 4,
                    "span2_text": "she"}, "idx": 1, "label": False},
    ],
    "test": [
        {"text": "Joe hugged Sam because he was sad .",
         "target": {"span1_index": 0, "span1_text": "Joe", "span2_index": 4,
                    "span2_text": "he"}, "idx": 0},
    ],
}

SUPERGLUE = {
    "BoolQ": BOOLQ, "CB": CB, "COPA": COPA, "MultiRC": MULTIRC,
    "ReCoRD": RECORD, "RTE": RTE, "WiC": WIC, "WSC": WSC,
}


def write_jsonl(path: pathlib.Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_superglue(root: pathlib.Path) -> pathlib.Path:
    """Writes all tasks under ``root`` in the official layout; returns ``root``."""
    root = pathlib.Path(root)
    for task_dir, splits in SUPERGLUE.items():
        for split, rows in splits.items():
            write_jsonl(root / task_dir / f"{split}.jsonl", rows)
    return root
