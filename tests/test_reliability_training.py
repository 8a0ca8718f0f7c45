"""Reliability of the trainer: NaN guard, SIGTERM save + bitwise resume, corrupt
latest checkpoint fallback, one run per MODEL_DIR. In process, tiny fixture model."""

import logging
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import synthetic_tasks
from training_utils import FEATURE_LENGTHS, fixture_params, tiny_prompted_model
from xprompt_jax.errors import NonFiniteError, RunLockedError, TrainingInterrupted
from xprompt_jax.training import optimizers, run_lock
from xprompt_jax.training.data import DataConfig
from xprompt_jax.training.trainer import Trainer, TrainerConfig


@pytest.fixture(scope="module")
def task_name(t5_vocab_path):
    return synthetic_tasks.register(t5_vocab_path)


@pytest.fixture(scope="module")
def pretrained(fixtures_dir):
    return fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"))


def _trainer(model_dir, task_name, pretrained, *, steps, optimizer=None, **config):
    config = dict(dict(model_dir=str(model_dir), num_steps=steps, eval_period=None,
                       log_period=1, progress=False, save_interval_s=None), **config)
    return Trainer(tiny_prompted_model(), optimizer or optimizers.adafactor(),
                   DataConfig(task_name, FEATURE_LENGTHS, 8), TrainerConfig(**config),
                   pretrained_params=pretrained)


def _nan_at(bad_step):
    """Plain SGD whose update at the (1-based) `bad_step`-th call is NaN: the hand-built
    fault, independent of the trainer (a NaN gradient times SGD's learning rate)."""
    return _nan_gradient_at(bad_step, optax.sgd(0.1))


def _prompt(trainer):
    return np.asarray(jax.device_get(trainer.state.params["prompt"]["prompt"]))


def _all_numpy_files(model_dir):
    return [os.path.join(root, name) for root, _, names in os.walk(model_dir / "numpy_checkpoints")
            for name in names]


def test_nan_stops_at_the_first_bad_step_and_nothing_nonfinite_is_written(
        tmp_path, task_name, pretrained):
    trainer = _trainer(tmp_path, task_name, pretrained, steps=6, save_period=1,
                       optimizer=_nan_at(3))
    with pytest.raises(NonFiniteError) as info:
        trainer.run()
    message = str(info.value)
    assert message.startswith("step 3: non-finite training")
    assert "last good checkpoint: step 2" in message
    assert trainer.checkpointer.all_steps() == [1, 2]
    files = _all_numpy_files(tmp_path)
    assert files and all(np.all(np.isfinite(np.load(f))) for f in files)
    # In memory the state is still step 2's prompt (the bad update was never applied).
    step2 = np.load(tmp_path / "numpy_checkpoints" / "checkpoint_2" / "prompt.prompt.npy")
    np.testing.assert_array_equal(_prompt(trainer), step2)
    assert not (tmp_path / "run.lock").exists()  # released on the way out


def test_skip_step_drops_the_bad_update_and_counts_it(tmp_path, task_name, pretrained):
    prompts = {}
    trainer = _trainer(tmp_path, task_name, pretrained, steps=4, on_nonfinite="skip_step",
                       optimizer=_nan_at(2))
    trainer.step_callback = lambda step, m: prompts.__setitem__(step, _prompt(trainer))
    summary = trainer.run()
    assert summary["skipped_steps"] == 1 and summary["final_step"] == 4
    np.testing.assert_array_equal(prompts[2], prompts[1])  # step 2's update dropped
    assert not np.array_equal(prompts[3], prompts[2])      # step 3 trains again
    assert all(np.all(np.isfinite(p)) for p in prompts.values())


def _nan_gradient_at(bad_step, inner):
    """`inner` fed a NaN gradient at its (1-based) `bad_step`-th call: with Adafactor the
    NaN reaches its second-moment state, which the guard must roll back too. The call count
    lives on the host (an io_callback), so a dropped update does not roll it back."""
    from jax.experimental import io_callback

    calls = {"n": 0}

    def factor():
        calls["n"] += 1
        return np.float32(np.nan if calls["n"] == bad_step else 1.0)

    def update_fn(updates, state, params=None):
        del params
        f = io_callback(factor, jax.ShapeDtypeStruct((), jnp.float32))
        return jax.tree_util.tree_map(lambda u: u * f, updates), state

    return optax.chain(optax.GradientTransformation(lambda p: optax.EmptyState(), update_fn),
                       inner)


