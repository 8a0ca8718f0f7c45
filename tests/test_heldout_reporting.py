"""Held-out reporting (select on validation, report test), nearest vocabulary pieces
(Lester et al. section 7) against a brute-force cosine, EPT's mu_t recorder, and (slow) a
world run with lester_paper.gin settings that reports its held-out split."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import synthetic_tasks
from training_utils import FEATURE_LENGTHS, tiny_prompted_model
from xprompt_jax.analysis import nearest_tokens as nt
from xprompt_jax.analysis import prompt_norm
from xprompt_jax.evaluation import EvalConfig, Evaluator
from xprompt_jax.runs import report as run_report

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_nearest_tokens_match_brute_force_cosine():
    rng = np.random.RandomState(0)
    emb = rng.normal(size=(50, 6))
    prompt = rng.normal(size=(4, 6))
    prompt[2] = 3.0 * emb[17]          # a scaled copy: cosine 1 with row 17
    ids, sims = nt.nearest_tokens(prompt, emb, k=5)
    for t in range(4):
        brute = [(float(np.dot(prompt[t], e) / np.linalg.norm(prompt[t]) / np.linalg.norm(e)),
                  i) for i, e in enumerate(emb)]
        brute.sort(key=lambda x: -x[0])
        assert ids[t].tolist() == [i for _, i in brute[:5]]
        np.testing.assert_allclose(sims[t], [s for s, _ in brute[:5]], rtol=1e-12)
    assert ids[2, 0] == 17 and sims[2, 0] == pytest.approx(1.0)
    # Padding rows past the vocabulary are never neighbours.
    ids, _ = nt.nearest_tokens(prompt, emb, k=5, num_pieces=10)
    assert ids.max() < 10
    with pytest.raises(ValueError, match=r"\[n, e\]"):
        nt.nearest_tokens(prompt[:, :3], emb)


class _Vocab:
    vocab_size = 50

    def decode(self, ids):
        return "".join(f"w{i}" for i in ids)

    def encode(self, s):
        return [int(s[1:])]


def test_interpret_prompt_reports_label_pieces():
    rng = np.random.RandomState(1)
    emb = rng.normal(size=(50, 8))
    prompt = np.stack([emb[3] + 1e-3, emb[40], rng.normal(size=8)])
    out = nt.interpret_prompt(prompt, emb, _Vocab(), ["w3", "w44"], k=5)
    assert out["tokens"][0]["nearest"][0] == {"id": 3, "piece": "w3",
                                              "cosine": pytest.approx(1.0, abs=1e-5)}
    assert out["labels"][0]["appears"] and out["labels"][0]["tokens"] == [0]
    assert out["any_label_appears"]
    text = "\n".join(nt.markdown_lines(out))
    assert "`w3`" in text and "Label strings among the nearest pieces" in text


def _scripted(evaluator, values):
    """The evaluator's scores replaced by `values`, one per evaluation (its split's result
    otherwise as the evaluator builds it); returns the call counter."""
    calls = []

    def evaluate_variants(variables, variants, *args, **kwargs):
        v = values[len(calls)]
        calls.append(v)
        return [{"mode": "generation", "split": evaluator.config.split,
                 "metrics": {"accuracy": v}, "main_metric": v, "num_examples": 2}]

    evaluator.evaluate_variants = evaluate_variants
    return calls


def test_heldout_scored_only_when_selection_improves(t5_vocab_path):
    task = synthetic_tasks.register(t5_vocab_path)
    ev = Evaluator(tiny_prompted_model(), task, FEATURE_LENGTHS,
                   EvalConfig(mode="generation", max_examples=2, heldout_split="train"))
    assert ev.heldout.config.split == "train" and ev.heldout.heldout is None
    sel = _scripted(ev, [50.0, 70.0, 60.0, 80.0, 80.0])
    held = _scripted(ev.heldout, [40.0, 65.0, 75.0, 75.0])
    results = [ev.evaluate({}) for _ in range(5)]
    # Scored at 50, 70, 80 and again when the best (80) is re-evaluated; not at 60.
    assert [("heldout" in r) for r in results] == [True, True, False, True, True]
    assert len(sel) == 5 and len(held) == 4
    assert results[1]["heldout"]["main_metric"] == 65.0
    assert results[1]["metrics"]["heldout_train/accuracy"] == 65.0
    assert results[3]["heldout"]["main_metric"] == 75.0
    summary = {"best_eval": {"step": 4, **results[3]}, "final_step": 4, "best_step": 4}
    report = run_report.run_report(summary, "t")
    assert report["selection"]["main_metric"] == 80.0
    assert "heldout_train/accuracy" not in report["selection"]["metrics"]
    assert report["heldout"]["split"] == "train"
    assert "| 4 | validation | 80.00 | train | 75.00 |" in "\n".join(
        run_report.run_markdown(report))


def test_prompt_norm_recorder_and_plot(tmp_path):
    rec = prompt_norm.PromptNormRecorder()
    for step in range(1, 6):
        rec(step, {"prompt_mean_norm": np.float32(step * 0.5), "loss": 1.0})
    rec.write(str(tmp_path))
    rec(5, {"prompt_mean_norm": 9.0})   # a resumed run rewrites step 5
    rec.write(str(tmp_path))
    with open(tmp_path / "train_log.jsonl", "w") as f:
        f.write(json.dumps({"step": 5, "split": "eval", "main_metric": 61.0}) + "\n")
    steps, norms = prompt_norm.read_norms(str(tmp_path))
    assert steps.tolist() == [1, 2, 3, 4, 5] and norms.tolist() == [0.5, 1.0, 1.5, 2.0, 9.0]
    assert prompt_norm.read_evals(str(tmp_path))[1].tolist() == [61.0]
    path = prompt_norm.plot_prompt_norm(str(tmp_path))
    assert path and os.path.getsize(path) > 1000


@pytest.mark.slow
def test_world_run_with_lester_settings_reports_heldout(tmp_path):
    """world_rte re-split (validation halved), Lester's recipe settings (class-label init,
    Adafactor 0.3, generation eval) on the embedded tiny model, a short budget: the run
    selects on validation and reports the held-out test split in train_summary.json,
    report.json / report.md and the TensorBoard/JSONL log."""
    out = tmp_path / "run"
    script = f"""
