"""Failures of the machine and mistakes a newcomer makes, each as one line on stderr
through the CLIs' error boundary (`cli.run_cli`): out of memory, a full disk or read-only
folder, over-long messages. Faults are injected (tests may run as root, where chmod does
not stop a write)."""

import errno
import json
import os
import pathlib

import pytest

from xprompt_jax import cli, fileio
from xprompt_jax.errors import ConfigError, ResourceError


def _one_line(capsys, main, argv=("prog",)):
    """(exit code, stderr lines) of `main` run through the CLI boundary."""
    with pytest.raises(SystemExit) as info:
        cli.run_cli(main, list(argv), prog="prog")
    return info.value.code, capsys.readouterr().err.strip().splitlines()


def _raises(error, wrap=True):
    def main(argv):
        del argv
        if wrap:  # as gin re-raises an exception from inside a configurable
            raise RuntimeError("In call to configurable 'train'") from error
        raise error
    return main


def _xla_resource_exhausted():
    """The exception jax raises when a device allocation fails (jax.errors.JaxRuntimeError,
    jaxlib's XlaRuntimeError), with XLA's status text."""
    from jax.errors import JaxRuntimeError

    return JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                           "17179869184 bytes.\nBufferAssignment OOM Debugging.\n" + "x" * 900)


@pytest.mark.parametrize("make", [_xla_resource_exhausted, lambda: MemoryError()],
                         ids=["xla", "host"])
def test_out_of_memory_is_one_line_naming_what_to_lower(capsys, make):
    code, lines = _one_line(capsys, _raises(make()))
    assert code == 1 and len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("prog: error: out of memory; lower BATCH_SIZE"), line
    for setting in ("BATCH_SIZE", "FROZEN_DTYPE='bfloat16'", "REMAT_POLICY"):
        assert setting in line
    assert len(line) <= len("prog: error: ") + 500


def test_an_unrelated_runtime_error_keeps_its_traceback(capsys):
    from jax.errors import JaxRuntimeError

    with pytest.raises(JaxRuntimeError):  # INTERNAL is a bug somewhere, not a setting
        cli.run_cli(_raises(JaxRuntimeError("INTERNAL: something"), wrap=False), ["prog"])


def test_every_one_line_error_is_capped(capsys):
    code, lines = _one_line(capsys, _raises(ConfigError("a" * 40000)))
    assert code == 2 and len(lines) == 1
    assert len(lines[0]) == len("prog: error: ") + 500, len(lines[0])
    # 500 = 472 kept + len(" ... [39528 more characters]") (28); 40000 - 472 = 39528
    assert lines[0].endswith("a ... [39528 more characters]")


@pytest.mark.parametrize("err,meaning", [
    (errno.ENOSPC, "no space left on device (disk full)"),
    (errno.EROFS, "read-only file system"),
    (errno.EACCES, "permission denied")])
def test_a_full_or_read_only_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch,
                                                                        capsys, err, meaning):
    target = tmp_path / "run" / "report.json"
    fileio.write_json_atomic(target, {"kept": 1})

    def fail(f):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(fileio, "fsync", fail)
    code, lines = _one_line(capsys, lambda argv: fileio.write_json_atomic(target, {"new": 2}))
    assert code == 1
    assert lines == [f"prog: error: cannot write {target}: {meaning} [errno {err}]; what was "
                     "written before is kept"]
    assert json.loads(target.read_text()) == {"kept": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]  # no temporary


