"""Signals and interrupted writes in every CLI, on the embedded world: SIGHUP (a closed
terminal) saves and stops training like SIGTERM; a signal outside the training loop gives
one line naming the phase and what is kept (exit 128 + signal); a second signal ends a run
at once even while the main thread is inside a long XLA call. Real signals, real
handlers: subprocesses where the process must end, `os.kill` of the test process itself
where `run_cli` turns it into SystemExit. Also what a cut-off write leaves: staged exports,
a torn metrics.jsonl line, an older `.partial` kept; and `evaluate` of a PROMPT_FILE."""

import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from xprompt_jax import cli, interrupts

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORLD = ["--gin_file=models/world_tiny.gin", "--gin_file=prompt_tuning.gin",
         "--gin_file=world/run.gin"]


def _flags(model_dir, steps, *extra):
    return WORLD + [f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
                    "--gin.EVAL_PERIOD=None", "--gin.BATCH_SIZE=8", "--gin.LOG_PERIOD=1",
                    "--gin.MAX_EVAL_EXAMPLES=16", *extra]


@pytest.fixture(autouse=True)
def _sighup_as_in_a_terminal():
    """SIGHUP at its default, as a shell in a terminal starts programs: the suite may run
    under `nohup` (SIGHUP ignored, which the CLIs rightly leave alone)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


def _env():
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return env


def _run_cli(module, argv, capsys, prog):
    """(exit code or None, stderr lines) of a CLI run in process."""
    import gin
    from absl import flags

    flags.FLAGS.unparse_flags()
    gin.clear_config()
    log = logging.getLogger("xprompt_jax")
    saved = (list(log.handlers), log.level, log.propagate)
    code = None
    try:
        cli.run_cli(module.main, [prog] + list(argv), prog=prog)
    except SystemExit as e:
        code = e.code
    finally:
        gin.clear_config()
        flags.FLAGS.unparse_flags()
        log.handlers[:], log.level, log.propagate = saved
    return code, capsys.readouterr().err.strip().splitlines()


def _wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]


def _lines(path):
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow
def test_sighup_from_a_closed_terminal_saves_and_the_rerun_resumes(tmp_path, capsys):
    """Training in a terminal (a pseudo-terminal: the progress bar is drawn there); the
    terminal is closed (every later write to it fails) and SIGHUP sent, as on a hangup."""
    import select

    from xprompt_jax import train

    model_dir = tmp_path / "run"
    master, slave = os.openpty()
    # A terminal's shell starts programs with SIGHUP at its default; the suite itself may
    # run under nohup (SIGHUP ignored, inherited), where the CLI rightly leaves it alone.
    proc = subprocess.Popen([sys.executable, "-m", "xprompt_jax.train"]
                            + _flags(model_dir, 100000), cwd=ROOT, env=_env(),
                            stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    os.close(slave)
    try:
        shown = b""
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None \
                and _lines(model_dir / "metrics.jsonl") < 3:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    shown += os.read(master, 1 << 16)
                except OSError:
                    break
        assert proc.poll() is None, shown[-3000:]
        os.close(master)  # the terminal window is closed
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=120) == 0  # saved and stopped, as for SIGTERM
    finally:
        if proc.poll() is None:  # a failed check leaves no training process behind
            proc.kill()
            proc.wait()
    log = (model_dir / "train.log").read_text()
    stop = [line for line in log.splitlines() if "SIGHUP received: stopped after step" in line]
    assert len(stop) == 1 and stop[0].endswith("; checkpoint saved"), log[-2000:]
    step = int(stop[0].split("stopped after step ")[1].split(";")[0])
    assert step >= 3 and (model_dir / "checkpoints" / str(step)).is_dir()
    code, _ = _run_cli(train, _flags(model_dir, step + 1), capsys, "xprompt_jax.train")
    assert code is None
    assert f"resumed from step {step}" in (model_dir / "train.log").read_text()
    summary = json.loads((model_dir / "train_summary.json").read_text())
    assert summary["final_step"] == step + 1


# The second signal arrives while the main thread waits for a long XLA computation (as in a
# big model's evaluation or compile): Python runs no signal handler until it returns.
_BUSY_SCRIPT = """
import sys
import jax, jax.numpy as jnp
from xprompt_jax import cli, train
from xprompt_jax.training import trainer

@jax.jit
def busy(x):
    return jax.lax.fori_loop(0, 2_000_000_000, lambda i, v: v * 0.999 + 1.0, x)

