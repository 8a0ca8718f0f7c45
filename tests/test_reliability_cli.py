"""What a user sees for bad input: one line `<cli>: error: ...` and exit 2, on
the embedded world. Most cases run `cli.run_cli(train.main, argv)` in process (the same
path as the console scripts); two subprocess runs check the real exit codes."""

import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from xprompt_jax import cli, gin_utils
from xprompt_jax.errors import ConfigError, DataError, XPromptError

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORLD = ["--gin_file=models/world_tiny.gin", "--gin_file=prompt_tuning.gin",
         "--gin_file=world/run.gin"]


def _world_flags(model_dir, *extra):
    return WORLD + [f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS=2",
                    "--gin.EVAL_PERIOD=None", "--gin.BATCH_SIZE=8", "--gin.LOG_PERIOD=1",
                    *extra]


def _run_train(argv, capsys, cli_module="train"):
    """(exit code, last stderr line) of the train (or another) CLI run in process."""
    import importlib

    import gin
    from absl import flags

    train = importlib.import_module(f"xprompt_jax.{cli_module}")

    flags.FLAGS.unparse_flags()
    gin.clear_config()
    log = logging.getLogger("xprompt_jax")
    saved = (list(log.handlers), log.level, log.propagate)
    try:
        with pytest.raises(SystemExit) as info:
            cli.run_cli(train.main, [cli_module] + list(argv),
                        prog=f"xprompt_jax.{cli_module}")
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
        log.handlers[:], log.level, log.propagate = saved  # keep caplog working elsewhere
    lines = capsys.readouterr().err.strip().splitlines()
    return info.value.code, lines[-1] if lines else ""


@pytest.fixture(scope="module")
def world_copy(tmp_path_factory):
    """The world data (generated once if needed); tests damage copies of it."""
    from xprompt_jax.world import writer

    del tmp_path_factory
    return pathlib.Path(writer.ensure_world_data())  # the shared default copy: only read


def _damaged_world(world_copy, tmp_path, transform):
    target = tmp_path / "world"
    shutil.copytree(world_copy, target)
    path = target / "RTE" / "train.jsonl"
    path.write_bytes(transform(path.read_bytes()))
    return target, path


def _drop_premise_of_line_3(data: bytes) -> bytes:
    lines = data.split(b"\n")
    row = json.loads(lines[2])
    del row["premise"]
    lines[2] = json.dumps(row).encode()
    return b"\n".join(lines)


GIN_CASES = [
    (["--gin.TRAIN_STEP=5"], "xprompt_jax.train: error: --gin.TRAIN_STEP: TRAIN_STEP is not a "
     "macro of the included gin files; did you mean TRAIN_STEPS?"),
    (["--gin.BATCH_SIZE='8'"], "xprompt_jax.train: error: --gin.BATCH_SIZE='8': BATCH_SIZE "
     "expects an int (the gin files set 32), got a string"),
    (["--gin.LEARNING_RATE='fast'"], "xprompt_jax.train: error: --gin.LEARNING_RATE='fast': "
     "LEARNING_RATE expects a float (the gin files set 0.3), got a string"),
    (["--gin_file=prompts/from_file.gin"], "xprompt_jax.train: error: xprompt_jax.train: "
     "required gin macros not given: PROMPT_FILE (pass --gin.PROMPT_FILE=...)"),
    (["--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 1}"], "xprompt_jax.train: error: "
     "TASK_FEATURE_LENGTHS['targets']=1 cuts every target to its end-of-sequence token (EOS "
     "counts; expected at least 2)"),
    (["--gin.TASK_FEATURE_LENGTHS={'inputs': 2, 'targets': 4}"], "xprompt_jax.train: error: "
     "TASK_FEATURE_LENGTHS['inputs']=2 leaves no room for the input (EOS counts; expected at "
     "least 4)"),
]


