"""MRQA / SQuAD extractive QA tasks, SQuAD EM/F1, and EPT's held-out re-split (B.1)."""

import gzip
import json

import numpy as np
import pytest

from _tasks_import import T5_SPM, import_tasks


def _write_mrqa(path, dataset, contexts, gz=True):
    """An MRQA shared-task file: a header line, then one context per line."""
    lines = [json.dumps({"header": {"dataset": dataset, "split": "x"}})]
    for ctx, qas in contexts:
        lines.append(json.dumps({"context": ctx, "qas": [
            {"qid": qid, "question": q, "answers": answers,
             "detected_answers": [{"text": answers[0] if answers else "x",
                                   "char_spans": [[0, 1]], "token_spans": [[0, 0]]}]}
            for qid, q, answers in qas]}))
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


TRAIN = [("[PAR] Paris is the capital of France.",
          [("q1", "What is the capital of France?", ["Paris"])]),
         ("[PAR] The Nile flows north.",
          [("q2", "Which way does the Nile flow?", ["north", "northward"]),
           ("q3", "What flows north?", ["The Nile"])])]
DEV = [("[PAR] Oslo is in Norway.", [("d1", "Where is Oslo?", ["Norway", "in Norway"])])]


@pytest.fixture(scope="module")
def mrqa_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("mrqa")
    _write_mrqa(root / "train" / "HotpotQA.jsonl", "HotpotQA", TRAIN, gz=True)
    _write_mrqa(root / "dev" / "HotpotQA.jsonl", "HotpotQA", DEV, gz=False)
    _write_mrqa(root / "dev" / "TextbookQA.jsonl", "TextbookQA", DEV, gz=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XPROMPT_MRQA_DIR", str(root))
        mp.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
        yield import_tasks(), root


# ----------------------------------------------------------------- SQuAD EM / F1
def test_squad_metric_official_normalisation_hand_computed():
    tasks = import_tasks()
    squad = tasks.metrics.squad
    n = tasks.metrics.normalize_squad
    assert n("The  Eiffel-Tower, an icon!") == "eiffeltower icon"
    assert n("A cat and the hat.") == "cat and hat"
    # 1: exact after normalisation (articles, case, punctuation) -> EM 1, F1 1.
    # 2: pred "big red barn" vs gold "the red barn" (-> "red barn"): common 2,
    #    P = 2/3, R = 2/2 -> F1 0.8; vs gold "barn": P 1/3, R 1 -> 0.5; max 0.8; EM 0.
    # 3: no overlap -> 0, 0.
    targets = [["The Nile"], ["the red barn", "barn"], ["Norway"]]
    preds = ["nile.", "big red barn", "Sweden"]
    out = squad(targets, preds)
    assert out["exact_match"] == pytest.approx(100 * 1 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)


# ----------------------------------------------------------------- MRQA reading
def test_read_mrqa_official_format(tmp_path):
    tasks = import_tasks()
    _write_mrqa(tmp_path / "x.jsonl", "X", TRAIN, gz=True)
    rows = tasks.mrqa.read_mrqa(str(tmp_path / "x.jsonl.gz"))
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[1]["answers"] == ["north", "northward"]
    assert rows[1]["context"] == "[PAR] The Nile flows north."
    (tmp_path / "bad.jsonl").write_text('{"header": {}}\n{"text": "no qas"}\n')
    with pytest.raises(tasks.mrqa.MRQAFormatError, match=r"bad.jsonl:2.*'qas'"):
        tasks.mrqa.read_mrqa(str(tmp_path / "bad.jsonl"))


def test_mrqa_task_formats_and_scores(mrqa_env):
    import seqio
    tasks, _ = mrqa_env
    name = "lester_mrqa_hotpotqa_local"
    assert name in tasks.registered_task_names()
    assert tasks.get_main_metric(name) == "f1"
    assert tasks.get_label_strings(name) is None
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset({"inputs": 64, "targets": 8}, split="train", shuffle=False)
    rows = list(ds.as_numpy_iterator())
    # T5's SQuAD preprocessing (taskless): " \1 " around each ASCII punctuation mark,
    # whitespace runs collapsed (a trailing space stays), parts joined by spaces.
    assert [r["inputs_pretokenized"].decode() for r in rows][0] == (
        "question: What is the capital of France ? context: [ PAR ] Paris is the "
        "capital of France . ")
    import tensorflow as tf
    assert tasks.mrqa.pad_punctuation(tf.constant("U.S.  it's a_b é!")).numpy().decode() \
        == "U . S . it ' s a _ b é ! "
    assert [r["targets_pretokenized"].decode() for r in rows] == ["Paris", "north",
                                                                  "The Nile"]
    dev = list(task.get_dataset({"inputs": 64, "targets": 8}, split="validation",
                                shuffle=False).as_numpy_iterator())  # plain .jsonl
    assert len(dev) == 1
    gold = task.postprocess_fn("Norway", example=dev[0], is_target=True)
    assert gold == ["Norway", "in Norway"]
    pred = task.postprocess_fn("in norway.", example=dev[0], is_target=False)
    scores = {}
    for fn in task.predict_metric_fns:
        scores.update(fn([gold], [pred]))
    assert scores == {"exact_match": 100.0, "f1": 100.0}
    # Out-of-domain sets have only the dev file: validation / test.
    ood = seqio.get_mixture_or_task("lester_mrqa_textbookqa_local")
    assert set(ood.source.splits) == {"validation", "test"}
    assert ood.num_input_examples("validation") == 1


def test_mrqa_missing_directory_names_the_layout(monkeypatch):
    import seqio
    tasks = import_tasks()
    monkeypatch.delenv("XPROMPT_MRQA_DIR", raising=False)
    src = seqio.get_mixture_or_task("lester_mrqa_newsqa_local").source
    with pytest.raises(tasks.sources.DataDirError, match="MRQA_DIR"):
        src.path("train")
    monkeypatch.setenv("XPROMPT_MRQA_DIR", "/nonexistent/mrqa")
    with pytest.raises(tasks.sources.DataDirError, match=r"train/NewsQA\.jsonl\.gz"):
        src.path("train")


def test_squad_tfds_task_registered():
    import seqio
    tasks = import_tasks()
    task = seqio.get_mixture_or_task("lester_squad_v110")
    assert task.source.tfds_dataset.name == "squad/v1.1:3.0.0"
    assert tasks.get_main_metric("lester_squad_v110") == "f1"


# ----------------------------------------------------------------- held-out (B.1)
def test_ept_rule_and_split_sizes():
    tasks = import_tasks()
    h = tasks.heldout
    assert h.ept_rule(9_999) == h.HeldoutSpec("split_validation")
    assert h.ept_rule(10_000) == h.HeldoutSpec("from_train", 1_000)
    assert h.ept_rule(100_000) == h.HeldoutSpec("from_train", 10_000)
    # Table 5 sizes: CB 56 -> 28/28, RTE 277 -> 138/139, CoLA 1043 -> 521/522,
    # HotpotQA 5901 -> 2950/2951; QQP 363,846 train -> 10K validation, 353,846 train.
    for n, (v, t) in {56: (28, 28), 277: (138, 139), 1043: (521, 522),
                      5901: (2950, 2951)}.items():
        sel, rest = h.split_indices(n, h.HeldoutSpec("split_validation"))
        assert (len(sel), len(rest)) == (v, t)
        assert sorted(np.concatenate([sel, rest]).tolist()) == list(range(n))
    sel, rest = h.split_indices(363_846, h.HeldoutSpec("from_train", 10_000))
    assert (len(sel), len(rest)) == (10_000, 353_846)
    # Deterministic, equal to a RandomState(seed) permutation; other seeds differ.
    a = h.split_indices(277, h.HeldoutSpec("split_validation", seed=0))[0]
    assert np.array_equal(a, np.sort(np.random.RandomState(0).permutation(277)[:138]))
    b = h.split_indices(277, h.HeldoutSpec("split_validation", seed=1))[0]
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="only 5"):
        h.split_indices(5, h.HeldoutSpec("from_train", 10))


