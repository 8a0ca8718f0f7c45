"""TRAIN_EPOCHS (epochs -> steps from the training split's size) and the MAIN_METRIC
override, read back through gin and the trainer that `runs.build_trainer` builds."""

import math

import gin
import pytest

import synthetic_tasks
from xprompt_jax import gin_utils
from xprompt_jax.training import epochs as epochs_lib
from xprompt_jax.evaluation import MainMetric, main_metric_fn

TRAIN_SIZE = 100


@pytest.fixture
def small_task(t5_vocab_path):
    return synthetic_tasks.register(t5_vocab_path, name="xprompt_test_budget",
                                    train_size=TRAIN_SIZE, validation_size=8)


def test_steps_for_epochs_is_the_ceiling():
    assert epochs_lib.steps_for_epochs(100, 250, 16) == 1563  # CB: 250 * 100 / 16 = 1562.5
    assert epochs_lib.steps_for_epochs(100, 2500, 16) == 15625  # RTE: exact
    assert epochs_lib.steps_for_epochs(0.5, 3, 32) == 1
    for bad in (0, -1):
        with pytest.raises(ValueError, match="TRAIN_EPOCHS"):
            epochs_lib.steps_for_epochs(bad, 10, 4)


def test_num_train_examples_counts_the_source(small_task):
    import seqio

    task = seqio.get_mixture_or_task(small_task)
    counted = sum(1 for _ in task.get_dataset({"inputs": 16, "targets": 4}, split="train",
                                              shuffle=False, num_epochs=1))
    assert counted == TRAIN_SIZE
    assert epochs_lib.num_train_examples(small_task) == TRAIN_SIZE


def test_main_metric_override():
    paper = MainMetric(("f1a", "accuracy"))
    assert paper({"f1a": 70.0, "exact_match": 30.0}) == 70.0  # MultiRC: F1a
    assert paper({"accuracy": 80.0, "f1_macro": 60.0}) == 80.0  # CB: accuracy
    with pytest.raises(KeyError, match="none of these metrics"):
        paper({"exact_match": 1.0, "f1": 2.0})
    with pytest.raises(ValueError, match="MAIN_METRIC"):
        MainMetric(3)
    assert MainMetric("accuracy").name == "accuracy"
    default = main_metric_fn("no_such_task_anywhere")
    assert default({"a": 1.0, "b": 3.0}) == 2.0 and default.name.startswith("task default")


def test_gin_train_epochs_and_main_metric_reach_the_trainer(tmp_path, fixtures_dir,
                                                            small_task):
    from xprompt_jax.runs import build_trainer, configured_run

    ckpt = fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"
    bindings = [f"MODEL_DIR = '{tmp_path}'", f"MIXTURE_OR_TASK_NAME = '{small_task}'",
                f"INITIAL_CHECKPOINT_PATH = '{ckpt}'",
                "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 4}", "BATCH_SIZE = 8",
                "TRAIN_EPOCHS = 3", "MAIN_METRIC = 'accuracy'", "EVAL_MODE = 'generation'",
                "PROMPT_LENGTH = 4"]
    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "prompt_tuning.gin"], bindings,
                            finalize=False)
        trainer = build_trainer(configured_run())
        assert trainer.config.num_steps == math.ceil(3 * TRAIN_SIZE / 8) == 38
        assert trainer.evaluator.main_metric_fn.keys == ("accuracy",)
    finally:
        gin.clear_config()