def test_a_full_disk_while_appending_names_the_file_and_keeps_the_lines(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    with fileio.open_append(path) as f:
        f.write('{"step": 1}\n')

    def main(argv):
        del argv
        with fileio.open_append(path) as f:
            f.write('{"step": 2}\n')
            raise OSError(errno.ENOSPC, "No space left on device")  # as a flush would

    code, lines = _one_line(capsys, main)
    assert (code, lines) == (1, [f"prog: error: cannot write {path}: no space left on device "
                                 "(disk full) [errno 28]; what was written before is kept"])
    assert path.read_text().startswith('{"step": 1}\n')


def test_a_read_only_home_names_the_variable_that_moves_the_folder(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XPROMPT_RUNS_DIR", raising=False)
    run = pathlib.Path(fileio.runs_dir()) / "quickstart-1" / "config.gin"

    def read_only(path, mode="w"):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(fileio, "open_exclusive", read_only)
    code, lines = _one_line(capsys, lambda argv: fileio.write_text_atomic(run, "x"))
    assert code == 1 and len(lines) == 1, lines
    assert lines[0] == (f"prog: error: cannot write {run}: read-only file system [errno 30]; "
                        f"{run} is a default location under HOME: set XPROMPT_RUNS_DIR to a "
                        "writable folder; what was written before is kept")


def test_an_oserror_from_a_library_is_one_line_naming_its_file(capsys):
    error = PermissionError(errno.EACCES, "Permission denied", "/ckpt/checkpoint_5")
    code, lines = _one_line(capsys, _raises(error))
    assert (code, lines) == (1, ["prog: error: /ckpt/checkpoint_5: permission denied "
                                 "[errno 13]"])
    assert isinstance(cli.find_our_error(error), ResourceError)


@pytest.mark.parametrize("verbose", [False, True])
def test_writes_left_unawaited_by_a_failed_save_add_nothing_after_the_line(
        capsys, caplog, verbose):
    """A full disk fails every write of a checkpoint save: the first error becomes the
    line, the others end in asyncio futures nobody awaits, which asyncio reports with a
    traceback when they are collected. After the line they are dropped; `--verbose` keeps
    them (and shows that this test sees them)."""
    import asyncio
    import gc
    import logging

    left = []

    def main(argv):
        del argv
        loop = asyncio.new_event_loop()
        future = loop.create_future()
        future.set_exception(ValueError("RESOURCE_EXHAUSTED: Failed writing: No space left"))
        left.append(future)
        loop.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/run/checkpoints/6")

    asyncio_log = logging.getLogger("asyncio")
    filters = list(asyncio_log.filters)
    asyncio_log.filters[:] = []  # as in a fresh process (earlier CLI runs of this one add it)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            code, lines = _one_line(capsys, main, ["prog"] + (["--verbose"] if verbose else []))
            left.clear()
            gc.collect()
    finally:
        asyncio_log.filters[:] = filters
    assert code == 1 and lines[-1].startswith("prog: error: /run/checkpoints/6: no space")
    reported = [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]
    assert len(reported) == (1 if verbose else 0)


def _run_cli_in_process(module, argv, capsys):
    """(exit code, stderr lines) of the CLI `module` (its `main`) run in process, as the
    console scripts run it."""
    import importlib
    import logging

    import gin
    from absl import flags

    main = importlib.import_module(module).main
    flags.FLAGS.unparse_flags()
    gin.clear_config()
    log = logging.getLogger("xprompt_jax")
    saved = (list(log.handlers), log.level, log.propagate)
    try:
        with pytest.raises(SystemExit) as info:
            cli.run_cli(main, [module] + list(argv), prog=module)
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
        log.handlers[:], log.level, log.propagate = saved
    return info.value.code, capsys.readouterr().err.strip().splitlines()


def _world(method, *more):
    """The world model's flags (the method's gin file before world/run.gin, which sets
    the task) and `more` gin files."""
    return ["--gin_file=models/world_tiny.gin", f"--gin_file={method}",
            "--gin_file=world/run.gin"] + [f"--gin_file={f}" for f in more]


@pytest.mark.parametrize("module,files", [
    ("xprompt_jax.evaluate", ["prompt_tuning.gin", "runs/eval.gin"]),
    ("xprompt_jax.infer", ["prompt_tuning.gin", "runs/infer.gin"]),
    ("xprompt_jax.xprompt.__main__", ["xprompt.gin"]),
])
def test_a_mistyped_task_names_the_closest_tasks_in_every_cli(tmp_path, capsys, module, files):
    (tmp_path / "in.jsonl").write_text('{"inputs": "x"}\n')
    argv = _world(*files) + [
        f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.MIXTURE_OR_TASK_NAME='world_rtee'"]
    if "infer" in module:
        argv += [f"--gin.INFER_INPUT='{tmp_path / 'in.jsonl'}'",
                 f"--gin.INFER_OUTPUT='{tmp_path / 'out.jsonl'}'",
                 f"--gin.INFER_PROMPTS={{'world_rtee': '{tmp_path / 'p.npy'}'}}"]
    code, lines = _run_cli_in_process(module, argv, capsys)
    assert code == 2 and "Traceback" not in "\n".join(lines)
    assert lines[-1].startswith(f"{module}: error: MIXTURE_OR_TASK_NAME = 'world_rtee': no "
                                "seqio task or mixture of that name is registered"), lines[-1]
    assert "did you mean 'world_rte' or" in lines[-1]
    assert not (tmp_path / "run").exists()


def test_a_gin_include_cycle_is_a_short_line_naming_its_files(tmp_path, capsys):
    """Found before gin parses (gin would recurse to Python's recursion limit: a
    38,368-character line before), from the file named on the command line."""
    (tmp_path / "a.gin").write_text("# a\ninclude 'b.gin'\nX = 1\n")
    (tmp_path / "b.gin").write_text("include 'a.gin'\n")
    (tmp_path / "self.gin").write_text("include 'prompt_tuning.gin'\ninclude \"self.gin\"\n")
    a, b, own = tmp_path / "a.gin", tmp_path / "b.gin", tmp_path / "self.gin"
    for name, line in (
            ("a.gin", f"{a}:2 includes 'b.gin' -> {b}:1 includes 'a.gin'"),
            ("self.gin", f"{own}:2 includes \"self.gin\"")):
        argv = _world("prompt_tuning.gin", name) + [f"--gin_search_paths={tmp_path}",
                                                    f"--gin.MODEL_DIR='{tmp_path / 'run'}'"]
        code, lines = _run_cli_in_process("xprompt_jax.train", argv, capsys)
        assert code == 2 and lines == [
            f"xprompt_jax.train: error: gin files include each other in a circle: {line} "
            "(remove one of these includes)"], lines[:3]


@pytest.mark.parametrize("damage,problem", [
    (lambda text: text[:len(text) // 2], "invalid JSON at line "),
    (lambda text: "", "empty"),
    (lambda text: text.replace("token", "t\udce9ken"), "not valid UTF-8 at byte "),
], ids=["cut_short", "empty", "not_utf8"])
def test_a_damaged_pipeline_record_is_one_line_naming_the_file(tmp_path, capsys, damage,
                                                                 problem):
    from xprompt_jax.xprompt import stages

    model_dir = tmp_path / "xp"
    inputs = {"search": {"PRUNE_LEVELS": ["token"], "after": {"scores": 1}}}
    record = model_dir / "search" / stages.INPUTS_FILE
    fileio.write_json_atomic(record, inputs["search"])
    record.write_bytes(damage(record.read_text()).encode("utf-8", "surrogateescape"))
    before = record.read_bytes()
    code, lines = _one_line(capsys, lambda argv: stages.supersede_changed(str(model_dir),
                                                                          inputs))
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"prog: error: XPrompt search inputs record {record}: "
                               f"{problem}"), lines[0]
    assert lines[0].endswith("the file is damaged (cut short or edited: delete or restore "
                             "it)") or "UTF-8" in problem
    assert record.read_bytes() == before and sorted(os.listdir(model_dir)) == ["search"]


@pytest.mark.parametrize("how", ["env", "gin"])
def test_a_world_directory_that_is_a_file_is_one_line_naming_it(tmp_path, capsys,
                                                                 monkeypatch, how):
    world = tmp_path / "world.txt"
    world.write_text("not a folder\n")
    argv = _world("prompt_tuning.gin") + [f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                                          "--gin.TRAIN_STEPS=1", "--gin.EVAL_PERIOD=None",
                                          "--gin.BATCH_SIZE=8"]
    if how == "env":
        monkeypatch.setenv("XPROMPT_WORLD_DIR", str(world))
    else:
        argv.append(f"--gin.WORLD_DIR='{world}'")
    code, lines = _run_cli_in_process("xprompt_jax.train", argv, capsys)
    assert code == 2 and "Traceback" not in "\n".join(lines), lines[-5:]
    assert lines[-1] == (f"xprompt_jax.train: error: world data directory {world} (WORLD_DIR, "
                         "or $XPROMPT_WORLD_DIR) is a file, not a folder; name a folder (it "
                         "is created if missing)")
    assert world.read_text() == "not a folder\n"


def test_a_batch_that_does_not_split_over_the_devices_names_the_nearest_sizes(tmp_path,
                                                                              capsys):
    """The tests run on 8 host devices (conftest): BATCH_SIZE 12 is refused before anything
    is loaded or written, naming the device count and the multiples of 8 around it."""
    import jax

    assert jax.device_count() == 8
    argv = _world("prompt_tuning.gin") + [f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                                          "--gin.TRAIN_STEPS=1", "--gin.EVAL_PERIOD=None",
                                          "--gin.BATCH_SIZE=12"]
    code, lines = _run_cli_in_process("xprompt_jax.train", argv, capsys)
    assert code == 2 and "Traceback" not in "\n".join(lines)
    assert lines[-1] == ("xprompt_jax.train: error: BATCH_SIZE = 12 cannot be split evenly "
                         "over the 8 devices of the mesh's data axis (mesh {'data': 8, "
                         "'model': 1}, 8 devices); use a multiple of 8, e.g. 8 or 16, or set "
                         "MESH_SHAPE")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("batch,devices,nearest", [(4, 8, "e.g. 8,"), (17, 4, "e.g. 16 or 20,"),
                                                   (30, 4, "e.g. 28 or 32,")])
def test_the_nearest_batch_sizes_are_the_multiples_of_the_data_axis_around(batch, devices,
                                                                           nearest):
    import types

    from xprompt_jax.training import partitioning

    mesh = types.SimpleNamespace(shape={"data": devices, "model": 1})
    with pytest.raises(ConfigError, match=f"use a multiple of {devices}, {nearest} or set"):
        partitioning.check_batch_size(batch, mesh)
    partitioning.check_batch_size(devices * 3, mesh)  # a multiple: accepted


def test_a_truncated_pretrained_checkpoint_is_one_short_line(tmp_path, fixtures_dir):
    """A data file of a copy of the fixture checkpoint cut to a third: one line naming the
    checkpoint, the damage and the setting; none of TensorStore's leftover reads (each a
    "RuntimeError: Event loop is closed" traceback, printed while the process goes on; a
    subprocess, as pytest catches those itself)."""
    import shutil
    import subprocess
    import sys

    broken = tmp_path / "ckpt"
    shutil.copytree(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3", broken)
    data = sorted((p for p in (broken / "state").rglob("*") if p.is_file() and
                   p.parent.name == "d"), key=lambda p: -p.stat().st_size)[0]
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 3)
    script = (  # a caller that goes on after the error (a notebook, a pipeline)
        "import gc, sys, time\n"
        "from xprompt_jax.errors import XPromptError, one_line\n"
        "from xprompt_jax.checkpoints.pretrained import load_pretrained_params\n"
        "try:\n"
        f"    load_pretrained_params({str(broken)!r})\n"
        "except XPromptError as e:\n"
        "    print(one_line(e), file=sys.stderr)\n"
        "time.sleep(1.0)\n"  # the outstanding reads finish and call back
        "gc.collect()\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    lines = [line for line in out.stderr.splitlines()
             if line.strip() and not line.startswith(("I0000", "WARNING: All log"))]
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert lines == [f"pretrained checkpoint {broken} (t5x) cannot be read: a data file is "
                     f"shorter than recorded (truncated) ({broken}/state/) "
                     "(INITIAL_CHECKPOINT_PATH)"], lines[:20]


def test_a_prompt_file_too_large_for_float32_is_blamed_not_the_learning_rate(tmp_path,
                                                                             capsys):
    """A finite prompt file of values ~1e30: its norm (sqrt of 2,560 squares ~1e60)
    overflows float32, so step 1 was non-finite and blamed on LEARNING_RATE; now refused
    when read, naming the file."""
    import numpy as np

    prompt = tmp_path / "huge.npy"
    np.save(prompt, np.full((20, 128), 1e30, np.float32))
    argv = _world("prompt_tuning.gin", "prompts/from_file.gin") + [
        f"--gin.PROMPT_FILE='{prompt}'", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
        "--gin.TRAIN_STEPS=1", "--gin.EVAL_PERIOD=None", "--gin.BATCH_SIZE=8"]
    code, lines = _run_cli_in_process("xprompt_jax.train", argv, capsys)
    assert code == 2 and "Traceback" not in "\n".join(lines)
    assert lines[-1] == (f"xprompt_jax.train: error: prompt init file {prompt}: values up to "
                         "1e+30; the prompt's norm overflows float32, so training or scoring "
                         "with it would be non-finite (expected values on the scale of the "
                         "model's embeddings)")
    assert "LEARNING_RATE" not in lines[-1]


def test_an_initial_prompt_from_an_array_too_large_for_float32_names_its_source():
    import numpy as np

    from xprompt_jax.errors import DataError
    from xprompt_jax.prompts import initializers

    # 1e19 per value: each square (1e38) is below float32's max (3.4e38), the sum of 40 not
    with pytest.raises(DataError, match=r"prompt init from PEFT adapter /a: values up to "
                                        r"1e\+19; the prompt's norm overflows float32"):
        initializers.from_array(np.full((4, 10), 1e19), name="PEFT adapter /a")
    initializers.from_array(np.full((4, 10), 1e18), name="ok")  # sum 4e37: accepted


@pytest.mark.parametrize("metrics,cause", [
    ({"loss": 0.287, "grad_norm": 0.0, "trainable_norm": float("inf")}, "PROMPT_INIT"),
    ({"loss": float("nan"), "grad_norm": float("nan"), "trainable_norm": 3.0},
     "LEARNING_RATE"),
    ({"loss": 2.0, "grad_norm": float("inf"), "trainable_norm": float("inf")},
     "LEARNING_RATE"),
])
def test_a_non_finite_step_names_the_likelier_cause(metrics, cause):
    from xprompt_jax.training import trainer

    assert cause in trainer._nonfinite_cause(metrics)  # pylint: disable=protected-access


# Our macros and the random bad values fed to them: each must be accepted or refused with
# one of our one-line errors by the checks a run makes before loading anything (gin
# parsing with its macro rules, the run's config objects, the feature lengths, the mesh).
FUZZED_MACROS = ["LEARNING_RATE", "PROMPT_LENGTH", "BATCH_SIZE", "TRAIN_STEPS", "EVAL_PERIOD",
                 "DROPOUT_RATE", "MESH_SHAPE", "KEEP_CHECKPOINTS", "MAX_EVAL_EXAMPLES",
                 "EVAL_MODE", "FROZEN_DTYPE", "TRAINABLE_REGEX", "LOG_PERIOD", "RANDOM_SEED",
                 "TASK_FEATURE_LENGTHS", "EVAL_SPLIT", "EVAL_BATCH_SIZE", "PATIENCE",
                 "SAVE_PERIOD", "NUM_MICROBATCHES", "LABEL_SMOOTHING", "Z_LOSS",
                 "TRAIN_EPOCHS", "LOSS_NORMALIZATION", "LABEL_PARSING", "MAIN_METRIC",
                 "RECORD_PROMPT_NORM", "EVAL_HELDOUT_SPLIT", "MIXTURE_OR_TASK_NAME"]


def _bad_value(rng) -> str:
    """A random gin value: strings, negative / huge / tiny numbers, NaN, lists, dicts, None,
    booleans, tuples of the wrong length."""

    scalar = [lambda: repr(rng.choice(["", "x", "1", "None", "validation", "bf16", "(("])),
              lambda: str(rng.randint(-10**6, 10**6)), lambda: str(-rng.randint(1, 9)),
              lambda: f"{rng.choice([-1, 1]) * 10.0 ** rng.randint(-320, 320):g}",
              lambda: repr(rng.uniform(-2, 2)), lambda: "float('nan')",
              lambda: "float('inf')", lambda: rng.choice(["None", "True", "False", "0"]),
              lambda: str(2 ** rng.randint(31, 70))]
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(scalar)()
    items = [rng.choice(scalar)() for _ in range(rng.randint(0, 3))]
    if kind == 1:
        return f"[{', '.join(items)}]"
    if kind == 2:
        return f"({', '.join(items)}{',' if len(items) == 1 else ''})"
    return "{" + ", ".join(f"{rng.choice(['inputs', 'targets', 'x'])!r}: {v}"
                           for v in items) + "}"


def test_fuzzed_gin_values_are_accepted_or_one_line_errors():
    import random

    import gin

    from xprompt_jax import gin_utils
    from xprompt_jax.errors import XPromptError, one_line
    from xprompt_jax.runs.build import check_feature_lengths
    from xprompt_jax.runs.config import configured_run
    from xprompt_jax.runs.flags import import_task_module
    from xprompt_jax.training import partitioning

    rng = random.Random(0)
    outcomes = {"accepted": 0, "refused": 0}
    files = ["models/world_tiny.gin", "prompt_tuning.gin", "world/run.gin"]
    try:
        for macro in FUZZED_MACROS:
            for _ in range(12):
                value = _bad_value(rng)
                gin.clear_config()
                try:
                    gin_utils.parse_gin(files, ["MODEL_DIR = '/nowhere'",
                                                f"{macro} = {value}"], finalize=False)
                    run = configured_run()
                    import_task_module(run.task_module, run.task_name)
                    check_feature_lengths(run.feature_lengths)
                    mesh = run.frozen.mesh()
                    partitioning.check_batch_size(run.data.batch_size, mesh)
                    outcomes["accepted"] += 1
                except XPromptError as e:
                    line = one_line(e)
                    assert line and "\n" not in line, (macro, value, line)
                    outcomes["refused"] += 1
                except Exception as e:  # pylint: disable=broad-except
                    raise AssertionError(f"{macro} = {value}: {type(e).__name__}: {e}") from e
    finally:
        gin.clear_config()
    assert outcomes["refused"] > outcomes["accepted"] > 0, outcomes


# TensorStore's error for a checkpoint write on a full disk (orbax raises it as a
# ValueError; copied from a run on a 600 KiB tmpfs, its JSON spec cut short).
TENSORSTORE_DISK_FULL = (
    'RESOURCE_EXHAUSTED: Error opening "zarr" driver: Error writing "train.opt_state.0.v_row.'
    'prompt.prompt/.zarray" in OCDBT database at local file "/runs/r/checkpoints/6.orbax-'
    'checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed writing: "/runs/r/'
    'checkpoints/6.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/d/c7083121'
    '2b09592037c34b1bfc25e4c7": Failed to write 194 bytes to file 15: No space left on device '
    '[tensorstore_spec=\'{"context":{"cache_pool":{}},"create":true,"driver":"zarr"}\']')


def test_a_full_disk_reported_by_tensorstore_is_one_line_naming_the_file(capsys):
    code, lines = _one_line(capsys, _raises(ValueError(TENSORSTORE_DISK_FULL)))
    assert (code, lines) == (1, [
        "prog: error: cannot write /runs/r/checkpoints/6.orbax-checkpoint-tmp/state.orbax-"
        "checkpoint-tmp/ocdbt.process_0/d/c70831212b09592037c34b1bfc25e4c7: no space left on "
        "device (disk full) [errno 28]; what was written before is kept"])
    assert "RESOURCE_EXHAUSTED" in TENSORSTORE_DISK_FULL  # and still no out-of-memory line


@pytest.mark.slow  # ~30 s (a training subprocess); the mapping itself is tested above
def test_a_full_disk_while_training_is_one_line_and_keeps_the_checkpoints(tmp_path):
    """A real full disk: MODEL_DIR on a 600 KiB tmpfs (root only; skipped where mounting is
    not allowed), a checkpoint every step until the disk is full."""
    import subprocess
    import sys

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)],
            capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        root = pathlib.Path(__file__).resolve().parents[1]
        cmd = [sys.executable, "-m", "xprompt_jax.train"] + _world("prompt_tuning.gin") + [
            f"--gin.MODEL_DIR='{disk / 'run'}'", "--gin.TRAIN_STEPS=60",
            "--gin.EVAL_PERIOD=None", "--gin.BATCH_SIZE=8", "--gin.SAVE_PERIOD=1",
            "--gin.KEEP_CHECKPOINTS=None"]
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, JAX_PLATFORMS="cpu",
                                      XLA_FLAGS="--xla_force_host_platform_device_count=1"))
        ours = [line for line in out.stderr.splitlines() if line.startswith("xprompt_jax")]
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
        assert len(ours) == 1 and ours[0].startswith(
            f"xprompt_jax.train: error: cannot write {disk / 'run'}/"), ours
        assert "no space left on device (disk full) [errno 28]" in ours[0]
        saved = [p.name for p in (disk / "run" / "checkpoints").iterdir() if p.name.isdigit()]
        assert saved  # the checkpoints written before the disk filled are kept
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_read_only_home_names_the_folder_and_its_variable_in_the_quickstart(tmp_path):
    """HOME on a read-only tmpfs (root only; skipped where mounting is not allowed): the
    quickstart's run folder, then (with XPROMPT_RUNS_DIR set) the world data cache."""
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(home)],
            capture_output=True).returncode:
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        root = pathlib.Path(__file__).resolve().parents[1]
        env = {k: v for k, v in os.environ.items()
               if k not in ("XPROMPT_RUNS_DIR", "XPROMPT_WORLD_DIR", "XDG_CACHE_HOME")}
        env.update(HOME=str(home), JAX_PLATFORMS="cpu")
        for extra, folder, variable in (
                ({}, home / "xprompt_runs", "XPROMPT_RUNS_DIR"),
                ({"XPROMPT_RUNS_DIR": str(tmp_path / "runs")}, home / ".cache",
                 "XPROMPT_WORLD_DIR")):
            out = subprocess.run([sys.executable, "-m", "xprompt_jax.quickstart"], cwd=root,
                                 capture_output=True, text=True, timeout=300,
                                 env=dict(env, **extra))
            ours = [line for line in out.stderr.splitlines()
                    if line.startswith("xprompt_jax")]
            assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
            assert ours == [f"xprompt_jax.quickstart: error: {folder}: read-only file system "
                            f"[errno 30]; {folder} is a default location under HOME: set "
                            f"{variable} to a writable folder"], ours
    finally:
        subprocess.run(["umount", str(home)], check=False)


def test_a_full_disk_inside_a_staged_export_names_the_export_folder(tmp_path, monkeypatch,
                                                                      capsys):
    """A file of an export (a set of files that appear together) written atomically on a
    full disk: one line for the whole export, nothing of it left, an earlier one whole."""
    out = tmp_path / "export"
    with fileio.staged_files(out, "export") as stage:
        fileio.write_text_atomic(os.path.join(stage, "prompt.txt"), "earlier")

    def fail(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def main(argv):
        del argv
        with fileio.staged_files(out, "export") as stage:
            fileio.write_text_atomic(os.path.join(stage, "prompt.txt"), "new")

    monkeypatch.setattr(fileio, "fsync", fail)
    code, lines = _one_line(capsys, main)
    assert (code, lines) == (1, [f"prog: error: {out}: writing the export failed ([Errno 28] "
                                 "No space left on device); nothing of it was kept, an "
                                 "earlier export there is unchanged"])
    assert sorted(p.name for p in out.iterdir()) == ["prompt.txt"]
    assert (out / "prompt.txt").read_text() == "earlier"