def _rte_rows(n, offset):
    return [{"premise": f"p{i}", "hypothesis": f"h{i}",
             "label": "entailment" if i % 2 else "not_entailment", "idx": i}
            for i in range(offset, offset + n)]


def test_heldout_source_resplits_deterministically(tmp_path, monkeypatch):
    import seqio
    from tasks_testdata.superglue import write_jsonl
    tasks = import_tasks()
    write_jsonl(tmp_path / "RTE" / "train.jsonl", _rte_rows(12, 0))
    write_jsonl(tmp_path / "RTE" / "val.jsonl", _rte_rows(7, 100))
    write_jsonl(tmp_path / "RTE" / "test.jsonl", _rte_rows(3, 200))
    monkeypatch.setenv("XPROMPT_SUPERGLUE_DIR", str(tmp_path))
    monkeypatch.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
    base = "lester_super_glue_rte_local"
    half = tasks.heldout_task(base, "split_validation", name="t_rte_half")
    ft = tasks.heldout_task(base, "from_train", num_validation=4, name="t_rte_ft")

    def idx(name, split):
        src = seqio.get_mixture_or_task(name).source
        return [int(ex["idx"]) for ex in
                src.get_dataset(split, shuffle=False).as_numpy_iterator()]

    perm = np.random.RandomState(0).permutation(7)
    assert idx(half, "validation") == sorted(100 + perm[:3])
    assert idx(half, "test") == sorted(100 + perm[3:])
    assert idx(half, "train") == list(range(12))
    perm = np.random.RandomState(0).permutation(12)
    assert idx(ft, "validation") == sorted(perm[:4])
    assert sorted(idx(ft, "train")) == sorted(perm[4:].tolist())
    assert idx(ft, "test") == list(range(100, 107))
    src = seqio.get_mixture_or_task(ft).source
    assert [src.num_input_examples(s) for s in ("train", "validation", "test")] == [8, 4, 7]
    # 'auto' applies B.1's rule: 12 training examples < 10K -> halve validation.
    auto = tasks.heldout_task(base, name="t_rte_auto")
    assert idx(auto, "test") == idx(half, "test")


