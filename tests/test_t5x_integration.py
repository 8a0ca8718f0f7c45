"""Our modules under T5X: gin/t5x files run by `t5x/train.py`, and `xprompt_jax.t5x_compat`.

Without t5x (it is not on PyPI; CI does not install it) the t5x/train.py runs skip with the
reason below; what runs everywhere: `xprompt_jax` and every module of it import without
t5x, the t5x-free helpers of `t5x_compat`, every prompt axis is covered by the T5X rules,
and every gin/t5x file has its header. The docs' T5X page (docs/t5x.md) says how to install t5x from git.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIN_T5X = ROOT / "gin" / "t5x"
HAS_T5X = importlib.util.find_spec("t5x") is not None
NO_T5X_REASON = ("t5x is not installed: it is not on PyPI, install it from its git "
                 "repository into a virtualenv (see docs/t5x.md) to run the t5x/train.py tests")
needs_t5x = pytest.mark.skipif(not HAS_T5X, reason=NO_T5X_REASON)


# ============================================================== everywhere (no t5x needed)
IMPORT_ALL = textwrap.dedent("""
    import importlib, importlib.abc, pkgutil, sys

    attempts = []

    class BlockT5X(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "t5x" or name.startswith("t5x."):
                attempts.append(name)
                raise ImportError("t5x blocked by the test: " + name)
            return None

    sys.meta_path.insert(0, BlockT5X())
    import xprompt_jax
    import xprompt_jax.tasks
    names = ["xprompt_jax", "xprompt_jax.tasks"]
    for info in pkgutil.walk_packages(xprompt_jax.__path__, "xprompt_jax."):
        names.append(info.name)
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported below
            failed[name] = f"{type(e).__name__}: {e}"
    print("IMPORTED", len(names) - len(failed))
    print("T5X_ATTEMPTS", attempts)
    print("T5X_LOADED", sorted(m for m in sys.modules if m == "t5x" or m.startswith("t5x.")))
    for name, err in failed.items():
        print("FAILED", name, err)
""")


def test_every_module_imports_without_t5x():
    """No module of xprompt_jax imports t5x at import time (t5x_compat imports it lazily)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "T5X_ATTEMPTS []" in lines, out.stdout
    assert "T5X_LOADED []" in lines, out.stdout
    failed = [line for line in lines if line.startswith("FAILED")]
    t5x_failures = [line for line in failed if "t5x" in line]
    assert not t5x_failures, t5x_failures
    imported = int(next(line for line in lines if line.startswith("IMPORTED")).split()[1])
    assert imported > 20
    for required in ("xprompt_jax.t5x_compat", "xprompt_jax.prune",
                     "xprompt_jax.xprompt.fixed_masks"):
        assert not any(line.startswith(f"FAILED {required} ") for line in failed), failed


def test_t5x_compat_helpers_without_t5x():
    from xprompt_jax import t5x_compat

    rules = dict(t5x_compat.logical_axis_rules())
    assert set(t5x_compat.PROMPT_AXIS_NAMES) <= set(rules)
    assert all(rules[name] is None for name in t5x_compat.PROMPT_AXIS_NAMES)
    match = t5x_compat.match_any()  # flax's ModelParamTraversal passes '/a/b' paths
    assert match("/prompt/prompt", None) and match("prompt/down/kernel")
    assert not match("/encoder/layers_0/attention/query/kernel", None)
    only_down = t5x_compat.match_any([r"prompt/down/.*", r"nothing"])
    assert only_down("/prompt/down/kernel") and not only_down("/prompt/prompt")

    import optax

    params = {"prompt": {"prompt": jnp.ones((2, 4))}, "encoder": {"w": jnp.ones((4, 4))}}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    tx = t5x_compat.prompt_only_optax(optax.sgd(0.5))
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["encoder"]["w"], np.zeros((4, 4)))
    np.testing.assert_array_equal(updates["prompt"]["prompt"], np.full((2, 4), -0.5))
    if not HAS_T5X:
        with pytest.raises(ImportError, match="see docs/t5x.md"):
            t5x_compat.logical_factor_rules()


