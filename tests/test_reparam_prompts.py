"""Reparameterized prompts (EPT, EPT*, P-Tuning, ResPrompt): HF PEFT parity, NumPy formulas,
rank, gradients, logical axes, init, and the gin method files."""

import functools

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from training_utils import fixture_params, tiny_prompted_model
from xprompt_jax import gin_utils
from xprompt_jax.prompts import EPTPrompt, PTuningPrompt, ResPrompt, SoftPrompt
from xprompt_jax.prompts.ptuning import params_from_peft
from xprompt_jax.training import partitioning
from xprompt_jax.training.params import flatten, merge_params
from xprompt_jax.training.train_step import LossConfig, batch_loss_sums, prompt_metrics

E = 16  # embed size of the standalone module tests


def _init(module, embed=E, seed=0):
    # The modules' `init` field (the prompt initializer) shadows Module.init. Jitted: one
    # compilation instead of one per op (and per lax.scan) in eager mode.
    return jax.jit(lambda rng: nn.Module.init(module, rng, jnp.zeros((2, 3, embed))))(
        jax.random.PRNGKey(seed))


def _apply(module, params, embed=E):
    return np.asarray(jax.jit(lambda p: module.apply({"params": p}, jnp.zeros((1, 1, embed))))(
        params))


def _randomize(params, seed=1, scale=0.5):
    """Every leaf replaced by U[-scale, scale] values (LayerNorm scale/bias included), so
    that no term of a formula can hide behind a 0 or 1 initial value."""
    rng = np.random.RandomState(seed)
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.uniform(-scale, scale, x.shape), jnp.float32), params)


def _np(tree):
    return {k: np.asarray(v, np.float64) for k, v in flatten(tree).items()}


def _np_layer_norm(z, scale, bias, eps=1e-5):
    mu = z.mean(-1, keepdims=True)
    var = ((z - mu) ** 2).mean(-1, keepdims=True)
    return (z - mu) / np.sqrt(var + eps) * scale + bias


# ------------------------------------------------------------------------------ P-Tuning
@pytest.mark.parametrize("encoder", ["MLP", "LSTM"])
def test_ptuning_matches_peft_prompt_encoder(encoder):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from peft.tuners.p_tuning.model import PromptEncoder

    n, hidden = 7, 12
    torch.manual_seed(0)
    config = peft.PromptEncoderConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=n, token_dim=E,
        num_transformer_submodules=1, encoder_hidden_size=hidden,
        encoder_reparameterization_type=encoder, num_layers=2, num_attention_heads=2)
    reference = PromptEncoder(config).eval()
    with torch.no_grad():  # larger weights than torch's init: saturate gates, use ReLUs
        for name, p in reference.named_parameters():
            p.uniform_(-0.5, 0.5) if name == "embedding.weight" else p.normal_(0.0, 0.4)
    indices = torch.arange(n)
    expected = reference(indices)
    probe = torch.randn(n, E, generator=torch.Generator().manual_seed(3))
    (expected * probe).sum().backward()
    expected = expected.detach().numpy()
    ref_grads = {k: p.grad.numpy() for k, p in reference.named_parameters()}

    module = PTuningPrompt(length=n, encoder=encoder.lower(), hidden=hidden)
    params = params_from_peft(reference.state_dict(), encoder.lower())
    shapes = jax.tree_util.tree_map(jnp.shape, _init(module)["params"])
    assert jax.tree_util.tree_map(jnp.shape, params) == shapes  # layout of our own init
    embedded = jnp.zeros((1, 1, E))
    ours = _apply(module, params)
    assert ours.shape == (n, E)
    err = np.abs(ours - expected).max()
    print(f"P-Tuning {encoder}: max |ours - PEFT| = {err:.3g} "
          f"(output max {np.abs(expected).max():.3g})")
    assert err <= 1e-5, err
    assert np.abs(expected).max() > 0.1

    grads = jax.jit(jax.grad(lambda p: jnp.sum(module.apply({"params": p}, embedded)
                                               * jnp.asarray(probe.numpy()))))(params)
    # Gradients map back through the same layout: raw prompt and every network weight.
    np.testing.assert_allclose(grads["prompt"], ref_grads["embedding.weight"], atol=1e-5)
    np.testing.assert_allclose(grads["mlp_0"]["kernel"], ref_grads["mlp_head.0.weight"].T,
                               atol=1e-5)
    if encoder == "LSTM":
        np.testing.assert_allclose(grads["lstm"]["layer_0_backward"]["w_hh"],
                                   ref_grads["lstm_head.weight_hh_l0_reverse"].T, atol=1e-5)
        np.testing.assert_allclose(grads["lstm"]["layer_1_forward"]["b_ih"],
                                   ref_grads["lstm_head.bias_ih_l1"], atol=1e-5)