def test_skip_step_rolls_back_the_adafactor_state(tmp_path, task_name, pretrained):
    # With a stateful optimizer a dropped update must also drop the state update: a NaN
    # kept in Adafactor's second moment makes every later update NaN (all skipped).
    states, prompts = {}, {}
    trainer = _trainer(tmp_path, task_name, pretrained, steps=4, on_nonfinite="skip_step",
                       optimizer=_nan_gradient_at(2, optimizers.adafactor()))

    def record(step, metrics):
        states[step] = jax.device_get(trainer.state.opt_state)
        prompts[step] = _prompt(trainer)

    trainer.step_callback = record
    initial_state = jax.device_get(trainer.state.opt_state)
    summary = trainer.run()
    assert summary["skipped_steps"] == 1 and summary["final_step"] == 4
    leaves = lambda tree: [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]  # noqa
    # step 1 moved the state (so the comparison below can tell a rollback from no-op)
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(states[1]),
                                                        leaves(initial_state)))
    # step 2's update is dropped whole: the optimizer state is bitwise step 1's
    for got, want in zip(leaves(states[2]), leaves(states[1])):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(prompts[2], prompts[1])
    for step in (3, 4):  # training goes on from the rolled-back state
        assert not np.array_equal(prompts[step], prompts[step - 1]), step
        assert all(np.all(np.isfinite(x)) for x in leaves(states[step]) if x.dtype.kind == "f")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, task_name, pretrained):
    """An uninterrupted 4-step run saving at steps 2 and 4; (model_dir, final prompt)."""
    model_dir = tmp_path_factory.mktemp("reference")
    trainer = _trainer(model_dir, task_name, pretrained, steps=4, save_period=2)
    trainer.run()
    return model_dir, _prompt(trainer), trainer._abstract_payload()


@pytest.mark.slow
def test_sigterm_mid_run_saves_and_the_rerun_equals_an_uninterrupted_run(
        tmp_path, task_name, pretrained, reference_run):
    _, reference_prompt, _ = reference_run
    interrupted = _trainer(tmp_path, task_name, pretrained, steps=4)
    interrupted.step_callback = (
        lambda step, m: os.kill(os.getpid(), signal.SIGTERM) if step == 2 else None)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as info:
        interrupted.run()
    assert info.value.exit_code == 0 and info.value.step == 2
    assert "SIGTERM: saved step 2 (data position 2)" in str(info.value)
    assert "rerun the same command to resume from step 2" in str(info.value)
    assert interrupted.checkpointer.all_steps() == [2]  # no save period: saved for the signal
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
    resumed = _trainer(tmp_path, task_name, pretrained, steps=4)
    assert resumed.run()["final_step"] == 4
    np.testing.assert_array_equal(_prompt(resumed), reference_prompt)
    assert "resumed from step 2" in (tmp_path / "train.log").read_text()


def test_stop_signals_flag_then_restore_the_handlers():
    from xprompt_jax.training.trainer import _StopSignals

    for signum in (signal.SIGTERM, signal.SIGINT):
        before = signal.getsignal(signum)
        with _StopSignals() as signals:
            assert not signals.received(0)
            os.kill(os.getpid(), signum)
            assert signals.received(1) and signals.name == signal.Signals(signum).name
            assert signal.getsignal(signum) == before  # a second signal acts as usual
        assert signal.getsignal(signum) == before


def _truncate(step_dir):
    """Cuts every array data file of the checkpoint's state item in half."""
    cut = 0
    for root, _, names in os.walk(step_dir / "state"):
        for name in names:
            path = os.path.join(root, name)
            if "ocdbt" in root or name.startswith("d") or "array" in root:
                size = os.path.getsize(path)
                with open(path, "r+b") as f:
                    f.truncate(size // 2)
                cut += 1
    assert cut


def _flip(step_dir):
    """Flips bytes in the middle of the largest data file of the state item."""
    files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir / "state") for n in ns]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 2, min(len(data), len(data) // 2 + 64)):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _empty_state(step_dir):
    import shutil

    shutil.rmtree(step_dir / "state")
    (step_dir / "state").mkdir()


def _bad_metadata(step_dir):
    for root, _, names in os.walk(step_dir / "state"):
        for name in names:
            if "metadata" in name.lower():
                open(os.path.join(root, name), "w").write("{not json")


def _copy_run(reference_run, tmp_path):
    import shutil

    model_dir = tmp_path / "run"
    shutil.copytree(reference_run[0], model_dir)
    return model_dir


@pytest.mark.parametrize("damage", [_truncate, _flip, _empty_state, _bad_metadata])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
        tmp_path, reference_run, damage, caplog):
    from xprompt_jax.training.checkpointing import RunCheckpointer

    model_dir = _copy_run(reference_run, tmp_path)
    damage(model_dir / "checkpoints" / "4")
    step2 = np.load(model_dir / "numpy_checkpoints" / "checkpoint_2" / "prompt.prompt.npy")
    checkpointer = RunCheckpointer(str(model_dir))
    with caplog.at_level(logging.WARNING):
        step, payload, meta = checkpointer.restore_latest_good(target=reference_run[2])
    assert step == 2 and meta["data"]["position"] == 2
    np.testing.assert_array_equal(np.asarray(payload["train"].params["prompt"]["prompt"]), step2)
    assert any(f"checkpoints/4 is unreadable or inconsistent" in r.getMessage()
               for r in caplog.records)
    assert (model_dir / "checkpoints" / "4").exists()  # never deleted