save = trainer.Trainer._save
def slow_save(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    if step == 3:
        self.checkpointer.wait()
        print("BUSY", file=sys.stderr, flush=True)
        jax.block_until_ready(busy(jnp.float32(0)))
trainer.Trainer._save = slow_save
cli.run_cli(train.main, sys.argv, prog="xprompt_jax.train")
"""


@pytest.mark.slow
def test_two_quick_sigints_end_a_busy_run_at_once_keeping_the_last_checkpoint(tmp_path):
    from xprompt_jax.training.checkpointing import RunCheckpointer

    model_dir = tmp_path / "run"
    script = tmp_path / "busy_train.py"
    script.write_text(_BUSY_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)]
                            + _flags(model_dir, 100000, "--gin.SAVE_PERIOD=3"), cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    err_lines = []
    for line in proc.stderr:  # the marker: step 3 is saved, the main thread is busy
        err_lines.append(line)
        if line.startswith("BUSY"):
            break
    assert proc.poll() is None, "".join(err_lines)[-3000:]
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    start = time.time()
    _, rest = proc.communicate(timeout=120)
    took = time.time() - start
    assert took < 5, f"took {took:.1f} s after the second SIGINT"  # the busy call: ~20 s
    assert proc.returncode == 130
    lines = rest.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "xprompt_jax.train: stopped at once by a second signal: SIGINT during training: "
        f"the checkpoints finished before are kept in {model_dir}/checkpoints"), rest
    with RunCheckpointer(str(model_dir), read_only=True) as checkpointer:
        assert checkpointer.latest_step() == 3
        assert checkpointer.restore_meta(3)["step"] == 3


def _kill_self(signum):
    os.kill(os.getpid(), signum)
    time.sleep(5)  # the handler raises here; this line's end is never reached


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step run of the world model (for the phases after training)."""
    from xprompt_jax import train

    model_dir = tmp_path_factory.mktemp("signals") / "run"

    class _Capsys:  # module scope: no capsys; stderr is not read here
        @staticmethod
        def readouterr():
            return type("R", (), {"err": ""})()

    code, _ = _run_cli(train, _flags(model_dir, 2), _Capsys, "xprompt_jax.train")
    assert code is None
    return model_dir


def test_signals_in_setup_evaluate_and_export_name_the_phase_and_what_is_kept(
        trained, tmp_path, capsys, monkeypatch):
    from xprompt_jax import evaluate, export, train
    from xprompt_jax.evaluation import evaluator
    from xprompt_jax.runs import build

    handlers = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    # setup of a training run (building the model): SIGTERM
    real_build = build.build_trainer
    monkeypatch.setattr("xprompt_jax.runs.train.build_trainer",
                        lambda *a, **k: (_kill_self(signal.SIGTERM), real_build(*a, **k)))
    fresh = tmp_path / "fresh"
    code, lines = _run_cli(train, _flags(fresh, 2), capsys, "xprompt_jax.train")
    assert code == 143
    assert lines[-1] == ("xprompt_jax.train: stopped: SIGTERM during setup (reading the "
                         "settings, loading the model and data): nothing was written by this "
                         "command; rerun it to start over (a training run resumes from its "
                         "latest checkpoint)")
    assert not (fresh / "checkpoints").exists()
    # evaluation: SIGHUP while the dev split is scored
    monkeypatch.setattr(evaluator.Evaluator, "evaluate",
                        lambda self, *a, **k: _kill_self(signal.SIGHUP))
    code, lines = _run_cli(evaluate, _flags(trained, 2, "--gin_file=runs/eval.gin"),
                           capsys, "xprompt_jax.evaluate")
    assert code == 129
    assert lines[-1] == (f"xprompt_jax.evaluate: stopped: SIGHUP during evaluation of "
                         f"{trained}: nothing was written (eval_results.json is written at "
                         "the end); rerun the same command to evaluate")
    assert not (trained / "eval_results.json").exists()
    # export: SIGINT (Ctrl-C) while the files are written; an earlier export stays whole
    out = tmp_path / "export"
    code, _ = _run_cli(export, _flags(trained, 2, f"--output_dir={out}"), capsys,
                       "xprompt_jax.export")
    assert code is None
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr("xprompt_jax.runs.export.plot_prompt_similarity",
                        lambda *a, **k: _kill_self(signal.SIGINT))
    code, lines = _run_cli(export, _flags(trained, 2, f"--output_dir={out}"), capsys,
                           "xprompt_jax.export")
    assert code == 130
    assert lines[-1] == (f"xprompt_jax.export: stopped: SIGINT during the export to {out}: "
                         "nothing of this export was written, an earlier export there is "
                         "unchanged; rerun the same command to export")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not any("Traceback" in line for line in lines)
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == handlers  # restored


def test_a_full_disk_midway_through_an_export_leaves_no_partial_export(
        trained, tmp_path, capsys, monkeypatch):
    import errno

    from xprompt_jax import export

    earlier = tmp_path / "earlier"
    code, _ = _run_cli(export, _flags(trained, 2, f"--output_dir={earlier}"), capsys,
                       "xprompt_jax.export")
    assert code is None and (earlier / "prompt.npy").stat().st_size > 0
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}

    def full_disk(path, text):  # prompt.npy is written, then the disk is full
        del text
        assert (pathlib.Path(path).parent / "prompt.npy").stat().st_size > 0
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("xprompt_jax.runs.export.write_text_atomic", full_disk)
    fresh = tmp_path / "fresh"
    for out in (fresh, earlier):
        code, lines = _run_cli(export, _flags(trained, 2, f"--output_dir={out}"), capsys,
                               "xprompt_jax.export")
        assert code == 1
        assert lines[-1] == (f"xprompt_jax.export: error: {out}: writing the export failed "
                             "([Errno 28] No space left on device); nothing of it was kept, "
                             "an earlier export there is unchanged"), lines[-1]
    assert list(fresh.iterdir()) == []  # no prompt.npy, no partial folder
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before


