"""Training a reparameterized prompt: the run checkpoint keeps the raw prompt and the network,
a killed run resumes bit for bit, and the mean prompt norm (EPT's mu_t) is logged every
step to metrics.jsonl and TensorBoard."""

import json

import jax
import numpy as np
import pytest

import synthetic_tasks
from training_utils import FEATURE_LENGTHS, fixture_params, tiny_prompted_model
from xprompt_jax.prompts import PTuningPrompt
from xprompt_jax.training import optimizers
from xprompt_jax.training.checkpointing import RunCheckpointer
from xprompt_jax.training.data import DataConfig
from xprompt_jax.training.frozen_model import FrozenModelConfig
from xprompt_jax.training.params import flatten
from xprompt_jax.training.trainer import Trainer, TrainerConfig


@pytest.fixture(scope="module")
def task_name(t5_vocab_path):
    return synthetic_tasks.register(t5_vocab_path)


@pytest.fixture(scope="module")
def pretrained(fixtures_dir):
    return fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"))


def _model():
    # LSTM + MLP network, dropout on (its RNG must resume exactly too)
    return tiny_prompted_model(dropout_rate=0.1).clone(
        prompt=PTuningPrompt(length=3, encoder="lstm", hidden=4))


def _trainer(model_dir, task_name, pretrained, step_callback=None):
    # One device: compiling and running the step on the 8 emulated devices costs twice the
    # CPU time (the sharded step is covered by test_training; prompt params are replicated).
    config = TrainerConfig(model_dir=str(model_dir), num_steps=6, eval_period=None,
                           save_period=3, log_period=1, progress=False)
    return Trainer(_model(), optimizers.adamw(learning_rate=0.05),
                   DataConfig(task_name, FEATURE_LENGTHS, 8), config,
                   frozen_config=FrozenModelConfig(mesh_shape=(1, 1)),
                   pretrained_params=pretrained, step_callback=step_callback)


class _Killed(Exception):
    pass


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


@pytest.mark.slow  # three trainers (~60 s CPU: data pipeline, step compile, orbax)
def test_killed_run_resumes_bit_for_bit_with_its_network(tmp_path, task_name, pretrained):
    straight = _trainer(tmp_path / "straight", task_name, pretrained)
    initial = {k: np.asarray(v).copy() for k, v in flatten(straight.state.params).items()}
    straight.run()

    def kill_at_5(step, metrics):
        if step == 5:
            raise _Killed()

    killed = _trainer(tmp_path / "killed", task_name, pretrained, step_callback=kill_at_5)
    with pytest.raises(_Killed):
        killed.run()
    assert killed.checkpointer.latest_step() == 3
    resumed = _trainer(tmp_path / "killed", task_name, pretrained)
    # A fresh trainer starts from a freshly initialized network: only the checkpoint can
    # bring back the step-3 weights.
    assert int(resumed.state.step) == 0
    assert resumed.run()["final_step"] == 6

    final = flatten(jax.device_get(straight.state.params))
    again = flatten(jax.device_get(resumed.state.params))
    assert set(again) == set(final) == set(initial)
    assert any(k.startswith("prompt/lstm/") for k in final) and "prompt/mlp_1/kernel" in final
    for path, value in final.items():  # raw prompt and every network weight
        np.testing.assert_array_equal(again[path], value, err_msg=path)
        assert not np.array_equal(value, initial[path]), f"{path} did not train"
    for a, b in zip(_leaves(resumed.state.opt_state), _leaves(straight.state.opt_state)):
        np.testing.assert_array_equal(a, b)

    # The checkpoint itself holds the network (HF PEFT's save drops it) ...
    with RunCheckpointer(tmp_path / "straight", read_only=True) as checkpointer:
        state, _ = checkpointer.restore(6)
    saved = flatten(state["train"]["params"])
    assert set(saved) == set(final)
    for path, value in final.items():
        np.testing.assert_array_equal(np.asarray(saved[path]), value, err_msg=path)
    # ... and so does the numpy export next to it.
    numpy_dir = tmp_path / "straight" / "numpy_checkpoints" / "checkpoint_6"
    np.testing.assert_array_equal(
        np.load(numpy_dir / "prompt.lstm.layer_1_backward.w_hh.npy"),
        final["prompt/lstm/layer_1_backward/w_hh"])

    # mu_t: the mean L2 norm of the prompt tokens, logged at every step.
    records = [json.loads(line) for line in
               (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    model = _model()
    tokens = np.asarray(model.apply({"params": straight.state.params},
                                    method=model.prompt_tokens), np.float64)
    assert tokens.shape == (3, 8)
    mu = np.sqrt((tokens ** 2).sum(-1)).mean()
    np.testing.assert_allclose(train[-1]["prompt_mean_norm"], mu, rtol=1e-5)
    assert len({r["prompt_mean_norm"] for r in train}) == 6  # it moves with training
    tf = pytest.importorskip("tensorflow")
    logged = {}
    for path in (tmp_path / "straight" / "tensorboard" / "train").glob("events.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "prompt_mean_norm":
                    logged[event.step] = value.simple_value
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(logged[6], mu, rtol=1e-5)
