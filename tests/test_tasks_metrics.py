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
    groups = [(int(g) // 7, int(g)) for g in rng.randint(0, 30, n)]
    t = rng.randint(0, 2, n)
    p = rng.randint(-1, 2, n)
    targets = [{"value": int(v), "group": g} for v, g in zip(t, groups)]
    preds = [{"value": int(v)} for v in p]
    flipped = np.where((p != 0) & (p != 1), 1 - t, p)
    assert tasks.metrics.multirc_f1a(targets, preds)["f1a"] == pytest.approx(
        100 * sklearn.metrics.f1_score(t, flipped))
    by_group = {}
    for tv, pv, g in zip(t, p, groups):
        by_group.setdefault(g, []).append(tv == pv)
    expected_em = 100 * np.mean([all(v) for v in by_group.values()])
    assert tasks.metrics.multirc_exact_match(targets, preds)["exact_match"] == \
        pytest.approx(expected_em)
    # Same question id under two paragraphs = two questions.
    tg = [{"value": 1, "group": (0, 5)}, {"value": 0, "group": (1, 5)}]
    assert tasks.metrics.multirc_exact_match(tg, [{"value": 1}, {"value": 1}]) == {
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
    assert cls("<extra_id_0> contradiction") == 1
    assert cls("entailment") == 0
    assert cls("<extra_id_0> maybe") == -1
    assert cls("") == -1
    ex = {"span1_text": b"the glass", "idx": 3}
    assert post.wsc_xprompt("<extra_id_0> the glass", example=ex) == 1
    assert post.wsc_xprompt("<extra_id_0> another word", example=ex) == 0
    assert post.wsc_xprompt("<extra_id_0> the cup", example=ex) == -1
    simple = {"targets_pretokenized": b"the glass", "label": 1}
    assert post.wsc_simple("glass", example=simple) == 1
    assert post.wsc_simple("The cup", example=simple) == 0
    assert post.wsc_simple("", example=simple) == -1
    assert post.wsc_simple("the glass", example=simple, is_target=True) == 1
    assert post.string_to_float("3.4") == 3.4
    assert post.string_to_float("three") == -1.0
    mrc = post.multirc(("no", "yes"))
    assert mrc("<extra_id_0> yes", example={"idx/paragraph": 2, "idx/question": 7},
               is_target=True) == {"value": 1, "group": (2, 7)}
    assert mrc("nope") == {"value": -1}


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
