"""The synthetic world (issue #7): generator, official-format files, seqio tasks, the
shipped vocabulary and pretrained checkpoint, and (slow) the quickstart's prompt tuning
beating the no-prompt baseline."""

import collections
import json
import os
import pathlib
import random

import numpy as np
import pytest

from xprompt_jax.world import corpus, grammar, paths, pretrain, writer
from xprompt_jax.world import tasks as world_tasks

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = {"train": 40, "validation": 20, "test": 10}

OFFICIAL_FIELDS = {
    "BoolQ": {"question", "passage", "idx", "label"},
    "RTE": {"premise", "hypothesis", "idx", "label"},
    "COPA": {"premise", "choice1", "choice2", "question", "idx", "label"},
    "WiC": {"word", "sentence1", "sentence2", "start1", "end1", "start2", "end2", "idx",
            "version", "label"},
}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    """The default-size world, generated once for this module (also used by seqio)."""
    return writer.ensure_world_data(str(tmp_path_factory.mktemp("world") / "data"))


def _read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_generation_is_deterministic_and_seeded():
    for task in world_tasks.TASK_NAMES:
        a = writer.generate_split(task, "validation", 30, seed=0)
        b = writer.generate_split(task, "validation", 30, seed=0)
        c = writer.generate_split(task, "validation", 30, seed=1)
        assert a == b
        assert a != c


def test_files_have_the_official_fields_and_balanced_labels(tmp_path):
    writer.write_world(str(tmp_path), seed=0, sizes=SMALL)
    meta = json.loads((tmp_path / "world.json").read_text())
    assert meta["sizes"] == SMALL and set(meta["tasks"]) == set(world_tasks.TASK_NAMES)
    for directory, fields in OFFICIAL_FIELDS.items():
        seen = set()
        for split, size in SMALL.items():
            rows = _read(tmp_path / directory / writer.SPLIT_FILES[split])
            assert len(rows) == size
            assert [r["idx"] for r in rows] == list(range(size))
            for row in rows:
                expected = fields - ({"label"} if split == "test" else set())
                assert set(row) == expected, (directory, split, row)
                text = json.dumps({k: v for k, v in row.items() if k not in ("idx", "label")},
                                  sort_keys=True)
                assert text not in seen  # no input repeated across splits
                seen.add(text)
            if split == "test":
                continue
            labels = collections.Counter(json.dumps(r["label"]) for r in rows)
            assert len(labels) == 2 and max(labels.values()) - min(labels.values()) <= 1
            if directory in ("BoolQ", "WiC"):
                assert all(isinstance(r["label"], bool) for r in rows)
            elif directory == "RTE":
                assert set(labels) == {'"entailment"', '"not_entailment"'}
            else:
                assert set(labels) == {"0", "1"}
                assert all(r["question"] in ("cause", "effect") for r in rows)
            if directory == "WiC":
                for r in rows:
                    assert r["sentence1"][r["start1"]:r["end1"]] == r["word"]
                    assert r["sentence2"][r["start2"]:r["end2"]] == r["word"]


def test_rules_hold_and_surface_cues_do_not_give_labels_away():
    rng = random.Random(0)
    for _ in range(200):
        label = rng.randrange(2)
        ex = world_tasks.sample_boolq(rng, label)
        obj, place = ex["question"].split(" the ")[1].split()[0], ex["question"].split()[-1]
        assert place in ex["passage"] and obj in ex["passage"]
        last = [s for s in ex["passage"].split(" .") if f" {obj} " in s + " "][-1]
        assert (last.split()[-1] == place) == bool(label)
        w = world_tasks.sample_wic(rng, label)
        senses = [next(i for i, cues in enumerate(grammar.SENSES[w["word"]])
                       if any(c in s.split() for c in cues)) for s in (w["sentence1"],
                                                                      w["sentence2"])]
        assert (senses[0] == senses[1]) == bool(label)
        c = world_tasks.sample_copa(rng, label)
        correct = c["choice2"] if label else c["choice1"]
        pair = next(p for p in grammar.CAUSAL_PAIRS
                    if any(c["premise"].endswith(e.replace("{p}", "").strip() + " .")
                           for e in p))
        assert any(correct.endswith(e.replace("{p}", "").strip() + " .") for e in pair)


def test_formats_are_the_tasks_package_lester_templates():
    from xprompt_jax.tasks import templates

    for task in world_tasks.TASK_NAMES:
        assert world_tasks.LESTER_FORMATS[task] == templates.LESTER[task].inputs
        assert world_tasks.LESTER_LABELS[task] == tuple(templates.LESTER[task].labels)


def test_shipped_vocabulary():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=paths.vocab_path())
    assert sp.get_piece_size() == corpus.SPM_VOCAB_SIZE
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert corpus.check_vocab_coverage(paths.vocab_path()) == []
    for labels in world_tasks.LESTER_LABELS.values():
        assert all(len(sp.encode(label)) <= 3 for label in labels)
    assert pretrain.MODEL_KWARGS["vocab_size"] >= sp.get_piece_size() + corpus.EXTRA_IDS


def test_span_corruption_reconstructs_the_text():
    rng = np.random.RandomState(0)
    ids = list(range(3, 43))
    sentinel = lambda k: 699 - k  # noqa: E731
    inputs, targets = pretrain.span_corruption(ids, rng, sentinel)
    spans, current = {}, None
    for t in targets:
        if t >= 600:
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    rebuilt = []
    for t in inputs:
        rebuilt += spans[t] if t >= 600 else [t]
    assert rebuilt == ids
    assert 0.05 < 1 - (len(inputs) - len(spans) + 1) / len(ids) < 0.3


def test_world_tasks_through_seqio(world_dir, monkeypatch):
    import seqio

    monkeypatch.setenv(writer.DIR_ENV_VAR, world_dir)
    from xprompt_jax import tasks
    from xprompt_jax.world import seqio_tasks

    assert set(seqio_tasks.REGISTERED) == {f"world_{t}{s}" for t in world_tasks.TASK_NAMES
                                           for s in ("", "_prefixed")}
    vocab = seqio_tasks.world_vocabulary()
    assert vocab.vocab_size == corpus.SPM_VOCAB_SIZE + corpus.EXTRA_IDS
    for name in ("world_rte", "world_rte_prefixed", "world_wic"):
        task = seqio.get_mixture_or_task(name)
        assert task.output_features["targets"].vocabulary.sentencepiece_model_file == \
            paths.vocab_path()
        ds = task.get_dataset({"inputs": 64, "targets": 4}, split="validation",
                              shuffle=False)
        examples = list(ds.take(3).as_numpy_iterator())
        rows = _read(os.path.join(world_dir, "RTE" if "rte" in name else "WiC", "val.jsonl"))
        for ex, row in zip(examples, rows):
            text = ex["inputs_pretokenized"].decode()
            assert text.startswith(("rte " if name.endswith("prefixed") else "") +
                                   ("hypothesis:" if "rte" in name else "sentence1:"))
            assert list(ex["inputs"]) == vocab.encode(text) + [1]
            label = tasks.get_label_strings(name)[int(ex["label"])]
            assert ex["targets_pretokenized"].decode() == label
            if "rte" in name:
                assert label == row["label"]
        assert tasks.get_label_strings(name) in (["entailment", "not_entailment"],
                                                 ["False", "True"])
        assert tasks.get_main_metric(name) == "accuracy"
