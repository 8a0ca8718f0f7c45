"""SWEEP: configurations (optimizer hyperparameters, seeds, prompt inits) trained as one
bank in one run equal each configuration trained alone; bad SWEEP values are one-line
ConfigErrors."""

import dataclasses

import gin
import jax
import numpy as np
import pytest

import xprompt_jax.tasks  # noqa: F401  (as the CLI does before parsing)
from xprompt_jax import gin_utils
from xprompt_jax.errors import ConfigError
from xprompt_jax.runs import build_trainer, configured_run
from xprompt_jax.runs.build import sweep_run
from xprompt_jax.training import optimizers
from xprompt_jax.training.sweep import entry_names, sweep_configurations

from training_utils import run_config, tiny_prompted_model

STEPS = 3
# Tolerance: a fraction of how far the solo run moved the prompt (max abs). Float
# summation order differs between a [B*N]-row batch and a [B]-row one, and Adafactor's
# first steps divide by sqrt(g**2), so the difference scales with the step (measured on
# the world, 3 steps: max |joint - solo| = 2.3e-5, 4.5e-5, 9.8e-5 at learning rates 0.1,
# 0.3, 1.0 for moves of 0.36, 1.14, 3.71: at most 6.3e-5 of the move).
RTOL_MOVED = 2e-4
# Other seeds and inits: a few elements get gradients at float-noise level (near-dead ReLU
# units of ResPrompt's MLP, single prompt elements), which a per-element normalising
# optimizer (Adafactor on unfactored leaves; AdamW everywhere) turns into steps whose size
# depends on how the summation order tips them. There, per leaf, the difference's norm is
# at most NORM_RTOL_MOVED of the move's norm and every element within ELEMENT_RTOL_MOVED
# of the largest move (measured on the world, 3 steps, ResPrompt with Adafactor, seeds 1
# and 2: at most 1.6e-4 and 1.1e-3; prompt tuning, seeds 1 and 2: 3.2e-5 and 2.7e-4).
# With AdamW at lr 0.3 (the EPT recipes') the ResPrompt gap reaches 3.2e-3 of the norm:
# Adam's sign-like first steps amplify the flips through the network.
NORM_RTOL_MOVED = 1e-3
ELEMENT_RTOL_MOVED = 3e-2


def _trainer(model_dir, method, bindings):
    """A world run of `method`; `bindings` that end in '.gin' are files parsed after it
    (e.g. 'prompts/sampled_vocab.gin')."""
    gin.clear_config()
    files = [b for b in bindings if b.endswith(".gin")]
    gin_utils.parse_gin(
        ["models/world_tiny.gin", method, *files, "world/run.gin"],
        [f"MODEL_DIR = '{model_dir}'", f"TRAIN_STEPS = {STEPS}", "EVAL_PERIOD = None",
         "BATCH_SIZE = 8", "PROMPT_LENGTH = 4", "DROPOUT_RATE = 0.0",
         *[b for b in bindings if not b.endswith(".gin")]],
        finalize=False)
    try:
        return build_trainer(configured_run())
    finally:
        gin.clear_config()


def _prompt_leaves(params):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(params["prompt"])]


def _check_sweep_equals_solo_runs(tmp_path, method, sweep, solo_bindings, names,
                                  sweep_files=(), norm_rtol=None):
    """Trains the sweep (one run) and each configuration alone (one run each, same
    RANDOM_SEED); every entry's init is the solo init exactly, and after STEPS steps each
    entry's params equal its solo run's to RTOL_MOVED of the solo run's move."""
    trainer = _trainer(tmp_path / "sweep", method, [*sweep_files, f"SWEEP = {sweep!r}"])
    joint_init = _prompt_leaves(trainer.state.params)
    trainer.run()
    joint = _prompt_leaves(trainer.state.params)
    assert sorted(trainer.numpy_params_fn(trainer.state.params)) == sorted(names)
    solos = []
    for k, bindings in enumerate(solo_bindings):
        solo = _trainer(tmp_path / f"solo{k}", method, bindings)
        solo_init = _prompt_leaves(solo.state.params)
        for bank_leaf, leaf in zip(joint_init, solo_init):
            np.testing.assert_array_equal(bank_leaf[k], leaf)  # the solo run's init
        solo.run()
        solos.append(_prompt_leaves(solo.state.params))
        for bank_leaf, leaf, init in zip(joint, solos[-1], solo_init):
            moved = np.abs(leaf - init).max()
            assert moved > 1e-3  # it trained
            if norm_rtol is None:
                np.testing.assert_allclose(bank_leaf[k], leaf, rtol=0,
                                           atol=RTOL_MOVED * moved)
            else:  # AdamW on a network with ReLU units (NORM_RTOL_MOVED)
                gap = np.linalg.norm(bank_leaf[k] - leaf) / np.linalg.norm(leaf - init)
                assert gap <= norm_rtol, (k, leaf.shape, gap)
                np.testing.assert_allclose(bank_leaf[k], leaf, rtol=0,
                                           atol=ELEMENT_RTOL_MOVED * moved)
    # the configurations lead to prompts far apart (100x the tolerance), so an entry
    # trained with another entry's hyperparameters would fail the comparison above
    for i in range(len(solos)):
        for j in range(i):
            gap = max(np.abs(a - b).max() for a, b in zip(solos[i], solos[j]))
            assert gap > 100 * RTOL_MOVED * 4.0, (i, j, gap)
    return trainer


