"""Metrics agree with scikit-learn / scipy; postprocessors map invalid strings to -1.

Also runs each task's own postprocess_fn + metric_fns the way seqio's evaluator does
(``postprocess_fn(text, example=ex, is_target=...)``) on hand-made examples.
"""

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from _tasks_import import import_tasks


@pytest.fixture(scope="module")
def tasks():
    return import_tasks()


@pytest.fixture(scope="module")
def rng():
    return np.random.RandomState(1234)


def test_accuracy_matches_sklearn(tasks, rng):
    t = rng.randint(0, 3, 200)
    p = rng.randint(-1, 3, 200)
    got = tasks.metrics.accuracy(t, p)["accuracy"]
    assert got == pytest.approx(100 * sklearn.metrics.accuracy_score(t, p))


def test_macro_f1_matches_sklearn_with_invalid(tasks, rng):
    t = rng.randint(0, 3, 150)
    p = rng.randint(-1, 3, 150)  # -1 = invalid prediction
    got = tasks.metrics.macro_f1(3)(t, p)["f1_macro"]
    # Per-class F1 over the three real classes, unweighted mean.
    per_class = sklearn.metrics.f1_score(t, p, labels=[0, 1, 2], average=None)
    assert got == pytest.approx(100 * per_class.mean())
    assert got == pytest.approx(100 * sklearn.metrics.f1_score(
        t, p, labels=[0, 1, 2], average="macro"))


def test_binary_f1_counts_invalid_as_wrong(tasks, rng):
    t = rng.randint(0, 2, 300)
    p = rng.randint(-1, 2, 300)
    flipped = np.where((p != 0) & (p != 1), 1 - t, p)
    assert tasks.metrics.f1_with_invalid(t, p)["f1"] == pytest.approx(
        100 * sklearn.metrics.f1_score(t, flipped))
    # Hand-checked: targets 1,1,0,0; predictions 1,-1,1,0 -> tp=1 fp=1 fn=1 -> F1 0.5
    assert tasks.metrics.f1_with_invalid([1, 1, 0, 0], [1, -1, 1, 0])["f1"] == \
        pytest.approx(50.0)


def test_matthews_pearson_spearman_match(tasks, rng):
    t = rng.randint(0, 2, 120)
    p = rng.randint(0, 2, 120)
    assert tasks.metrics.matthews_corrcoef(t, p)["matthews_corrcoef"] == \
        pytest.approx(100 * sklearn.metrics.matthews_corrcoef(t, p))
    x = rng.uniform(0, 5, 80)
    y = x + rng.normal(0, 1, 80)
    assert tasks.metrics.pearson_corrcoef(x, y)["pearson_corrcoef"] == \
        pytest.approx(100 * scipy.stats.pearsonr(x, y)[0])
    assert tasks.metrics.spearman_corrcoef(x, y)["spearman_corrcoef"] == \
        pytest.approx(100 * scipy.stats.spearmanr(x, y)[0])


