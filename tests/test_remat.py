"""Rematerialisation of T5 layers (`T5Config.remat_policy`): same parameters, same gradients.

The reference is the same model with `remat_policy='none'` (no `jax.checkpoint` anywhere);
each policy must give the same loss and gradients (float32, dropout on with one rng:
tolerance 1e-5 relative, XLA may fuse the recomputed ops differently) and must really
insert a checkpoint into the traced program (else the comparison would be vacuous).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.models.config import T5Config
from xprompt_jax.models.prompted import PromptedT5
from xprompt_jax.models.remat import REMAT_POLICIES
from xprompt_jax.models.t5 import T5
from xprompt_jax.prompts.soft_prompt import SoftPrompt
from xprompt_jax.training.params import merge_params, split_params

POLICIES = [p for p in REMAT_POLICIES if p not in ("none", "minimal")]  # minimal: an alias


def _config(**kw):
    base = dict(vocab_size=64, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=48,
                num_encoder_layers=1, num_decoder_layers=2, mlp_activations=("gelu", "linear"),
                logits_via_embedding=False, dropout_rate=0.1, dtype="float32")
    base.update(kw)
    return T5Config(**base)


def _batch():
    rng = np.random.RandomState(0)
    enc = rng.randint(1, 64, size=(3, 7)).astype(np.int32)
    enc[0, 5:] = 0  # padding
    tgt = rng.randint(1, 64, size=(3, 5)).astype(np.int32)
    tgt[1, 3:] = 0
    dec_in = np.concatenate([np.zeros((3, 1), np.int32), tgt[:, :-1]], axis=1)
    return jnp.asarray(enc), jnp.asarray(dec_in), jnp.asarray(tgt)


def _loss(model, params, batch, rng):
    enc, dec_in, tgt = batch
    logits = model.apply({"params": params}, enc, dec_in, tgt, enable_dropout=True,
                         rngs={"dropout": rng})
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * (tgt > 0)) / jnp.sum(tgt > 0)


@pytest.fixture(scope="module")
def t5_params():
    batch = _batch()
    variables = T5(_config()).init(jax.random.PRNGKey(0), *batch, enable_dropout=False)
    return variables["params"]


def _assert_trees_close(got, want, rtol=1e-5, atol=1e-6):
    flat_g = jax.tree_util.tree_flatten_with_path(got)[0]
    flat_w = dict(jax.tree_util.tree_flatten_with_path(want)[0])
    assert [p for p, _ in flat_g] == list(flat_w)
    for path, g in flat_g:
        np.testing.assert_allclose(np.asarray(g), np.asarray(flat_w[path]), rtol=rtol,
                                   atol=atol, err_msg=jax.tree_util.keystr(path))


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="remat_policy='sometimes'"):
        _config(remat_policy="sometimes")


def test_parameter_tree_unchanged(t5_params):
    """T5X names (encoder/layers_0/attention/query/kernel, ...) and shapes are kept."""
    for policy in POLICIES:
        variables = jax.eval_shape(
            lambda r: T5(_config(remat_policy=policy)).init(r, *_batch(), enable_dropout=False),
            jax.random.PRNGKey(0))
        shapes = jax.tree_util.tree_map(lambda x: x.shape, variables["params"])
        assert shapes == jax.tree_util.tree_map(lambda x: x.shape, t5_params), policy
    assert "layers_1" in t5_params["decoder"]
    assert "query" in t5_params["encoder"]["layers_0"]["attention"]


def _grads(model, params, batch, rng):
    return jax.jit(jax.value_and_grad(lambda p: _loss(model, p, batch, rng)))(params)


def test_full_gradients_equal_without_remat(t5_params):
    """Gradients of every T5 weight (dropout on) equal the unrematerialised ones, for each
    policy; each policy's traced program contains a checkpoint, the reference's none."""
    batch, rng = _batch(), jax.random.PRNGKey(3)
    ref_model = T5(_config())
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: _loss(ref_model, p, batch, rng)))(t5_params))
    assert "checkpoint" not in jaxpr and "remat" not in jaxpr
    ref_loss, ref_grads = _grads(ref_model, t5_params, batch, rng)
    assert float(jnp.abs(ref_grads["encoder"]["layers_0"]["mlp"]["wo"]["kernel"]).max()) > 0
    for policy in POLICIES:
        model = T5(_config(remat_policy=policy))
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: _loss(model, p, batch, rng)))(t5_params))
        assert "checkpoint" in jaxpr or "remat" in jaxpr, f"{policy}: no checkpoint traced"
        loss, grads = _grads(model, t5_params, batch, rng)
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6, err_msg=policy)
        _assert_trees_close(grads, ref_grads)


def test_prompt_gradients_equal_without_remat():
    """Prompt tuning: gradient of the prompt only (frozen T5 closed over)."""
    batch, rng = _batch(), jax.random.PRNGKey(5)

    def prompted(cfg):
        return PromptedT5(config=cfg, prompt=SoftPrompt(length=4))

    ref_model = prompted(_config())
    variables = ref_model.init(jax.random.PRNGKey(1), *batch, enable_dropout=False)
    trainable, frozen = split_params(variables["params"], r".*prompt.*")

    def grads_of(model):
        fn = lambda tr: _loss(model, merge_params(tr, frozen), batch, rng)
        return jax.jit(jax.value_and_grad(fn))(trainable)

    ref_loss, ref_grads = grads_of(ref_model)
    for policy in ("dots_with_no_batch_dims_saveable",):
        loss, grads = grads_of(prompted(_config(remat_policy=policy)))
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6, err_msg=policy)
        _assert_trees_close(grads, ref_grads)


def test_decode_path_unaffected_by_remat(t5_params):
    """Incremental decoding (cache) with a remat config gives the same logits."""
    enc, _, _ = _batch()
    outs = []
    for policy in ("none", "full"):
        model = T5(_config(remat_policy=policy, dropout_rate=0.0))
        encoded = model.apply({"params": t5_params}, enc, enable_dropout=False,
                              method=model.encode)
        dec = jnp.zeros((3, 1), jnp.int32)
        init = model.apply({"params": t5_params}, encoded, enc, jnp.zeros((3, 4), jnp.int32),
                           jnp.ones((3, 4), jnp.int32), enable_dropout=False, decode=True,
                           max_decode_length=4, method=model.decode, mutable=["cache"])
        logits, _ = model.apply({"params": t5_params, **init[1]}, encoded, enc, dec,
                                jnp.ones_like(dec), enable_dropout=False, decode=True,
                                max_decode_length=4, method=model.decode, mutable=["cache"])
        outs.append(np.asarray(logits))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-6, atol=1e-6)


def test_gin_macro_sets_policy():
    """models/*.gin expose REMAT_POLICY (default 'none')."""
    import gin

    from xprompt_jax import gin_utils

    gin.clear_config()
    try:
        gin_utils.parse_gin(["models/t5_1_1_small.gin"],
                            ["REMAT_POLICY = 'full'"], [], finalize=False)
        cfg = gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()
        assert cfg.remat_policy == "full"
    finally:
        gin.clear_config()