@pytest.mark.slow  # 4 world runs (20-60 s on 2 cores): the CLI's whole path, init included
def test_prompt_tuning_sweep_equals_separate_runs(tmp_path):
    """Prompt tuning (Adafactor, Lester et al.'s settings) on world_rte with the world's
    tiny T5 at BATCH_SIZE 8, the CLI's path (gin -> build_trainer -> Trainer.run), 3
    learning rates: each entry starts from the solo run's init (bitwise) and after 3 steps
    equals that learning rate trained alone to RTOL_MOVED. DROPOUT_RATE 0: the bank's rows
    share one dropout stream where a solo run has its own."""
    lrs = [0.1, 0.3, 1.0]
    _check_sweep_equals_solo_runs(
        tmp_path, "prompt_tuning.gin", {"learning_rate": lrs},
        [[f"LEARNING_RATE = {lr}"] for lr in lrs], [f"learning_rate={lr}" for lr in lrs])


@pytest.mark.slow  # 3 world runs of a reparameterised prompt (about 25 s on 2 cores)
def test_seed_and_init_sweep_of_resprompt_equals_solo_runs(tmp_path):
    """ResPrompt (a reparameterised prompt: P plus a residual MLP; Adafactor,
    optimizers/adafactor.gin, see NORM_RTOL_MOVED), a list sweeping the seed and the
    prompt init kind: entry k starts bitwise from the init of a solo run with its
    RANDOM_SEED and its prompts/<init>.gin (P from the sampled vocabulary or the class
    labels, the embedding read as that gin file reads it; the network from the seed),
    reads its own seed's shuffled stream (BATCH_SIZE rows of each entry per step), and
    after 3 steps equals that solo run (NORM_RTOL_MOVED)."""
    configs = [{"seed": 1, "prompt_init": "sampled_vocab"},
               {"seed": 2, "prompt_init": "class_labels"}]
    trainer = _check_sweep_equals_solo_runs(
        tmp_path, "resprompt.gin", configs,
        [["optimizers/adafactor.gin", f"RANDOM_SEED = {c['seed']}",
          f"prompts/{c['prompt_init']}.gin"] for c in configs],
        ["seed=1+prompt_init=sampled_vocab", "seed=2+prompt_init=class_labels"],
        sweep_files=["optimizers/adafactor.gin"], norm_rtol=NORM_RTOL_MOVED)
    assert trainer.data_config.entry_seeds == (1, 2)


def test_seed_sweep_streams_are_the_solo_runs_streams():
    """A seed sweep's batches hold, for entry k, exactly the batch a solo run with seed
    `entry_seeds[k]` reads at that step (rows b*K + k), the seqio shuffle of that seed;
    two seeds give different orders, so an entry reading another seed's stream fails."""
    from xprompt_jax.training.data import DataConfig, TrainBatchIterator

    import xprompt_jax.world.seqio_tasks  # noqa: F401  (registers world_rte)

    config = DataConfig("world_rte", {"inputs": 48, "targets": 4}, batch_size=4)
    solo = {seed: TrainBatchIterator(dataclasses.replace(config, seed=seed))
            for seed in (0, 1)}
    joint = TrainBatchIterator(dataclasses.replace(config, entry_seeds=(1, 0, 1)), position=0)
    for _ in range(2):
        batch = next(joint)
        alone = {seed: next(it) for seed, it in solo.items()}
        assert not np.array_equal(alone[0]["encoder_input_tokens"],
                                  alone[1]["encoder_input_tokens"])  # orders differ
        for k, seed in enumerate((1, 0, 1)):
            for name, value in alone[seed].items():
                np.testing.assert_array_equal(batch[name][k::3], value)
    assert joint.state() == {"position": 2, "seed": 0, "entry_seeds": [1, 0, 1]}
    resumed = TrainBatchIterator(dataclasses.replace(config, entry_seeds=(1, 0, 1)),
                                 position=2)  # a resume skips in every stream
    after = {seed: next(it) for seed, it in solo.items()}
    batch = next(resumed)
    for k, seed in enumerate((1, 0, 1)):
        np.testing.assert_array_equal(batch["encoder_input_tokens"][k::3],
                                      after[seed]["encoder_input_tokens"])