import gin, json, sys
from xprompt_jax import gin_utils
from xprompt_jax.runs import configured_run
from xprompt_jax.runs.train import train
import xprompt_jax.tasks as tasks
import xprompt_jax.world.seqio_tasks  # registers world_rte
name = tasks.heldout_task('world_rte', 'split_validation')
gin_utils.parse_gin(['recipes/lester_paper.gin', 'models/world_tiny.gin', 'world/run.gin'],
    ["MIXTURE_OR_TASK_NAME = '" + name + "'", "MODEL_DIR = '{out}'", 'TRAIN_STEPS = 40',
     'EVAL_PERIOD = 20', 'PROMPT_LENGTH = 100', "TASK_FEATURE_LENGTHS = {{'inputs': 48, 'targets': 4}}",
     "EVAL_HELDOUT_SPLIT = 'test'", 'RECORD_PROMPT_NORM = True', 'BATCH_SIZE = 16'])
train(configured_run(), config_text=gin.config_str())
"""
    env = dict(os.environ, XPROMPT_WORLD_DIR=str(tmp_path / "world"))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    best = summary["best_eval"]
    assert best["mode"] == "generation" and best["split"] == "validation"
    assert best["num_examples"] == 200                      # half of the 400 dev examples
    held = best["heldout"]
    assert held["split"] == "test" and held["num_examples"] == 200
    # The held-out accuracy recomputed from the best step's exported prompt: greedy decodes
    # of the 200 test examples by the plain forward pass, compared with the gold labels by
    # hand (a decode counts when it is exactly the label's text, T5's parsing; world_rte's
    # metric is accuracy).
    check = f"""
