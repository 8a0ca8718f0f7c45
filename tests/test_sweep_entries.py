"""A sweep's entries each keep their own best prompt and stop on their own (PATIENCE per
entry: a stopped entry's params and optimizer state stay those of its stop), a killed
sweep resumes equal, and the sweep report's statistics over seeds."""

import json
import math

import gin
import jax
import numpy as np
import pytest

import xprompt_jax.tasks  # noqa: F401  (as the CLI does before parsing)
from xprompt_jax import gin_utils
from xprompt_jax.runs import build_trainer, configured_run
from xprompt_jax.runs.sweep_report import sweep_markdown, sweep_report, write_sweep_report
from xprompt_jax.training import optimizers
from xprompt_jax.training.sweep import BEST_DIR, BEST_FILE, SweepEntries, SweepState


def _bank_setup(num):
    """A tiny random T5 with a bank of `num` soft prompts, its frozen params, a jitted
    step of the sweep optimizer (Adafactor, 2 learning rates) and synthetic batches."""
    from xprompt_jax.models import PromptedT5, T5Config
    from xprompt_jax.prompts import SoftPrompt
    from xprompt_jax.prompts.bank import PromptBank
    from xprompt_jax.training.bank_training import BankBatches
    from xprompt_jax.training.sweep import sweep_optimizer
    from xprompt_jax.training.train_step import LossConfig, TrainState, make_train_step

    cfg = T5Config(vocab_size=80, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                   num_encoder_layers=1, num_decoder_layers=1,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   dropout_rate=0.0, mlp_activations=("gelu", "linear"),
                   logits_via_embedding=False)
    model = PromptedT5(cfg, prompt=PromptBank(SoftPrompt(length=2), num_prompts=num))
    rng = np.random.RandomState(0)

    def batch():
        tgt = rng.randint(2, 80, (4, 3))
        return BankBatches(model, "ensemble")({
            "encoder_input_tokens": rng.randint(2, 80, (4, 6)),
            "decoder_input_tokens": np.concatenate([np.zeros((4, 1), int), tgt[:, :-1]], 1),
            "decoder_target_tokens": tgt,
            "decoder_loss_weights": np.ones((4, 3), np.float32)})

    b0 = batch()
    variables = model.init(jax.random.PRNGKey(0), b0["encoder_input_tokens"],
                           b0["decoder_input_tokens"], b0["decoder_target_tokens"],
                           enable_dropout=False)
    frozen = {"params": {n: v for n, v in variables["params"].items() if n != "prompt"}}
    tx = sweep_optimizer(optimizers.adafactor(learning_rate=0.3),
                         [{"learning_rate": 0.1 * (k + 1)} for k in range(num)])
    step = jax.jit(make_train_step(model, tx, LossConfig(normalization="sum"),
                                   enable_dropout=False))
    state = TrainState.create({"prompt": variables["params"]["prompt"]}, tx)
    return state, (lambda s, b: step(s, frozen, b, jax.random.PRNGKey(1))[0]), batch


def _entry(tree, k):
    return [np.asarray(x)[k].copy() for x in jax.tree_util.tree_leaves(tree)]