def test_numpy_export_fn_writes_the_prompt_and_keeps_the_state(tmp_path):
    """The save-time state transformation of gin/t5x: T5X's state dict layout
    ({'target': params, 'state': {'step', 'param_states'}}) in, the same objects out, the
    prompt params as float32 .npy in numpy_checkpoints/checkpoint_<step>/."""
    from xprompt_jax import t5x_compat

    prompt = np.arange(6, dtype=np.float32).reshape(2, 3)
    down = np.ones((3, 1), np.float32)
    state_dict = {"target": {"prompt": {"prompt": jnp.asarray(prompt, jnp.bfloat16),
                                        "down": {"kernel": down}},
                             "encoder": {"w": np.zeros((3, 3), np.float32)}},
                  "state": {"step": jnp.asarray(12), "param_states": {}}}
    infos = object()
    fn = t5x_compat.numpy_export_fn(str(tmp_path))
    out_state, out_infos = fn(state_dict, infos)
    assert out_state is state_dict and out_infos is infos
    directory = tmp_path / "numpy_checkpoints" / "checkpoint_12"
    assert sorted(os.listdir(directory)) == ["prompt.down.kernel.npy", "prompt.prompt.npy"]
    saved = np.load(directory / "prompt.prompt.npy")
    assert saved.dtype == np.float32
    np.testing.assert_array_equal(saved, prompt)  # exactly representable in bfloat16
    np.testing.assert_array_equal(np.load(directory / "prompt.down.kernel.npy"), down)
    only_down = t5x_compat.numpy_export_fn(str(tmp_path / "b"), save_regexes=r"prompt/down/.*")
    only_down(state_dict, infos)
    assert os.listdir(tmp_path / "b" / "numpy_checkpoints" / "checkpoint_12") == \
        ["prompt.down.kernel.npy"]


def _prompt_modules(tmp_path):
    from xprompt_jax.prompts import EPTPrompt, PTuningPrompt, ResPrompt, SoftPrompt
    from xprompt_jax.xprompt import MaskedSoftPrompt
    from xprompt_jax.xprompt.fixed_masks import FixedMaskPrompt, save_masks

    from xprompt_jax.xprompt.staged_prompt import StagedMaskPrompt

    masks = save_masks(tmp_path / "masks.npz", np.ones(3), np.ones((3, 4)))
    return [SoftPrompt(length=3), MaskedSoftPrompt(length=3, num_pieces=4),
            StagedMaskPrompt(length=3, num_pieces=4),
            FixedMaskPrompt(length=3, masks_path=str(masks)),
            EPTPrompt(length=2, hidden=2, use_bias=True, layer_norm=True),
            PTuningPrompt(length=3, encoder="mlp", hidden=4),
            PTuningPrompt(length=3, encoder="lstm", hidden=4),
            ResPrompt(length=3, bottleneck=4)]


def test_prompt_axes_are_covered_by_the_t5x_rules(tmp_path):
    """Every logical axis of every prompt module's params has a partitioning rule and an
    Adafactor factor rule (T5X's Adafactor raises KeyError on unknown axis names)."""
    from xprompt_jax import t5x_compat
    from xprompt_jax.models import PromptedT5, T5Config

    cfg = T5Config(vocab_size=64, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                   num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0,
                   relative_attention_num_buckets=4, relative_attention_max_distance=8)
    tokens = jnp.ones((1, 5), jnp.int32)
    seen = set()
    for prompt in _prompt_modules(tmp_path):
        model = PromptedT5(cfg, prompt=prompt)
        shapes = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), tokens, tokens,
                                                       tokens, enable_dropout=False))
        leaves = jax.tree_util.tree_leaves(shapes["params_axes"]["prompt"],
                                           is_leaf=lambda x: hasattr(x, "names"))
        for axes in leaves:
            seen.update(axes.names)
    assert seen <= set(t5x_compat.PROMPT_AXIS_NAMES), seen - set(t5x_compat.PROMPT_AXIS_NAMES)
    assert {"prompt", "prompt_embed", "prompt_hidden", "prompt_hidden_in"} <= seen