def test_ept_sweep_with_weight_decay_equals_separate_steps():
    """EPT (a reparameterised prompt: P1 through a down/up projection) with AdamW, a list of
    configurations over learning rate and AdamW's weight decay, 3 joint steps of the
    sweep's optimizer (inject_hyperparams vmapped over the bank) == 3 steps of each
    configuration's plain `optimizers.adamw` on the solo model from the same init, atol
    1e-5 (AdamW's update is about lr per element: no amplification of float noise).
    Tiny random T5, synthetic batches, DROPOUT_RATE 0."""
    from xprompt_jax.models import PromptedT5, T5Config
    from xprompt_jax.prompts import EPTPrompt
    from xprompt_jax.prompts.bank import PromptBank
    from xprompt_jax.training.bank_training import BankBatches
    from xprompt_jax.training.sweep import bank_initial_trainable, sweep_optimizer
    from xprompt_jax.training.train_step import LossConfig, TrainState, make_train_step

    cfg = T5Config(vocab_size=80, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                   num_encoder_layers=2, num_decoder_layers=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   dropout_rate=0.0, mlp_activations=("gelu", "linear"),
                   logits_via_embedding=False)
    configs = [{"learning_rate": 0.1, "weight_decay": 0.01},
               {"learning_rate": 0.1, "weight_decay": 2.0},
               {"learning_rate": 0.5, "weight_decay": 0.01}]
    rng = np.random.RandomState(0)
    batches = []
    for _ in range(STEPS):
        tgt = rng.randint(2, 80, (4, 3))
        batches.append({"encoder_input_tokens": rng.randint(2, 80, (4, 7)),
                        "decoder_input_tokens": np.concatenate(
                            [np.zeros((4, 1), int), tgt[:, :-1]], axis=1),
                        "decoder_target_tokens": tgt,
                        "decoder_loss_weights": np.ones((4, 3), np.float32)})
    solo = PromptedT5(cfg, prompt=EPTPrompt(length=2, hidden=3))
    b0 = batches[0]
    variables = solo.init(jax.random.PRNGKey(0), b0["encoder_input_tokens"],
                          b0["decoder_input_tokens"], b0["decoder_target_tokens"],
                          enable_dropout=False)
    frozen = {"params": {n: v for n, v in variables["params"].items() if n != "prompt"}}
    init = {"prompt": variables["params"]["prompt"]}
    alone = []
    for config in configs:
        tx = optimizers.adamw(**config)
        step = jax.jit(make_train_step(solo, tx, LossConfig(), enable_dropout=False))
        state = TrainState.create(init, tx)
        for b in batches:
            state, _ = step(state, frozen, b, jax.random.PRNGKey(1))
        alone.append(_prompt_leaves(state.params))

    bank = PromptedT5(cfg, prompt=PromptBank(EPTPrompt(length=2, hidden=3),
                                             num_prompts=len(configs)))
    ptx = sweep_optimizer(optimizers.adamw(learning_rate=0.3, weight_decay=0.0), configs)
    step = jax.jit(make_train_step(bank, ptx, LossConfig(normalization="sum"),
                                   enable_dropout=False))
    transform = BankBatches(bank, "ensemble")
    state = TrainState.create(bank_initial_trainable([init] * len(configs)), ptx)
    np.testing.assert_array_equal(state.opt_state.inner.hyperparams["weight_decay"],
                                  np.float32([0.01, 2.0, 0.01]))  # one value per entry
    for b in batches:
        state, _ = step(state, frozen, transform(b), jax.random.PRNGKey(1))
    joint = _prompt_leaves(state.params)
    start = _prompt_leaves(init)
    for k in range(len(configs)):
        for bank_leaf, leaf, leaf0 in zip(joint, alone[k], start):
            assert np.abs(leaf - leaf0).max() > 1e-2  # it trained
            np.testing.assert_allclose(bank_leaf[k], leaf, rtol=0, atol=1e-5)
    for i in range(len(configs)):  # far apart: a swapped configuration would fail
        for j in range(i):
            assert max(np.abs(a - b).max() for a, b in zip(alone[i], alone[j])) > 1e-3


