"""Prompt-tuning trainer: only the prompt changes, sharding, resume, loss goes down."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import seqio

import synthetic_tasks
from training_utils import (FEATURE_LENGTHS, fixture_params, reference_greedy,
                            reference_option_scores, tiny_prompted_model)
from xprompt_jax.training import optimizers, partitioning
from xprompt_jax.training.data import DataConfig, TrainBatchIterator
from xprompt_jax.evaluation import EvalConfig, Evaluator
from xprompt_jax.training.params import flatten, split_params
from xprompt_jax.training.train_step import LossConfig, TrainState, make_train_step
from xprompt_jax.training.frozen_model import FrozenModelConfig, init_variables
from xprompt_jax.training.trainer import Trainer, TrainerConfig


@pytest.fixture(scope="module")
def task_name(t5_vocab_path):
    return synthetic_tasks.register(t5_vocab_path)


@pytest.fixture(scope="module")
def pretrained(fixtures_dir):
    return fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"))


def _trainer(tmp_path, task_name, pretrained, *, steps, batch_size=8, model=None, **kw):
    config_kw = dict(model_dir=str(tmp_path), num_steps=steps, eval_period=None,
                     save_period=kw.pop("save_period", None), log_period=1, progress=False,
                     seed=kw.pop("seed", 0), patience=kw.pop("patience", None))
    frozen_config = FrozenModelConfig(mesh_shape=kw.pop("mesh_shape", (-1, 1)),
                                      frozen_dtype=kw.pop("frozen_dtype", None))
    optimizer = kw.pop("optimizer", None) or optimizers.adafactor()
    return Trainer(model or tiny_prompted_model(), optimizer,
                   DataConfig(task_name, FEATURE_LENGTHS, batch_size),
                   TrainerConfig(**config_kw), frozen_config=frozen_config,
                   pretrained_params=pretrained, **kw)


def test_only_the_prompt_changes(tmp_path, task_name, pretrained):
    trainer = _trainer(tmp_path, task_name, pretrained, steps=3)
    initial_prompt = np.asarray(trainer.state.params["prompt"]["prompt"]).copy()
    trainer.run()
    # Frozen weights are bitwise the checkpoint's; only the prompt is in the train state.
    frozen = flatten(jax.device_get(trainer.frozen["params"]))
    reference = flatten(pretrained)
    assert set(frozen) == set(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(frozen[key], np.asarray(value), err_msg=key)
    assert list(flatten(trainer.state.params)) == ["prompt/prompt"]
    opt_leaves = jax.tree_util.tree_leaves(trainer.state.opt_state)
    assert sum(x.size for x in opt_leaves) < 10 * initial_prompt.size  # no frozen-param state
    assert not np.allclose(np.asarray(trainer.state.params["prompt"]["prompt"]), initial_prompt)
    assert int(trainer.state.step) == 3
    # numpy export in the prompt-tuning format
    exported = tmp_path / "numpy_checkpoints" / "checkpoint_3" / "prompt.prompt.npy"
    np.testing.assert_array_equal(np.load(exported), trainer.state.params["prompt"]["prompt"])


def test_short_run_lowers_the_loss(tmp_path, task_name, pretrained):
    # A random frozen T5 with d=64 (the 8-dim fixture model can barely be steered).
    del pretrained
    losses = []
    model = tiny_prompted_model(emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128)
    trainer = _trainer(tmp_path, task_name, None, steps=40, batch_size=16, model=model,
                       step_callback=lambda step, m: losses.append(float(m["loss"])))
    trainer.run()
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    assert last < first - 2.0, (first, last)  # > 7x more probability on the targets


def _batches(task_name, n, batch_size=8):
    it = TrainBatchIterator(DataConfig(task_name, FEATURE_LENGTHS, batch_size))
    return [next(it) for _ in range(n)]


def _run_steps(model, variables, batches, mesh_shape, num_microbatches=1):
    mesh = partitioning.make_mesh(mesh_shape)
    rules = partitioning.standard_logical_axis_rules()
    params_axes = variables["params_axes"]
    trainable, frozen = split_params(variables["params"])
    optimizer = optimizers.adafactor()
    tr_sh = partitioning.param_shardings(trainable, params_axes, mesh, rules)
    fr_sh = partitioning.param_shardings(frozen, params_axes, mesh, rules)
    rep = partitioning.replicated(mesh)
    state = TrainState.create(trainable, optimizer)
    state_sh = TrainState(step=rep, params=tr_sh,
                          opt_state=jax.tree_util.tree_map(lambda _: rep, state.opt_state))
    step = jax.jit(make_train_step(model, optimizer, LossConfig(), num_microbatches),
                   in_shardings=(state_sh, {"params": fr_sh}, partitioning.batch_sharding(mesh),
                                 rep),
                   out_shardings=(state_sh, rep))
    losses = []
    with partitioning.activate(mesh, rules):
        state = jax.device_put(state, state_sh)
        frozen_vars = {"params": jax.device_put(frozen, fr_sh)}
        for batch in batches:
            state, metrics = step(state, frozen_vars, batch, jax.random.PRNGKey(0))
            losses.append(float(metrics["loss"]))
    return np.asarray(state.params["prompt"]["prompt"]), losses


def test_five_steps_on_4x2_mesh_match_one_device(task_name, pretrained):
    model = tiny_prompted_model()
    variables = init_variables(model, pretrained, FEATURE_LENGTHS, jax.random.PRNGKey(0))
    batches = _batches(task_name, 5)
    one_prompt, one_losses = _run_steps(model, variables, batches, (1, 1))
    mesh_prompt, mesh_losses = _run_steps(model, variables, batches, (4, 2))
    np.testing.assert_allclose(mesh_losses, one_losses, rtol=1e-5)
    np.testing.assert_allclose(mesh_prompt, one_prompt, rtol=1e-4, atol=1e-5)
    assert one_losses[-1] != one_losses[0]


def test_microbatch_accumulation_equals_full_batch(task_name, pretrained):
    model = tiny_prompted_model()
    variables = init_variables(model, pretrained, FEATURE_LENGTHS, jax.random.PRNGKey(1))
    batches = _batches(task_name, 2)
    full, full_losses = _run_steps(model, variables, batches, (1, 1), num_microbatches=1)
    micro, micro_losses = _run_steps(model, variables, batches, (1, 1), num_microbatches=4)
    np.testing.assert_allclose(micro_losses, full_losses, rtol=1e-5)
    np.testing.assert_allclose(micro, full, rtol=1e-4, atol=1e-6)


def _losses_on_one_batch(tmp_path, task_name, pretrained, dropout_rate, steps=4):
    """Per-step training losses of the trainer when every step sees the same batch and the
    prompt never moves (learning rate 0): only the dropout mask can change the loss."""
    fixed = next(iter(TrainBatchIterator(DataConfig(task_name, FEATURE_LENGTHS, 8))))
    losses = []
    trainer = _trainer(tmp_path, task_name, pretrained, steps=steps,
                       model=tiny_prompted_model(dropout_rate=dropout_rate),
                       optimizer=optax.sgd(0.0), batch_transform=lambda batch: dict(fixed),
                       step_callback=lambda step, m: losses.append(float(m["loss"])))
    initial = np.asarray(trainer.state.params["prompt"]["prompt"]).copy()
    trainer.run()
    np.testing.assert_array_equal(np.asarray(trainer.state.params["prompt"]["prompt"]), initial)
    return losses


def test_each_step_draws_a_new_dropout_mask(tmp_path, task_name, pretrained):
    # Control: without dropout the four steps are the same computation (equal losses) ...
    plain = _losses_on_one_batch(tmp_path / "plain", task_name, pretrained, 0.0)
    assert len(plain) == 4 and len(set(plain)) == 1, plain
    # ... with dropout each step has its own mask, so four different losses.
    dropped = _losses_on_one_batch(tmp_path / "dropout", task_name, pretrained, 0.3)
    assert len(set(dropped)) == 4, dropped
    assert plain[0] not in dropped


class _Killed(Exception):
    pass


def test_killed_run_resumes_to_the_same_prompt(tmp_path, task_name, pretrained):
    model = tiny_prompted_model(dropout_rate=0.1)  # dropout RNG must also resume exactly
    straight = _trainer(tmp_path / "straight", task_name, pretrained, steps=6, save_period=3,
                        model=model)
    straight.run()

    def kill_at_5(step, metrics):
        if step == 5:
            raise _Killed()

    killed = _trainer(tmp_path / "killed", task_name, pretrained, steps=6, save_period=3,
                      model=model, step_callback=kill_at_5)
    with pytest.raises(_Killed):
        killed.run()
    assert killed.checkpointer.latest_step() == 3
    resumed = _trainer(tmp_path / "killed", task_name, pretrained, steps=6, save_period=3,
                       model=model)
    summary = resumed.run()
    assert summary["final_step"] == 6
    np.testing.assert_array_equal(np.asarray(resumed.state.params["prompt"]["prompt"]),
                                  np.asarray(straight.state.params["prompt"]["prompt"]))


@pytest.mark.parametrize("mode", ["rank_classification", "generation"])
def test_evaluation_modes_record_which_was_used(tmp_path, task_name, pretrained, mode,
                                               t5_vocab_path):
    model = tiny_prompted_model()
    evaluator = Evaluator(model, task_name, FEATURE_LENGTHS, EvalConfig(mode=mode, batch_size=8),
                          label_strings_fn=lambda ex: ["yes", "no"])
    trainer = _trainer(tmp_path, task_name, pretrained, steps=2, evaluator=evaluator)
    trainer.config.eval_period = 2
    summary = trainer.run()
    result = summary["best_eval"]
    assert result["mode"] == mode and result["num_examples"] == 32
    if mode == "rank_classification":  # every prediction is one of the verbalizers
        assert set(result["predictions_sample"]) <= {"yes", "no"}
    assert trainer.checkpointer.best_step() == 2
    # The exact accuracy: the 32 validation examples rebuilt from the task's generator,
    # predicted by the plain forward pass (training_utils' references), compared by hand.
    vocab = seqio.SentencePieceVocabulary(t5_vocab_path, extra_ids=100)
    texts, targets = synthetic_tasks._examples("validation", 32, 0)
    inputs = [vocab.encode(text) + [vocab.eos_id] for text in texts]
    assert max(map(len, inputs)) <= FEATURE_LENGTHS["inputs"]  # nothing truncated
    variables = jax.device_get(trainer.variables())  # step 2's prompt, the evaluated one
    if mode == "rank_classification":
        labels = ["yes", "no"]
        scores = reference_option_scores(model, variables, inputs,
                                         [vocab.encode(l) + [vocab.eos_id] for l in labels])
        predicted = [labels[i] for i in scores.argmax(axis=1)]
    else:
        predicted = [vocab.decode(ids) for ids in reference_greedy(
            model, variables, inputs, FEATURE_LENGTHS["targets"], vocab.eos_id)]
    assert result["predictions_sample"] == predicted[:5]
    expected = 100.0 * sum(p == t for p, t in zip(predicted, targets)) / 32
    assert result["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_early_stopping_after_patience_evaluations(tmp_path, task_name, pretrained):
    model = tiny_prompted_model()
    evaluator = Evaluator(model, task_name, FEATURE_LENGTHS,
                          EvalConfig(mode="rank_classification", batch_size=8, max_examples=8),
                          label_strings_fn=lambda ex: ["yes", "no"],
                          main_metric_fn=lambda metrics: 50.0)  # never improves
    trainer = _trainer(tmp_path, task_name, pretrained, steps=20, evaluator=evaluator,
                       patience=2)
    trainer.config.eval_period = 1
    summary = trainer.run()
    # eval 1 sets the best; evals 2 and 3 do not improve -> stop at step 3
    assert summary["stopped_early"] and summary["final_step"] == 3
    assert summary["best_eval"]["step"] == 1 and trainer.checkpointer.best_step() == 1


def test_frozen_weights_in_bfloat16(tmp_path, task_name, pretrained):
    trainer = _trainer(tmp_path, task_name, pretrained, steps=1, frozen_dtype="bfloat16")
    trainer.run()
    frozen = jax.tree_util.tree_leaves(trainer.frozen["params"])
    assert all(x.dtype == jnp.bfloat16 for x in frozen)
    assert trainer.state.params["prompt"]["prompt"].dtype == jnp.float32


def test_an_evaluation_with_nan_scores_is_no_metric_and_never_best(tmp_path, task_name,
                                                                   pretrained, monkeypatch):
    """The second of three evaluations gets NaN option scores (injected at the scorer).
    np.argmax of NaN picks the first option; the first option here is always the correct
    target, so that evaluation would have logged 100% and become the best checkpoint. Now
    it logs main_metric null with the count of non-finite examples, and the best is one
    of the finite evaluations."""
    import json

    from xprompt_jax.evaluation import scorers

    score_options, calls = scorers.score_options, []

    def nan_on_second_evaluation(*args, **kwargs):
        out = score_options(*args, **kwargs)
        calls.append(1)
        return np.full_like(np.asarray(out), np.nan) if len(calls) == 2 else out

    monkeypatch.setattr(scorers, "score_options", nan_on_second_evaluation)
    model = tiny_prompted_model()
    evaluator = Evaluator(model, task_name, FEATURE_LENGTHS,
                          EvalConfig(mode="rank_classification", batch_size=8, max_examples=8),
                          label_strings_fn=lambda ex: sorted(
                              ["yes", "no"], key=lambda t: t != ex["targets_pretokenized"]))
    trainer = _trainer(tmp_path, task_name, pretrained, steps=3, evaluator=evaluator)
    trainer.config.eval_period = 1
    summary = trainer.run()
    assert len(calls) == 3  # one scorer call (8 examples, batch 8) per evaluation
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "eval"]
    assert [e["step"] for e in evals] == [1, 2, 3]
    assert evals[1]["main_metric"] is None and evals[1]["nonfinite_scores"] == 8
    assert "accuracy" not in evals[1]
    finite = [e["main_metric"] for e in evals if e["step"] != 2]
    assert all(m is not None and m < 100.0 for m in finite)  # the fault would have won
    assert summary["best_eval"]["step"] != 2 and trainer.checkpointer.best_step() != 2
    assert summary["best_eval"]["main_metric"] == max(finite)
