"""The synthetic world: generator, official-format files, seqio tasks, the
shipped vocabulary and pretrained checkpoint, and (slow) the quickstart's prompt tuning
beating the no-prompt baseline."""

import collections
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

from xprompt_jax.world import corpus, grammar, paths, pretraining as pretrain, writer
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


def _rule(pair_side, text):
    """Index of the cause -> effect rule whose event (side 0 cause, 1 effect) ends `text`."""
    return [k for k, pair in enumerate(grammar.CAUSAL_PAIRS)
            if text.endswith(pair[pair_side].replace("{p} ", "").replace("{p}", "") + " .")
            or text.endswith(pair[pair_side].replace("{p} ", "").replace("{p}", ""))]


def test_rules_hold_and_surface_cues_do_not_give_labels_away():
    rng = random.Random(0)
    for _ in range(300):
        label = rng.randrange(2)
        b = world_tasks.sample_boolq(rng, label)
        asked = b["question"].replace("is it true that ", "")
        causes = [k for f in b["passage"].split(" .") if f.strip() for k in _rule(0, f.strip())]
        assert (set(_rule(1, asked)) & set(causes) != set()) == bool(label), b
        true_effect = next(grammar.CAUSAL_PAIRS[k][1] for k in causes)
        assert ("{p}" in true_effect) == any(asked.startswith(p + " ") for p in grammar.PEOPLE)
        r = world_tasks.sample_rte(rng, label)
        named = r["hypothesis"].split()[-2]
        facts = [f.split() for f in r["premise"].split(" .") if f.strip()]
        owned = next(f[-1] for f in facts if f[1] in grammar.OWN_VERBS)
        entailed = named == owned or grammar.MEMBER_CATEGORY[owned] == named
        assert entailed == (label == 0), r
        w = world_tasks.sample_wic(rng, label)
        senses = [next(i for i, cues in enumerate(grammar.SENSES[w["word"]])
                       if any(c in s.split() for c in cues))
                  for s in (w["sentence1"], w["sentence2"])]
        assert (senses[0] == senses[1]) == bool(label)
        c = world_tasks.sample_copa(rng, label)
        side = 1 if c["question"] == "effect" else 0
        correct, wrong = (c["choice2"], c["choice1"]) if label else (c["choice1"], c["choice2"])
        premise_rules = set(_rule(1 - side, c["premise"]))
        assert set(_rule(side, correct)) & premise_rules
        assert not set(_rule(side, wrong)) & premise_rules
        # both alternatives mention a person, or neither does
        assert any(p in correct for p in grammar.PEOPLE) == any(p in wrong
                                                               for p in grammar.PEOPLE)


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


def test_negated_twins_flip_the_answer():
    for name, task in world_tasks.TASKS.items():
        assert world_tasks.prefix(name) == name
        assert world_tasks.prefix(name, negated=True) == f"not {name}"
        for label in (0, 1):
            assert task.target(label, negated=True) == task.labels[1 - label]
            assert task.target(label) == task.labels[label]


def test_pretraining_mixture_has_every_kind_and_keeps_dev_inputs_out(tmp_path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=paths.vocab_path())
    config = pretrain.PretrainConfig(output_dir=str(tmp_path), span_rate=0.2,
                                     bare_rate=0.2, negated_rate=0.5)
    mixture = pretrain.Mixture(config, sp)
    batch = mixture.batch(200)
    assert batch["encoder_input_tokens"].shape == (200, pretrain.INPUT_LENGTH)
    assert all(mixture.counts[k] > 0 for k in ("span", "prefixed", "negated", "bare"))
    dev = {t: writer.held_out_inputs(t, writer.DEFAULT_SIZES) for t in world_tasks.TASK_NAMES}
    for _ in range(300):
        inputs, targets, kind = mixture.supervised()
        text = sp.decode([i for i in inputs if i > 1])
        for name in world_tasks.TASK_NAMES:
            for prefix in (f"not {name} ", f"{name} "):
                if text.startswith(prefix):
                    text = text[len(prefix):]
                    break
        assert all(text not in rows for rows in dev.values())