import json, sys
import numpy as np
import seqio
sys.path.insert(0, {os.path.join(REPO_ROOT, 'tests')!r})
from training_utils import reference_greedy, world_variables
import xprompt_jax.tasks as tasks
import xprompt_jax.world.seqio_tasks
task = seqio.get_mixture_or_task(tasks.heldout_task('world_rte', 'split_validation'))
examples = list(task.get_dataset({{'inputs': 48, 'targets': 4}}, split='test', shuffle=False,
                                 trim_output_features=True).as_numpy_iterator())
model, variables = world_variables(np.load({str(out / 'numpy_checkpoints' / f'checkpoint_{best["step"]}' / 'prompt.prompt.npy')!r}))
vocab = task.output_features['targets'].vocabulary
decoded = reference_greedy(model, variables, [list(ex['inputs']) for ex in examples], 4,
                           vocab.eos_id)
gold = [ex['targets_pretokenized'].decode() for ex in examples]
hits = [vocab.decode(ids) == g for ids, g in zip(decoded, gold)]
print(json.dumps({{'n': len(examples), 'accuracy': 100.0 * sum(hits) / len(hits),
                  'labels': sorted(set(gold))}}))
"""
    proc = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reference["n"] == 200 and reference["labels"] == ["entailment", "not_entailment"]
    assert held["main_metric"] == pytest.approx(reference["accuracy"], abs=1e-9)
    report = json.loads((out / "report.json").read_text())
    assert report["heldout"]["main_metric"] == held["main_metric"]
    assert report["best_step"] == best["step"]
    toks = report["nearest_tokens"]
    assert len(toks["tokens"]) == 100 and toks["k"] == 5
    assert [l["label"] for l in toks["labels"]]  # the task's label strings were checked
    assert "held-out" in (out / "report.md").read_text()
    assert (out / "prompt_mean_norm.png").exists()
    steps, _ = prompt_norm.read_norms(str(out))
    assert steps.tolist() == list(range(1, 41))


class _PieceVocab:
    """Pieces as SentencePiece splits a label: id 1 is the bare word-start piece (decodes
    to nothing), 45 a sentinel; "not_ent" -> [1, 2, 3, 4], "<extra_id_0> yes" -> [45, 6]."""
    vocab_size = 50
    PIECES = {1: "", 2: "not", 3: "_", 4: "ent", 6: "yes", 45: "<extra_id_0>"}

    def decode(self, ids):
        return "".join(self.PIECES.get(i, f"w{i}") for i in ids)

    def encode(self, s):
        return {"not_ent": [1, 2, 3, 4], "<extra_id_0> yes": [45, 6]}[s]


def test_label_check_needs_the_label_not_its_word_start_piece():
    """Token 0 sits on the bare word-start piece only, token 1 on "not" only, token 2 on
    all of "not", "_", "ent", token 3 on "yes" (the sentinel of "<extra_id_0> yes" is no
    label text). Top-3 neighbours, hand-placed: each token is a piece's embedding plus
    small multiples of others."""
    emb = np.eye(50)
    prompt = np.stack([emb[1] + 0.1 * emb[10] + 0.05 * emb[11],
                       emb[2] + 0.1 * emb[12] + 0.05 * emb[13],
                       emb[2] + 0.9 * emb[3] + 0.8 * emb[4],
                       emb[6] + 0.1 * emb[14] + 0.05 * emb[15]])
    labels = ["not_ent", "<extra_id_0> yes"]
    whole = nt.interpret_prompt(prompt, emb, _PieceVocab(), labels, k=3)
    assert [l["content_ids"] for l in whole["labels"]] == [[2, 3, 4], [6]]
    assert [l["tokens"] for l in whole["labels"]] == [[2], [3]]
    loose = nt.interpret_prompt(prompt, emb, _PieceVocab(), labels, k=3,
                                label_match="any_piece")
    # any content piece: token 1 ("not") and 2; never token 0 (the bare piece)
    assert [l["tokens"] for l in loose["labels"]] == [[1, 2], [3]]
    with pytest.raises(ValueError, match="label_match 'x'"):
        nt.interpret_prompt(prompt, emb, _PieceVocab(), labels, label_match="x")
