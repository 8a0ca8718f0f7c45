"""k-shot subsets: deterministic selection, class balance, question units, counts."""

import numpy as np
import pytest

from _tasks_import import T5_SPM, import_tasks
from tasks_testdata.superglue import write_superglue


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = write_superglue(tmp_path_factory.mktemp("superglue_fs"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XPROMPT_SUPERGLUE_DIR", str(root))
        mp.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
        yield import_tasks()


def _read(name, split="train"):
    import seqio
    ds = seqio.get_mixture_or_task(name).get_dataset(None, split=split,
                                                      shuffle=False)
    return list(ds.as_numpy_iterator())


def test_random_selection_is_a_seeded_permutation_prefix(tasks):
    # Independent statement of the rule: RandomState(seed).permutation(n)[:k].
    expected = np.sort(np.random.RandomState(7).permutation(50)[:8])
    got = tasks.select_examples(50, 8, seed=7)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, tasks.select_examples(50, 8, seed=7))
    assert not np.array_equal(got, tasks.select_examples(50, 8, seed=8))
    np.testing.assert_array_equal(tasks.select_examples(5, 32, seed=0), np.arange(5))


def test_balanced_and_per_class(tasks):
    labels = np.array([0] * 30 + [1] * 10 + [2] * 3)
    sel = tasks.select_examples(len(labels), 9, seed=1, sampling="balanced",
                                labels=labels)
    assert len(sel) == 9
    assert np.bincount(labels[sel], minlength=3).tolist() == [3, 3, 3]
    sel = tasks.select_examples(len(labels), 8, seed=1, sampling="balanced",
                                labels=labels)
    assert np.bincount(labels[sel], minlength=3).tolist() == [3, 3, 2]
    # Class 2 has only 3 examples: topped up from the others to reach k.
    sel = tasks.select_examples(len(labels), 15, seed=1, sampling="balanced",
                                labels=labels)
    counts = np.bincount(labels[sel], minlength=3)
    assert len(sel) == 15 and counts[2] == 3 and counts.sum() == 15
    sel = tasks.select_examples(len(labels), 4, seed=3, sampling="per_class",
                                labels=labels)
    assert np.bincount(labels[sel], minlength=3).tolist() == [4, 4, 3]


def test_grouped_units_keep_whole_questions(tasks):
    groups = [(0, 0)] * 3 + [(0, 1)] * 2 + [(1, 2)] * 4 + [(2, 3)]
    sel = tasks.select_examples(len(groups), 2, seed=0, groups=groups)
    chosen = {groups[i] for i in sel}
    assert len(chosen) == 2
    assert sorted(sel.tolist()) == [i for i, g in enumerate(groups) if g in chosen]
    with pytest.raises(ValueError, match="only 'random'"):
        tasks.select_examples(len(groups), 2, seed=0, sampling="balanced",
                              labels=[0] * 10, groups=groups)


def test_registered_fewshot_tasks_read_k_examples(tasks):
    # 5 RTE train examples; the 4-shot subset is RandomState(0).permutation(5)[:4].
    keep = sorted(np.random.RandomState(0).permutation(5)[:4].tolist())
    rte = _read("xprompt_super_glue_rte_local_4shot")
    assert [int(e["idx"]) for e in rte] == keep
    # Same subset for every family of the task.
    assert [int(e["idx"]) for e in _read("lester_super_glue_rte_local_4shot")] == keep
    # Evaluation stays on the full dev set.
    assert len(_read("xprompt_super_glue_rte_local_4shot", "validation")) == 2
    # k larger than the data: everything.
    assert len(_read("xprompt_super_glue_rte_local_32shot")) == 5
    import seqio
    assert seqio.get_mixture_or_task(
        "xprompt_super_glue_rte_local_4shot").num_input_examples("train") == 4


def test_multirc_fewshot_samples_questions(tasks):
    # 3 questions (3, 2, 1 answers). 2-shot = 2 whole questions.
    name = tasks.fewshot_task("xprompt_super_glue_multirc_local", 2, seed=5)
    assert name == "xprompt_super_glue_multirc_local_2shot_seed5"
    exs = _read(name)
    questions = [(int(e["idx/paragraph"]), int(e["idx/question"])) for e in exs]
    sizes = {(0, 0): 3, (0, 1): 2, (1, 2): 1}
    picked = set(questions)
    assert len(picked) == 2
    assert len(exs) == sum(sizes[q] for q in picked)
    order = list(sizes)
    expected = {order[i] for i in np.random.RandomState(5).permutation(3)[:2]}
    assert picked == expected


def test_balanced_fewshot_task_and_wsc_filter(tasks):
    name = tasks.fewshot_task("lester_super_glue_cb_local", 2, seed=0,
                              sampling="balanced")
    assert name == "lester_super_glue_cb_local_2shot_balanced"
    labels = sorted(int(e["label"]) for e in _read(name))
    assert len(labels) == 2 and len(set(labels)) == 2
    assert tasks.task_info(name).base == "lester_super_glue_cb_local"
    # Lester WSC: sample from the raw data, then keep label-True examples only.
    raw = tasks.fewshot_task("xprompt_super_glue_wsc_local", 2, seed=4)
    simple = tasks.fewshot_task("lester_super_glue_wsc_local", 2, seed=4)
    raw_ids = [int(e["idx"]) for e in _read(raw)]
    raw_labels = {int(e["idx"]): int(e["label"]) for e in _read(raw)}
    assert [int(e["idx"]) for e in _read(simple)] == [
        i for i in raw_ids if raw_labels[i] == 1]


def test_fewshot_names_and_errors(tasks):
    assert tasks.fewshot_name("x", 16) == "x_16shot"
    assert tasks.fewshot_name("x", 16, seed=2, sampling="per_class") == \
        "x_16shot_per_class_seed2"
    with pytest.raises(ValueError, match="already a few-shot"):
        tasks.fewshot_task("xprompt_super_glue_rte_local_4shot", 2)
    with pytest.raises(ValueError, match="unknown sampling"):
        tasks.fewshot_task("xprompt_super_glue_rte_local", 2, sampling="stratified")
    with pytest.raises(ValueError, match="needs a label field"):
        tasks.fewshot_task("xprompt_super_glue_record_local", 2, sampling="balanced")


def test_extra_seeds_from_env(tasks, monkeypatch):
    monkeypatch.setenv("XPROMPT_FEWSHOT_SEEDS", "1, 2,0,2,")
    assert tasks.fewshot.extra_seeds_from_env() == [1, 2]
    monkeypatch.setenv("XPROMPT_FEWSHOT_SEEDS", "1,x")
    with pytest.raises(ValueError, match="'x' is not an integer"):
        tasks.fewshot.extra_seeds_from_env()