def test_sweep_configurations_grid_and_list():
    grid = sweep_configurations({"learning_rate": [0.1, 1.0], "weight_decay_rate": [0, 1e-3]})
    assert grid == [{"learning_rate": 0.1, "weight_decay_rate": 0.0},
                    {"learning_rate": 0.1, "weight_decay_rate": 1e-3},
                    {"learning_rate": 1.0, "weight_decay_rate": 0.0},
                    {"learning_rate": 1.0, "weight_decay_rate": 1e-3}]
    assert entry_names(grid)[1] == "learning_rate=0.1+weight_decay_rate=0.001"
    listed = sweep_configurations([{"learning_rate": 0.3}, {"learning_rate": 3}])
    assert entry_names(listed) == ["learning_rate=0.3", "learning_rate=3.0"]


@pytest.mark.parametrize("sweep, words", [
    ({"learning_rte": [0.1]}, ["SWEEP", "'learning_rte'", "learning_rate, weight_decay_rate"]),
    ({"learning_rate": []}, ["SWEEP", "'learning_rate'", "empty"]),
    ({}, ["SWEEP", "empty grid"]),
    ([], ["SWEEP", "empty list"]),
    ({"learning_rate": [0.1, "fast"]}, ["SWEEP", "'learning_rate'", "'fast'", "number"]),
    ({"learning_rate": [True]}, ["SWEEP", "'learning_rate'", "number"]),
    ({"weight_decay_rate": [float("nan")]}, ["SWEEP", "'weight_decay_rate'", "finite"]),
    ([{"learning_rate": 0.1}, {"learning_rate": 0.3, "weight_decay_rate": 0.1}],
     ["SWEEP", "'weight_decay_rate'", "same keys"]),
    ({"seed": [0, 1.5]}, ["SWEEP", "'seed'", "1.5", "int >= 0"]),
    ({"RANDOM_SEED": [0, 1]}, ["SWEEP", "'RANDOM_SEED'", "name the seed axis 'seed'"]),
    ({"prompt_init": ["vocab"]}, ["SWEEP", "'prompt_init'", "'vocab'", "sampled_vocab"]),
    ({"learning_rate": [0.1, 0.1]}, ["SWEEP", "learning_rate=0.1", "more than once"]),
    ({"weight_decay": [0.1]}, ["SWEEP", "'weight_decay'", "optimizers.adafactor"]),
    ("0.1", ["SWEEP", "'0.1'"]),
])
def test_bad_sweep_is_one_line_config_error(tmp_path, sweep, words):
    run = run_config(tiny_prompted_model(), tmp_path).replace(
        optimizer=optimizers.adafactor(learning_rate=0.3), sweep=sweep)
    with pytest.raises(ConfigError) as info:
        sweep_run(run)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_sweep_needs_a_rebuildable_optimizer_and_no_bank(tmp_path):
    import optax

    run = run_config(tiny_prompted_model(), tmp_path).replace(
        optimizer=optax.sgd(0.1), sweep={"learning_rate": [0.1, 0.2]})
    with pytest.raises(ConfigError, match="SWEEP needs OPTIMIZER built by optimizers"):
        sweep_run(run)
    banked = sweep_run(run.replace(optimizer=optimizers.adamw()))
    assert banked.bank.prompt_names == ["learning_rate=0.1", "learning_rate=0.2"]
    with pytest.raises(ConfigError, match="SWEEP builds its own bank"):
        sweep_run(banked)


def test_ept_learning_rate_grid_is_one_sweep(monkeypatch):
    """recipes/ept_lr_sweep.gin after an EPT recipe: one run whose entries are EPT's grid
    (App. B.2, LR_GRID), each with its own AdamW learning rate; `--gin.LR_GRID` narrows it."""
    from _tasks_import import T5_SPM, import_tasks

    monkeypatch.setenv("XPROMPT_T5_VOCAB", str(T5_SPM))
    import_tasks()
    grid = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
    for extra, rates in (([], grid), (["LR_GRID = (0.1, 0.3)"], (0.1, 0.3))):
        gin.clear_config()
        try:
            gin_utils.parse_gin(
                ["recipes/ept_resprompt_baseline.gin", "recipes/ept_lr_sweep.gin"],
                ["MIXTURE_OR_TASK_NAME = 'lester_glue_rte_v200_heldout'",
                 "MODEL_DIR = '/tmp/unused'", *extra], finalize=False)
            run = sweep_run(configured_run())
        finally:
            gin.clear_config()
        assert run.bank.prompt_names == [f"learning_rate={r!r}" for r in rates]
        assert run.bank.mode == "ensemble"