def test_multirc_f1a_and_grouped_exact_match(tasks, rng):
    n = 100
    questions = [int(g) for g in rng.randint(0, 30, n)]
    t = rng.randint(0, 2, n)
    p = rng.randint(-1, 2, n)
    targets = [{"value": int(v), "group": q, "paragraph": q // 7}
               for v, q in zip(t, questions)]
    preds = [{"value": int(v)} for v in p]
    flipped = np.where((p != 0) & (p != 1), 1 - t, p)
    assert tasks.metrics.multirc_f1a(targets, preds)["f1a"] == pytest.approx(
        100 * sklearn.metrics.f1_score(t, flipped))
    by_group = {}
    for tv, pv, q in zip(t, p, questions):
        by_group.setdefault(q, []).append(tv == pv)
    expected_em = 100 * np.mean([all(v) for v in by_group.values()])
    assert tasks.metrics.multirc_exact_match(targets, preds)["exact_match"] == \
        pytest.approx(expected_em)


def test_multirc_exact_match_groups_by_question_index_as_t5(tasks):
    """T5: `mean_group_metric(all_match)` over `group` = `idx/question` alone, so a
    question id repeated under two paragraphs is one group; ours by paragraph is the
    option. Hand-counted: paragraph 0 question 5 (True, predicted True: right),
    paragraph 1 question 5 (False, predicted True: wrong), paragraph 1 question 6
    (True, predicted True: right)."""
    post = tasks.postprocessors.multirc(("False", "True"))
    raw = [(0, 5, "True"), (1, 5, "False"), (1, 6, "True")]
    targets = [post(label, example={"idx/paragraph": par, "idx/question": q},
                    is_target=True) for par, q, label in raw]
    assert [t["group"] for t in targets] == [5, 5, 6]
    preds = [post("True") for _ in raw]
    # T5: groups {5: [right, wrong], 6: [right]} -> EM 1/2.
    assert tasks.metrics.multirc_exact_match(targets, preds) == {"exact_match": 50.0}
    # Per (paragraph, question): {(0,5): right, (1,5): wrong, (1,6): right} -> 2/3.
    assert tasks.metrics.multirc_exact_match_per_paragraph(targets, preds)[
        "exact_match"] == pytest.approx(200 / 3)
    # Every question id repeated under a second paragraph with one wrong option: T5's
    # EM is 0 where the per-paragraph grouping gives 50.
    targets = [post("True", example={"idx/paragraph": par, "idx/question": q},
                    is_target=True) for q in range(4) for par in (0, 1)]
    preds = [post("True" if par == 0 else "False") for q in range(4) for par in (0, 1)]
    assert tasks.metrics.multirc_exact_match(targets, preds) == {"exact_match": 0.0}
    assert tasks.metrics.multirc_exact_match_per_paragraph(targets, preds) == {
        "exact_match": 50.0}


def test_squad_em_f1_max_over_answers(tasks):
    m = tasks.metrics
    assert m.normalize_squad("The  Big, Cat!") == "big cat"
    # pred "big cat" vs answers ["the big cat", "dog"]: EM 1, F1 1
    # pred "a red dog barks" vs ["dog", "red fox"]: EM 0;
    #   F1 vs "dog" = 2*(1/3*1)/(1/3+1) = 0.5, vs "red fox" = 2*(1/3*1/2)/(1/3+1/2)=0.4
    res = m.squad([["the big cat", "dog"], ["dog", "red fox"]],
                  ["Big cat", "a red dog barks"])
    assert res["exact_match"] == pytest.approx(50.0)
    assert res["f1"] == pytest.approx(100 * (1.0 + 0.5) / 2)


def test_record_deduplicates_groups(tasks):
    targets = [{"value": ["Rex"], "group": (0, 0)},
               {"value": ["Max", "Rex"], "group": (0, 1)},
               {"value": ["Max", "Rex"], "group": (0, 1)}]
    preds = [{"value": "Rex"}, {"value": "rex"}, {"value": "Ann"}]
    assert tasks.metrics.record_squad(targets, preds) == {"exact_match": 100.0,
                                                          "f1": 100.0}


def test_with_average(tasks):
    fn = tasks.metrics.with_average(
        [tasks.metrics.accuracy, tasks.metrics.macro_f1(3)], ["accuracy", "f1_macro"])
    t, p = [0, 1, 2, 2], [0, 1, 1, -1]
    out = fn(t, p)
    acc = 50.0
    f1 = 100 * sklearn.metrics.f1_score(t, p, labels=[0, 1, 2], average="macro")
    assert out["accuracy"] == pytest.approx(acc)
    assert out["average"] == pytest.approx((acc + f1) / 2)


def test_postprocessors(tasks):
    post = tasks.postprocessors
    cls = post.class_label(("entailment", "contradiction"))
    assert cls("contradiction") == 1
    assert cls("entailment") == 0
    assert cls("maybe") == -1
    assert cls("") == -1
    sentinel_cls = post.with_sentinel_removed(cls)
    assert sentinel_cls("<extra_id_0> contradiction") == 1
    assert sentinel_cls("<extra_id_0> maybe") == -1
    ex = {"span1_text": b"the glass", "idx": 3}
    wsc = post.with_sentinel_removed(post.wsc_xprompt)
    assert wsc("<extra_id_0> the glass", example=ex) == 1
    assert wsc("<extra_id_0> another word", example=ex) == 0
    assert wsc("<extra_id_0> the cup", example=ex) == -1
    simple = {"targets_pretokenized": b"the glass", "label": 1}
    assert post.wsc_simple("glass", example=simple) == 1
    assert post.wsc_simple("The cup", example=simple) == 0
    assert post.wsc_simple("", example=simple) == -1
    assert post.wsc_simple("the glass", example=simple, is_target=True) == 1
    assert post.string_to_float("3.4") == 3.4
    assert post.string_to_float("three") == -1.0
    mrc = post.multirc(("no", "yes"))
    assert mrc("yes", example={"idx/paragraph": 2, "idx/question": 7},
               is_target=True) == {"value": 1, "group": 7, "paragraph": 2}
    assert mrc("nope") == {"value": -1}


def test_label_parsing_is_t5s_exact_match(tasks):
    """T5's `string_label_to_class_id` is `label_classes.index(s) if s in label_classes
    else -1`: no stripping; seqio's sentinel tasks first drop a leading `<extra_id_0>`
    and `.strip()` the rest, nothing else. Each value below follows from that by hand."""
    post = tasks.postprocessors
    rte = post.class_label(("entailment", "not_entailment"))
    assert rte("entailment") == 0
    assert rte("<extra_id_0> entailment") == -1
    assert rte(" entailment") == -1
    assert rte("entailment\n") == -1
    assert rte(b"not_entailment") == 1
    sentinel_rte = post.with_sentinel_removed(rte)
    assert sentinel_rte("<extra_id_0> entailment") == 0
    assert sentinel_rte("<extra_id_0>entailment\n") == 0    # dropped, then stripped
    assert sentinel_rte("entailment") == 0                   # no sentinel: as is
    assert sentinel_rte(" <extra_id_0> entailment") == -1    # not at the start
    assert sentinel_rte(" entailment") == -1
    assert sentinel_rte("<extra_id_1> entailment") == -1
    # WSC (T5's wsc_simple): a bare sentinel is a non-empty word, not the referent: 0.
    simple = {"targets_pretokenized": b"the glass", "label": 1}
    assert post.wsc_simple("<extra_id_0>", example=simple) == 0
    # {"glass"} is a subset of {"<extra_id_0>", "glass"}: the referent, 1.
    assert post.wsc_simple("<extra_id_0> glass", example=simple) == 1
    assert post.wsc_simple("  ", example=simple) == -1
    # ReCoRD and STS-B: the raw text.
    assert post.record("<extra_id_0> Rex") == {"value": "<extra_id_0> Rex"}
    assert post.string_to_float(" 3.4\n") == 3.4               # Python's float strips
    assert post.string_to_float("<extra_id_0> 3.4") == -1.0


def _evaluate(task_name, examples, predictions):
    """seqio-evaluator-style: postprocess targets and predictions, run metric fns."""
    import seqio
    task = seqio.get_mixture_or_task(task_name)
    targets = [task.postprocess_fn(ex["targets_pretokenized"].decode(), example=ex,
                                   is_target=True) for ex in examples]
    preds = [task.postprocess_fn(p, example=ex, is_target=False)
             for ex, p in zip(examples, predictions)]
    out = {}
    for fn in task.metric_fns:
        out.update(fn(targets, preds))
    return out


def test_task_metric_pipeline_cb(tasks):
    S = "<extra_id_0> "
    labels = [0, 1, 2, 0]
    names = ["entailment", "contradiction", "neutral"]
    examples = [{"targets_pretokenized": (S + names[l]).encode(), "label": l}
                for l in labels]
    preds = [S + "entailment", S + "neutral", "garbage", S + "entailment"]
    out = _evaluate("xprompt_super_glue_cb_v102", examples, preds)
    p = [0, 2, -1, 0]
    f1 = 100 * sklearn.metrics.f1_score(labels, p, labels=[0, 1, 2], average="macro")
    assert out["accuracy"] == pytest.approx(50.0)
    assert out["f1_macro"] == pytest.approx(f1)
    assert out["average"] == pytest.approx((50.0 + f1) / 2)


def test_task_metric_pipeline_multirc_and_wsc(tasks):
    examples = [
        {"targets_pretokenized": b"True", "idx/paragraph": 0, "idx/question": 0},
        {"targets_pretokenized": b"False", "idx/paragraph": 0, "idx/question": 0},
        {"targets_pretokenized": b"True", "idx/paragraph": 0, "idx/question": 1},
    ]
    out = _evaluate("lester_super_glue_multirc_local", examples,
                    ["True", "False", "no"])
    # question (0,0) all right, (0,1) wrong -> EM 50; F1a: t=[1,0,1], p=[1,0,inv->0]
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1a"] == pytest.approx(100 * sklearn.metrics.f1_score([1, 0, 1],
                                                                      [1, 0, 0]))
    wsc = [{"targets_pretokenized": b"<extra_id_0> Mark", "span1_text": b"Mark",
            "label": 1},
           {"targets_pretokenized": b"<extra_id_0> another word",
            "span1_text": b"Pete", "label": 0}]
    out = _evaluate("xprompt_super_glue_wsc_local", wsc,
                    ["<extra_id_0> Mark", "<extra_id_0> Pete"])
    assert out == {"accuracy": 50.0}


