"""XPrompt as one `t5x/train.py` run (gin/t5x/xprompt.gin) under real t5x, on the tiny
fixture model and the synthetic task:

- the one command runs stage 1, the stage boundary (scores, search, rewind) and the
  retraining: the masks are in the checkpoint and applied (pruned prompt entries are zero),
  the survivors moved from their rewound values, MODEL_DIR/xprompt/ holds what the prune
  CLI writes;
- the independent reference: `python -m xprompt_jax.prune` (our own scoring and search,
  our own gin files) on the same stage-1 prompt, frozen model, dev set and scoring
  examples chooses the same masks;
- preemption: SIGTERM once in stage 1, once at the stage boundary and once in the
  retraining of one run directory, each followed by a rerun of the same command: every
  signalled run exits 0, and the final masks and prompt equal the uninterrupted run's.

Needs t5x (CI's Python 3.12 environment); without it the runs skip.
"""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from test_t5x_integration import (ORBAX_FIXTURE, ROOT, SPM, _assert_only_prompt_changed,
                                  _checkpoint_steps, _env, needs_t5x, t5x_train_cmd)

FIRST, STAGE1_END, LAST = 3, 7, 11   # the fixture is at step 3
M, K, E = 4, 4, 8                    # prompt tokens, pieces, tiny emb_dim
SETTINGS = ["MIXTURE_OR_TASK_NAME = 'xprompt_test_synthetic'",
            "MIXTURE_OR_TASK_MODULE = 'synthetic_tasks'",
            "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 4}", "BATCH_SIZE = 8",
            "EVAL_MODE = 'generation'", "MAX_EVAL_EXAMPLES = 16", f"NUM_PIECES = {K}",
            "TOKEN_RATIOS = (0.25, 0.5)", "PIECE_RATIOS = (0.25, 0.5)",
            "NUM_SCORE_EXAMPLES = 8", "DROPOUT_RATE = 0.0"]
# gin bindings the T5X command gets beyond t5x_train_cmd's (task, batch, lengths, periods)
T5X_EXTRA = [f"--gin.PROMPT_LENGTH={M}", f"--gin.STAGE1_STEPS={STAGE1_END}",
             "--gin.EVAL_MODE='generation'", "--gin.MAX_EVAL_EXAMPLES=16",
             f"--gin.NUM_PIECES={K}", "--gin.TOKEN_RATIOS=(0.25, 0.5)",
             "--gin.PIECE_RATIOS=(0.25, 0.5)", "--gin.NUM_SCORE_EXAMPLES=8"]


def _cmd(model_dir):
    return t5x_train_cmd(model_dir, ["xprompt.gin"], steps=LAST, extra=T5X_EXTRA)


def _env_vocab():
    env = _env()
    env["XPROMPT_T5_VOCAB"] = str(SPM)
    return env


def _run(model_dir):
    out = subprocess.run(_cmd(model_dir), env=_env_vocab(), cwd=model_dir.parent,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-5000:]
    return out.stderr


def _run_until(model_dir, line_part):
    """Runs the command, sends SIGTERM once a log line contains `line_part`; returns
    (exit code, log)."""
    proc = subprocess.Popen(_cmd(model_dir), env=_env_vocab(), cwd=model_dir.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, sent = [], False
    try:
        for line in proc.stderr:
            lines.append(line)
            if not sent and line_part in line:
                proc.send_signal(signal.SIGTERM)
                sent = True
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines)
    assert sent, f"no log line with {line_part!r}:\n{log[-4000:]}"
    return rc, log


