"""Export of reparameterized prompts: the projected prompt in a plain SoftPrompt model gives
the trained module's logits; inference gin, parameter counts, similarity heatmap, CLI."""

import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from training_utils import fixture_params, tiny_prompted_model
from xprompt_jax import gin_utils
from xprompt_jax.runs import export
from xprompt_jax.runs.restore import restore_trainable
from xprompt_jax.analysis import cosine_similarity, param_counts
from xprompt_jax.prompts import EPTPrompt, PTuningPrompt, ResPrompt
from xprompt_jax.training.checkpointing import RunCheckpointer
from xprompt_jax.training.params import split_params, unflatten
from xprompt_jax.training.train_step import TrainState
from xprompt_jax.training.trainer import run_payload

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMB = 8  # the tiny fixture model


@pytest.fixture(scope="module")
def pretrained(fixtures_dir):
    return fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"))


def _trained_variables(model, pretrained, seed=0):
    """The frozen fixture params plus the prompt module's params set to random values (as
    after training: LayerNorm scale/bias no longer 1/0)."""
    probe = jnp.zeros((1, 1, EMB))
    shapes = jax.eval_shape(lambda r: nn.Module.init(model.prompt, r, probe),
                            jax.random.PRNGKey(0))["params"]
    rng = np.random.RandomState(seed)
    prompt = jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.uniform(-0.5, 0.5, x.shape), jnp.float32), shapes)
    return {"params": {**pretrained, "prompt": prompt}}


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, 3000, (3, 9))
    enc[2, 4:] = 0
    tgt = rng.randint(2, 3000, (3, 4))
    dec = np.concatenate([np.zeros((3, 1), int), tgt[:, :-1]], axis=1)
    return [jnp.asarray(x) for x in (enc, dec, tgt)]