def test_task_metric_pipeline_stsb(tasks, rng):
    scores = rng.uniform(0, 5, 30)
    examples = [{"targets_pretokenized": f"{s:.1f}".encode()} for s in scores]
    preds = [f"{s + rng.normal(0, 0.5):.1f}" for s in scores]
    out = _evaluate("lester_glue_stsb_v200", examples, preds)
    t = [float(f"{s:.1f}") for s in scores]
    p = [float(x) for x in preds]
    pear = 100 * scipy.stats.pearsonr(t, p)[0]
    spear = 100 * scipy.stats.spearmanr(t, p)[0]
    assert out["pearson_corrcoef"] == pytest.approx(pear)
    assert out["average"] == pytest.approx((pear + spear) / 2)


def _generation_metrics(task_name, examples, texts, label_parsing):
    """The evaluator's metrics for generated `texts` (no model: `result_from_texts`)."""
    from xprompt_jax.evaluation import EvalConfig, Evaluator
    config = EvalConfig(mode="generation", label_parsing=label_parsing)
    examples = [dict(ex, inputs=np.array([3, 1])) for ex in examples]
    evaluator = Evaluator(None, task_name, {"inputs": 8, "targets": 8}, config,
                          examples=examples)
    return evaluator.result_from_texts(texts)["metrics"]