def test_shipped_checkpoint_loads_and_is_small():
    import jax

    from xprompt_jax.checkpoints import load_t5x_params
    from xprompt_jax.models import T5

    path = paths.checkpoint_path()
    size = pretrain.checkpoint_size_bytes(path) + os.path.getsize(paths.vocab_path())
    assert size <= 5 * 1024 * 1024, size
    params, state, step = load_t5x_params(path, return_optimizer_state=True,
                                          return_step=True)
    assert step == int(os.path.basename(path).split("_")[1])
    cfg = pretrain.model_config()
    enc = np.ones((1, 8), np.int32)
    expected = jax.eval_shape(lambda: T5(cfg).init(jax.random.PRNGKey(0), enc, enc, enc,
                                                   enable_dropout=False))["params"]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    want = jax.tree_util.tree_flatten_with_path(expected)[0]
    assert [(p, x.shape) for p, x in flat] == [(p, x.shape) for p, x in want]
    slots = state["param_states"]["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert set(slots) == {"m", "v", "v_col", "v_row"}  # T5X Adafactor layout


def test_world_gin_file_matches_the_shipped_model():
    import gin

    from xprompt_jax import gin_utils
    from xprompt_jax.models import config as t5_config

    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/world_tiny.gin"], [], finalize=False)
        cfg = gin.get_configurable(t5_config.T5Config)()
        assert cfg == pretrain.model_config()
        assert gin.query_parameter("%DROPOUT_RATE") == 0.0
    finally:
        gin.clear_config()
    assert os.path.isdir(paths.checkpoint_path())


def test_a_stopped_quickstart_names_the_folder_to_resume(tmp_path, world_dir, monkeypatch,
                                                         capsys):
    """A signal stops the quickstart's training. Its default folder is new on every run, so
    the same command would start over: the line says to rerun with --output_dir=<that
    folder>. With --output_dir given, the same command resumes, and the line says so."""
    from xprompt_jax.errors import TrainingInterrupted
    from xprompt_jax.runs import train as train_lib
    from xprompt_jax.world import quickstart as job

    def stopped(*args, **kwargs):
        raise TrainingInterrupted("SIGTERM: saved step 3 (data position 3) to ckpt", step=3,
                                  signal_name="SIGTERM")

    monkeypatch.setattr(train_lib, "train", stopped)
    checkout = tmp_path / "checkout"  # the working directory: a newcomer's git checkout
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("XPROMPT_RUNS_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    kwargs = dict(world_dir=world_dir, references=False, steps=4,
                  method=job.METHODS["prompt_tuning"])
    with pytest.raises(TrainingInterrupted) as info:
        job.run(None, **kwargs)
    assert list(checkout.iterdir()) == []  # nothing written into the working directory
    assert f"run directory: {tmp_path / 'home' / 'xprompt_runs'}/quickstart-" in \
        capsys.readouterr().out
    (made,) = (tmp_path / "home" / "xprompt_runs").iterdir()  # this run's timestamped folder
    assert str(info.value) == ("SIGTERM: saved step 3 (data position 3) to ckpt; rerun with "
                               f"--output_dir={made} to resume from step 3 (without it the "
                               "quickstart starts a new folder)")
    with pytest.raises(TrainingInterrupted) as info:
        job.run(str(tmp_path / "named"), **kwargs)
    assert str(info.value).endswith("; rerun the same command to resume from step 3")
    monkeypatch.setenv("XPROMPT_RUNS_DIR", str(tmp_path / "runs"))  # the user's choice
    with pytest.raises(TrainingInterrupted):
        job.run(None, **kwargs)
    assert [p.name.split("-")[0] for p in (tmp_path / "runs").iterdir()] == ["quickstart"]


@pytest.mark.slow
def test_quickstart_xprompt_pipeline_beats_no_prompt(tmp_path, world_dir):
    """The main job with a short budget: the prompt (no task name in the input) must
    recover most of what the frozen model does with the task name, and the pipeline must
    write its report."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "xprompt_jax.quickstart", "--output_dir", str(out),
           "--world_dir", world_dir, "--steps", "80",
           "--gin", "EVAL_PERIOD = 40", "--gin", "NUM_SCORE_EXAMPLES = 64",
           "--gin", "TOKEN_RATIOS = (0.3, 0.6)", "--gin", "PIECE_RATIOS = (0.3, 0.6)"]
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"run directory: {out}" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    for name in ("report.md", "training_curve.png", "importance_heatmap.png"):
        assert (out / name).exists(), name
    refs = report["quickstart"]["references"]
    assert refs["bare"] < 65.0, refs  # without a task cue the frozen model is near chance
    assert refs["prefixed"] > 85.0, refs
    stage1 = report["stage1"]["eval"]["main_metric"]
    assert stage1 >= refs["bare"] + 20.0, (stage1, refs)
    assert report["final_eval"]["main_metric"] >= refs["bare"] + 15.0, report["final_eval"]
    assert "| frozen, no task name, no prompt (lower reference) |" in \
        (out / "report.md").read_text()