@pytest.mark.parametrize("module,expected_trainable", [
    # n*e + W_d (e*b + b) + W_u (b*e + e) + LayerNorm 2e, with n=4, e=8, b=6
    (ResPrompt(length=4, bottleneck=6), 4 * 8 + (8 * 6 + 6) + (6 * 8 + 8) + 2 * 8),
    # P1 (e) + W_d (e*h) + W_u (h*e), h=2
    (EPTPrompt(length=10, hidden=2), 8 + 8 * 2 + 2 * 8),
])
def test_exported_prompt_reproduces_the_trained_logits(tmp_path, pretrained, module,
                                                       expected_trainable):
    model = tiny_prompted_model().clone(prompt=module)
    variables = _trained_variables(model, pretrained)
    record = export.export_prompt(model, variables, tmp_path / "out")

    files = record["files"]
    prompt = np.load(files["prompt"])
    assert prompt.dtype == np.float32 and prompt.shape == (module.length, EMB)
    expected_tokens = model.apply(variables, method=model.prompt_tokens)
    np.testing.assert_array_equal(prompt, np.asarray(expected_tokens))

    # The inference gin, after the model and prompt-tuning files, builds a plain SoftPrompt
    # PromptedT5 whose prompt comes from prompt.npy, and reproduces the logits exactly.
    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "prompt_tuning.gin",
                             files["inference_gin"]], ["DROPOUT_RATE = 0.0"], finalize=False)
        plain = gin.query_parameter("%MODEL").scoped_configurable_fn()
    finally:
        gin.clear_config()
    assert type(plain.prompt).__name__ == "SoftPrompt" and plain.prompt.length == module.length
    # its initializer reads prompt.npy (what init_variables would put in the params)
    loaded = plain.prompt.init(jax.random.PRNGKey(7), (module.length, EMB))
    np.testing.assert_array_equal(np.asarray(loaded), prompt)
    plain_vars = {"params": {**pretrained, "prompt": {"prompt": loaded}}}
    trained_logits = jax.jit(lambda v, *a: model.apply(v, *a, enable_dropout=False))(
        variables, *_batch())
    plain_logits = jax.jit(lambda v, *a: plain.apply(v, *a, enable_dropout=False))(
        plain_vars, *_batch())
    # Same numbers up to float32 rounding: inside one jit XLA fuses the prompt network with
    # the encoder, so its tokens can differ from the exported ones in the last bit.
    np.testing.assert_allclose(np.asarray(plain_logits), np.asarray(trained_logits),
                               rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(trained_logits)).max() > 1.0

    # parameter counts (EPT Table 1's param/task), in the JSON too
    written = json.loads(pathlib.Path(files["json"]).read_text())
    # inference: what must be stored; EPT's broadcast vector once (the paper's "2.3K/768"
    # for EPT*, whatever its length), every other prompt n x e
    stored = EMB if isinstance(module, EPTPrompt) else module.length * EMB
    for counts in (record["param_counts"], written["param_counts"]):
        assert counts["trainable"] == expected_trainable
        assert counts["inference"] == stored
        assert counts["inference_exported"] == module.length * EMB
    assert written["method"] == type(module).__name__
    assert written["prompt_shape"] == [module.length, EMB]
    np.testing.assert_allclose(written["prompt_mean_norm"],
                               np.linalg.norm(prompt, axis=-1).mean(), rtol=1e-6)
    png = pathlib.Path(files["similarity_png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_param_counts_of_ptuning_lstm_against_formula(pretrained):
    n, e, h = 5, EMB, 3
    model = tiny_prompted_model().clone(prompt=PTuningPrompt(length=n, encoder="lstm", hidden=h))
    variables = _trained_variables(model, pretrained)
    lstm = 2 * (4 * h * e + 4 * h * h + 8 * h) + 2 * (4 * h * 2 * h + 4 * h * h + 8 * h)
    head = (2 * h * 2 * h + 2 * h) + (2 * h * e + e)
    counts = param_counts(model, variables)
    assert counts == {**counts, "trainable": n * e + lstm + head, "inference": n * e}
    assert counts["trainable_by_param"]["prompt/prompt"] == n * e


def test_cosine_similarity_matches_sklearn():
    sklearn_pairwise = pytest.importorskip("sklearn.metrics.pairwise")
    prompt = np.random.RandomState(0).randn(6, 5)
    np.testing.assert_allclose(cosine_similarity(prompt),
                               sklearn_pairwise.cosine_similarity(prompt), atol=1e-12)
    prompt[2] = 0.0
    sim = cosine_similarity(prompt)
    assert np.all(np.isfinite(sim)) and np.all(sim[2] == 0) and sim[0, 0] == pytest.approx(1.0)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    return env


@pytest.mark.slow  # a subprocess: imports the task modules (TensorFlow), loads the model
def test_export_cli_from_a_run_checkpoint(tmp_path, pretrained, fixtures_dir):
    # A run directory as the trainer leaves it (TrainState: raw prompt + network + AdamW
    # state), for the model that models/t5_1_1_tiny.gin + ept_star.gin build.
    model = tiny_prompted_model().clone(prompt=EPTPrompt(length=10, hidden=1))
    variables = _trained_variables(model, pretrained, seed=3)
    trainable, _ = split_params(variables["params"])
    model_dir = tmp_path / "run"
    with RunCheckpointer(model_dir) as checkpointer:
        checkpointer.save(2, run_payload(TrainState.create(trainable, optax.adamw(0.3)), {}),
                          meta={})
    expected = np.asarray(model.apply({"params": trainable}, method=model.prompt_tokens))

    out_dir = tmp_path / "export"
    cmd = [sys.executable, "-m", "xprompt_jax.export",
           "--gin_file=models/t5_1_1_tiny.gin", "--gin_file=ept_star.gin",
           f"--gin.MODEL_DIR='{model_dir}'",
           f"--gin.INITIAL_CHECKPOINT_PATH='{fixtures_dir / 't5x_tiny_orbax' / 'checkpoint_3'}'",
           f"--output_dir={out_dir}", "--checkpoint=latest", "--verify"]
    proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # e + 2e trainable; e at inference (one broadcast vector, the paper's "2.3K/768")
    assert "EPTPrompt: trainable 24 / inference 8 (prompt [10, 8])" in proc.stdout
    np.testing.assert_array_equal(np.load(out_dir / "prompt.npy"), expected)
    record = json.loads((out_dir / "export.json").read_text())
    assert record["checkpoint_step"] == 2 and record["verify_max_abs_logit_diff"] == 0.0
    assert record["prompt_settings"]["length"] == 10
    assert (out_dir / "prompt_similarity.png").exists()
    assert f"PROMPT_FILE = '{out_dir / 'prompt.npy'}'" in (out_dir / "inference.gin").read_text()


def test_restore_rejects_a_checkpoint_of_another_method(tmp_path, pretrained):
    model = tiny_prompted_model().clone(prompt=EPTPrompt(length=1, hidden=1))
    trainable = unflatten({"prompt/prompt": jnp.zeros((3, EMB))})  # a SoftPrompt run
    with RunCheckpointer(tmp_path) as checkpointer:
        checkpointer.save(1, run_payload({"params": trainable, "step": 1}, {}), meta={})
    with pytest.raises(ValueError, match="missing.*prompt/down/kernel"):
        restore_trainable(model, str(tmp_path), "latest")


def test_export_verify_of_a_t5x_run_reads_the_frozen_model_from_its_checkpoint(
        tmp_path, pretrained):
    """A `t5x/train.py` run's checkpoint holds the whole model (the frozen weights it was
    trained on and the prompt): `export --verify` on it needs no INITIAL_CHECKPOINT_PATH
    (before: "--verify needs INITIAL_CHECKPOINT_PATH"). The frozen weights are the run's:
    here they differ from the fixture's, and the check compares the trained module's
    logits with the exported prompt's on those same weights (difference 0)."""
    from test_prune_cli import write_t5x_run_checkpoint
    from training_utils import run_config

    model = tiny_prompted_model().clone(prompt=EPTPrompt(length=3, hidden=2))
    variables = _trained_variables(model, pretrained, seed=5)
    # the run's frozen weights: the fixture's, one of them changed (as another checkpoint)
    params = dict(variables["params"])
    params["token_embedder"] = {"embedding": np.asarray(
        pretrained["token_embedder"]["embedding"]) * np.float32(1.5)}
    params = jax.tree_util.tree_map(np.asarray, params)
    write_t5x_run_checkpoint(tmp_path / "run", params, step=7)
    run = run_config(model, tmp_path / "run")
    assert not run.frozen.initial_checkpoint_path
    record = export.export_run(run, output_dir=str(tmp_path / "export"), checkpoint="latest",
                               verify=True, plot=False)
    assert record["checkpoint_step"] == 7 and record["verify_max_abs_logit_diff"] == 0.0
    expected = np.asarray(model.apply({"params": params}, method=model.prompt_tokens))
    np.testing.assert_array_equal(np.load(tmp_path / "export" / "prompt.npy"), expected)

    # the frozen model it verified with is the run's: its logits, not the fixture's
    restored = restore_trainable(model, str(tmp_path / "run"), "latest")
    full, _ = export.verified_variables(run, restored, str(tmp_path / "run" / "checkpoint_7"))
    np.testing.assert_array_equal(np.asarray(full["params"]["token_embedder"]["embedding"]),
                                  params["token_embedder"]["embedding"])
    from xprompt_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="INITIAL_CHECKPOINT_PATH"):
        export.verified_variables(run, restored)  # not a T5X run: the setting is named