@pytest.mark.slow
def test_training_on_after_a_fallback_moves_the_bad_checkpoint_aside(
        tmp_path, task_name, pretrained, reference_run):
    model_dir = _copy_run(reference_run, tmp_path)
    _truncate(model_dir / "checkpoints" / "4")
    trainer = _trainer(model_dir, task_name, pretrained, steps=4, save_period=2)
    assert trainer.run()["final_step"] == 4
    np.testing.assert_array_equal(_prompt(trainer), reference_run[1])
    assert [p.name.split("-")[0] for p in (model_dir / "corrupt_checkpoints").iterdir()] == ["4"]
    assert trainer.checkpointer.all_steps() == [2, 4]


def test_second_run_on_a_locked_dir_refuses_and_a_dead_owners_lock_is_taken(
        tmp_path, task_name, pretrained, caplog):
    import socket

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    record = {"host": socket.gethostname(), "pid": owner.pid, "start": "then"}
    try:
        run_lock._create(run_lock.lock_path(str(tmp_path)), record)
        with pytest.raises(RunLockedError, match=rf"in use by another run \(pid {owner.pid} "):
            _trainer(tmp_path, task_name, pretrained, steps=1)
        assert os.listdir(tmp_path) == ["run.lock"]  # nothing else was touched
        run_lock.acquire(str(tmp_path), force=True)
        assert run_lock.read_lock(str(tmp_path))["pid"] == os.getpid()
        run_lock.release(str(tmp_path))
    finally:
        owner.kill()
        owner.wait()
    run_lock._create(run_lock.lock_path(str(tmp_path)), record)
    with caplog.at_level(logging.WARNING):
        run_lock.acquire(str(tmp_path))
    assert any("its owner is gone" in r.getMessage() for r in caplog.records)
    run_lock.release(str(tmp_path))
    assert not (tmp_path / "run.lock").exists()


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
    path = run_lock.lock_path(str(tmp_path))
    run_lock._create(path, {"host": "elsewhere", "pid": 1, "start": "then"})
    with pytest.raises(RunLockedError, match="another host"):
        run_lock.acquire(str(tmp_path))
    old = os.path.getmtime(path) - run_lock.STALE_AFTER_S - 10
    os.utime(path, (old, old))
    run_lock.acquire(str(tmp_path))
    assert run_lock.read_lock(str(tmp_path))["pid"] == os.getpid()
    run_lock.release(str(tmp_path))
    assert not os.path.exists(path)


def test_a_diverging_but_finite_prompt_is_warned_about_once():
    from xprompt_jax.training.trainer import _NormWatch

    class Log:
        lines = []

        def message(self, text):
            self.lines.append(text)

    watch, log = _NormWatch(), Log()
    for step, norm in enumerate([2.0, 50.0, 199.0, 201.0, 5e5], start=1):
        watch.check(step, norm, log)
    assert log.lines == ["warning: step 4: the trainable parameters' norm grew from 2 to 201 "
                         "(diverging? LEARNING_RATE too high?)"]


def _truncate_arrays(step_dir):
    """Cuts the array data files (the OCDBT `d/` folder) of a checkpoint's state to 10 bytes."""
    files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir / "state") for n in ns
             if os.path.basename(r) == "d"]
    assert files
    for path in files:
        os.truncate(path, 10)


def _run_with_metrics(model_dir, metrics):
    """Checkpoints of a tiny SoftPrompt run (the fixture model's prompt shape) saved with
    the given {step: metric}; each step's prompt is filled with the step number."""
    from xprompt_jax.training.checkpointing import RunCheckpointer
    from xprompt_jax.training.trainer import run_payload

    with RunCheckpointer(str(model_dir), keep=None, save_numpy=False) as checkpointer:
        for step, metric in metrics.items():
            prompt = jnp.full((4, 8), float(step), jnp.float32)  # tiny model: length 4, emb 8
            checkpointer.save(step, run_payload({"params": {"prompt": {"prompt": prompt}},
                                                 "step": step}, {}), meta={}, metric=metric)


