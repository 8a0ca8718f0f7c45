"""Invented GLUE examples in the official TSV layout (``<TASK>/{train,dev,test}.tsv``).

Column layouts follow the official GLUE distribution: CoLA train/dev without a header
(source, label, original label, sentence); MRPC with a UTF-8 BOM; MNLI with
``dev_matched`` / ``dev_mismatched`` / ``test_matched`` / ``test_mismatched``; test
files without labels. Nothing here is real data.
"""

import pathlib

T = "\t"


def _lines(*rows):
    return "".join(T.join(r) + "\n" for r in rows)


GLUE_FILES = {
    "CoLA/train.tsv": _lines(
        ("src1", "1", "", "The cat sat."),
        ("src1", "0", "*", "Cat the sat."),
        ("src2", "1", "", "Dogs bark."),
    ),
    "CoLA/dev.tsv": _lines(
        ("src3", "0", "*", "Sat cat the."),
        ("src3", "1", "", "Birds sing."),
    ),
    "CoLA/test.tsv": _lines(("index", "sentence"), ("0", "Fish swim.")),
    "SST-2/train.tsv": _lines(("sentence", "label"), ("a great film ", "1"),
                              ("a dull mess ", "0")),
    "SST-2/dev.tsv": _lines(("sentence", "label"), ("truly moving ", "1")),
    "SST-2/test.tsv": _lines(("index", "sentence"), ("0", "so so ")),
    "MRPC/train.tsv": "\ufeff" + _lines(
        ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        ("1", "11", "12", "He left early.", "He departed early."),
        ("0", "13", "14", "She won.", "She lost."),
    ),
    "MRPC/dev.tsv": "\ufeff" + _lines(
        ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        ("1", "15", "16", "It is big.", "It is large."),
    ),
    "MRPC/test.tsv": "\ufeff" + _lines(
        ("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        ("0", "17", "18", "A b.", "C d."),
    ),
    "QQP/train.tsv": _lines(
        ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        ("0", "1", "2", "How to cook rice?", "How do I cook rice?", "1"),
        ("1", "3", "4", "Why is sky blue?", "What is rice?", "0"),
        # A corrupted row (missing columns): skipped, as TFDS does.
        ("2", "5", "6", "Broken row"),
        ("3", "7", "8", "Is it?", "Is it not?", "0"),
    ),
    "QQP/dev.tsv": _lines(
        ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        ("0", "1", "2", "Who am I?", "Who are you?", "0"),
    ),
    "QQP/test.tsv": _lines(("id", "question1", "question2"),
                           ("0", "Q one?", "Q two?")),
    "STS-B/train.tsv": _lines(
        ("index", "genre", "filename", "year", "old_index", "source1", "source2",
         "sentence1", "sentence2", "score"),
        ("0", "g", "f", "y", "0", "s", "s", "A man sings.", "A man sang.",
         "3.800"),
        ("1", "g", "f", "y", "1", "s", "s", "A dog runs.", "A cat sleeps.",
         "0.500"),
        ("2", "g", "f", "y", "2", "s", "s", "Kids play.", "Children play.",
         "4.620"),
    ),
    "STS-B/dev.tsv": _lines(
        ("index", "genre", "filename", "year", "old_index", "source1", "source2",
         "sentence1", "sentence2", "score"),
        ("0", "g", "f", "y", "0", "s", "s", "It rains.", "Rain falls.", "2.550"),
        ("1", "g", "f", "y", "1", "s", "s", "Sun is hot.", "Sun is hot.",
         "5.000"),
    ),
    "STS-B/test.tsv": _lines(
        ("index", "genre", "filename", "year", "old_index", "source1", "source2",
         "sentence1", "sentence2"),
        ("0", "g", "f", "y", "0", "s", "s", "One.", "Two."),
    ),
    "QNLI/train.tsv": _lines(
        ("index", "question", "sentence", "label"),
        ("0", "Where is Rome?", "Rome is in Italy.", "entailment"),
        ("1", "Who wrote it?", "It is long.", "not_entailment"),
    ),
    "QNLI/dev.tsv": _lines(("index", "question", "sentence", "label"),
                           ("0", "What is red?", "Blood is red.", "entailment")),
    "QNLI/test.tsv": _lines(("index", "question", "sentence"),
                            ("0", "Why?", "Because.")),
    "RTE/train.tsv": _lines(
        ("index", "sentence1", "sentence2", "label"),
        ("0", "Ann is a nurse.", "Ann works.", "entailment"),
        ("1", "Bob sleeps.", "Bob runs.", "not_entailment"),
    ),
    "RTE/dev.tsv": _lines(("index", "sentence1", "sentence2", "label"),
                          ("0", "Cy eats.", "Cy is fed.", "entailment")),
    "RTE/test.tsv": _lines(("index", "sentence1", "sentence2"),
                           ("0", "Di reads.", "Di sees.")),
}

_MNLI_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse",
                "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
                "sentence1", "sentence2")


def _mnli(rows, labeled=True):
    header = _MNLI_HEADER + (("label1", "gold_label") if labeled else ())
    out = [header]
    for i, (s1, s2, gold) in enumerate(rows):
        row = (str(i), "p", "q", "fiction", "( x )", "( y )", "(S x)", "(S y)", s1, s2)
        if labeled:
            row += (gold, gold)
        out.append(row)
    return _lines(*out)


GLUE_FILES.update({
    "MNLI/train.tsv": _mnli([("It is day.", "It is light.", "entailment"),
                             ("It is day.", "It is night.", "contradiction"),
                             ("It is day.", "It is warm.", "neutral")]),
    "MNLI/dev_matched.tsv": _mnli([("A m.", "B m.", "neutral")]),
    "MNLI/dev_mismatched.tsv": _mnli([("A mm.", "B mm.", "contradiction"),
                                      ("C mm.", "D mm.", "entailment")]),
    "MNLI/test_matched.tsv": _mnli([("T m.", "U m.", None)], labeled=False),
    "MNLI/test_mismatched.tsv": _mnli([("T mm.", "U mm.", None)],
                                      labeled=False),
})


def write_glue(root: pathlib.Path) -> pathlib.Path:
    """Writes every GLUE file under ``root``; returns ``root``."""
    root = pathlib.Path(root)
    for rel, content in GLUE_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(content)
    return root
