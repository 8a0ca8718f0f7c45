"""The docs' T5X page (docs/t5x.md, "Running under `t5x/train.py` (T5X users)"), run as
written: every `python -m t5x.train / t5x.eval / t5x.infer / xprompt_jax.prune /
xprompt_jax.export` command of it, extracted from the page (the test fails when one cannot be
found), run through bash with only these substitutions, none of them a gin binding of the
method:

- paths: `$XP` is this repository, `$RUN`, `$RUN1`, ... temporary directories, the offline
  recipe's `XPROMPT_T5_VOCAB` / `XPROMPT_SUPERGLUE_DIR` (the fixture vocabulary and
  invented SuperGLUE files);
- the task: `xprompt_super_glue_rte` -> `xprompt_super_glue_rte_local`;
- the checkpoint: `models/t5_1_x_<size>.gin` -> `models/t5_1_1_tiny.gin` plus
  `--gin.INITIAL_CHECKPOINT_PATH` = the tiny T5X fixture (step 3) for `t5x.train`, and
  for `xprompt_jax.prune` the one setting that follows from the size: NUM_PIECES 4 (the
  paper's k = 16 pieces must divide emb_dim, which is 8 for the fixture);
- step counts: `1030000` (TRAIN_STEPS and the `checkpoint_1030000` it names) -> a few
  steps past the fixture's step 3.

MIXTURE_OR_TASK_MODULE is never overridden: our gin files must import our tasks
themselves. Needs t5x (CI's Python 3.12 environment); without it the runs skip.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from test_t5x_integration import (ORBAX_FIXTURE, SPM, _assert_only_prompt_changed, _numpy,
                                  needs_t5x)

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "t5x.md"
TITLE = "# Running under `t5x/train.py` (T5X users)"
COMMAND = re.compile(r"python -m (t5x\.(?:train|eval|infer)|xprompt_jax\.(?:prune|export))\b")
TASK = "'xprompt_super_glue_rte'"
LOCAL_TASK = "'xprompt_super_glue_rte_local'"


def page_commands():
    """[(tool, command)] of the docs' T5X page, continuation lines joined."""
    text = PAGE.read_text(encoding="utf-8")
    assert text.splitlines()[0] == TITLE, f"{PAGE} does not start with {TITLE!r}"
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            match = COMMAND.match(line)
            if match:
                commands.append((match.group(1), re.sub(r"\s+", " ", line)))
    return commands


def find(tool, *needles, exclude=("t5_1_1_tiny",)):
    """The one command of `tool` on the T5X page containing every needle."""
    found = [c for t, c in page_commands() if t == tool and all(n in c for n in needles)
             and not any(x in c for x in exclude)]
    assert len(found) == 1, (f"expected one docs/t5x.md command `python -m {tool}` with "
                             f"{needles}, found {len(found)}: {found}")
    return found[0]


def localize(command, steps):
    command = re.sub(r"models/t5_1_[01]_\w+\.gin", "models/t5_1_1_tiny.gin", command)
    assert TASK in command, command
    command = command.replace(TASK, LOCAL_TASK).replace("1030000", str(steps))
    if command.startswith("python -m t5x.train"):
        command += f" --gin.INITIAL_CHECKPOINT_PATH=\"'{ORBAX_FIXTURE}'\""
    if command.startswith("python -m xprompt_jax.prune"):
        command += " --gin.NUM_PIECES=4"  # part of the size: k must divide emb_dim (8 here)
    return command.replace("python -m", f"{sys.executable} -m", 1)


