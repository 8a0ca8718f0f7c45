"""GLUE tasks on synthetic official-format TSV files, and EPT's extra TFDS tasks (mocked).

Expected strings are T5's GLUE formats without the task name, written out by hand.
"""

import re

import pytest

from _tasks_import import T5_SPM, import_tasks
from tasks_testdata.glue import write_glue


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = write_glue(tmp_path_factory.mktemp("glue"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XPROMPT_GLUE_DIR", str(root))
        mp.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
        yield import_tasks()


def _read(name, split):
    import seqio
    ds = seqio.get_mixture_or_task(name).get_dataset(None, split=split,
                                                      shuffle=False)
    return list(ds.as_numpy_iterator())


def _rows(examples):
    return [(ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode(),
             int(ex["idx"])) for ex in examples]


EXPECTED = {
    "cola": {
        "train": [("sentence: The cat sat.", "acceptable", 0),
                  ("sentence: Cat the sat.", "unacceptable", 1),
                  ("sentence: Dogs bark.", "acceptable", 2)],
        "validation": [("sentence: Sat cat the.", "unacceptable", 0),
                       ("sentence: Birds sing.", "acceptable", 1)],
        "test": [("sentence: Fish swim.", "<unk>", 0)],
    },
    "sst2": {
        "train": [("sentence: a great film ", "positive", 0),
                  ("sentence: a dull mess ", "negative", 1)],
        "validation": [("sentence: truly moving ", "positive", 0)],
        "test": [("sentence: so so ", "<unk>", 0)],
    },
    "mrpc": {
        "train": [("sentence1: He left early. sentence2: He departed early.",
                   "equivalent", 0),
                  ("sentence1: She won. sentence2: She lost.", "not_equivalent", 1)],
        "validation": [("sentence1: It is big. sentence2: It is large.",
                        "equivalent", 0)],
        "test": [("sentence1: A b. sentence2: C d.", "<unk>", 0)],
    },
    "qqp": {
        # Row 2 has missing columns and is dropped (idx keeps counting, as TFDS).
        "train": [("question1: How to cook rice? question2: How do I cook rice?",
                   "duplicate", 0),
                  ("question1: Why is sky blue? question2: What is rice?",
                   "not_duplicate", 1),
                  ("question1: Is it? question2: Is it not?", "not_duplicate", 3)],
        "validation": [("question1: Who am I? question2: Who are you?",
                        "not_duplicate", 0)],
        "test": [("question1: Q one? question2: Q two?", "<unk>", 0)],
    },
    "stsb": {
        # T5: round(score * 5) / 5 with one decimal (tf.round: half to even).
        "train": [("sentence1: A man sings. sentence2: A man sang.", "3.8", 0),
                  ("sentence1: A dog runs. sentence2: A cat sleeps.", "0.4", 1),
                  ("sentence1: Kids play. sentence2: Children play.", "4.6", 2)],
        "validation": [("sentence1: It rains. sentence2: Rain falls.", "2.6", 0),
                       ("sentence1: Sun is hot. sentence2: Sun is hot.", "5.0", 1)],
        "test": [("sentence1: One. sentence2: Two.", "-1.0", 0)],
    },
    "mnli": {
        "train": [("hypothesis: It is light. premise: It is day.", "entailment", 0),
                  ("hypothesis: It is night. premise: It is day.",
                   "contradiction", 1),
                  ("hypothesis: It is warm. premise: It is day.", "neutral", 2)],
        "validation": [("hypothesis: B m. premise: A m.", "neutral", 0)],
        "validation_matched": [("hypothesis: B m. premise: A m.", "neutral", 0)],
        "validation_mismatched": [
            ("hypothesis: B mm. premise: A mm.", "contradiction", 0),
            ("hypothesis: D mm. premise: C mm.", "entailment", 1)],
        "test_matched": [("hypothesis: U m. premise: T m.", "<unk>", 0)],
        "test_mismatched": [("hypothesis: U mm. premise: T mm.", "<unk>", 0)],
    },
    "mnli_mismatched": {
        "validation": [("hypothesis: B mm. premise: A mm.", "contradiction", 0),
                       ("hypothesis: D mm. premise: C mm.", "entailment", 1)],
        "test": [("hypothesis: U mm. premise: T mm.", "<unk>", 0)],
    },
    "qnli": {
        "train": [("question: Where is Rome? sentence: Rome is in Italy.",
                   "entailment", 0),
                  ("question: Who wrote it? sentence: It is long.",
                   "not_entailment", 1)],
        "validation": [("question: What is red? sentence: Blood is red.",
                        "entailment", 0)],
        "test": [("question: Why? sentence: Because.", "<unk>", 0)],
    },
    "rte": {
        "train": [("sentence1: Ann is a nurse. sentence2: Ann works.", "entailment",
                   0),
                  ("sentence1: Bob sleeps. sentence2: Bob runs.", "not_entailment",
                   1)],
        "validation": [("sentence1: Cy eats. sentence2: Cy is fed.", "entailment",
                        0)],
        "test": [("sentence1: Di reads. sentence2: Di sees.", "<unk>", 0)],
    },
}


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_glue_local_strings(tasks, task):
    for split, expected in EXPECTED[task].items():
        assert _rows(_read(f"lester_glue_{task}_local", split)) == expected, split


def test_glue_labels_and_metrics(tasks):
    stsb = _read("lester_glue_stsb_local", "validation")
    assert [round(float(e["label"]), 3) for e in stsb] == [2.55, 5.0]
    assert tasks.get_label_strings("lester_glue_stsb_v200")[:3] == ["0.0", "0.2",
                                                                    "0.4"]
    assert len(tasks.get_label_strings("lester_glue_stsb_local")) == 26
    assert tasks.get_label_strings("lester_glue_mnli_local") == [
        "entailment", "neutral", "contradiction"]
    assert tasks.get_main_metric("lester_glue_cola_local") == "matthews_corrcoef"
    assert tasks.get_metric_components("lester_glue_stsb_v200") == (
        "pearson_corrcoef", "spearman_corrcoef")
    assert tasks.get_metric_components("lester_glue_mrpc_v200") == ("f1", "accuracy")
    assert tasks.get_main_metric("lester_glue_sst2_v200") == "accuracy"


def test_glue_bad_label_names_file_and_line(tasks, tmp_path, monkeypatch):
    monkeypatch.setenv("XPROMPT_GLUE_DIR", str(tmp_path))
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    with pytest.raises(tasks.readers.DataFileError,
                       match=r"RTE[/\\]dev\.tsv:3: column 'label' has invalid value "
                             r"'maybe'"):
        _read("lester_glue_rte_local", "validation")
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tlabel\n")
    with pytest.raises(tasks.readers.DataFileError,
                       match=r"train\.tsv:1: header lacks column\(s\) \['sentence2'\]"):
        _read("lester_glue_rte_local", "train")


_EPT_INPUT_PATTERNS = {
    "lester_scitail_v100": (r"hypothesis: .* premise: .*", {"entails", "neutral"}),
    "lester_paws_wiki_v110": (r"sentence1: .* sentence2: .*",
                              {"different_meaning", "paraphrase"}),
    "lester_yelp_polarity_v020": (r"text: .*", {"negative", "positive"}),
    "lester_winogrande_v120": (r"option1: .* option2: .* sentence: .*",
                               {"option1", "option2"}),
}


def test_ept_tfds_tasks_run_on_mocked_tfds(tasks):
    import seqio
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=3,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        for name, (pattern, labels) in _EPT_INPUT_PATTERNS.items():
            task = seqio.get_mixture_or_task(name)
            # Yelp's train / validation re-split needs more than 10K mocked examples.
            splits = ("test",) if "yelp" in name else ("train", "validation")
            for split in splits:
                exs = list(task.get_dataset(None, split=split, shuffle=False,
                                            try_in_mem_cache=False).as_numpy_iterator())
                assert len(exs) == 3, (name, split)
                for ex in exs:
                    assert re.fullmatch(pattern, ex["inputs_pretokenized"].decode(),
                                        flags=re.S), name
                    assert ex["targets_pretokenized"].decode() in labels | {"<unk>"}, name


def test_glue_tfds_1_0_0_source_as_t5_0_9(tasks):
    """T5 0.9's `glue_<task>_v002` tasks (Lester et al.) read TFDS glue 1.0.0; `v100` is
    that version, with the same format and metrics as `v200`."""
    import seqio
    for task in ("qqp", "mrpc", "rte"):
        v100 = seqio.get_mixture_or_task(f"lester_glue_{task}_v100")
        v200 = seqio.get_mixture_or_task(f"lester_glue_{task}_v200")
        assert v100.source.tfds_dataset.name == f"glue/{task}:1.0.0"
        assert v200.source.tfds_dataset.name == f"glue/{task}:2.0.0"
        assert tasks.get_label_strings(f"lester_glue_{task}_v100") == \
            tasks.get_label_strings(f"lester_glue_{task}_v200")
    mm = seqio.get_mixture_or_task("lester_glue_mnli_mismatched_v100")
    assert mm.source.tfds_dataset.name == "glue/mnli:1.0.0"
