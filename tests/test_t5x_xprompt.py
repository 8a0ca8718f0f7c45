"""XPrompt as one `t5x/train.py` run (gin/t5x/xprompt.gin) under real t5x: the command of
docs/t5x.md ("XPrompt in one command") on the tiny fixture model and the synthetic task:

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
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

from test_t5x_integration import (ORBAX_FIXTURE, ROOT, SPM, _assert_only_prompt_changed,
                                  _checkpoint_steps, _env, needs_t5x)
from test_t5x_readme import find

FIRST, STAGE1_END, LAST = 3, 7, 11   # the fixture is at step 3
M, K, E = 4, 4, 8                    # prompt tokens, pieces, tiny emb_dim
SETTINGS = ["MIXTURE_OR_TASK_NAME = 'xprompt_test_synthetic'",
            "MIXTURE_OR_TASK_MODULE = 'synthetic_tasks'",
            "TASK_FEATURE_LENGTHS = {'inputs': 16, 'targets': 4}", "BATCH_SIZE = 8",
            "EVAL_MODE = 'generation'", "MAX_EVAL_EXAMPLES = 16", f"NUM_PIECES = {K}",
            "TOKEN_RATIOS = (0.25, 0.5)", "PIECE_RATIOS = (0.25, 0.5)",
            "NUM_SCORE_EXAMPLES = 8", "DROPOUT_RATE = 0.0"]
# What the docs' command gets on the tiny fixture (as tests/test_t5x_readme.py localizes
# its commands): the tiny size and its checkpoint, the synthetic task, small data and
# periods, a 4-token prompt (NUM_PIECES 4 must divide emb_dim 8), few ratios and examples.
T5X_EXTRA = [f"--gin.INITIAL_CHECKPOINT_PATH='{ORBAX_FIXTURE}'",
             "--gin.MIXTURE_OR_TASK_NAME='xprompt_test_synthetic'",
             "--gin.MIXTURE_OR_TASK_MODULE='synthetic_tasks'",
             f"--gin.SENTENCEPIECE_MODEL='{SPM}'",
             "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", "--gin.BATCH_SIZE=8",
             "--gin.EVAL_PERIOD=2", "--gin.SAVE_PERIOD=2", "--gin.KEEP_CHECKPOINTS=2",
             "--gin.DROPOUT_RATE=0.0", "--gin.train.train_eval_dataset_cfg=None",
             "--gin.train.infer_eval_dataset_cfg=None",
             f"--gin.PROMPT_LENGTH={M}", f"--gin.STAGE1_STEPS={STAGE1_END}",
             "--gin.EVAL_MODE='generation'", "--gin.MAX_EVAL_EXAMPLES=16",
             f"--gin.NUM_PIECES={K}", "--gin.TOKEN_RATIOS=(0.25, 0.5)",
             "--gin.PIECE_RATIOS=(0.25, 0.5)", "--gin.NUM_SCORE_EXAMPLES=8"]


def _cmd(model_dir):
    """The docs' one command (docs/t5x.md, "XPrompt in one command"), for bash with $XP and
    $RUN_XP set, on the tiny fixture (T5X_EXTRA)."""
    command = find("t5x.train", "--gin_file=xprompt.gin", "'$RUN_XP'")
    command = re.sub(r"models/t5_1_[01]_\w+\.gin", "models/t5_1_1_tiny.gin", command)
    assert "--gin.TRAIN_STEPS=1060000" in command, command
    command = command.replace("--gin.TRAIN_STEPS=1060000", f"--gin.TRAIN_STEPS={LAST}")
    command = command.replace("python -m", f"{shlex.quote(sys.executable)} -m", 1)
    return ["bash", "-c", " ".join([command] + [shlex.quote(f) for f in T5X_EXTRA])]


def _env_vocab(model_dir=None):
    env = _env()
    env.update(XPROMPT_T5_VOCAB=str(SPM), XP=str(ROOT))
    if model_dir is not None:
        env["RUN_XP"] = str(model_dir)
    return env


def _run(model_dir):
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(_cmd(model_dir), env=_env_vocab(model_dir), cwd=model_dir.parent,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-5000:]
    return out.stderr


def _run_until(model_dir, line_part):
    """Runs the command, sends SIGTERM once a log line contains `line_part`; returns
    (exit code, log)."""
    proc = subprocess.Popen(_cmd(model_dir), env=_env_vocab(model_dir), cwd=model_dir.parent,
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


def test_stage1_ends_at_stage1_steps_or_half_way():
    from xprompt_jax.errors import ConfigError
    from xprompt_jax.xprompt.t5x_trainer import stage1_end

    assert stage1_end(1000000, 1060000, None) == 1030000  # as long as the retraining
    assert stage1_end(3, 11, 7) == 7
    for bad in (3, 11, 12):
        with pytest.raises(ConfigError, match="STAGE1_STEPS"):
            stage1_end(3, 11, bad)


def test_staged_prompt_scores_as_the_masked_prompt_of_our_pipeline():
    """No t5x needed: StagedMaskPrompt (masks stored as params) gives the importance
    scores and the masked outputs of our pipeline's MaskedSoftPrompt (masks as variables)
    for the same prompt: stored masks apply, masks passed for scoring replace them, and no
    gradient reaches the stored masks."""
    import jax
    import jax.numpy as jnp

    from training_utils import tiny_prompted_model
    from xprompt_jax.xprompt import MaskedSoftPrompt
    from xprompt_jax.xprompt.masked_prompt import MASKS
    from xprompt_jax.xprompt.scoring import make_mask_gradient_fn
    from xprompt_jax.xprompt.staged_prompt import StagedMaskPrompt

    staged = tiny_prompted_model().clone(prompt=StagedMaskPrompt(length=3, num_pieces=4))
    ours = tiny_prompted_model().clone(prompt=MaskedSoftPrompt(length=3, num_pieces=4,
                                                               token_prune_mode="zero"))
    rng = np.random.RandomState(0)
    enc = jnp.asarray(rng.randint(2, 60, (4, 6)), jnp.int32)
    tgt = jnp.asarray(rng.randint(2, 60, (4, 3)), jnp.int32)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": tgt,
             "decoder_target_tokens": tgt}
    variables = staged.init(jax.random.PRNGKey(0), enc, tgt, tgt, enable_dropout=False)
    params = jax.tree_util.tree_map(np.asarray, variables["params"])
    prompt = params["prompt"]
    assert sorted(prompt) == ["best_metric", "best_step", "first_step", "piece_mask",
                              "prompt", "stage", "stage1_best", "token_mask"]
    gamma = np.array([1, 0, 1], np.float32)
    zeta = np.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1]], np.float32)
    frozen = {k: v for k, v in params.items() if k != "prompt"}
    plain = {**frozen, "prompt": {"prompt": prompt["prompt"]}}
    stored = {**params, "prompt": {**prompt, "token_mask": gamma, "piece_mask": zeta}}
    np.testing.assert_allclose(
        staged.apply({"params": stored}, enc, tgt, tgt, enable_dropout=False),
        ours.apply({"params": plain, MASKS: {"prompt": {"token_mask": gamma,
                                                        "piece_mask": zeta}}},
                   enc, tgt, tgt, enable_dropout=False), rtol=1e-6, atol=1e-6)
    trainable = {"prompt": {"prompt": prompt["prompt"]}}
    staged_frozen = {"params": {**frozen, "prompt": {k: v for k, v in stored["prompt"].items()
                                                     if k != "prompt"}}}
    got = make_mask_gradient_fn(staged)(trainable, staged_frozen, gamma, zeta, batch)
    want = make_mask_gradient_fn(ours)(trainable, {"params": frozen}, gamma, zeta, batch)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    grads = jax.grad(lambda p: staged.apply({"params": p}, enc, tgt, tgt,
                                            enable_dropout=False).sum())(stored)
    assert not np.any(np.asarray(grads["prompt"]["token_mask"]))
    assert not np.any(np.asarray(grads["prompt"]["piece_mask"]))
    assert np.any(np.asarray(grads["prompt"]["prompt"]))


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
def test_t5x_eval_reads_the_masks_from_the_checkpoint(uninterrupted, tmp_path):
    """`t5x/eval.py` with eval.gin + methods/xprompt.gin on the final checkpoint (no masks
    file given): the model restores the masks with the prompt (T5X's restore is strict)
    and its dev accuracy is our evaluator's on the same params (masks applied)."""
    model_dir, _ = uninterrupted
    ckpt = model_dir / f"checkpoint_{LAST}"
    cmd = [sys.executable, "-m", "t5x.eval", f"--gin_search_paths={ROOT / 'gin' / 't5x'},"
           f"{ROOT / 'gin'}", "--gin_file=eval.gin", "--gin_file=methods/xprompt.gin",
           "--gin_file=models/t5_1_1_tiny.gin", f"--gin.CHECKPOINT_PATH='{ckpt}'",
           f"--gin.EVAL_OUTPUT_DIR='{tmp_path / 'eval'}'",
           "--gin.MIXTURE_OR_TASK_NAME='xprompt_test_synthetic'",
           "--gin.MIXTURE_OR_TASK_MODULE='synthetic_tasks'", f"--gin.SENTENCEPIECE_MODEL='{SPM}'",
           "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
           f"--gin.PROMPT_LENGTH={M}", f"--gin.NUM_PIECES={K}"]
    out = subprocess.run(cmd, env=_env_vocab(), cwd=tmp_path, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    [metrics_file] = (tmp_path / "eval" / "inference_eval").glob("*-metrics.jsonl")
    t5x_accuracy = json.loads(metrics_file.read_text().splitlines()[-1])["accuracy"]

    import synthetic_tasks  # noqa: F401  (registers the task)
    from training_utils import tiny_prompted_model
    from xprompt_jax.checkpoints import load_t5x_checkpoint
    from xprompt_jax.evaluation import EvalConfig, Evaluator
    from xprompt_jax.xprompt.staged_prompt import StagedMaskPrompt

    params = load_t5x_checkpoint(ckpt).params
    model = tiny_prompted_model().clone(prompt=StagedMaskPrompt(length=M, num_pieces=K))
    evaluator = Evaluator(model, "xprompt_test_synthetic", {"inputs": 16, "targets": 4},
                          EvalConfig(mode="generation", batch_size=8))
    ours = evaluator.evaluate({"params": params})["metrics"]["accuracy"]
    assert ours == pytest.approx(t5x_accuracy, abs=1e-9)


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
def test_a_stage1_end_past_train_steps_is_one_line(tmp_path):
    """Refused by the trainer before T5X compiles anything: one line naming STAGE1_STEPS,
    exit code 2, no traceback."""
    model_dir = tmp_path / "run"
    cmd = _cmd(model_dir)
    cmd[2] += " --gin.STAGE1_STEPS=20"
    out = subprocess.run(cmd, env=_env_vocab(model_dir), cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("xprompt_jax: error")]
    assert len(errors) == 1 and "STAGE1_STEPS=20" in errors[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr


@needs_t5x
@pytest.mark.slow
def test_sigterm_in_every_stage_then_rerun_ends_as_the_uninterrupted_run(uninterrupted,
                                                                         tmp_path):
    model_dir = tmp_path / "run"
    # stage 1: stopped at the end of a stats period, saved, exit 0
    rc, log = _run_until(model_dir, "Training: step")
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


@needs_t5x
@pytest.mark.slow
def test_one_command_on_the_world_model(tmp_path):
    """The docs' command with models/world_tiny.gin and a world task (no vocabulary or
    checkpoint flag: the world ships both): masks searched, written, in the checkpoint and
    applied. Small data and steps; NUM_PIECES stays the paper's 16 (emb_dim 128)."""
    from xprompt_jax.world import paths
    from xprompt_jax.xprompt import pruning

    step = int(paths.checkpoint_path().rstrip("/").split("_")[-1])
    model_dir = tmp_path / "world_xp"
    command = find("t5x.train", "--gin_file=xprompt.gin", "'$RUN_XP'")
    command = re.sub(r"models/t5_1_[01]_\w+\.gin", "models/world_tiny.gin", command)
    command = command.replace("'xprompt_super_glue_rte'", "'world_rte'")
    command = command.replace("--gin.TRAIN_STEPS=1060000", f"--gin.TRAIN_STEPS={step + 4}")
    command = command.replace("python -m", f"{shlex.quote(sys.executable)} -m", 1)
    extra = ["--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 4}", "--gin.BATCH_SIZE=4",
             "--gin.EVAL_PERIOD=2", "--gin.SAVE_PERIOD=2", "--gin.PROMPT_LENGTH=4",
             "--gin.MAX_EVAL_EXAMPLES=8", "--gin.NUM_SCORE_EXAMPLES=4",
             "--gin.TOKEN_RATIOS=(0.5,)", "--gin.PIECE_RATIOS=(0.5,)",
             "--gin.train.train_eval_dataset_cfg=None",
             "--gin.train.infer_eval_dataset_cfg=None"]
    env = _env()
    env.pop("XPROMPT_T5_VOCAB", None)
    env.update(XP=str(ROOT), RUN_XP=str(model_dir), XPROMPT_WORLD_DIR=str(tmp_path / "world"))
    out = subprocess.run(["bash", "-c", " ".join([command] + [shlex.quote(f) for f in extra])],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-5000:]
    assert "XPrompt stage 3: rewind" in out.stderr, out.stderr[-4000:]
    got, _ = _assert_only_prompt_changed(model_dir / f"checkpoint_{step + 4}",
                                         paths.checkpoint_path())
    with np.load(model_dir / "xprompt" / "masks.npz") as masks:
        token_mask, piece_mask = masks["token_mask"], masks["piece_mask"]
    np.testing.assert_array_equal(got["prompt/token_mask"], token_mask)
    np.testing.assert_array_equal(got["prompt/piece_mask"], piece_mask)
    values = pruning.value_mask(token_mask, piece_mask, 128)
    assert 0 < values.sum() < values.size
    assert np.all(got["prompt/prompt"][values == 0] == 0.0)