def operative_value(config_gin, binding):
    """The value of `binding` in a T5X operative config (`MODEL_DIR/config.gin`), a macro
    (`%NAME`) resolved to its `NAME = value` line."""
    import ast

    lines = pathlib.Path(config_gin).read_text().splitlines()

    def value_of(name):
        found = [line.split("=", 1)[1].strip() for line in lines
                 if line.split("=", 1)[0].strip() == name]
        assert len(found) == 1, f"{config_gin}: {len(found)} bindings of {name}"
        return found[0]

    value = value_of(binding)
    if value.startswith("%"):
        value = value_of(value[1:])
    return ast.literal_eval(value)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests"))
    from tasks_testdata.superglue import write_superglue

    root = tmp_path_factory.mktemp("t5x_readme")
    data = write_superglue(root / "superglue")
    out = {k: v for k, v in os.environ.items() if not k.startswith("XPROMPT_")}
    out.update(XP=str(ROOT), XPROMPT_T5_VOCAB=str(SPM), XPROMPT_SUPERGLUE_DIR=str(data),
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    for name in ("RUN", "RUN_EPT", "RUN_EPT_ADAMW", "RUN1", "PRUNE", "RUN3"):
        out[name] = str(root / name.lower())
    return out


def run(command, env, **extra):
    out = subprocess.run(["bash", "-c", command], env={**env, **extra}, cwd=env["XP"],
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"{command}\n{out.stderr[-4000:]}"
    return out


def test_the_t5x_page_has_every_command():
    """Found without t5x: the commands the runs below execute."""
    find("t5x.train", "--gin_file=prompt_tuning.gin", "'$RUN'")
    find("t5x.eval", "--gin_file=eval.gin", "methods/prompt_tuning.gin")
    find("t5x.infer", "--gin_file=infer.gin", "methods/prompt_tuning.gin")
    find("t5x.train", "--gin_file=ept.gin", "'$RUN_EPT'")
    find("t5x.train", "--gin_file=optimizers/adamw_t5x.gin", "'$RUN_EPT_ADAMW'")
    find("xprompt_jax.export", "'$RUN_EPT'")
    find("t5x.train", "--gin_file=xprompt_stage1.gin", "'$RUN1'")
    find("xprompt_jax.prune", "$RUN1")
    find("t5x.train", "--gin_file=xprompt_rewind.gin", "'$RUN3'")
    assert not [c for _, c in page_commands() if "MIXTURE_OR_TASK_MODULE" in c]


@needs_t5x
@pytest.mark.slow
def test_prompt_tuning_resumes_then_t5x_eval_and_infer_match_our_evaluation(env):
    model_dir = pathlib.Path(env["RUN"])
    train = find("t5x.train", "--gin_file=prompt_tuning.gin", "'$RUN'")
    run(localize(train, 5), env)
    _assert_only_prompt_changed(model_dir / "checkpoint_5", ORBAX_FIXTURE)
    first = _numpy(model_dir, 5)

    # The same command with more steps on the same MODEL_DIR: a resume, not a new run.
    out = run(localize(train, 7), env)
    assert re.search(r"Restoring checkpoint from \S*checkpoint_5", out.stderr), \
        out.stderr[-3000:]
    got, ckpt = _assert_only_prompt_changed(model_dir / "checkpoint_7", ORBAX_FIXTURE)
    assert ckpt.step == 7
    np.testing.assert_array_equal(_numpy(model_dir, 5), first)  # step 5 not redone
    np.testing.assert_array_equal(_numpy(model_dir, 7), got["prompt/prompt"])
    assert not np.allclose(first, got["prompt/prompt"])  # trained on from step 5

    run(localize(find("t5x.eval", "--gin_file=eval.gin", "methods/prompt_tuning.gin"), 7), env)
    run(localize(find("t5x.infer", "--gin_file=infer.gin", "methods/prompt_tuning.gin"), 7), env)
    [metrics_file] = (model_dir / "eval" / "inference_eval").glob("*-metrics.jsonl")
    t5x_metrics = json.loads(metrics_file.read_text().splitlines()[-1])
    [predict_file] = (model_dir / "infer").glob("*-predict.jsonl-00000-of-00001")
    t5x_predictions = [json.loads(line)["prediction"]
                       for line in predict_file.read_text().splitlines()]

    # Our own generation evaluation of the same checkpoint, in a subprocess with the
    # environment of the runs (the offline vocabulary and data).
    script = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(ROOT / 'tests')!r})
from training_utils import tiny_prompted_model
from xprompt_jax.checkpoints import load_t5x_checkpoint
from xprompt_jax.prompts.soft_prompt import SoftPrompt
from xprompt_jax.evaluation import EvalConfig, Evaluator
import xprompt_jax.tasks  # noqa: F401
ckpt = load_t5x_checkpoint({str(model_dir / 'checkpoint_7')!r})
model = tiny_prompted_model().clone(prompt=SoftPrompt(length=100))
evaluator = Evaluator(model, 'xprompt_super_glue_rte_local', {{'inputs': 512, 'targets': 16}},
                      EvalConfig(mode='generation', batch_size=32))
