"""The T5X-style CLIs: gin files + --gin.X flags, a real short run, resume, evaluate, errors."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from xprompt_jax import gin_utils

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    return env


def _flags(model_dir, fixtures_dir, steps):
    return [
        "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=prompt_tuning.gin",
        f"--gin.MODEL_DIR='{model_dir}'",
        "--gin.MIXTURE_OR_TASK_NAME='xprompt_test_synthetic'",
        "--gin.MIXTURE_OR_TASK_MODULE='synthetic_tasks'",
        f"--gin.INITIAL_CHECKPOINT_PATH='{fixtures_dir / 't5x_tiny_orbax' / 'checkpoint_3'}'",
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
        "--gin.BATCH_SIZE=8", f"--gin.TRAIN_STEPS={steps}", "--gin.EVAL_PERIOD=2",
        "--gin.EVAL_MODE='generation'", "--gin.PROMPT_LENGTH=3", "--gin.LOG_PERIOD=1",
        "--gin_bindings=DROPOUT_RATE = 0.0",
    ]


@pytest.mark.slow
def test_train_then_resume_then_evaluate(tmp_path, fixtures_dir):
    model_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "xprompt_jax.train"] + _flags(model_dir, fixtures_dir, 2)
    subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, capture_output=True, timeout=600)
    assert (model_dir / "numpy_checkpoints" / "checkpoint_2" / "prompt.prompt.npy").exists()
    assert "PROMPT_LENGTH = 3" in (model_dir / "config.gin").read_text()
    # A rerun with more steps resumes from step 2 instead of starting over.
    cmd = [sys.executable, "-m", "xprompt_jax.train"] + _flags(model_dir, fixtures_dir, 4)
    subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, capture_output=True, timeout=600)
    records = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [1, 2, 3, 4]  # resumed at 3, not restarted from scratch
    summary = json.loads((model_dir / "train_summary.json").read_text())
    assert summary["final_step"] == 4
    eval_records = [r for r in records if r["split"] == "eval"]
    assert eval_records and all(r["mode"] == "generation" for r in eval_records)

    cmd = ([sys.executable, "-m", "xprompt_jax.evaluate"] + _flags(model_dir, fixtures_dir, 4)
           + ["--gin_file=runs/eval.gin", "--gin.EVAL_CHECKPOINT='latest'"])
    out = subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    result = json.loads((model_dir / "eval_results.json").read_text())
    assert result["checkpoint_step"] == 4 and result["mode"] == "generation"
    assert "accuracy" in result["metrics"] and '"main_metric"' in out.stdout


def test_rewrite_gin_args():
    assert gin_utils.rewrite_gin_args(["--gin.MODEL_DIR='/x'", "--gin_file=a.gin"]) == [
        "--gin_bindings=MODEL_DIR = '/x'", "--gin_file=a.gin"]


def test_gin_errors_name_the_file_and_binding(tmp_path):
    import gin

    bad = tmp_path / "bad.gin"
    bad.write_text("from __gin__ import dynamic_registration\n"
                   "from xprompt_jax.training import optimizers\n"
                   "optimizers.adafactor.no_such_argument = 3\n")
    gin.clear_config()
    with pytest.raises(gin_utils.GinConfigError, match=str(bad)):
        gin_utils.parse_gin([str(bad)], finalize=False)
    gin.clear_config()
    with pytest.raises(gin_utils.GinConfigError, match="not_a_file.gin"):
        gin_utils.parse_gin(["not_a_file.gin"], finalize=False)
    gin.clear_config()
    with pytest.raises(gin_utils.GinConfigError, match="BATCH_SIZE = = 3"):
        gin_utils.parse_gin([], ["BATCH_SIZE = = 3"], finalize=False)
    gin.clear_config()


def test_missing_required_macro_is_named(tmp_path):
    """Without --gin.MODEL_DIR the run fails naming MODEL_DIR."""
    cmd = [sys.executable, "-m", "xprompt_jax.train", "--gin_file=models/t5_1_1_tiny.gin",
           "--gin_file=prompt_tuning.gin", "--gin.MIXTURE_OR_TASK_NAME='x'"]
    out = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "MODEL_DIR" in out.stderr