def test_stopped_entry_keeps_its_params_and_state_others_unchanged(tmp_path):
    """PATIENCE 1, 2 entries: entry 0 does not improve at the second evaluation and stops;
    from then on its params and every leaf of its optimizer state are bitwise those of its
    stop, while entry 1 trains exactly as it does when nothing stops (bitwise: the entries
    never mix); its best prompt file is its prompt at its best step; when entry 1 stops too
    the callback stops the run. The record survives `meta` / `load_meta`."""
    from xprompt_jax.training.bank_training import bank_numpy_params

    names = ["learning_rate=0.1", "learning_rate=0.2"]
    configs = [{"learning_rate": 0.1}, {"learning_rate": 0.2}]
    entries = SweepEntries(str(tmp_path), names, configs, patience=1,
                           numpy_fn=lambda p: bank_numpy_params(p, names))
    state, step, batch = _bank_setup(2)
    batches = [batch() for _ in range(6)]
    free = state
    for b in batches[:2]:
        state = free = step(state, b)
    at_best = _entry(state.params, 0)
    assert entries(2, {"per_prompt_main": [50.0, 60.0]}, state.params) is None
    for b in batches[2:4]:
        state = free = step(state, b)
    best1 = _entry(state.params, 1)
    action = entries(4, {"per_prompt_main": [50.0, 70.0]}, state.params)
    assert not action.stop
    state = action.update_state(state)
    assert isinstance(state.opt_state, SweepState)
    np.testing.assert_array_equal(state.opt_state.active, [0.0, 1.0])
    params0, opt0 = _entry(state.params, 0), _entry(state.opt_state.inner, 0)
    for b in batches[4:]:
        state, free = step(state, b), step(free, b)
    for a, b in zip(_entry(state.params, 0), params0):
        np.testing.assert_array_equal(a, b)  # frozen at its stop
    for a, b in zip(_entry(state.opt_state.inner, 0), opt0):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - b).max() > 1e-4  # not frozen, it would have moved on
               for a, b in zip(_entry(free.params, 0), params0))
    for a, b in zip(_entry(state.params, 1), _entry(free.params, 1)):
        np.testing.assert_array_equal(a, b)  # the other entry as if nothing stopped
    np.testing.assert_array_equal(np.load(tmp_path / BEST_DIR / f"{names[0]}.npy"),
                                  at_best[0])
    np.testing.assert_array_equal(np.load(tmp_path / BEST_DIR / f"{names[1]}.npy"),
                                  best1[0])
    action = entries(6, {"per_prompt_main": [10.0, 65.0]}, state.params)
    assert action.stop and "every sweep entry stopped" in action.reason
    record = json.loads((tmp_path / BEST_FILE).read_text())
    assert record[names[0]] == {"index": 0, "config": configs[0], "best_metric": 50.0,
                                "best_step": 2, "best_heldout": None,
                                "last_metric": 50.0, "last_step": 4,
                                "evals_without_improvement": 1, "stopped_at": 4}
    assert record[names[1]]["best_step"] == 4 and record[names[1]]["stopped_at"] == 6
    again = SweepEntries(str(tmp_path), names, configs, 1, entries.numpy_fn)
    again.load_meta(json.loads(json.dumps(entries.meta())))
    assert again.meta() == entries.meta() == record


def _world_sweep(model_dir, steps):
    gin.clear_config()
    gin_utils.parse_gin(
        ["models/world_tiny.gin", "prompt_tuning.gin", "world/run.gin"],
        [f"MODEL_DIR = '{model_dir}'", f"TRAIN_STEPS = {steps}", "EVAL_PERIOD = 1",
         "PATIENCE = 1", "MAX_EVAL_EXAMPLES = 16", "KEEP_CHECKPOINTS = 10",
         "EVAL_HELDOUT_SPLIT = 'train'",
         "BATCH_SIZE = 8", "PROMPT_LENGTH = 4", "DROPOUT_RATE = 0.0",
         "SWEEP = {'seed': [0, 1], 'learning_rate': [3.0]}"], finalize=False)
    try:
        return build_trainer(configured_run())
    finally:
        gin.clear_config()