def test_corrupt_best_checkpoint_gives_way_to_the_next_best_with_one_line(
        tmp_path, caplog, capfd):
    from xprompt_jax.runs.restore import restore_trainable
    from xprompt_jax.training.checkpointing import RunCheckpointer

    # step 2 is the best (80); step 3 ties it (80): the next best once 2 cannot be read.
    _run_with_metrics(tmp_path, {1: 60.0, 2: 80.0, 3: 80.0, 4: 70.0})
    _truncate_arrays(tmp_path / "checkpoints" / "2")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        restored = restore_trainable(tiny_prompted_model(), str(tmp_path), "best")
    assert restored.step == 3
    np.testing.assert_array_equal(np.asarray(restored.trainable["prompt"]["prompt"]),
                                  np.full((4, 8), 3.0, np.float32))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith("xprompt_jax")]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        "the best checkpoint step 2 (metric 80) cannot be read (a data file is shorter than "
        "recorded (truncated) ("), warnings[0]
    assert warnings[0].endswith("); using step 3 (metric 80) instead (the bad checkpoint is "
                                "kept)")
    assert "tensorstore_spec" not in warnings[0]
    assert "Event loop is closed" not in capfd.readouterr().err  # TensorStore noise dropped
    assert (tmp_path / "checkpoints" / "2").exists()  # kept for inspection

    # Both tied steps damaged: the next lower metric (step 4, 70), never the unreadable ones.
    _truncate_arrays(tmp_path / "checkpoints" / "3")
    checkpointer = RunCheckpointer(str(tmp_path), read_only=True)
    assert checkpointer.readable_best_step() == 4
    assert checkpointer.best_step() == 4 and checkpointer.best_metric() == 70.0
    # An explicit step that cannot be read is one line naming it.
    from xprompt_jax.errors import CheckpointError
    with pytest.raises(CheckpointError, match=r"checkpoints/2 cannot be read: a data file is "
                                              r"shorter than recorded"):
        restore_trainable(tiny_prompted_model(), str(tmp_path), 2)


def test_trainer_restore_best_skips_an_unreadable_best(tmp_path, task_name, pretrained,
                                                       reference_run, caplog):
    """The XPrompt pipeline's stage-1 prompt comes from `Trainer.restore_best`: with no
    metric recorded the newest checkpoint is the best; damaged, the older one is used."""
    from xprompt_jax.xprompt import rewind

    model_dir = _copy_run(reference_run, tmp_path)
    _flip(model_dir / "checkpoints" / "4")
    step2 = np.load(model_dir / "numpy_checkpoints" / "checkpoint_2" / "prompt.prompt.npy")
    trainer = _trainer(model_dir, task_name, pretrained, steps=4, save_period=2)
    with caplog.at_level(logging.WARNING):
        params, step = rewind.best_trainable(trainer)
    assert step == 2
    np.testing.assert_array_equal(np.asarray(params["prompt"]["prompt"]), step2)
    assert any(r.getMessage().startswith("the best checkpoint step 4 cannot be read (")
               and "using step 2 instead" in r.getMessage() for r in caplog.records)


class _ScriptedEvaluator:
    """Dev evaluations with given accuracies, one per call (the fault scenario: which
    checkpoint is best is fixed by hand, independent of the model)."""

    def __init__(self, accuracies):
        self.accuracies = list(accuracies)

    def evaluate(self, variables):
        del variables
        accuracy = self.accuracies.pop(0)
        return {"main_metric": accuracy, "metrics": {"accuracy": accuracy},
                "mode": "rank_classification", "num_examples": 8}


def test_early_stopping_after_a_best_fallback_compares_with_the_fallback(
        tmp_path, task_name, pretrained):
    # steps 1-3 evaluate to 50, 80, 60: step 2 is best; then step 2 is damaged
    first = _trainer(tmp_path, task_name, pretrained, steps=3, eval_period=1, patience=2,
                     keep_checkpoints=5)
    first.evaluator = _ScriptedEvaluator([50.0, 80.0, 60.0])
    assert first.run()["best_step"] == 2
    _flip(tmp_path / "checkpoints" / "2")
    # resumed to step 5 with 70, 65: 70 beats the readable best (step 3, 60), so it is an
    # improvement (patience 2 is not used up) and step 4 becomes the best
    resumed = _trainer(tmp_path, task_name, pretrained, steps=5, eval_period=1, patience=2,
                       keep_checkpoints=5)
    resumed.evaluator = _ScriptedEvaluator([70.0, 65.0])
    summary = resumed.run()
    assert summary["final_step"] == 5 and not summary["stopped_early"]
    assert summary["best_step"] == 4 and summary["best_eval"]["main_metric"] == 70.0
    meta = resumed.checkpointer.restore_meta(5)
    assert meta["best_eval"]["step"] == 4 and meta["evals_without_improvement"] == 1