def _gin_t5x_files():
    return sorted(GIN_T5X.rglob("*.gin"))


def test_gin_t5x_files_have_headers():
    files = _gin_t5x_files()
    names = {p.relative_to(GIN_T5X).as_posix() for p in files}
    assert {"xprompt.gin", "xprompt_stage1.gin", "prompt_tuning.gin", "xprompt_rewind.gin",
            "ept.gin",
            "common/prompted_t5x.gin", "optimizers/adamw_t5x.gin"} <= names
    for path in files:
        lines = path.read_text().splitlines()
        header = []
        for line in lines:
            if not line.startswith("#"):
                break
            header.append(line)
        text = "\n".join(header)
        assert header and len(header) >= 5, f"{path}: no header comment"
        for field in ("Provides:", "Requires:", "Include order:"):
            assert field in text, f"{path}: header lacks {field!r}"
        body = "\n".join(lines[len(header):])
        assert "from __gin__ import dynamic_registration" in body, path
        # our modules are referred to by module path (dynamic registration)
        for module in re.findall(r"^from (xprompt_jax[\w.]*) import", body, flags=re.M):
            assert importlib.util.find_spec(module) is not None, (path, module)


def test_the_docs_t5x_page_describes_the_t5x_setup():
    doc = (ROOT / "docs" / "t5x.md").read_text()
    for needle in ("git+https://github.com/google-research/t5x", "--gin_search_paths",
                   "xprompt.gin", "xprompt_rewind.gin", "python -m xprompt_jax.prune",
                   "MASKS_PATH", "REWOUND_PROMPT_PATH", "numpy_checkpoints",
                   "Include order", "TRAIN_STEPS"):
        assert needle in doc, needle


# ============================================================== with t5x
FIXTURES = ROOT / "tests" / "fixtures"
ORBAX_FIXTURE = FIXTURES / "t5x_tiny_orbax" / "checkpoint_3"
LEGACY_FIXTURE = FIXTURES / "t5x_tiny_legacy" / "checkpoint_3"
SPM = FIXTURES / "t5_spm" / "sentencepiece.model"
LEGACY_SIZES = ["--gin.T5Config.emb_dim=4", "--gin.T5Config.num_heads=2",
                "--gin.T5Config.head_dim=2", "--gin.T5Config.mlp_dim=8",
                "--gin.T5Config.relative_attention_num_buckets=4",
                "--gin.T5Config.relative_attention_max_distance=8"]


def _env(devices=1):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def t5x_train_cmd(model_dir, method_files, steps, extra=(), pretrained=ORBAX_FIXTURE,
                  infer_eval=False, period=2):
    """`python -m t5x.train` (T5X's own main) with our gin files on the tiny fixture and
    the synthetic task (`pretrained` None: no INITIAL_CHECKPOINT_PATH flag)."""
    cmd = [sys.executable, "-m", "t5x.train",
           f"--gin_search_paths={GIN_T5X},{ROOT / 'gin'}"]
    cmd += [f"--gin_file={f}" for f in method_files] + ["--gin_file=models/t5_1_1_tiny.gin"]
    cmd += [f"--gin.MODEL_DIR='{model_dir}'",
            "--gin.MIXTURE_OR_TASK_NAME='xprompt_test_synthetic'",
            "--gin.MIXTURE_OR_TASK_MODULE='synthetic_tasks'",
            f"--gin.SENTENCEPIECE_MODEL='{SPM}'",
            f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=8",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}",
            f"--gin.EVAL_PERIOD={period}", f"--gin.SAVE_PERIOD={period}",
            "--gin.KEEP_CHECKPOINTS=2",
            "--gin.DROPOUT_RATE=0.0", "--gin.train.train_eval_dataset_cfg=None"]
    if pretrained is not None:
        cmd.append(f"--gin.INITIAL_CHECKPOINT_PATH='{pretrained}'")
    if not infer_eval:
        cmd.append("--gin.train.infer_eval_dataset_cfg=None")
    return cmd + list(extra)