@pytest.mark.slow  # 3 short world sweeps with an evaluation every step (about 20-40 s)
def test_world_sweep_stops_entries_keeps_bests_and_resumes_equal(tmp_path):
    """A world sweep (2 seeds, PATIENCE 1, an evaluation every step):
    every stopped entry's final params are its numpy export at its stop step (bitwise),
    its best_per_entry/<entry>.npy the export at its best step, its held-out metric
    (EVAL_HELDOUT_SPLIT) that prompt's evaluated alone; the same sweep killed
    after step 2 and resumed ends with the same params and per-entry record; the sweep
    report has one row per entry and one group over the 2 seeds. 3 steps: an entry that
    stops before the end stops at step 2, the step the split run is killed at, so the
    resumed run must keep it stopped from the checkpoint's record."""
    steps = 3
    whole = _world_sweep(tmp_path / "whole", steps)
    summary = whole.run()
    record = json.loads((tmp_path / "whole" / BEST_FILE).read_text())
    assert len(record) == 2
    stopped = {n: e["stopped_at"] for n, e in record.items() if e["stopped_at"] is not None}
    assert any(s < summary["final_step"] for s in stopped.values()), record  # not vacuous
    assert summary["final_step"] == steps and 2 in stopped.values(), (summary, record)
    final = whole.numpy_params_fn(whole.state.params)
    numpy_dir = tmp_path / "whole" / "numpy_checkpoints"
    for name, entry in record.items():
        if entry["stopped_at"] is not None:
            np.testing.assert_array_equal(
                np.asarray(final[name]),
                np.load(numpy_dir / f"checkpoint_{entry['stopped_at']}" / f"{name}.npy"))
        np.testing.assert_array_equal(
            np.load(tmp_path / "whole" / BEST_DIR / f"{name}.npy"),
            np.load(numpy_dir / f"checkpoint_{entry['best_step']}" / f"{name}.npy"))
    # each entry's held-out metric at its best step: its best prompt evaluated alone
    from training_utils import world_variables
    from xprompt_jax.evaluation.evaluator import EvalConfig, Evaluator

    alone = None
    for name, entry in record.items():
        model, variables = world_variables(np.load(tmp_path / "whole" / BEST_DIR /
                                                   f"{name}.npy"))
        alone = alone or Evaluator(model, "world_rte", {"inputs": 48, "targets": 4},
                                   EvalConfig(split="train", max_examples=16))
        assert entry["best_heldout"] == {
            "split": "train", "main_metric": alone.evaluate(variables)["main_metric"]}
    _world_sweep(tmp_path / "split", 2).run()  # "killed" after step 2
    resumed = _world_sweep(tmp_path / "split", steps)
    resumed.run()
    assert json.loads((tmp_path / "split" / BEST_FILE).read_text()) == record
    for a, b in zip(jax.tree_util.tree_leaves(resumed.state.params),
                    jax.tree_util.tree_leaves(whole.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    report = write_sweep_report(str(tmp_path / "whole"))
    assert [r["entry"] for r in report["rows"]] == ["seed=0+learning_rate=3.0",
                                                    "seed=1+learning_rate=3.0"]
    assert [g["config"] for g in report["groups"]] == ["learning_rate=3.0"]
    assert report["groups"][0]["best"]["n"] == 2
    for name in ("sweep_report.json", "sweep_report.md", "sweep_report.png"):
        assert (tmp_path / "whole" / name).stat().st_size > 0


def test_sweep_report_statistics_over_seeds():
    """Per configuration without its seed: n, mean, sample std and the 95% t-interval,
    checked against scipy's t distribution; a configuration seen with one seed has no
    std or interval; rows follow the entries' sweep order (`index`), not the file's."""
    stats = pytest.importorskip("scipy.stats")
    best = {0: 70.0, 1: 74.0, 2: 75.5}
    record = {}
    for seed, value in best.items():
        record[f"seed={seed}+learning_rate=0.3"] = {
            "index": seed, "config": {"seed": seed, "learning_rate": 0.3},
            "best_metric": value, "best_step": 10 * (seed + 1), "last_metric": value - 1,
            "last_step": 40, "stopped_at": None,
            "best_heldout": {"split": "test", "main_metric": value - 10}}
    record = {"seed=0+learning_rate=1.0": {  # first in the file, last in the sweep
        "index": 3, "config": {"seed": 0, "learning_rate": 1.0}, "best_metric": 60.0,
        "best_step": 5, "last_metric": 58.0, "last_step": 20, "stopped_at": 20}, **record}
    report = sweep_report(record)
    assert [r["entry"] for r in report["rows"]] == list(record)[1:] + list(record)[:1]
    assert report["rows"][3]["stopped_at"] == 20
    group = report["groups"][0]
    values = np.asarray(list(best.values()))
    mean, sd = values.mean(), values.std(ddof=1)
    half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    assert group["config"] == "learning_rate=0.3" and group["seeds"] == [0, 1, 2]
    assert group["best"]["n"] == 3
    assert group["best"]["mean"] == pytest.approx(mean)
    assert group["best"]["std"] == pytest.approx(sd)
    assert group["best"]["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-3)
    assert group["final"]["mean"] == pytest.approx(mean - 1)
    assert group["heldout"]["mean"] == pytest.approx(mean - 10)
    markdown = sweep_markdown(report)
    assert "| test at the best step |" in markdown and "| seed=1+learning_rate=0.3 | 74.00 |" \
        " 20 | 64.00 | 73.00 | 40 | - |" in markdown
    single = report["groups"][1]
    assert single["best"] == {"n": 1, "mean": 60.0, "std": None, "ci95": None}