def test_generation_scores_the_right_label_with_a_sentinel_or_space_as_t5(tasks):
    """The right label with a sentinel or whitespace is no label for T5 (scores as
    wrong); 'lenient' label parsing (ours) forgives it. Hand-computed from T5's
    postprocessors and metrics (string_label_to_class_id, f1_score_with_invalid,
    mean_group_metric(all_match), squad, wsc_simple)."""
    rte = [{"targets_pretokenized": s.encode(), "label": l}
           for s, l in [("entailment", 0), ("not_entailment", 1), ("entailment", 0),
                        ("not_entailment", 1)]]
    texts = ["<extra_id_0> entailment", " not_entailment", "entailment\n",
             "not_entailment"]
    # T5: -1, -1, -1, 1 -> one of four right.
    assert _generation_metrics("lester_super_glue_rte_v102", rte, texts, "t5") == {
        "accuracy": 25.0}
    assert _generation_metrics("lester_super_glue_rte_v102", rte, texts,
                               "lenient") == {"accuracy": 100.0}

    mrc = [{"targets_pretokenized": s.encode(), "label": l, "idx/paragraph": 0,
            "idx/question": q} for s, l, q in [("True", 1, 0), ("False", 0, 0),
                                               ("True", 1, 1)]]
    texts = [" True", "False\n", "<extra_id_0> True"]
    # T5: all -1 -> each flipped to the wrong class: tp 0 -> F1 0; no question right.
    t5 = _generation_metrics("lester_super_glue_multirc_v102", mrc, texts, "t5")
    assert (t5["f1a"], t5["exact_match"]) == (0.0, 0.0)
    lenient = _generation_metrics("lester_super_glue_multirc_v102", mrc, texts, "lenient")
    assert (lenient["f1a"], lenient["exact_match"]) == (100.0, 100.0)

    rec = [{"targets_pretokenized": b"Rex", "answers": [b"Rex"], "idx/passage": 0,
            "idx/query": 0}]
    # T5's squad: normalize("<extra_id_0> Rex") = "extraid0 rex" vs "rex": EM 0,
    # F1 = 2 * (1/2 * 1) / (1/2 + 1) = 2/3.
    t5 = _generation_metrics("lester_super_glue_record_v102", rec, ["<extra_id_0> Rex"],
                             "t5")
    assert t5["exact_match"] == 0.0
    assert t5["f1"] == pytest.approx(200 / 3)
    lenient = _generation_metrics("lester_super_glue_record_v102", rec,
                                  ["<extra_id_0> Rex"], "lenient")
    assert (lenient["exact_match"], lenient["f1"]) == (100.0, 100.0)

    wsc = [{"targets_pretokenized": b"the glass", "label": 1},
           {"targets_pretokenized": b"the cup", "label": 0}]
    # T5: a bare "<extra_id_0>" is the word "<extra_id_0>", not the referent: 0 for
    # both, which is right for the label-0 example. Lenient: empty -> -1, both wrong.
    texts = ["<extra_id_0>", "<extra_id_0>"]
    assert _generation_metrics("lester_super_glue_wsc_v102", wsc, texts, "t5") == {
        "accuracy": 50.0}
    assert _generation_metrics("lester_super_glue_wsc_v102", wsc, texts,
                               "lenient") == {"accuracy": 0.0}