# Values out of range, refused at parse time naming the macro (the rules are the
# documented meaning of each setting: a rate > 0, a dropout probability < 1, ...).
GIN_CASES += [
    ([flag], "xprompt_jax.train: error: " + line) for flag, line in [
        ("--gin.LEARNING_RATE=-0.3", "LEARNING_RATE = -0.3: LEARNING_RATE expects a finite "
         "number > 0 (a negative rate climbs the loss)"),
        ("--gin.LEARNING_RATE=1e400", "LEARNING_RATE = inf: LEARNING_RATE expects a finite "
         "number > 0 (a negative rate climbs the loss)"),
        ("--gin.DROPOUT_RATE=1.5", "DROPOUT_RATE = 1.5: DROPOUT_RATE expects a number in "
         "[0, 1)"),
        ("--gin.KEEP_CHECKPOINTS=0", "KEEP_CHECKPOINTS = 0: KEEP_CHECKPOINTS expects an int "
         ">= 1, or None to keep all"),
        ("--gin.PROMPT_LENGTH=0", "PROMPT_LENGTH = 0: PROMPT_LENGTH expects an int >= 1"),
        ("--gin.MAX_EVAL_EXAMPLES='16'", "MAX_EVAL_EXAMPLES = '16': MAX_EVAL_EXAMPLES "
         "expects an int >= 1, or None for the whole split (got a string)"),
        ("--gin.MESH_SHAPE=(3,)", "MESH_SHAPE = (3,): MESH_SHAPE expects a pair of ints "
         "(data, model), each >= 1 or one of them -1"),
        ("--gin.EVAL_MODE='gen'", "EVAL_MODE = 'gen': EVAL_MODE expects 'generation' or "
         "'rank_classification'"),
        ("--gin.FROZEN_DTYPE='bf16'", "FROZEN_DTYPE = 'bf16': FROZEN_DTYPE expects None, "
         "'float32', 'bfloat16' or 'float16'"),
        ("--gin.TRAINABLE_REGEX='(('", "TRAINABLE_REGEX = '((': TRAINABLE_REGEX expects a "
         "valid regular expression (a string)"),
        ("--gin.prompt_length=10", "--gin.prompt_length: prompt_length is not a macro of the "
         "included gin files; did you mean PROMPT_LENGTH?"),
        # unquoted, as a newcomer types it: gin parses values as Python literals (T5X's
        # documented form is --gin.MODEL_DIR="'/data/run'")
        ("--gin.MODEL_DIR=/data/run", "error in gin binding 'MODEL_DIR = /data/run': "
         "/data/run is no value gin can parse; a string needs quotes inside the shell's "
         "quotes: write --gin.MODEL_DIR=\"'/data/run'\""),
        ("--gin.EVAL_SPLIT=validation", "error in gin binding 'EVAL_SPLIT = validation': "
         "validation is no value gin can parse; a string needs quotes inside the shell's "
         "quotes: write --gin.EVAL_SPLIT=\"'validation'\""),
        # the closest registered names (difflib), before anything is built or written
        ("--gin.MIXTURE_OR_TASK_NAME='world_rtee'", "MIXTURE_OR_TASK_NAME = 'world_rtee': no "
         "seqio task or mixture of that name is registered after importing "
         "xprompt_jax.tasks; did you mean 'world_rte' or 'world_rte_prefixed' or "
         "'world_wic_prefixed'? (a task of your own: set MIXTURE_OR_TASK_MODULE to the "
         "module that registers it)"),
    ]] + [
    # the world's test split is unlabelled like SuperGLUE's (targets '<unk>')
    (["--gin.EVAL_PERIOD=1", flag], "xprompt_jax.train: error: " + line) for flag, line in [
        ("--gin.EVAL_SPLIT='test'", "split 'test' of task 'world_rte' has no labels (every "
         "target is '<unk>', T5's mark for an unlabelled example): its scores would mean "
         "nothing; set EVAL_SPLIT (or EVAL_HELDOUT_SPLIT) to a labelled split, e.g. "
         "'validation'"),
    ]]


@pytest.mark.parametrize("extra,line", GIN_CASES)
def test_bad_settings_give_one_line_and_exit_2(tmp_path, capsys, extra, line):
    code, last = _run_train(_world_flags(tmp_path / "run") + extra, capsys)
    assert (code, last) == (2, line)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("name,transform,expected", [
    ("missing_field", _drop_premise_of_line_3, "{path}:3: missing field 'premise'"),
    ("not_utf8", lambda d: d.replace(b"jack", b"j\xe4ck", 1), "{path}:{line}: not valid UTF-8"),
    ("empty", lambda d: b"", "{path}:1: no examples in the file (empty?)"),
])
def test_bad_data_gives_file_and_line(tmp_path, capsys, world_copy, name, transform, expected):
    world, path = _damaged_world(world_copy, tmp_path, transform)
    line_no = 1 + path.read_bytes().split(b"\xe4")[0].count(b"\n")
    code, last = _run_train(_world_flags(tmp_path / "run", f"--gin.WORLD_DIR='{world}'"),
                            capsys)
    assert code == 2
    assert last.startswith("xprompt_jax.train: error: " +
                           expected.format(path=path, line=line_no)), last