def test_a_torn_last_metrics_line_is_dropped_on_resume_and_readers_skip_it(
        tmp_path, capsys, caplog):
    from xprompt_jax import train
    from xprompt_jax.world import quickstart

    # a run of its own, resumed right after (no other test's CLI runs in between)
    run = tmp_path / "run"
    code, lines = _run_cli(train, _flags(run, 2), capsys, "xprompt_jax.train")
    assert code is None, "\n".join(lines)
    metrics = run / "metrics.jsonl"
    whole = metrics.read_bytes()
    assert whole.endswith(b"\n") and whole.count(b"\n") == 2  # steps 1 and 2
    torn = b'{"step": 3, "split": "train", "lo'  # a write cut off by a kill
    metrics.write_bytes(whole + torn)
    # readers (the quickstart report's) skip it with a warning instead of failing
    with caplog.at_level(logging.WARNING, logger="xprompt_jax"):
        records = quickstart.read_jsonl(str(metrics))
    assert [r["step"] for r in records] == [1, 2]
    assert f"{metrics}: skipped 1 line(s) that are no JSON record (line 3" in caplog.text
    assert quickstart.plot_training_curve(str(run), str(tmp_path / "curve.png"), {})
    # the resume drops it (one warning) and appends whole records after step 2
    code, lines = _run_cli(train, _flags(run, 3), capsys, "xprompt_jax.train")
    assert code is None, "\n".join(lines)
    warning = [line for line in lines if "dropped a torn" in line]
    assert len(warning) == 1 and warning[0].endswith(
        f"{metrics}: dropped a torn last line ({len(torn)} bytes, a write cut off: "
        f"{torn.decode()!r}); the 2 complete lines before it are kept"), lines
    data = metrics.read_bytes()
    assert data.startswith(whole) and torn not in data
    assert [json.loads(line)["step"] for line in data.splitlines()] == [1, 2, 3]


def test_evaluate_scores_the_prompt_file_it_is_given(trained, tmp_path, capsys):
    import numpy as np

    from xprompt_jax import evaluate

    def run_evaluate(*extra):
        code, lines = _run_cli(evaluate, _flags(trained, 2, "--gin_file=runs/eval.gin",
                                                *extra), capsys, "xprompt_jax.evaluate")
        assert code is None, lines[-5:]
        return json.loads((trained / "eval_results.json").read_text())

    checkpoint = run_evaluate("--gin.EVAL_CHECKPOINT='latest'")  # step 2
    # the trained prompt written by hand (numpy, from the run's numpy checkpoint of step 2)
    trained_prompt = np.load(trained / "numpy_checkpoints" / "checkpoint_2" /
                             "prompt.prompt.npy")
    np.save(tmp_path / "trained.npy", trained_prompt)
    np.save(tmp_path / "zeros.npy", np.zeros_like(trained_prompt))
    results = {}
    for name in ("trained", "zeros"):
        results[name] = run_evaluate("--gin_file=prompts/from_file.gin",
                                     f"--gin.PROMPT_FILE='{tmp_path / name}.npy'")
        assert results[name]["prompt_file"] == f"{tmp_path / name}.npy"
        assert results[name]["checkpoint_step"] is None
    def answers(result):
        return result["metrics"], result["predictions_sample"]

    assert answers(results["trained"]) == answers(checkpoint)
    assert answers(results["zeros"]) != answers(checkpoint), checkpoint  # the file is scored