def test_ept_heldout_variants_and_paper_metrics():
    tasks = import_tasks()
    names = tasks.registered_task_names()
    datasets = tasks.ept_heldout.ept_datasets()
    assert len(datasets) == 21
    for n in tasks.ept_heldout.ept_heldout_task_names():
        assert n in names
    assert tasks.get_main_metric("lester_glue_stsb_v200_heldout") == "pearson_corrcoef"
    assert tasks.get_main_metric("lester_glue_qqp_v200_heldout") == "accuracy"
    assert tasks.get_main_metric("lester_glue_mrpc_local_heldout") == "accuracy"
    assert tasks.get_main_metric("lester_super_glue_multirc_v102_heldout") == "f1a"
    assert tasks.get_main_metric("lester_mrqa_hotpotqa_local_heldout") == "f1"
    # Base tasks keep T5's means.
    assert tasks.get_main_metric("lester_glue_stsb_v200") == "average"
    # Yelp selects on 10K of train, not on its test set.
    import seqio
    src = seqio.get_mixture_or_task("lester_yelp_polarity_v020").source
    assert isinstance(src, tasks.heldout.HeldoutSource)
    assert src.spec == tasks.heldout.HeldoutSpec("from_train", 10_000, "test")


def test_ept_heldout_sizes_are_table5():
    """EPT Table 5's train / valid / test as literals, from the re-split arithmetic on the
    datasets' published sizes (no download): Yelp (TFDS yelp_polarity_reviews: 560,000
    train, 38,000 test) 100,000 / 10,000 / 38,000; WSC (super_glue/wsc.fixed: 554 train,
    104 validation) 554 / 52 / 52, every training example (T5's `wsc` True/False base, not
    wsc_simple's 259 label-True ones); MRPC (GLUE: 3,668 / 408 / 1,725) with its labelled
    local test set as published."""
    import seqio
    tasks = import_tasks()
    h = tasks.heldout
    by_name = {d.name: d for d in tasks.ept_heldout.ept_datasets()}
    # Yelp
    yelp = by_name["Yelp"]
    valid, train = h.split_indices(560_000, yelp.spec)
    assert (len(train), len(valid)) == (100_000, 10_000)
    assert not set(valid.tolist()) & set(train.tolist())
    # the same validation as the base task's (10K of train, seed 0); the rest follow it
    base_valid, base_train = h.split_indices(560_000, tasks.glue.YELP_VALIDATION)
    assert np.array_equal(valid, base_valid) and len(base_train) == 550_000
    perm = np.random.RandomState(0).permutation(560_000)
    assert np.array_equal(train, np.sort(perm[10_000:110_000]))
    src = seqio.get_mixture_or_task("lester_yelp_polarity_v020_heldout").source
    assert src.spec.num_train == 100_000 and src.spec.test_split == "test"
    assert src._source_of("test") == ("test", None)          # TFDS test: 38,000
    assert src.base is seqio.get_mixture_or_task("lester_yelp_polarity_v020").source.base
    with pytest.raises(ValueError, match="num_train=100000"):
        h.split_indices(100_000, yelp.spec)
    # WSC: validation halved, the whole training split kept.
    wsc = by_name["WSC"]
    assert wsc.bases == ("lester_super_glue_wsc_true_false_v102",
                         "lester_super_glue_wsc_true_false_local")
    valid, test = h.split_indices(104, wsc.spec)
    assert (len(valid), len(test)) == (52, 52)
    for base in wsc.bases:
        src = seqio.get_mixture_or_task(base + "_heldout").source
        assert isinstance(src, h.HeldoutSource)          # no train filter around it
        assert src._source_of("train") == ("train", None)  # all 554
    # MRPC: the labelled-test variant keeps the published splits (3,668 / 408 / 1,725).
    src = seqio.get_mixture_or_task("lester_glue_mrpc_local_heldout_labelled_test").source
    assert [src._source_of(s) for s in ("train", "validation", "test")] == [
        ("train", None), ("validation", None), ("test", None)]
    assert tasks.get_main_metric("lester_glue_mrpc_local_heldout_labelled_test") == \
        "accuracy"


