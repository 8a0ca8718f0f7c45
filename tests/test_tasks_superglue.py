"""SuperGLUE tasks on synthetic official-format JSONL files (offline, real T5 vocabulary).

Expected strings are written out by hand from the XPrompt paper's Table 10 and T5's
SuperGLUE formats (taskless), not produced by the code under test.
"""

import json
import os

import pytest
import sentencepiece as spm

from _tasks_import import T5_SPM, import_tasks
from tasks_testdata.superglue import write_superglue

S = "<extra_id_0>"


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = write_superglue(tmp_path_factory.mktemp("superglue"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XPROMPT_SUPERGLUE_DIR", str(root))
        mp.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
        yield import_tasks()


def _read(name, split, sequence_length=None):
    import seqio
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(sequence_length, split=split, shuffle=False)
    return list(ds.as_numpy_iterator())


def _pairs(examples):
    return [(ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode())
            for ex in examples]


MRC_PARA = "Sent 1: Tom has two cats. Sent 2: He likes them. "
REC_PASSAGE = "Rex barked at Max. Dogs bark. Max ran"

XPROMPT_EXPECTED = {
    "boolq": {
        "train": [
            ("hypothesis: is the sky blue. premise: The sky is blue. " + S, S + " yes"),
            ("hypothesis: do fish fly. premise: Fish swim in water. " + S, S + " no"),
            ("hypothesis: is snow cold. premise: Snow is frozen water. " + S,
             S + " yes"),
        ],
        "validation": [
            ("hypothesis: is grass green. premise: Grass is green. " + S, S + " yes"),
            ("hypothesis: can cats talk. premise: Cats meow. " + S, S + " no"),
        ],
        "test": [("hypothesis: is water wet. premise: Water is a liquid. " + S,
                  S + " <unk>")],
    },
    "cb": {
        "train": [
            ("hypothesis: it rained. premise: A said it rained. " + S,
             S + " entailment"),
            ("hypothesis: it rained. premise: B denied it rained. " + S,
             S + " contradiction"),
            ("hypothesis: it rained. premise: C wondered. " + S, S + " neutral"),
            ("hypothesis: it rained. premise: D knew it rained. " + S,
             S + " entailment"),
        ],
        "validation": [
            ("hypothesis: it is so. premise: E thought so. " + S, S + " neutral"),
            ("hypothesis: it is so. premise: F said no. " + S, S + " contradiction"),
        ],
        "test": [("hypothesis: it is so. premise: G said yes. " + S, S + " <unk>")],
    },
    "copa": {
        "train": [
            ("choice1: He slipped. choice2: He sang. premise: The man fell. "
             "question: cause " + S, S + " choice1"),
            ("choice1: The road dried. choice2: The road got wet. premise: It "
             "rained. question: effect " + S, S + " choice2"),
        ],
        "validation": [
            ("choice1: I ate. choice2: I slept. premise: I was hungry. question: "
             "effect " + S, S + " choice1"),
        ],
        "test": [("choice1: A joke. choice2: A loss. premise: She laughed. "
                  "question: cause " + S, S + " <unk>")],
    },
    "multirc": {
        "train": [
            ("question: What does Tom have? answer: Cats. paragraph: " + MRC_PARA
             + " " + S, S + " yes"),
            ("question: What does Tom have? answer: Dogs. paragraph: " + MRC_PARA
             + " " + S, S + " no"),
            ("question: What does Tom have? answer: Two cats. paragraph: "
             + MRC_PARA + " " + S, S + " yes"),
            ("question: Who likes them? answer: Tom. paragraph: " + MRC_PARA + " "
             + S, S + " yes"),
            ("question: Who likes them? answer: Ann. paragraph: " + MRC_PARA + " "
             + S, S + " no"),
            ("question: Who runs? answer: Ann. paragraph: Ann runs. " + S,
             S + " yes"),
        ],
        "validation": [
            ("question: Who sings? answer: Bo. paragraph: Sent 1: Bo sings.  " + S,
             S + " yes"),
            ("question: Who sings? answer: Al. paragraph: Sent 1: Bo sings.  " + S,
             S + " no"),
            ("question: What does Bo do? answer: Sings. paragraph: Sent 1: Bo "
             "sings.  " + S, S + " yes"),
        ],
        "test": [("question: Who reads? answer: Cy. paragraph: Cy reads. " + S,
                  S + " <unk>")],
    },
    "record": {
        "train": [
            ("query: @placeholder barked. entities: Max, Rex passage: " + REC_PASSAGE
             + " " + S, S + " Rex"),
            ("query: They saw @placeholder. entities: Max, Rex passage: "
             + REC_PASSAGE + " " + S, S + " Max"),
            ("query: They saw @placeholder. entities: Max, Rex passage: "
             + REC_PASSAGE + " " + S, S + " Rex"),
        ],
        "validation": [
            ("query: @placeholder met Joe. entities: Ida, Joe passage: Ida met Joe. "
             + S, S + " Ida"),
        ],
        "test": [("query: @placeholder saw Lee. entities: Kim passage: Kim saw Lee. "
                  + S, S + " <unk>")],
    },
    "rte": {
        "train": [
            ("sentence1: Paris is in France. sentence2: Paris is French. " + S,
             S + " entailment"),
            ("sentence1: Rome is old. sentence2: Rome is new. " + S,
             S + " contradiction"),
            ("sentence1: Oslo is cold. sentence2: Oslo is a city. " + S,
             S + " entailment"),
            ("sentence1: Lima is big. sentence2: Lima is tiny. " + S,
             S + " contradiction"),
            ("sentence1: Bern is calm. sentence2: Bern is loud. " + S,
             S + " contradiction"),
        ],
        "validation": [
            ("sentence1: Kyiv has parks. sentence2: Kyiv has trees. " + S,
             S + " entailment"),
            ("sentence1: Riga is wet. sentence2: Riga is dry. " + S,
             S + " contradiction"),
        ],
        "test": [("sentence1: Baku is windy. sentence2: Baku is calm. " + S,
                  S + " <unk>")],
    },
    "wic": {
        "train": [
            ("sentence1: He sat by the bank. sentence2: The bank lent money. word: "
             "bank " + S, S + " no"),
            ("sentence1: I run daily. sentence2: We run fast. word: run " + S,
             S + " yes"),
        ],
        "validation": [
            ("sentence1: A bat flew. sentence2: Swing the bat. word: bat " + S,
             S + " no"),
        ],
        "test": [("sentence1: Set it down. sentence2: A chess set. word: set " + S,
                  S + " <unk>")],
    },
    "wsc": {
        "train": [
            ('Mark told Pete lies about himself and he was sorry . "he" refers to '
             '"Mark" or another word ? ' + S, S + " Mark"),
            ('Mark told Pete lies about himself and he was sorry . "he" refers to '
             '"Pete" or another word ? ' + S, S + " another word"),
            ('The cup hit the glass and it broke . "it" refers to "the glass" or '
             "another word ? " + S, S + " the glass"),
        ],
        "validation": [
            # span1_text "beth." repaired to "Beth" as TFDS's wsc.fixed does.
            ('Anna thanked Beth because she helped her . "she" refers to "Beth" or '
             "another word ? " + S, S + " Beth"),
            ('Anna thanked Beth because she helped her . "she" refers to "Anna" or '
             "another word ? " + S, S + " another word"),
        ],
        "test": [('Joe hugged Sam because he was sad . "he" refers to "Joe" or '
                  "another word ? " + S, S + " <unk>")],
    },
}

LESTER_EXPECTED = {
    "boolq": {
        "train": [("passage: The sky is blue. question: is the sky blue", "True"),
                  ("passage: Fish swim in water. question: do fish fly", "False"),
                  ("passage: Snow is frozen water. question: is snow cold", "True")],
        "validation": [("passage: Grass is green. question: is grass green", "True"),
                       ("passage: Cats meow. question: can cats talk", "False")],
        "test": [("passage: Water is a liquid. question: is water wet", "<unk>")],
    },
    "cb": {
        "train": [("hypothesis: it rained premise: A said it rained.", "entailment"),
                  ("hypothesis: it rained premise: B denied it rained.",
                   "contradiction"),
                  ("hypothesis: it rained premise: C wondered.", "neutral"),
                  ("hypothesis: it rained premise: D knew it rained.",
                   "entailment")],
        "validation": [("hypothesis: it is so premise: E thought so.", "neutral"),
                       ("hypothesis: it is so premise: F said no.",
                        "contradiction")],
        "test": [("hypothesis: it is so premise: G said yes.", "<unk>")],
    },
    "copa": {
        "train": [("choice1: He slipped. choice2: He sang. premise: The man fell. "
                   "question: cause", "choice1"),
                  ("choice1: The road dried. choice2: The road got wet. premise: It "
                   "rained. question: effect", "choice2")],
        "validation": [("choice1: I ate. choice2: I slept. premise: I was hungry. "
                        "question: effect", "choice1")],
        "test": [("choice1: A joke. choice2: A loss. premise: She laughed. "
                  "question: cause", "<unk>")],
    },
    "multirc": {
        "train": [
            ("question: What does Tom have? answer: Cats paragraph: " + MRC_PARA,
             "True"),
            ("question: What does Tom have? answer: Dogs paragraph: " + MRC_PARA,
             "False"),
            ("question: What does Tom have? answer: Two cats paragraph: " + MRC_PARA,
             "True"),
            ("question: Who likes them? answer: Tom paragraph: " + MRC_PARA, "True"),
            ("question: Who likes them? answer: Ann paragraph: " + MRC_PARA,
             "False"),
            ("question: Who runs? answer: Ann paragraph: Ann runs.", "True"),
        ],
        "validation": [
            ("question: Who sings? answer: Bo paragraph: Sent 1: Bo sings. ", "True"),
            ("question: Who sings? answer: Al paragraph: Sent 1: Bo sings. ",
             "False"),
            ("question: What does Bo do? answer: Sings paragraph: Sent 1: Bo sings. ",
             "True"),
        ],
        "test": [("question: Who reads? answer: Cy paragraph: Cy reads.", "<unk>")],
    },
    "record": {
        "train": [
            ("query: @placeholder barked. entities: Max, Rex passage: " + REC_PASSAGE,
             "Rex"),
            ("query: They saw @placeholder. entities: Max, Rex passage: "
             + REC_PASSAGE, "Max"),
            ("query: They saw @placeholder. entities: Max, Rex passage: "
             + REC_PASSAGE, "Rex"),
        ],
        "validation": [("query: @placeholder met Joe. entities: Ida, Joe passage: "
                        "Ida met Joe.", "Ida")],
        "test": [("query: @placeholder saw Lee. entities: Kim passage: Kim saw Lee.",
                  "<unk>")],
    },
    "rte": {
        "train": [
            ("hypothesis: Paris is French. premise: Paris is in France.",
             "entailment"),
            ("hypothesis: Rome is new. premise: Rome is old.", "not_entailment"),
            ("hypothesis: Oslo is a city. premise: Oslo is cold.", "entailment"),
            ("hypothesis: Lima is tiny. premise: Lima is big.", "not_entailment"),
            ("hypothesis: Bern is loud. premise: Bern is calm.", "not_entailment"),
        ],
        "validation": [
            ("hypothesis: Kyiv has trees. premise: Kyiv has parks.", "entailment"),
            ("hypothesis: Riga is dry. premise: Riga is wet.", "not_entailment"),
        ],
        "test": [("hypothesis: Baku is calm. premise: Baku is windy.", "<unk>")],
    },
    "wic": {
        "train": [("sentence1: He sat by the bank. sentence2: The bank lent money. "
                   "word: bank", "False"),
                  ("sentence1: I run daily. sentence2: We run fast. word: run",
                   "True")],
        "validation": [("sentence1: A bat flew. sentence2: Swing the bat. word: bat",
                        "False")],
        "test": [("sentence1: Set it down. sentence2: A chess set. word: set",
                  "<unk>")],
    },
    "wsc": {
        # T5 wsc_simple: only label-True examples in train; target = candidate.
        "train": [("Mark told Pete lies about himself and *he* was sorry .", "Mark"),
                  ("The cup hit the glass and *it* broke .", "the glass")],
        "validation": [("Anna thanked Beth because *she* helped her .", "Beth"),
                       ("Anna thanked Beth because *she* helped her .", "Anna")],
        "test": [("Joe hugged Sam because *he* was sad .", "Joe")],
    },
}

SG_TASKS = sorted(XPROMPT_EXPECTED)


@pytest.mark.parametrize("task", SG_TASKS)
def test_xprompt_local_strings(tasks, task):
    for split, expected in XPROMPT_EXPECTED[task].items():
        got = _pairs(_read(f"xprompt_super_glue_{task}_local", split))
        assert got == expected, (task, split)


@pytest.mark.parametrize("task", SG_TASKS)
def test_lester_local_strings(tasks, task):
    for split, expected in LESTER_EXPECTED[task].items():
        got = _pairs(_read(f"lester_super_glue_{task}_local", split))
        assert got == expected, (task, split)


@pytest.mark.parametrize("task", ["rte", "wsc", "record"])
def test_nosentinel_drops_the_sentinel(tasks, task):
    got = _pairs(_read(f"xprompt_nosentinel_super_glue_{task}_local", "validation"))
    expected = [(i.replace(" " + S, ""), t.replace(S + " ", ""))
                for i, t in XPROMPT_EXPECTED[task]["validation"]]
    assert got == expected
    assert all(S not in i and S not in t for i, t in got)


def test_tokens_use_real_t5_vocabulary(tasks):
    sp = spm.SentencePieceProcessor(model_file=str(T5_SPM))
    sentinel_id = 32099  # <extra_id_0> = 32000 pieces + 100 extra ids, reversed
    ex = _read("xprompt_super_glue_rte_local", "validation")[0]
    expected_inputs = sp.encode(
        "sentence1: Kyiv has parks. sentence2: Kyiv has trees.") + [sentinel_id, 1]
    assert ex["inputs"].tolist() == expected_inputs
    assert ex["targets"].tolist() == [sentinel_id] + sp.encode("entailment") + [1]
    lester = _read("lester_super_glue_rte_local", "validation")[1]
    assert lester["targets"].tolist() == sp.encode("not_entailment") + [1]
    assert tasks.get_vocabulary().vocab_size == 32100


def test_feature_converter_batches(tasks):
    import seqio
    task = seqio.get_mixture_or_task("xprompt_super_glue_boolq_local")
    lengths = {"inputs": 32, "targets": 8}
    ds = task.get_dataset(lengths, split="validation", shuffle=False)
    ds = seqio.EncDecFeatureConverter(pack=False)(ds, lengths)
    batch = next(ds.batch(2).as_numpy_iterator())
    assert set(batch) == {"encoder_input_tokens", "decoder_input_tokens",
                          "decoder_target_tokens", "decoder_loss_weights"}
    assert batch["encoder_input_tokens"].shape == (2, 32)
    assert batch["decoder_target_tokens"][0, 0] == 32099


def test_examples_keep_ids_labels_and_label_strings(tasks):
    mrc = _read("xprompt_super_glue_multirc_local", "train")
    assert [(int(e["idx/paragraph"]), int(e["idx/question"]), int(e["idx/answer"]),
             int(e["label"])) for e in mrc] == [
                 (0, 0, 0, 1), (0, 0, 1, 0), (0, 0, 2, 1), (0, 1, 3, 1),
                 (0, 1, 4, 0), (1, 2, 5, 1)]
    assert [s.decode() for s in mrc[0]["label_strings"]] == [S + " no", S + " yes"]
    wsc = _read("xprompt_super_glue_wsc_local", "train")
    assert [s.decode() for s in wsc[2]["label_strings"]] == [
        S + " another word", S + " the glass"]
    assert wsc[2]["span1_text"] == b"the glass" and int(wsc[2]["idx"]) == 2
    rec = _read("lester_super_glue_record_local", "train")
    assert [(int(e["idx/passage"]), int(e["idx/query"])) for e in rec] == [
        (0, 0), (0, 1), (0, 1)]
    assert [a.decode() for a in rec[1]["answers"]] == ["Max", "Rex"]
    assert [s.decode() for s in rec[1]["label_strings"]] == ["Max", "Rex"]
    test = _read("lester_super_glue_cb_local", "test")
    assert int(test[0]["label"]) == -1


def test_label_strings_and_main_metrics(tasks):
    assert tasks.get_label_strings("xprompt_super_glue_rte_v102") == [
        S + " entailment", S + " contradiction"]
    assert tasks.get_label_strings("xprompt_nosentinel_super_glue_boolq_local") == [
        "no", "yes"]
    assert tasks.get_label_strings("lester_super_glue_boolq_local") == [
        "False", "True"]
    assert tasks.get_label_strings("lester_super_glue_cb_v102") == [
        "entailment", "contradiction", "neutral"]
    assert tasks.get_label_strings("xprompt_super_glue_wsc_local") is None
    assert tasks.has_per_example_label_strings("xprompt_super_glue_wsc_local")
    assert tasks.get_label_strings("lester_super_glue_wsc_local") is None
    assert not tasks.has_per_example_label_strings("lester_super_glue_wsc_local")
    wsc = _read("xprompt_super_glue_wsc_local", "validation")[0]
    assert tasks.get_example_label_strings("xprompt_super_glue_wsc_local", wsc) == [
        S + " another word", S + " Beth"]
    assert tasks.get_example_label_strings("lester_super_glue_rte_local", {}) == [
        "entailment", "not_entailment"]
    with pytest.raises(ValueError, match="generation only"):
        tasks.get_example_label_strings("lester_super_glue_wsc_local", wsc)
    assert tasks.main_metric_value("xprompt_super_glue_cb_local",
                                   {"accuracy": 80.0, "f1_macro": 60.0}) == 70.0
    assert tasks.main_metric_value("lester_glue_rte_local", {"accuracy": 55.0}) == 55.0
    assert tasks.get_main_metric("xprompt_super_glue_rte_local") == "accuracy"
    assert tasks.get_main_metric("xprompt_super_glue_cb_local") == "average"
    assert tasks.get_metric_components("lester_super_glue_cb_v102") == (
        "accuracy", "f1_macro")
    assert tasks.get_metric_components("xprompt_super_glue_multirc_v102") == (
        "f1a", "exact_match")
    assert tasks.get_metric_components("lester_super_glue_record_local") == (
        "exact_match", "f1")


# ---------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------
def test_missing_directory_and_file_errors(tasks, tmp_path, monkeypatch):
    import seqio
    task = seqio.get_mixture_or_task("xprompt_super_glue_rte_local")
    monkeypatch.delenv("XPROMPT_SUPERGLUE_DIR")
    with pytest.raises(tasks.sources.DataDirError,
                       match="SUPERGLUE_DIR.*XPROMPT_SUPERGLUE_DIR"):
        task.get_dataset(None, split="validation")
    monkeypatch.setenv("XPROMPT_SUPERGLUE_DIR", str(tmp_path))
    with pytest.raises(tasks.sources.DataDirError, match=r"directory .*RTE"):
        task.get_dataset(None, split="validation")
    (tmp_path / "RTE").mkdir()
    with pytest.raises(tasks.sources.DataDirError, match=r"RTE[/\\]val\.jsonl"):
        task.get_dataset(None, split="validation")


def test_gin_macro_selects_directory(tasks, tmp_path, monkeypatch):
    import gin
    monkeypatch.delenv("XPROMPT_SUPERGLUE_DIR")
    root = write_superglue(tmp_path / "sg")
    gin.parse_config(f"SUPERGLUE_DIR = '{root}'")
    try:
        assert tasks.resolve_data_dir("superglue") == str(root)
        got = _pairs(_read("lester_super_glue_copa_local", "validation"))
        assert got == LESTER_EXPECTED["copa"]["validation"]
    finally:
        gin.clear_config()


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_malformed_jsonl_errors_name_file_line_field(tasks, tmp_path, monkeypatch):
    import seqio
    monkeypatch.setenv("XPROMPT_SUPERGLUE_DIR", str(tmp_path))
    good = {"premise": "p", "hypothesis": "h", "label": "entailment", "idx": 0}
    _write(tmp_path / "RTE" / "val.jsonl",
           [good, {"premise": "p", "label": "entailment", "idx": 1}])
    task = seqio.get_mixture_or_task("lester_super_glue_rte_local")
    with pytest.raises(tasks.readers.DataFileError,
                       match=r"RTE[/\\]val\.jsonl:2: missing field 'hypothesis'"):
        task.get_dataset(None, split="validation")
    _write(tmp_path / "RTE" / "val.jsonl", [dict(good, label="maybe")])
    with pytest.raises(tasks.readers.DataFileError,
                       match=r"val\.jsonl:1: field 'label' has invalid value 'maybe'"):
        task.get_dataset(None, split="validation")
    _write(tmp_path / "RTE" / "train.jsonl",
           [{"premise": "p", "hypothesis": "h", "idx": 0}])
    with pytest.raises(tasks.readers.DataFileError,
                       match=r"train\.jsonl:1: missing field 'label'"):
        task.get_dataset(None, split="train")
    mrc = {"idx": 0, "passage": {"text": "t", "questions": [
        {"question": "q", "idx": 0, "answers": [{"idx": 0, "label": 1}]}]}}
    _write(tmp_path / "MultiRC" / "val.jsonl", [mrc])
    task = seqio.get_mixture_or_task("lester_super_glue_multirc_local")
    with pytest.raises(tasks.readers.DataFileError,
                       match=r"val\.jsonl:1: missing field 'text' in "
                             r"passage\.questions\[0\]\.answers\[0\]"):
        task.get_dataset(None, split="validation")
    (tmp_path / "RTE" / "test.jsonl").write_text("{not json\n")
    task = seqio.get_mixture_or_task("lester_super_glue_rte_local")
    with pytest.raises(tasks.readers.DataFileError, match=r"test\.jsonl:1: invalid JSON"):
        task.get_dataset(None, split="test")


# ---------------------------------------------------------------------------
# TFDS source: same features as TFDS, same strings (mocked TFDS, no download).
# ---------------------------------------------------------------------------
def test_tfds_tasks_match_local_tasks(tasks):
    import seqio
    import tensorflow as tf
    import tensorflow_datasets as tfds

    readers = tasks.readers
    seen_specs = {}
    # Read the files before mocking (TFDS's mock redirects file access).
    raw = {}
    for task in SG_TASKS:
        path = os.path.join(os.environ["XPROMPT_SUPERGLUE_DIR"],
                            readers.SUPERGLUE_DIRS[task], "val.jsonl")
        raw[task] = readers.SUPERGLUE_READERS[task](path, "validation")

    def as_dataset(self, split, *args, **kwargs):
        config = self.builder_config.name
        task = "wsc" if config.startswith("wsc") else config
        assert str(split) == "validation"
        seen_specs[task] = self.info.features.get_tensor_spec()
        return readers.examples_to_dataset(raw[task],
                                           readers.SUPERGLUE_SIGNATURES[task])

    with tfds.testing.mock_data(as_dataset_fn=as_dataset,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        for task in SG_TASKS:
            t = seqio.get_mixture_or_task(f"xprompt_super_glue_{task}_v102")
            ds = t.get_dataset(None, split="validation", shuffle=False,
                               try_in_mem_cache=False)
            assert _pairs(ds.as_numpy_iterator()) == \
                XPROMPT_EXPECTED[task]["validation"], task
    assert sorted(seen_specs) == SG_TASKS
    as_tuples = lambda spec: tf.nest.map_structure(
        lambda s: (s.dtype, s.shape.as_list(), type(s).__name__), spec)
    for task, spec in seen_specs.items():
        assert as_tuples(spec) == as_tuples(readers.SUPERGLUE_SIGNATURES[task]), task
        # The local source yields exactly TFDS's element spec, shuffled or not.
        local = seqio.get_mixture_or_task(f"lester_super_glue_{task}_local").source
        if isinstance(local, tasks.sources.TrainFilteredSource):
            local = local.base
        for shuffle in (False, True):
            got = local.get_dataset("validation", shuffle=shuffle, seed=1).element_spec
            assert as_tuples(got) == as_tuples(spec), (task, shuffle)


def test_local_source_shuffles_whole_split(tasks):
    import seqio
    src = seqio.get_mixture_or_task("xprompt_super_glue_rte_local").source
    assert src.num_input_examples("train") == 5
    ds = src.get_dataset("train", shuffle=True, seed=3)
    epochs = [[int(e["idx"]) for e in ds.as_numpy_iterator()] for _ in range(4)]
    assert all(sorted(e) == [0, 1, 2, 3, 4] for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled every iteration
    ordered = [int(e["idx"]) for e in src.get_dataset(
        "train", shuffle=False).as_numpy_iterator()]
    assert ordered == [0, 1, 2, 3, 4]
    shard = src.get_dataset("train", shuffle=False,
                            shard_info=seqio.ShardInfo(index=1, num_shards=2))
    assert [int(e["idx"]) for e in shard.as_numpy_iterator()] == [1, 3]


def test_wsc_simple_marks_the_pronoun_as_t5(tasks):
    """T5's `_wsc_inputs` + `wsc_simple`, by hand: words split on single spaces, the word
    at span2_index -> "X" (`words[:i]`, "X", `words[i+1:]` joined by spaces), T5's two
    fixed texts, then every " X " -> " *pronoun* " (the task name dropped)."""
    mark = tasks.templates.wsc_simple_text
    # T5's docstring example.
    assert mark("Mitchell asked Tom if he could lend some money.", 4, "he") == \
        "Mitchell asked Tom if *he* could lend some money."
    # T5's own special case: "Good for X ," (the comma detached, the trailing space gone).
    boy = ('The boy continued to whip the pony , and eventually the pony threw him over. '
           'John laughed out quite loud. "Good for him," he said. ')
    assert mark(boy, 18, "him") == (
        'The boy continued to whip the pony , and eventually the pony threw him over. '
        'John laughed out quite loud. "Good for *him* ," he said.')
    # The other: span2_index points at "use", T5 blanks the "it" after it.
    safe = ("When they had eventually calmed down a bit , and had gotten home, Mr. Farley "
            "put the magic pebble in an iron safe . Some day they might want to use it , "
            "but really for now, what more could they wish for?")
    assert mark(safe, 26, "it").endswith("want to use *it* , but really for now, what "
                                         "more could they wish for?")
    # The pronoun as the last word: words[i+1:] is empty, so "... X " keeps its space.
    assert mark("Ann met Sue and thanked her", 5, "her") == "Ann met Sue and thanked *her* "
    # Every " X " is replaced, a literal X word of the text too (T5's regex_replace).
    assert mark("Tom said X is he", 4, "he") == "Tom said *he* is *he* "
    # Where T5 asserts (word differs, or the pronoun is the first word): ours marks the
    # nearest equal word, trailing punctuation after a space.
    assert mark("Tom saw him, then left", 2, "him") == "Tom saw *him* , then left"
    assert mark("He said hi .", 0, "He") == "*He* said hi ."


def test_wsc_true_false_is_t5s_wsc_format_on_every_example(tasks):
    """T5's `preprocessors.wsc` without the task name, by hand: ' * ' around span 1 and
    ' # ' around span 2 (found by `^((?:\\S+\\s){index})(span)`, span 2's index moved by
    two when span 1 comes first), False / True targets, label-False examples kept."""
    import tensorflow as tf
    marked = tasks.templates.tf_wsc_marked_spans(
        tf.constant("This is a test sentence ."), tf.constant("test"), tf.constant(3),
        tf.constant("This"), tf.constant(0))
    assert marked.numpy().decode() == "# This # is a * test * sentence ."   # T5's docstring
    expected = {
        "train": [("text: * Mark * told Pete lies about himself and # he # was sorry .",
                   "True"),
                  ("text: Mark told * Pete * lies about himself and # he # was sorry .",
                   "False"),
                  ("text: The cup hit * the glass * and # it # broke .", "True")],
        "validation": [("text: Anna thanked * Beth * because # she # helped her .", "True"),
                       ("text: * Anna * thanked Beth because # she # helped her .",
                        "False")],
        "test": [("text: * Joe * hugged Sam because # he # was sad .", "<unk>")],
    }
    for split, pairs in expected.items():
        assert _pairs(_read("lester_super_glue_wsc_true_false_local", split)) == pairs
    assert tasks.get_label_strings("lester_super_glue_wsc_true_false_local") == [
        "False", "True"]


def test_diagnostics_axb_axg_as_t5_casts_them(tasks, tmp_path, monkeypatch):
    """AX-b and AX-g, registered by T5 as SuperGLUE tasks (test split only), cast as RTE:
    "rte hypothesis: {hypothesis} premise: {premise}" without the task name, AX-b's
    sentence1 / sentence2 as premise / hypothesis; labels entailment / not_entailment."""
    import seqio
    from tasks_testdata.superglue import write_jsonl
    write_jsonl(tmp_path / "AX-b" / "AX-b.jsonl", [
        {"sentence1": "The cat sat.", "sentence2": "A cat sat.", "label": "entailment",
         "idx": 0, "logic": "Negation"},
        {"sentence1": "No dog ran.", "sentence2": "A dog ran.",
         "label": "not_entailment", "idx": 1}])
    write_jsonl(tmp_path / "AX-g" / "AX-g.jsonl", [
        {"premise": "The nurse helped him.", "hypothesis": "Someone helped him.",
         "label": "entailment", "idx": 0, "pair_id": 5}])
    monkeypatch.setenv("XPROMPT_SUPERGLUE_DIR", str(tmp_path))
    assert _pairs(_read("lester_super_glue_axb_local", "test")) == [
        ("hypothesis: A cat sat. premise: The cat sat.", "entailment"),
        ("hypothesis: A dog ran. premise: No dog ran.", "not_entailment")]
    assert _pairs(_read("lester_super_glue_axg_local", "test")) == [
        ("hypothesis: Someone helped him. premise: The nurse helped him.", "entailment")]
    for name in ("lester_super_glue_axb_local", "lester_super_glue_axg_local",
                 "lester_super_glue_axb_v102", "lester_super_glue_axg_v102"):
        assert tuple(seqio.get_mixture_or_task(name).source.splits) == ("test",), name
    axb = seqio.get_mixture_or_task("lester_super_glue_axb_v102").source
    assert axb.tfds_dataset.name == "super_glue/axb:1.0.2"
    assert tasks.get_main_metric("lester_super_glue_axb_local") == "matthews_corrcoef"
    assert tasks.get_main_metric("lester_super_glue_axg_local") == "accuracy"
    assert tasks.get_label_strings("lester_super_glue_axg_v102") == [
        "entailment", "not_entailment"]