def test_params_from_peft_names_what_is_missing():
    rng = np.random.RandomState(0)
    saved = {"embedding.weight": rng.randn(4, E)}  # what PEFT's save_pretrained keeps
    with pytest.raises(ValueError, match="lacks.*mlp_0"):
        params_from_peft(saved, "mlp")
    with pytest.raises(ValueError, match="unrecognized keys.*lstm_head"):
        params_from_peft({**saved, "lstm_head.weight_ih_l0": rng.randn(8, E)}, "mlp")


def test_ptuning_default_hidden_is_the_embed_size_and_bad_encoder_is_named():
    params = _init(PTuningPrompt(length=3, encoder="mlp"))["params"]
    assert params["mlp_0"]["kernel"].shape == (E, E)
    with pytest.raises(ValueError, match="PTuningPrompt.encoder"):
        _init(PTuningPrompt(length=3, encoder="gru"))


# ------------------------------------------------------------------------------ ResPrompt
@pytest.mark.parametrize("shared,layer_norm", [(True, True), (False, True), (True, False)])
def test_resprompt_equals_numpy_formula(shared, layer_norm):
    n, b = 5, 6
    module = ResPrompt(length=n, bottleneck=b, layer_norm=layer_norm, shared=shared)
    params = _randomize(_init(module)["params"])
    ours = _apply(module, params)
    p = _np(params)
    P = p["prompt"]
    if shared:
        z = np.maximum(P @ p["down/kernel"] + p["down/bias"], 0.0) @ p["up/kernel"] + p["up/bias"]
    else:  # one MLP (and LayerNorm) per token
        z = np.stack([np.maximum(P[i] @ p["down/kernel"][i] + p["down/bias"][i], 0.0)
                      @ p["up/kernel"][i] + p["up/bias"][i] for i in range(n)])
    if layer_norm:
        z = _np_layer_norm(z, p["layer_norm/scale"], p["layer_norm/bias"])
    np.testing.assert_allclose(ours, P + z, rtol=1e-5, atol=1e-5)
    expected_shape = (E, b) if shared else (n, E, b)
    assert params["down"]["kernel"].shape == expected_shape


def test_resprompt_defaults_follow_the_paper():
    params = _init(ResPrompt(length=10))["params"]
    assert params["down"]["kernel"].shape == (E, 400)
    np.testing.assert_array_equal(params["layer_norm"]["scale"], np.ones(E))
    assert ResPrompt().layer_norm_eps == 1e-5


# ------------------------------------------------------------------------------ EPT
def _np_act(name, x):
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    if name == "tanh":
        return np.tanh(x)
    return x


