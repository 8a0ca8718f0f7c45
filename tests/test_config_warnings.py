"""Settings that are legal but almost surely a slip are warned about in one line naming
the macro and the papers' value, when the config is read (before any work)."""

import logging

import gin
import pytest

from xprompt_jax import gin_utils

WORLD = ["models/world_tiny.gin", "prompt_tuning.gin", "world/run.gin"]


@pytest.mark.parametrize("rate, warned", [("1e12", True), ("1e4", True), ("1000.0", False),
                                          ("100.0", False), ("0.3", False)])
def test_an_absurd_learning_rate_is_warned_about_when_the_config_is_read(rate, warned,
                                                                         caplog):
    gin.clear_config()
    try:
        with caplog.at_level(logging.WARNING, logger="xprompt_jax"):
            gin_utils.parse_gin(WORLD, [f"LEARNING_RATE = {rate}", "MODEL_DIR = '/tmp/x'"],
                                finalize=False)
    finally:
        gin.clear_config()
    lines = [r.getMessage() for r in caplog.records if "LEARNING_RATE" in r.getMessage()]
    if not warned:
        assert lines == []
        return
    assert lines == [f"warning: LEARNING_RATE = {float(rate)!r}: far above the rate soft "
                     "prompts are trained with (0.3 for prompt tuning: Lester et al. 2021, "
                     "XPrompt; EPT's grid ends at 0.3); the prompt will diverge. Warned "
                     "above 1e3"]


def test_the_learning_rate_warning_comes_before_training_starts(tmp_path, capsys):
    from absl import flags

    from xprompt_jax import cli, train

    argv = ["--gin_file=" + f for f in WORLD] + [
        f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.TRAIN_STEPS=1",
        "--gin.EVAL_PERIOD=None", "--gin.BATCH_SIZE=8", "--gin.LEARNING_RATE=1e12"]
    log = logging.getLogger("xprompt_jax")
    saved = (list(log.handlers), log.level, log.propagate)
    flags.FLAGS.unparse_flags()
    gin.clear_config()
    try:
        try:
            cli.run_cli(train.main, ["train"] + argv, prog="xprompt_jax.train")
        except SystemExit:
            pass
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
        log.handlers[:], log.level, log.propagate = saved
    err = capsys.readouterr().err
    warned = err.find("warning: LEARNING_RATE = 1000000000000.0: far above")
    started = err.find("starting a run of 1 steps")
    assert 0 <= warned < started, err[-3000:]
