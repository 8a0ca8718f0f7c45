"""A quiet terminal: our CLIs start without TensorFlow / absl / JAX platform lines unless
`XPROMPT_VERBOSE=1` / `--verbose`; progress bars count whole items with a unit."""

import os
import subprocess
import sys
import textwrap

import pytest

from xprompt_jax import terminal
from xprompt_jax.training.run_logging import bar_unit, progress_bar

NOISE = ("absl::InitializeLog", "cudart_stub", "Could not find cuda drivers", "cuInit",
         "Unable to initialize backend", "system_path_file_exists")


@pytest.mark.parametrize("orig_argv,argv0,expected", [
    (["python", "-m", "xprompt_jax.train", "--gin_file=x.gin"], "-m", True),
    (["python", "-m", "xprompt_jax.quickstart"], "-m", True),
    (["python", "-mxprompt_jax.export"], "-m", True),
    (["python", "-m", "pytest", "tests"], "-m", False),
    (["python", "-c", "import xprompt_jax"], "-c", False),
    (["/venv/bin/python", "/venv/bin/xprompt-train", "--gin_file=a"], "/venv/bin/xprompt-train",
     True),
    (["python", "my_script.py"], "my_script.py", False),
])
def test_running_cli(orig_argv, argv0, expected):
    assert terminal.running_cli(orig_argv, argv0) is expected


def test_verbose_requested(monkeypatch):
    monkeypatch.delenv(terminal.VERBOSE_ENV, raising=False)
    assert not terminal.verbose_requested(["prog", "--gin_file=a"])
    assert terminal.verbose_requested(["prog", "--gin_file=a", "--verbose"])
    monkeypatch.setenv(terminal.VERBOSE_ENV, "1")
    assert terminal.verbose_requested(["prog"])


_CLI_START = textwrap.dedent("""
    import logging, sys
    sys.orig_argv = [sys.executable, "-m", "xprompt_jax.train"]  # as `python -m` sets it
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # as our CLIs do
    import xprompt_jax  # the hook: quiet unless verbose
    import jax, tensorflow as tf, gin
    from xprompt_jax import gin_utils
    jax.devices()  # the platform search (TPU / GPU backends)
    tf.constant(1.0) + 1.0
    gin_utils.parse_gin(["prompts/uniform.gin"], finalize=False)
    print("READY", xprompt_jax.terminal.is_quiet())
""")


def _start(verbose: bool) -> str:
    env = dict(os.environ)
    for key in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES",
                terminal.VERBOSE_ENV, *terminal.QUIET_ENV):
        env.pop(key, None)
    if verbose:
        env[terminal.VERBOSE_ENV] = "1"
    proc = subprocess.run([sys.executable, "-c", _CLI_START], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"READY {not verbose}" in proc.stdout
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_cli_start_is_quiet_and_verbose_brings_noise_back():
    quiet = _start(verbose=False)
    assert not [n for n in NOISE if n in quiet], quiet
    loud = _start(verbose=True)
    # TensorFlow's pre-InitializeLog banner comes on any machine; the rest depend on it.
    assert "absl::InitializeLog" in loud, loud


def test_bar_counts_whole_items_with_a_unit():
    assert bar_unit("token pruning: candidates on dev") == "candidate"
    assert bar_unit("importance scores: examples") == "example"
    assert bar_unit("train") == "it"
    assert bar_unit("token pruning: rescoring survivors") == "round"
    # A batched candidate search: 10 candidates advance together over 37 examples in chunks
    # of 5 (search.py: update(count * len(chunk) / len(rows))).
    bar = progress_bar(10, "token pruning: candidates on dev", enabled=True)
    seen = []
    with bar:
        for start in range(0, 37, 5):
            bar.update(10 * len(range(start, min(start + 5, 37))) / 37)
            seen.append(bar.n)
    assert all(isinstance(n, int) for n in seen), seen
    assert seen == sorted(seen) and seen[-1] == 10
    assert bar.unit == "candidate"
    assert "candidate" in bar.format_meter(n=3, total=10, elapsed=2.0, unit=bar.unit)