def test_pretrained_checkpoint_of_another_size_names_the_dimensions(tmp_path, capsys):
    code, last = _run_train(_world_flags(tmp_path / "run") + [
        "--gin_bindings=t5_config.T5Config.emb_dim = 64",
        "--gin_bindings=t5_config.T5Config.num_encoder_layers = 2"], capsys)
    assert code == 2
    assert last.startswith("xprompt_jax.train: error: the pretrained checkpoint does not fit "
                           "MODEL_CONFIG: checkpoint has "), last
    assert "emb_dim 128 (config: 64)" in last and "num_encoder_layers 3 (config: 2)" in last


def test_unreadable_pretrained_checkpoint_is_one_line(tmp_path, capsys):
    from xprompt_jax.world import paths

    broken = tmp_path / "ckpt"
    shutil.copytree(paths.checkpoint_path(), broken)
    files = sorted((p for p in broken.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    with open(files[0], "r+b") as f:
        f.truncate(files[0].stat().st_size // 3)
    code, last = _run_train(_world_flags(tmp_path / "run", f"--gin.INITIAL_CHECKPOINT_PATH="
                                                           f"'{broken}'"), capsys)
    assert code == 2
    assert last.startswith(f"xprompt_jax.train: error: pretrained checkpoint {broken} (t5x) "
                           "cannot be read: "), last
    code, last = _run_train(_world_flags(tmp_path / "run", "--gin.INITIAL_CHECKPOINT_PATH="
                                                           f"'{tmp_path / 'nowhere'}'"), capsys)
    assert (code, last) == (2, f"xprompt_jax.train: error: pretrained checkpoint "
                               f"{tmp_path / 'nowhere'} does not exist (INITIAL_CHECKPOINT_PATH)")


def test_run_cli_formats_our_errors_only(capsys):
    def fails(error):
        def main(argv):
            del argv
            raise RuntimeError("wrapped by gin") from error
        return main

    with pytest.raises(SystemExit) as info:
        cli.run_cli(fails(DataError("f.jsonl:3: missing field 'x'\nsecond line")), ["p"],
                    prog="p")
    assert info.value.code == 2
    assert capsys.readouterr().err == "p: error: f.jsonl:3: missing field 'x'; second line\n"
    with pytest.raises(SystemExit):
        cli.run_cli(fails(ConfigError("bad")), ["p", "--verbose"], prog="p")
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("p: error: bad\n")
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli.run_cli(lambda argv: 1 / 0, ["p"], prog="p")


def test_config_change_on_resume_refuses_or_is_recorded(tmp_path):
    from xprompt_jax.train import record_config

    old = "BATCH_SIZE = 32\nLEARNING_RATE = 0.3\nTRAIN_STEPS = 100\n"
    record_config(str(tmp_path), old, None)
    assert (tmp_path / "config.gin").read_text() == old
    record_config(str(tmp_path), old.replace("100", "300"), 50)  # a longer run is fine
    new = old.replace("0.3", "0.1").replace("100", "300")
    with pytest.raises(ConfigError, match=r"resuming at step 50 with a different config "
                                          r"\(LEARNING_RATE = 0.3 -> LEARNING_RATE = 0.1\)"):
        record_config(str(tmp_path), new, 50)
    record_config(str(tmp_path), new, 50, allow_config_change=True)
    assert (tmp_path / "config.gin").read_text() == new
    assert (tmp_path / "config.until_step_50.gin").read_text() == old.replace("100", "300")
    change = json.loads((tmp_path / "config_changes.jsonl").read_text())
    assert change["step"] == 50
    assert change["changes"] == ["LEARNING_RATE = 0.3 -> LEARNING_RATE = 0.1"]
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def _env():
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return env


@pytest.mark.slow
def test_cli_subprocess_typo_exits_2_and_sigterm_exits_0_with_a_resume_line(tmp_path):
    cmd = [sys.executable, "-m", "xprompt_jax.train"]
    out = subprocess.run(cmd + _world_flags(tmp_path / "a") + ["--gin.TRAIN_STEP=5"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "xprompt_jax.train: error: --gin.TRAIN_STEP: TRAIN_STEP is not a macro of the "
        "included gin files; did you mean TRAIN_STEPS?")
    # SIGTERM once training is under way: a save, exit 0, the line names the step.
    model_dir = tmp_path / "b"
    flags = [a for a in _world_flags(model_dir) if "TRAIN_STEPS" not in a]
    proc = subprocess.Popen(cmd + flags + ["--gin.TRAIN_STEPS=100000"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = model_dir / "metrics.jsonl"
    deadline = time.time() + 500
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("xprompt_jax.train: stopped: SIGTERM: saved step "), last
    step = int(last.split("saved step ")[1].split()[0])
    assert step >= 3 and (model_dir / "checkpoints" / str(step)).is_dir()
    assert f"rerun the same command to resume from step {step}" in last
    assert not (model_dir / "run.lock").exists()
    # Run events reach stderr (a pipe here, no progress bar) and MODEL_DIR/train.log.
    assert "starting a run of 100000 steps in" in err and "step 1 loss" in err
    assert "SIGTERM received: stopped after step" in (model_dir / "train.log").read_text()


def _run_train_ok(argv):
    """Runs the train CLI in process and expects success (no SystemExit)."""
    import gin
    from absl import flags

    from xprompt_jax import train

    flags.FLAGS.unparse_flags()
    gin.clear_config()
    log = logging.getLogger("xprompt_jax")
    saved = (list(log.handlers), log.level, log.propagate)
    try:
        cli.run_cli(train.main, ["train"] + list(argv), prog="xprompt_jax.train")
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
        log.handlers[:], log.level, log.propagate = saved


def test_failed_config_change_keeps_the_record_and_the_original_command_resumes(
        tmp_path, capsys):
    model_dir = tmp_path / "run"
    _run_train_ok(_world_flags(model_dir))  # PROMPT_LENGTH 20 (world/run.gin), steps 1-2
    record = (model_dir / "config.gin").read_bytes()
    capsys.readouterr()
    code, last = _run_train(_world_flags(model_dir, "--gin.PROMPT_LENGTH=10",
                                         "--gin.TRAIN_STEPS=3", "--allow_config_change"),
                            capsys)
    assert code == 2
    assert last == (f"xprompt_jax.train: error: checkpoint {model_dir}/checkpoints/2 has "
                    "prompt/prompt [20, 128], the config asks for [10, 128] (and 1 more "
                    "arrays): the checkpoint is intact, the settings differ from those it was "
                    "trained with (run with them, or use a new MODEL_DIR)"), last
    assert (model_dir / "config.gin").read_bytes() == record  # the record is untouched
    assert not (model_dir / "config_changes.jsonl").exists()
    assert not list(model_dir.glob("config.until_step_*"))
    _run_train_ok(_world_flags(model_dir, "--gin.TRAIN_STEPS=3"))  # the original settings
    assert "resumed from step 2" in (model_dir / "train.log").read_text()
    assert json.loads((model_dir / "train_summary.json").read_text())["final_step"] == 3
    # evaluate: a step the run does not have, and another prompt length, are one line each
    evaluate = _world_flags(model_dir, "--gin_file=runs/eval.gin")
    code, last = _run_train(evaluate + ["--gin.EVAL_CHECKPOINT=7"], capsys, "evaluate")
    assert (code, last) == (2, f"xprompt_jax.evaluate: error: no checkpoint for step 7 in "
                               f"{model_dir} (available: [2, 3])"), last
    code, last = _run_train(evaluate + ["--gin.PROMPT_LENGTH=10"], capsys, "evaluate")
    assert (code, last) == (2, f"xprompt_jax.evaluate: error: checkpoint 3 in {model_dir}: "
                               "parameter prompt/prompt has shape (20, 128), the model "
                               "expects (10, 128)"), last


def test_deleted_config_record_is_warned_about_on_resume(tmp_path, caplog):
    from xprompt_jax.runs.config_record import check_config

    with caplog.at_level(logging.WARNING, logger="xprompt_jax"):
        write = check_config(str(tmp_path), "PROMPT_LENGTH = 10\n", 50)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}/config.gin is missing: resuming at step 50 without checking that the "
        "config is the one the run trained with; the current config is recorded"]
    assert not (tmp_path / "config.gin").exists()  # written only once the resume worked
    write()
    assert (tmp_path / "config.gin").read_text() == "PROMPT_LENGTH = 10\n"


def test_macro_typo_in_the_users_own_gin_file_names_file_line_and_close_name(tmp_path,
                                                                              capsys):
    mine = tmp_path / "mine.gin"
    mine.write_text("# my settings\nTRAIN_STEPS = 2\nLEARNING_RAT = 0.1\n")
    code, last = _run_train(_world_flags(tmp_path / "run", f"--gin_file={mine}"), capsys)
    assert (code, last) == (2, f"xprompt_jax.train: error: {mine}:3: LEARNING_RAT is not a "
                               "macro that any gin file or setting reads; did you mean "
                               "LEARNING_RATE?")