def t5x_train(model_dir, method_files, steps, extra=(), devices=1, pretrained=ORBAX_FIXTURE,
              infer_eval=False, period=2, check=True):
    """Runs `t5x_train_cmd(...)` for a few steps; returns the completed process."""
    cmd = t5x_train_cmd(model_dir, method_files, steps, extra, pretrained, infer_eval, period)
    out = subprocess.run(cmd, env=_env(devices), cwd=model_dir.parent, capture_output=True,
                         text=True, timeout=900)
    if check:
        assert out.returncode == 0, out.stderr[-4000:]
    return out


def _params(path):
    from xprompt_jax.checkpoints import flatten, load_t5x_checkpoint

    ckpt = load_t5x_checkpoint(path)
    return {"/".join(k): v for k, v in flatten(ckpt.params).items()}, ckpt


def _assert_only_prompt_changed(run_ckpt, pretrained):
    got, ckpt = _params(run_ckpt)
    want, _ = _params(pretrained)
    assert set(got) - set(want) and all(k.startswith("prompt/") for k in set(got) - set(want))
    assert set(want) <= set(got)
    changed = [k for k in want if not np.array_equal(got[k], want[k])]
    assert not changed, f"frozen parameters changed: {changed}"
    return got, ckpt


def _numpy(model_dir, step, name="prompt.prompt"):
    return np.load(model_dir / "numpy_checkpoints" / f"checkpoint_{step}" / f"{name}.npy")


@needs_t5x
@pytest.mark.slow
def test_t5x_legacy_checkpointer_ept_adamw(tmp_path):
    """train.use_orbax=False (T5X's legacy msgpack+zarr checkpointer, our numpy export
    subclass), EPT's three prompt parameters, AdamW through OptaxWrapper."""
    model_dir = tmp_path / "ept"
    t5x_train(model_dir, ["ept.gin", "optimizers/adamw_t5x.gin"], steps=5,
              pretrained=LEGACY_FIXTURE, extra=LEGACY_SIZES + ["--gin.train.use_orbax=False"])
    assert (model_dir / "checkpoint_5" / "checkpoint").is_file()  # legacy msgpack
    got, ckpt = _assert_only_prompt_changed(model_dir / "checkpoint_5", LEGACY_FIXTURE)
    assert ckpt.format == "legacy" and ckpt.step == 5
    for name in ("prompt/prompt", "prompt/down/kernel", "prompt/up/kernel"):
        exported = _numpy(model_dir, 5, name.replace("/", "."))
        np.testing.assert_array_equal(exported, got[name])
        assert not np.allclose(_numpy(model_dir, 3, name.replace("/", ".")), exported), name