def _mrpc_tsv(path, rows, labelled=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "Quality" if labelled else "index"
    lines = [f"{head}\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    lines += [f"{q if labelled else i}\t{i}\t{i + 1}\ta{i}\tb{i}"
              for i, q in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_mrpc_labelled_local_test_set(tmp_path, monkeypatch):
    """MRPC's labelled GLUE test set as a local file: reported as published; an
    unlabelled test file (the GLUE download's) is one clear error naming it."""
    import seqio
    tasks = import_tasks()
    monkeypatch.setenv("XPROMPT_GLUE_DIR", str(tmp_path))
    monkeypatch.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
    _mrpc_tsv(tmp_path / "MRPC" / "train.tsv", [1, 0, 1, 1, 0])
    _mrpc_tsv(tmp_path / "MRPC" / "dev.tsv", [0, 1, 1])
    _mrpc_tsv(tmp_path / "MRPC" / "test.tsv", [1, 1, 0, 0])
    name = "lester_glue_mrpc_local_heldout_labelled_test"
    src = seqio.get_mixture_or_task(name).source
    assert [src.num_input_examples(s) for s in ("train", "validation", "test")] == [5, 3, 4]
    labels = [int(ex["label"]) for ex in
              src.get_dataset("test", shuffle=False).as_numpy_iterator()]
    assert labels == [1, 1, 0, 0]
    _mrpc_tsv(tmp_path / "MRPC" / "test.tsv", [1, 1, 0, 0], labelled=False)
    src = seqio.get_mixture_or_task(name).source
    with pytest.raises(tasks.readers.DataFileError,
                       match=r"MRPC/test\.tsv: 4 of 4 examples have no label"):
        src.get_dataset("test", shuffle=False)


def test_heldout_source_shards_disjointly(tmp_path, monkeypatch):
    import seqio
    from tasks_testdata.superglue import write_jsonl
    tasks = import_tasks()
    write_jsonl(tmp_path / "RTE" / "train.jsonl", _rte_rows(12, 0))
    write_jsonl(tmp_path / "RTE" / "val.jsonl", _rte_rows(9, 100))
    write_jsonl(tmp_path / "RTE" / "test.jsonl", _rte_rows(3, 200))
    monkeypatch.setenv("XPROMPT_SUPERGLUE_DIR", str(tmp_path))
    name = tasks.heldout_task("lester_super_glue_rte_local", "split_validation",
                              name="t_rte_shards")
    src = seqio.get_mixture_or_task(name).source
    whole = [int(e["idx"]) for e in src.get_dataset("test", shuffle=False).as_numpy_iterator()]
    parts = [[int(e["idx"]) for e in src.get_dataset(
        "test", shuffle=False, shard_info=seqio.ShardInfo(i, 2)).as_numpy_iterator()]
        for i in range(2)]
    assert sorted(parts[0] + parts[1]) == whole and not set(parts[0]) & set(parts[1])