def _final(model_dir):
    got, _ = _assert_only_prompt_changed(model_dir / f"checkpoint_{LAST}", ORBAX_FIXTURE)
    return {k[len("prompt/"):]: v for k, v in got.items() if k.startswith("prompt/")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("xprompt_t5x") / "run"
    log = _run(model_dir)
    return model_dir, log


@needs_t5x
def test_one_command_runs_the_whole_method(uninterrupted):
    model_dir, log = uninterrupted
    assert "XPrompt stage 1: prompt tuning from step 3 to 7" in log, log[-4000:]
    assert "XPrompt stage 2: importance scores" in log
    assert "XPrompt stage 3: rewind" in log
    final = _final(model_dir)
    assert final["stage"] == 2
    out = model_dir / "xprompt"
    with np.load(out / "masks.npz") as masks:
        token_mask, piece_mask = masks["token_mask"], masks["piece_mask"]
    np.testing.assert_array_equal(final["token_mask"], token_mask)  # in the checkpoint
    np.testing.assert_array_equal(final["piece_mask"], piece_mask)
    from xprompt_jax.xprompt import pruning

    values = pruning.value_mask(token_mask, piece_mask, E)
    assert 0 < values.sum() < values.size  # something pruned, something kept
    stage1 = np.load(out / "stage1_prompt.npy")
    np.testing.assert_array_equal(final["stage1_best"], stage1)
    best_step = int(final["best_step"])
    assert FIRST < best_step <= STAGE1_END
    exported = model_dir / "numpy_checkpoints" / f"checkpoint_{best_step}" / "prompt.prompt.npy"
    np.testing.assert_array_equal(stage1, np.load(exported))  # the best step's prompt
    rewound = np.load(out / "rewound_prompt.npy")
    np.testing.assert_array_equal(rewound, stage1 * values)
    prompt = final["prompt"]
    assert np.all(prompt[values == 0] == 0.0)  # masks applied: pruned entries stay zero
    assert not np.allclose(prompt[values == 1], rewound[values == 1])  # survivors trained
    for name in ("scores.json", "search.json", "report.json", "report.md"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["stage1"]["best_step"] == best_step


@needs_t5x
def test_the_masks_equal_the_prune_cli_on_the_same_stage1_prompt(uninterrupted, tmp_path):
    """The independent reference: our own scoring and search (`python -m
    xprompt_jax.prune`, our gin files) on the stage-1 prompt the T5X run rewound to, the
    pretrained frozen model, the same dev set and the same scoring examples."""
    model_dir, _ = uninterrupted
    out_dir = tmp_path / "prune"
    cmd = [sys.executable, "-m", "xprompt_jax.prune", f"--t5x_checkpoint={ORBAX_FIXTURE}",
           f"--prompt_file={model_dir / 'xprompt' / 'stage1_prompt.npy'}",
           "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=xprompt.gin",
           f"--output_dir={out_dir}", "--gin_bindings=MASKING_CURVE = False"]
    cmd += [f"--gin_bindings={b}" for b in SETTINGS]
    out = subprocess.run(cmd, env=_env_vocab(), cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    ours = json.loads((model_dir / "xprompt" / "search.json").read_text())
    theirs = json.loads((out_dir / "search.json").read_text())
    assert ours["chosen"] == theirs["chosen"]
    for level in ("token_candidates", "piece_candidates"):
        assert [c["name"] for c in ours[level]] == [c["name"] for c in theirs[level]]
        assert [c["main_metric"] for c in ours[level]] == \
            [c["main_metric"] for c in theirs[level]]
    s_ours = json.loads((model_dir / "xprompt" / "scores.json").read_text())
    s_theirs = json.loads((out_dir / "scores.json").read_text())
    np.testing.assert_allclose(s_ours["token"], s_theirs["token"], rtol=1e-5)
    np.testing.assert_allclose(s_ours["piece"], s_theirs["piece"], rtol=1e-5)
    with np.load(model_dir / "xprompt" / "masks.npz") as a, np.load(out_dir / "masks.npz") as b:
        np.testing.assert_array_equal(a["token_mask"], b["token_mask"])
        np.testing.assert_array_equal(a["piece_mask"], b["piece_mask"])


@needs_t5x
@pytest.mark.slow
def test_sigterm_in_every_stage_then_rerun_ends_as_the_uninterrupted_run(uninterrupted,
                                                                         tmp_path):
    model_dir = tmp_path / "run"
    # stage 1: stopped at the end of a stats period, saved, exit 0
    rc, log = _run_until(model_dir, "Training: step 4")
    assert rc == 0 and "SIGTERM received" in log, log[-4000:]
    assert max(_checkpoint_steps(model_dir)) < STAGE1_END
    # the stage boundary: the scores are saved, the search is left to the rerun
    rc, log = _run_until(model_dir, "XPrompt stage 2: importance scores")
    assert rc == 0 and "stopping after the importance scores" in log, log[-4000:]
    assert (model_dir / "xprompt" / "scores.json").is_file()
    assert not (model_dir / "xprompt" / "search.json").exists()
    # retraining: the rerun reuses the scores, searches, rewinds; stopped while retraining
    rc, log = _run_until(model_dir, "XPrompt stage 3: rewind")
    assert rc == 0, log[-4000:]
    assert "importance scores reused" in log, log[-4000:]
    assert max(_checkpoint_steps(model_dir)) < LAST
    log = _run(model_dir)
    assert "XPrompt stage 2" not in log  # the masks came from the checkpoint
    want = _final(uninterrupted[0])
    got = _final(model_dir)
    for name in ("token_mask", "piece_mask", "stage1_best", "best_step", "stage"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_allclose(got["prompt"], want["prompt"], rtol=1e-6, atol=1e-7)