@needs_t5x
def test_t5x_model_drives_prompted_t5(tmp_path, fixtures_dir, t5_vocab_path):
    """In process: T5X's EncoderDecoderModel with our PromptedT5 (FixedMaskPrompt, pruned
    tokens removed from attention) scores and greedily decodes like our own code; T5X's
    Adafactor with our factor rules trains the prompt only."""
    import functools

    import seqio
    from flax import traverse_util
    from t5x import adafactor, decoding as t5x_decoding, models, optimizers

    from training_utils import fixture_params, tiny_prompted_model
    from xprompt_jax import t5x_compat
    from xprompt_jax.models import decoding
    from xprompt_jax.xprompt.fixed_masks import FixedMaskPrompt, save_masks

    masks = save_masks(tmp_path / "masks.npz", np.array([1, 0, 1], np.float32),
                       np.array([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1]], np.float32))
    module = tiny_prompted_model().clone(prompt=FixedMaskPrompt(length=3, masks_path=str(masks)))
    params = dict(fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3")))
    params["prompt"] = {"prompt": np.random.RandomState(0).uniform(-.5, .5, (3, 8))
                        .astype(np.float32)}
    vocab = seqio.SentencePieceVocabulary(t5_vocab_path, extra_ids=100)
    opt = optimizers.MultiOptimizer(((traverse_util.ModelParamTraversal(
        filter_fn=t5x_compat.match_any()), adafactor.Adafactor(
            decay_rate=0.8, multiply_by_parameter_scale=False,
            logical_factor_rules=t5x_compat.logical_factor_rules())),))
    model = models.EncoderDecoderModel(
        module=module, input_vocabulary=vocab, output_vocabulary=vocab, optimizer_def=opt,
        decode_fn=functools.partial(t5x_decoding.temperature_sample, temperature=0.0))
    rng = np.random.RandomState(1)
    enc = rng.randint(2, 500, (2, 9)).astype(np.int32)
    enc[0, 6:] = 0
    tgt = rng.randint(2, 500, (2, 4)).astype(np.int32)
    batch = {"encoder_input_tokens": enc, "decoder_target_tokens": tgt,
             "decoder_input_tokens": np.concatenate([np.zeros((2, 1), np.int32), tgt[:, :-1]], 1),
             "decoder_loss_weights": np.ones((2, 4), np.float32)}
    logits = module.apply({"params": params}, enc, batch["decoder_input_tokens"], tgt,
                          enable_dropout=False)
    logp = jax.nn.log_softmax(logits)
    ours = np.take_along_axis(np.asarray(logp), tgt[..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(np.asarray(model.score_batch(params, batch)), ours, rtol=1e-5,
                               atol=1e-5)
    t5x_tokens = np.asarray(model.predict_batch(params, batch))
    our_tokens = np.asarray(decoding.decode_tokens(module, {"params": params},
                                                   jnp.asarray(enc), 4))
    np.testing.assert_array_equal(t5x_tokens, our_tokens)

    # T5X Adafactor via MultiOptimizer: factor rules accept our axes; frozen params fixed.
    variables = model.get_initial_variables(jax.random.PRNGKey(0), {
        "encoder_input_tokens": (2, 9), "decoder_input_tokens": (2, 4)},
        {"encoder_input_tokens": jnp.int32, "decoder_input_tokens": jnp.int32})
    from flax.linen import partitioning as flax_partitioning

    opt.set_param_axes(flax_partitioning.get_axis_names(variables["params_axes"]))
    state = opt.init_state(params)
    grads = jax.grad(lambda p: model.loss_fn(p, batch, None)[0])(params)
    new_params, _ = opt.apply_gradient(opt.update_hyper_params(learning_rate=0.3), params,
                                       state, grads)
    flat_old = traverse_util.flatten_dict(params, sep="/")
    flat_new = traverse_util.flatten_dict(new_params, sep="/")
    assert [k for k in flat_old if not np.array_equal(flat_old[k], flat_new[k])] == \
        ["prompt/prompt"]


@needs_t5x
def test_our_prompt_only_adafactor_equals_t5x_adafactor(fixtures_dir):
    """gin/t5x's optimizer (our Adafactor in prompt_only_optax, through T5X's OptaxWrapper)
    makes the same updates as T5X's own adafactor.Adafactor with Lester's settings under a
    MultiOptimizer over the prompt, step after step; frozen parameters never move."""
    from flax import traverse_util
    from flax.linen import partitioning as flax_partitioning
    from t5x import adafactor, optimizers as t5x_optimizers

    from training_utils import fixture_params, tiny_prompted_model
    from xprompt_jax import t5x_compat
    from xprompt_jax.training import optimizers

    module = tiny_prompted_model(prompt_length=3)
    params = dict(fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3")))
    params["prompt"] = {"prompt": np.random.RandomState(0).uniform(-.5, .5, (3, 8))
                        .astype(np.float32)}
    rng = np.random.RandomState(2)
    enc = rng.randint(2, 500, (4, 7)).astype(np.int32)
    tgt = rng.randint(2, 500, (4, 3)).astype(np.int32)
    dec = np.concatenate([np.zeros((4, 1), np.int32), tgt[:, :-1]], 1)

    def grads_of(p):
        def loss(q):
            logits = module.apply({"params": q}, enc, dec, tgt, enable_dropout=False)
            logp = jax.nn.log_softmax(logits)
            return -np.float32(1.0) * jnp.take_along_axis(logp, tgt[..., None], -1).mean()
        return jax.grad(loss)(p)

    theirs = t5x_optimizers.MultiOptimizer(((traverse_util.ModelParamTraversal(
        filter_fn=t5x_compat.match_any()), adafactor.Adafactor(
            decay_rate=0.8, step_offset=0, multiply_by_parameter_scale=False,
            weight_decay_rate=1e-5, clipping_threshold=1.0,
            logical_factor_rules=t5x_compat.logical_factor_rules())),))
    variables = module.init(jax.random.PRNGKey(0), enc, dec, tgt, enable_dropout=False)
    theirs.set_param_axes(flax_partitioning.get_axis_names(variables["params_axes"]))
    ours = t5x_optimizers.OptaxWrapper(t5x_compat.prompt_only_optax(optimizers.adafactor(
        learning_rate=0.3, decay_rate=0.8, step_offset=0, multiply_by_parameter_scale=False,
        weight_decay_rate=1e-5, clipping_threshold=1.0)))
    p_theirs, s_theirs = params, theirs.init_state(params)
    p_ours, s_ours = params, ours.init_state(params)
    for step in range(4):
        p_theirs, s_theirs = theirs.apply_gradient(
            theirs.update_hyper_params(learning_rate=0.3), p_theirs, s_theirs,
            grads_of(p_theirs))
        p_ours, s_ours = ours.apply_gradient(ours.hyper_params, p_ours, s_ours, grads_of(p_ours))
        flat_theirs = traverse_util.flatten_dict(p_theirs, sep="/")
        flat_ours = traverse_util.flatten_dict(p_ours, sep="/")
        for key, value in flat_theirs.items():
            # float32 rounding (different operation order): ~4e-7 after 2 steps; one step
            # of lr 0.3 moves entries by ~1e-1, a wrong rule by far more than this tolerance.
            np.testing.assert_allclose(np.asarray(flat_ours[key]), np.asarray(value),
                                       rtol=2e-5, atol=2e-6, err_msg=f"{key} at step {step}")
    moved = [k for k, v in traverse_util.flatten_dict(params, sep="/").items()
             if not np.array_equal(v, flat_ours[k])]
    assert moved == ["prompt/prompt"]


@needs_t5x
def test_t5x_model_drives_a_prompt_bank(fixtures_dir, t5_vocab_path):
    """T5X's EncoderDecoderModel (which passes only its standard features) with a
    PromptBank: the prompt id rides in the first input token; each example's T5X score and
    greedy decode equal our single-prompt model with that example's prompt."""
    import functools

    import seqio
    from t5x import decoding as t5x_decoding, models

    from training_utils import fixture_params, tiny_prompted_model
    from xprompt_jax.models import decoding
    from xprompt_jax.prompts import SoftPrompt
    from xprompt_jax.prompts.bank import PromptBank, with_prompt_ids

    single = tiny_prompted_model().clone(prompt=SoftPrompt(length=3))
    bank = single.clone(prompt=PromptBank(SoftPrompt(length=3), num_prompts=2))
    frozen = dict(fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3")))
    prompts = np.random.RandomState(0).uniform(-.5, .5, (2, 3, 8)).astype(np.float32)
    vocab = seqio.SentencePieceVocabulary(t5_vocab_path, extra_ids=100)
    model = models.EncoderDecoderModel(
        module=bank, input_vocabulary=vocab, output_vocabulary=vocab, optimizer_def=None,
        decode_fn=functools.partial(t5x_decoding.temperature_sample, temperature=0.0))
    rng = np.random.RandomState(1)
    enc = rng.randint(2, 500, (3, 9)).astype(np.int32)
    enc[0, 6:] = 0
    tgt = rng.randint(2, 500, (3, 4)).astype(np.int32)
    dec = np.concatenate([np.zeros((3, 1), np.int32), tgt[:, :-1]], 1)
    ids = np.array([1, 0, 1])
    base = bank.config.vocab_size
    batch = {"encoder_input_tokens": with_prompt_ids({"encoder_input_tokens": enc}, ids, base,
                                                     2)["encoder_input_tokens"],
             "decoder_target_tokens": tgt, "decoder_input_tokens": dec,
             "decoder_loss_weights": np.ones((3, 4), np.float32)}
    params = {**frozen, "prompt": {"bank": {"prompt": prompts}}}
    scores = np.asarray(model.score_batch(params, batch))
    tokens = np.asarray(model.predict_batch(params, batch))
    for i, pid in enumerate(ids):
        p = {"params": {**frozen, "prompt": {"prompt": prompts[pid]}}}
        logp = jax.nn.log_softmax(single.apply(p, enc[i:i + 1], dec[i:i + 1], tgt[i:i + 1],
                                               enable_dropout=False))
        ours = np.take_along_axis(np.asarray(logp), tgt[i:i + 1, :, None], -1).sum()
        np.testing.assert_allclose(scores[i], ours, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(tokens[i], np.asarray(decoding.decode_tokens(
            single, p, jnp.asarray(enc[i:i + 1]), 4))[0])


# ============================================================== faults a T5X user met
def _checkpoint_steps(model_dir):
    return sorted(int(p.name.split("_")[1]) for p in model_dir.glob("checkpoint_*")
                  if p.name.split("_")[1].isdigit())


@needs_t5x
def test_every_t5x_training_method_binds_the_preemptible_trainer_and_the_frozen_check(
        monkeypatch):
    """Each training method file, parsed as t5x/train.py parses it (nothing run), binds
    T5X's trainer_cls to our trainer that stops on SIGTERM, checks it every STATS_PERIOD
    steps, and reads the frozen model through the INITIAL_CHECKPOINT_PATH check."""
    import __main__

    import gin
    from gin import config as gin_config
    from t5x import gin_utils as t5x_gin_utils
    from t5x import train as t5x_train_module

    monkeypatch.setattr(__main__, "train", t5x_train_module.train, raising=False)
    t5x_dir = str(pathlib.Path(importlib.util.find_spec("t5x").origin).parents[1])
    saved = list(gin_config._LOCATION_PREFIXES)  # pylint: disable=protected-access
    try:
        for method in ("prompt_tuning.gin", "ept.gin", "xprompt.gin", "xprompt_stage1.gin",
                       "xprompt_rewind.gin"):
            gin.clear_config()
            t5x_gin_utils.parse_gin_flags(
                [str(GIN_T5X), str(ROOT / "gin"), t5x_dir], [method, "models/t5_1_1_tiny.gin"],
                ["MODEL_DIR = '/nowhere'", "MIXTURE_OR_TASK_NAME = 'x'", "TRAIN_STEPS = 5"],
                finalize_config=False)
            text = gin.config_str()
            # XPrompt's one command: the trainer of its stages, which extends ours
            trainer = "t5x_trainer.xprompt_trainer" if method == "xprompt.gin" else \
                "t5x_compat.preemptible_trainer"
            assert f"trainer_cls = @{trainer}" in text, method
            assert "stats_period = %STATS_PERIOD" in text, method
            assert gin.query_parameter("STATS_PERIOD/macro.value") == 10, method
            assert "path = @t5x_compat.frozen_model_checkpoint()" in text, method
    finally:
        gin.clear_config()
        gin_config._LOCATION_PREFIXES[:] = saved  # pylint: disable=protected-access


@needs_t5x
@pytest.mark.slow
def test_t5x_train_saves_and_exits_0_on_sigterm_and_the_rerun_resumes(tmp_path):
    """A preemption under t5x/train.py: SIGTERM after the first step, with periods far away
    (T5X's default would be one checkpoint per 1000 steps): our trainer asks T5X's loop to
    stop, T5X saves "before early stopping", exit code 0 (without it: killed, -15, nothing
    saved after the pre-loop checkpoint). The rerun resumes at the saved step. The working
    directory holds plain folders `models` and `runs` (they once broke gin's lookup)."""
    import signal

    for name in ("models", "runs"):
        (tmp_path / name).mkdir()
    model_dir = tmp_path / "pt"
    far = 100000
    cmd = t5x_train_cmd(model_dir, ["prompt_tuning.gin"], steps=3 + far, period=far)
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "Training: step" in line:
                proc.send_signal(signal.SIGTERM)
                break
        lines.extend(proc.stderr)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines)
    assert rc == 0, log[-4000:]
    assert "SIGTERM received" in log
    assert "Saving a checkpoint before early stopping" in log, log[-3000:]
    reached = max(_checkpoint_steps(model_dir))
    assert 3 < reached < 3 + far
    assert (model_dir / "numpy_checkpoints" / f"checkpoint_{reached}" /
            "prompt.prompt.npy").is_file()

    out = t5x_train(model_dir, ["prompt_tuning.gin"], steps=reached + 2)
    assert f"checkpoint_{reached}" in out.stderr and \
        f"Starting main loop over steps {reached}-{reached + 2}" in out.stderr, \
        out.stderr[-3000:]
    assert reached + 2 in _checkpoint_steps(model_dir)


@needs_t5x
def test_t5x_train_refuses_a_frozen_model_that_was_never_loaded(tmp_path):
    """models/t5_1_1_tiny.gin has no public checkpoint: without INITIAL_CHECKPOINT_PATH
    T5X would initialise the frozen model at random and train a prompt on it (rc 0). One
    line naming the setting, a non-zero exit code, nothing written to MODEL_DIR."""
    model_dir = tmp_path / "random"
    out = t5x_train(model_dir, ["xprompt.gin"], steps=5, pretrained=None, check=False)
    assert out.returncode == 2, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("xprompt_jax: error")]
    assert len(errors) == 1 and "INITIAL_CHECKPOINT_PATH" in errors[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert not _checkpoint_steps(model_dir)


@needs_t5x
@pytest.mark.slow
def test_t5x_train_on_the_world_model_needs_no_vocabulary_flag(tmp_path):
    """models/world_tiny.gin names the world's own vocabulary: t5x/train.py with it and a
    world task runs offline with no --gin.SENTENCEPIECE_MODEL flag and XPROMPT_T5_VOCAB
    unset (before: the default T5 vocabulary on gs://t5-data, unreachable offline)."""
    from xprompt_jax.world import paths

    model_dir = tmp_path / "world_pt"
    env = _env()
    env.pop("XPROMPT_T5_VOCAB", None)
    env["XPROMPT_WORLD_DIR"] = str(tmp_path / "world")
    step = int(pathlib.Path(paths.checkpoint_path()).name.split("_")[1])
    cmd = [sys.executable, "-m", "t5x.train", f"--gin_search_paths={GIN_T5X},{ROOT / 'gin'}",
           "--gin_file=prompt_tuning.gin", "--gin_file=models/world_tiny.gin",
           f"--gin.MODEL_DIR='{model_dir}'", "--gin.MIXTURE_OR_TASK_NAME='world_rte'",
           f"--gin.TRAIN_STEPS={step + 2}", "--gin.BATCH_SIZE=4", "--gin.PROMPT_LENGTH=4",
           "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 4}",
           "--gin.EVAL_PERIOD=2", "--gin.SAVE_PERIOD=2",
           "--gin.train.train_eval_dataset_cfg=None", "--gin.train.infer_eval_dataset_cfg=None"]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    config = (model_dir / "config.gin").read_text()
    assert "SENTENCEPIECE_MODEL = @paths.vocab_path()" in config, config
    assert _checkpoint_steps(model_dir)[-1] == step + 2