variables = {{'params': ckpt.params}}
print(json.dumps({{'predictions': evaluator.predict(variables).texts[0],
                  'result': evaluator.evaluate(variables)['metrics']}}, default=float))
"""
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-4000:]
    ours = json.loads(out.stdout.strip().splitlines()[-1])
    assert ours["predictions"] == t5x_predictions
    assert ours["result"]["accuracy"] == pytest.approx(t5x_metrics["accuracy"], abs=1e-9)


@needs_t5x
@pytest.mark.slow
def test_xprompt_three_stages_as_written(env):
    stage1, prune, rewind = (pathlib.Path(env[k]) for k in ("RUN1", "PRUNE", "RUN3"))
    run(localize(find("t5x.train", "--gin_file=xprompt_stage1.gin", "'$RUN1'"), 5), env)
    _assert_only_prompt_changed(stage1 / "checkpoint_5", ORBAX_FIXTURE)
    run(localize(find("xprompt_jax.prune", "$RUN1"), 5), env, BEST="3")  # prune step 3
    with np.load(prune / "masks.npz") as masks:
        token_mask, piece_mask = masks["token_mask"], masks["piece_mask"]
    from xprompt_jax.xprompt import pruning

    values = pruning.value_mask(token_mask, piece_mask, 8)
    assert 0 < values.sum() < values.size  # something pruned, something kept
    rewound = np.load(prune / "rewound_prompt.npy")
    np.testing.assert_array_equal(rewound, _numpy(stage1, 3) * values)

    run(localize(find("t5x.train", "--gin_file=xprompt_rewind.gin", "'$RUN3'"), 5), env)
    got, _ = _assert_only_prompt_changed(rewind / "checkpoint_5", ORBAX_FIXTURE)
    np.testing.assert_array_equal(_numpy(rewind, 3), rewound)  # starts at the rewound prompt
    final = got["prompt/prompt"]
    assert np.all(final[values == 0] == 0.0)  # pruned entries never move
    assert not np.allclose(final[values == 1], rewound[values == 1])  # survivors trained
    # The rewind treats pruned tokens as the search did (the prune CLI's report records the
    # mode its masks were chosen under: gin/xprompt.gin's 'zero', the paper's gamma * P).
    searched = json.loads((prune / "report.json").read_text())["protocol"]["token_prune_mode"]
    assert searched == "zero"
    assert operative_value(rewind / "config.gin",
                           "fixed_masks.FixedMaskPrompt.token_prune_mode") == searched


@needs_t5x
@pytest.mark.slow
def test_ept_with_adafactor_and_adamw_and_its_export(env):
    ept, adamw = pathlib.Path(env["RUN_EPT"]), pathlib.Path(env["RUN_EPT_ADAMW"])
    run(localize(find("t5x.train", "--gin_file=ept.gin", "'$RUN_EPT'"), 5), env)
    run(localize(find("t5x.train", "--gin_file=optimizers/adamw_t5x.gin", "'$RUN_EPT_ADAMW'"),
                 5), env)
    for model_dir in (ept, adamw):
        got, _ = _assert_only_prompt_changed(model_dir / "checkpoint_5", ORBAX_FIXTURE)
        assert sorted(k for k in got if k.startswith("prompt/")) == \
            ["prompt/down/kernel", "prompt/prompt", "prompt/up/kernel"]
        assert "OptaxWrapper" in (model_dir / "config.gin").read_text()
    assert "adamw" in (adamw / "config.gin").read_text()
    assert not np.array_equal(_numpy(ept, 5), _numpy(adamw, 5))  # two optimizers

    run(localize(find("xprompt_jax.export", "'$RUN_EPT'"), 5), env)
    exported = np.load(ept / "export" / "prompt.npy")
    p1, down, up = (_numpy(ept, 5, n) for n in ("prompt.prompt", "prompt.down.kernel",
                                               "prompt.up.kernel"))
    np.testing.assert_allclose(exported, np.broadcast_to(p1.reshape(1, -1) @ down @ up,
                                                         exported.shape), rtol=1e-5, atol=1e-6)