def test_a_second_failed_write_keeps_the_older_partial_output(tmp_path):
    import errno

    from xprompt_jax.errors import PartialWriteError
    from xprompt_jax.fileio import write_lines_atomic

    out = tmp_path / "predictions.jsonl"

    def lines(prefix, n):  # n complete lines, then the disk is full
        for i in range(n):
            yield f"{prefix} {i}"
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for prefix, n, kept in (("first", 3, "predictions.jsonl.partial"),
                            ("second", 2, "predictions.jsonl.partial.1")):
        with pytest.raises(PartialWriteError) as info:
            write_lines_atomic(out, lines(prefix, n), keep_partial=True)
        assert f"after {n} lines" in str(info.value)
        assert f"those lines are kept in {tmp_path / kept}," in str(info.value)
    assert (tmp_path / "predictions.jsonl.partial").read_text() == "first 0\nfirst 1\nfirst 2\n"
    assert (tmp_path / "predictions.jsonl.partial.1").read_text() == "second 0\nsecond 1\n"
    assert not out.exists()


def test_sigterm_during_xprompt_importance_scoring_names_the_stage_and_keeps_stage_1(
        tmp_path, capsys, monkeypatch):
    from xprompt_jax.xprompt import __main__ as xprompt_cli
    from xprompt_jax.xprompt import scoring, stages

    monkeypatch.setattr(scoring.ImportanceScorer, "score",
                        lambda self, *a, **k: _kill_self(signal.SIGTERM))
    model_dir = tmp_path / "xp"
    argv = ["--gin_file=models/world_tiny.gin", "--gin_file=xprompt.gin",
            "--gin_file=world/run.gin", f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.TRAIN_STEPS=2", "--gin.EVAL_PERIOD=2", "--gin.BATCH_SIZE=8",
            "--gin.MAX_EVAL_EXAMPLES=16", "--gin.NUM_SCORE_EXAMPLES=8"]
    code, lines = _run_cli(xprompt_cli, argv, capsys, "xprompt_jax.xprompt")
    assert code == 143, lines[-3:]
    assert lines[-1] == (f"xprompt_jax.xprompt: stopped: SIGTERM during XPrompt stage 2 "
                         f"(importance scores): the finished stages are kept in {model_dir}; "
                         "rerun the same command to continue from this stage"), lines[-3:]
    assert stages.stage_done(str(model_dir), "stage1") is not None
    assert stages.stage_done(str(model_dir), "scores") is None


def test_sigterm_during_infer_keeps_the_answers_written_and_says_where(
        tmp_path, capsys, monkeypatch):
    import numpy as np

    from xprompt_jax import infer as infer_cli
    from xprompt_jax.runs import infer

    monkeypatch.setattr(infer, "CHUNK_LINES", 2)
    predict, calls = infer.Evaluator.predict, []

    def third_chunk_gets_sigterm(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            _kill_self(signal.SIGTERM)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(infer.Evaluator, "predict", third_chunk_gets_sigterm)
    prompt = tmp_path / "p.npy"
    np.save(prompt, np.random.RandomState(0).uniform(-0.5, 0.5, (4, 128)).astype(np.float32))
    request = {"task": "world_rte", "premise": "mia owns a lily .",
               "hypothesis": "mia has a flower ."}
    requests, out = tmp_path / "req.jsonl", tmp_path / "out.jsonl"
    requests.write_text("".join(json.dumps(dict(request, idx=i)) + "\n" for i in range(6)))
    argv = ["--gin_file=models/world_tiny.gin", "--gin_file=prompt_tuning.gin",
            "--gin_file=world/run.gin", "--gin_file=runs/infer.gin",
            f"--gin.INFER_PROMPTS={{'world_rte': '{prompt}'}}",
            f"--gin.INFER_INPUT='{requests}'", f"--gin.INFER_OUTPUT='{out}'"]
    code, lines = _run_cli(infer_cli, argv, capsys, "xprompt_jax.infer")
    assert code == 143
    assert lines[-1] == (f"xprompt_jax.infer: stopped: SIGTERM during answering {requests}: "
                         f"the answers written so far are kept in {out}.partial (the line "
                         f"above names it), an earlier {out} is unchanged; rerun the same "
                         "command to answer every line"), lines[-3:]
    assert f"they are kept in {out}.partial" in lines[-2]
    kept = [json.loads(line) for line in (tmp_path / "out.jsonl.partial").read_text()
            .splitlines()]
    assert [r["line"] for r in kept] == [1, 2, 3, 4] and not out.exists()