def test_label_parsing_is_checked():
    from xprompt_jax.evaluation import EvalConfig
    with pytest.raises(ValueError, match="label parsing 'loose'"):
        EvalConfig(label_parsing="loose")


def test_t5_metric_names_available(tasks):
    """T5's keys (t5/evaluation/metrics.py): mean_multiclass_f1 -> "mean_3class_f1",
    multirc_f1_over_all_answers -> "f1", mean_group_metric(all_match) -> "exact_match",
    squad (qa_utils.qa_metrics) -> "em" and "f1"; accuracy keeps its name."""
    cb = {"accuracy": 50.0, "f1_macro": 40.0, "average": 45.0}
    assert tasks.t5_metrics("lester_super_glue_cb_v102", cb) == {
        "accuracy": 50.0, "mean_3class_f1": 40.0, "average": 45.0}
    mrc = {"f1a": 70.0, "exact_match": 20.0, "average": 45.0}
    assert tasks.t5_metrics("lester_super_glue_multirc_v102", mrc) == {
        "f1": 70.0, "exact_match": 20.0, "average": 45.0}
    for name in ("lester_super_glue_record_v102", "lester_squad_v110"):
        assert tasks.t5_metric_names(name) == {"exact_match": "em"}
    assert tasks.t5_metric_names("lester_super_glue_rte_v102") == {}
    assert tasks.t5_metric_names("lester_super_glue_multirc_v102_heldout") == {"f1a": "f1"}