@pytest.mark.parametrize("use_bias,act,layer_norm,residual", [
    (False, None, False, False),  # EPT itself
    (True, "relu", True, True),
    (True, "gelu", False, True),
    (False, "tanh", True, False),
])
def test_ept_equals_numpy_formula(use_bias, act, layer_norm, residual):
    n, h = 4, 3
    module = EPTPrompt(length=n, hidden=h, use_bias=use_bias, activation=act,
                       layer_norm=layer_norm, residual=residual)
    params = _randomize(_init(module)["params"], scale=1.0)
    assert set(flatten(params)) == (
        {"prompt", "down/kernel", "up/kernel"} | ({"down/bias", "up/bias"} if use_bias else set())
        | ({"layer_norm/scale", "layer_norm/bias"} if layer_norm else set()))
    ours = _apply(module, params)
    p = _np(params)
    z = p["prompt"] @ p["down/kernel"] + (p["down/bias"] if use_bias else 0.0)
    z = _np_act(act, z) @ p["up/kernel"] + (p["up/bias"] if use_bias else 0.0)
    if layer_norm:
        z = _np_layer_norm(z, p["layer_norm/scale"], p["layer_norm/bias"])
    if residual:
        z = p["prompt"] + z
    np.testing.assert_allclose(ours, np.repeat(z, n, axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hidden", [1, 2])
def test_ept_output_has_rank_at_most_hidden(hidden):
    module = EPTPrompt(length=10, hidden=hidden)
    params = _init(module)["params"]
    outputs, inputs = [], []
    apply = jax.jit(lambda p: module.apply({"params": p}, jnp.zeros((1, 1, E))))
    for seed in range(12):  # many P1 through the same projection
        p1 = jax.random.uniform(jax.random.PRNGKey(seed), (1, E), minval=-0.5, maxval=0.5)
        out = np.asarray(apply({**params, "prompt": p1}))
        assert out.shape == (10, E) and np.linalg.matrix_rank(out) == 1  # n equal tokens
        outputs.append(out[0])
        inputs.append(np.asarray(p1[0]))
    assert np.linalg.matrix_rank(np.stack(inputs)) == 12
    sv = np.linalg.svd(np.stack(outputs), compute_uv=False)
    assert sv[hidden - 1] > 1e-3 * sv[0]         # rank h reached ...
    assert np.all(sv[hidden:] <= 1e-5 * sv[0])   # ... and not exceeded
    # every output lies in the span of W_u's rows
    w_u = np.asarray(params["up"]["kernel"])
    coef, *_ = np.linalg.lstsq(w_u.T, np.stack(outputs).T, rcond=None)
    np.testing.assert_allclose(w_u.T @ coef, np.stack(outputs).T, atol=1e-5)


def test_ept_defaults_and_errors():
    params = _init(EPTPrompt())["params"]
    assert jax.tree_util.tree_map(jnp.shape, params) == {
        "prompt": (1, E), "down": {"kernel": (E, 1)}, "up": {"kernel": (1, E)}}
    with pytest.raises(ValueError, match="activation"):
        _init(EPTPrompt(activation="swish"))
    with pytest.raises(ValueError, match="EPTPrompt.hidden"):
        _init(EPTPrompt(hidden=0))


# ------------------------------------------------------------------------------ shared
MODULES = {
    "ept": lambda: EPTPrompt(length=1, hidden=1),
    "ept_star": lambda: EPTPrompt(length=10, hidden=2, use_bias=True, activation="relu",
                                  layer_norm=True, residual=True),
    "p_tuning_mlp": lambda: PTuningPrompt(length=4, encoder="mlp", hidden=6),
    "p_tuning_lstm": lambda: PTuningPrompt(length=4, encoder="lstm", hidden=5),
    "resprompt": lambda: ResPrompt(length=4, bottleneck=6),
    "resprompt_per_token": lambda: ResPrompt(length=4, bottleneck=6, shared=False),
}


@pytest.fixture(scope="module")
def pretrained(fixtures_dir):
    return fixture_params(str(fixtures_dir / "t5x_tiny_orbax" / "checkpoint_3"))


@functools.lru_cache(maxsize=None)
def _module_variables(name):
    return _init(MODULES[name]())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_gradients_reach_the_raw_prompt_and_every_network_weight(name):
    module = MODULES[name]()
    params = _module_variables(name)["params"]
    probe = jnp.asarray(np.random.RandomState(0).randn(module.length, E), jnp.float32)
    grads = flatten(jax.jit(jax.grad(lambda p: jnp.sum(
        module.apply({"params": p}, jnp.zeros((1, 1, E))) * probe)))(params))
    assert "prompt" in grads and len(grads) > 1
    for path, g in grads.items():
        assert np.all(np.isfinite(g)), path
        assert np.abs(np.asarray(g)).max() > 0.0, f"no gradient reaches {path}"


def test_ept_trains_p1_and_projection_through_the_frozen_t5(pretrained):
    module = EPTPrompt(length=2, hidden=1)
    model = tiny_prompted_model().clone(prompt=module)
    frozen = pretrained
    trainable = {"prompt": _init(module, embed=model.config.emb_dim)["params"]}
    rng = np.random.RandomState(0)
    batch = {"encoder_input_tokens": jnp.asarray(rng.randint(2, 500, (3, 8))),
             "decoder_input_tokens": jnp.asarray(rng.randint(2, 500, (3, 3))),
             "decoder_target_tokens": jnp.asarray(rng.randint(2, 500, (3, 3)))}

    def loss(trainable):
        full = {"params": merge_params(trainable, frozen)}
        total, _, weight = batch_loss_sums(model, full, batch, None, LossConfig(),
                                           enable_dropout=False)
        return total / weight

    grads = flatten(jax.jit(jax.grad(loss))(trainable))
    for path, g in grads.items():
        assert np.all(np.isfinite(g)) and np.abs(np.asarray(g)).max() > 0.0, path
    # P1's gradient is the chain rule through W_d W_u of the token gradients (summed over
    # the broadcast tokens): dL/dP1 = (sum_t dL/dtoken_t) W_u^T W_d^T.
    tokens = model.apply({"params": trainable}, method=model.prompt_tokens)
    token_grad = jax.jit(jax.grad(lambda t: loss_from_tokens(model, frozen, batch, t)))(tokens)
    p = _np(trainable)
    expected = np.asarray(token_grad, np.float64).sum(0, keepdims=True) @ \
        (p["prompt/down/kernel"] @ p["prompt/up/kernel"]).T
    np.testing.assert_allclose(grads["prompt/prompt"], expected, rtol=1e-4, atol=1e-7)


def test_logged_prompt_mean_norm_is_the_norm_of_the_projected_tokens(pretrained):
    # EPT's mu_t (its eq. 4), as the train step logs it: mean over tokens of ||p_t||_2.
    module = ResPrompt(length=5, bottleneck=4)
    model = tiny_prompted_model().clone(prompt=module)
    params = _randomize(_init(module, embed=8)["params"])
    metric = prompt_metrics(model, {"params": pretrained}, {"prompt": params})
    p = _np(params)
    z = np.maximum(p["prompt"] @ p["down/kernel"] + p["down/bias"], 0.0) @ p["up/kernel"] \
        + p["up/bias"]
    tokens = p["prompt"] + _np_layer_norm(z, p["layer_norm/scale"], p["layer_norm/bias"])
    np.testing.assert_allclose(float(metric["prompt_mean_norm"]),
                               np.linalg.norm(tokens, axis=-1).mean(), rtol=1e-5)


def loss_from_tokens(model, frozen, batch, tokens):
    """The loss with a plain SoftPrompt holding `tokens` (no network)."""
    plain = model.clone(prompt=SoftPrompt(length=tokens.shape[0]))
    params = dict(frozen)
    params["prompt"] = {"prompt": tokens}
    total, _, weight = batch_loss_sums(plain, {"params": params}, batch, None, LossConfig(),
                                       enable_dropout=False)
    return total / weight


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_param_has_logical_axes_and_is_replicated(name):
    variables = _module_variables(name)
    params, axes = variables["params"], variables["params_axes"]
    assert set(flatten(partitioning.params_logical_axes(axes))) == set(flatten(params))
    mesh = partitioning.make_mesh((4, 2))
    shardings = partitioning.param_shardings(params, axes, mesh,
                                             partitioning.standard_logical_axis_rules())
    for path, sharding in flatten(shardings).items():
        assert sharding.is_fully_replicated, path


def test_network_init_is_pytorch_default():
    # torch.nn.Linear: U[+-1/sqrt(fan_in)] for weight and bias; torch.nn.LSTM: U[+-1/sqrt(H)]
    params = flatten(_module_variables("p_tuning_lstm")["params"])  # H = 5, mlp 10 -> 10 -> 16
    for path, bound in [("mlp_0/kernel", 1 / np.sqrt(10)), ("mlp_1/bias", 1 / np.sqrt(10)),
                        ("lstm/layer_1_backward/w_ih", 1 / np.sqrt(5)),
                        ("lstm/layer_0_forward/w_hh", 1 / np.sqrt(5))]:
        value = np.abs(np.asarray(params[path]))
        assert value.max() <= bound and value.max() > 0.6 * bound, path
    raw = np.asarray(params["prompt"])
    assert np.abs(raw).max() <= 0.5 and raw.min() < -0.2  # default U[-0.5, 0.5]


# ------------------------------------------------------------------------------ gin files
GIN_FILES = {
    "ept.gin": (EPTPrompt, dict(length=1, hidden=1, use_bias=False, activation=None,
                                layer_norm=False, residual=False)),
    "ept_star.gin": (EPTPrompt, dict(length=10, hidden=1)),
    "p_tuning_mlp.gin": (PTuningPrompt, dict(length=10, encoder="mlp", hidden=None)),
    "p_tuning_lstm.gin": (PTuningPrompt, dict(length=10, encoder="lstm", lstm_layers=2)),
    "resprompt.gin": (ResPrompt, dict(length=10, bottleneck=400, layer_norm=True, shared=True)),
}


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize("gin_file", sorted(GIN_FILES))
@pytest.mark.parametrize("optimizer", [None, "adafactor"])
def test_gin_method_files_build_their_module(gin_file, optimizer, clean_gin):
    files = ["models/t5_1_1_tiny.gin", gin_file]
    if optimizer:
        files.append(f"optimizers/{optimizer}.gin")
    gin_utils.parse_gin(files, ["MODEL_DIR = '/tmp/unused'"], finalize=False)
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    cls, expected = GIN_FILES[gin_file]
    assert type(model.prompt) is cls
    for field, value in expected.items():
        assert getattr(model.prompt, field) == value, field
    assert model.config.emb_dim == 8
    init = model.prompt.init(jax.random.PRNGKey(0), (1000,))  # U[-0.5, 0.5]
    assert -0.5 <= float(init.min()) < -0.45 and 0.45 < float(init.max()) <= 0.5
    # the EPT paper's recipe
    assert gin.query_parameter("%BATCH_SIZE") == 16
    assert gin.query_parameter("%TRAIN_STEPS") == 30000
    assert gin.query_parameter("%LEARNING_RATE") == 0.3
    opt = gin.query_parameter("%OPTIMIZER")
    assert opt.configurable.name == (optimizer or "adamw")
    if optimizer is None:
        assert gin.query_parameter("%WEIGHT_DECAY") == 0.01


def test_gin_ept_ablation_switches(clean_gin):
    gin_utils.parse_gin(["models/t5_1_1_tiny.gin", "ept.gin"],
                        ["EPT_ACTIVATION = 'gelu'", "EPT_RESIDUAL = True", "EPT_HIDDEN = 4",
                         "LEARNING_RATE = 0.01"], finalize=False)
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    prompt = model.prompt
    assert (prompt.activation, prompt.residual, prompt.hidden) == ("gelu", True, 4)
    assert gin.query_parameter("%LEARNING_RATE") == 0.01
