"""T5 model: incremental decoding equals the full forward; sharded forward equals one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.models import T5, T5Config, greedy_decode
from xprompt_jax.training import partitioning

TINY = dict(vocab_size=64, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
            num_encoder_layers=2, num_decoder_layers=2, relative_attention_num_buckets=8,
            relative_attention_max_distance=16, dropout_rate=0.0)


def _batch(rng, batch=8, src=12, tgt=7, vocab=64):
    enc = rng.randint(2, vocab, (batch, src))
    enc[1, 7:] = 0
    enc[3, 4:] = 0
    tgt_tokens = rng.randint(2, vocab, (batch, tgt))
    tgt_tokens[2, 4:] = 0
    dec_in = np.concatenate([np.zeros((batch, 1), int), tgt_tokens[:, :-1]], axis=1)
    return jnp.asarray(enc), jnp.asarray(dec_in), jnp.asarray(tgt_tokens)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_incremental_decoding_matches_full_forward(version):
    cfg = T5Config(**TINY, mlp_activations=("relu",) if version == "1.0" else ("gelu", "linear"),
                   logits_via_embedding=version == "1.0")
    model = T5(cfg)
    enc, dec_in, tgt = _batch(np.random.RandomState(1), tgt=6)
    tgt = jnp.where(tgt > 0, tgt, 5)  # full-length targets: every position is compared
    dec_in = jnp.concatenate([jnp.zeros_like(dec_in[:, :1]), tgt[:, :-1]], axis=1)
    variables = model.init(jax.random.PRNGKey(0), enc, dec_in, tgt, enable_dropout=False)
    full = model.apply(variables, enc, dec_in, tgt, enable_dropout=False)

    encoded = model.apply(variables, enc, enable_dropout=False, method=model.encode)
    length = dec_in.shape[1]
    _, state = model.apply(variables, encoded, enc, dec_in, tgt, enable_dropout=False,
                           decode=True, max_decode_length=length, mutable=["cache"],
                           method=model.decode)
    cache = jax.tree_util.tree_map(jnp.zeros_like, state["cache"])
    steps = []
    for i in range(length):
        logits, state = model.apply({**variables, "cache": cache}, encoded, enc,
                                    dec_in[:, i:i + 1], tgt[:, i:i + 1], enable_dropout=False,
                                    decode=True, max_decode_length=length, mutable=["cache"],
                                    method=model.decode)
        cache = state["cache"]
        steps.append(logits[:, 0])
    incremental = jnp.stack(steps, axis=1)
    np.testing.assert_allclose(incremental, full, rtol=1e-5, atol=1e-5)


def test_greedy_decode_follows_argmax_of_full_forward():
    """Each greedy token is the argmax of a full (uncached) forward on the prefix so far."""
    cfg = T5Config(**TINY, mlp_activations=("gelu", "linear"), logits_via_embedding=False)
    model = T5(cfg)
    enc, dec_in, tgt = _batch(np.random.RandomState(2))
    variables = model.init(jax.random.PRNGKey(3), enc, dec_in, tgt, enable_dropout=False)
    variables = jax.tree_util.tree_map(lambda x: x * 3.0, variables)  # sharper, less ties
    out = np.asarray(greedy_decode(model, variables, enc, 5, eos_id=-1))
    prefix = np.zeros((enc.shape[0], 1), int)
    for i in range(5):
        logits = model.apply(variables, enc, jnp.asarray(prefix), jnp.ones_like(prefix),
                             enable_dropout=False)
        np.testing.assert_array_equal(out[:, i], np.argmax(logits[:, -1], axis=-1))
        prefix = np.concatenate([prefix, out[:, i:i + 1]], axis=1)


@pytest.mark.parametrize("lookup", ["gather", "one_hot"])
def test_forward_sharded_on_4x2_mesh_matches_single_device(lookup):
    cfg = T5Config(**TINY, mlp_activations=("gelu", "linear"), logits_via_embedding=False,
                   embedding_lookup=lookup)
    model = T5(cfg)
    enc, dec_in, tgt = _batch(np.random.RandomState(4))
    variables = model.init(jax.random.PRNGKey(5), enc, dec_in, tgt, enable_dropout=False)
    single = np.asarray(jax.jit(lambda p: model.apply({"params": p}, enc, dec_in, tgt,
                                                      enable_dropout=False))(variables["params"]))

    mesh = partitioning.make_mesh((4, 2))
    rules = partitioning.standard_logical_axis_rules()
    shardings = partitioning.param_shardings(variables["params"], variables["params_axes"],
                                             mesh, rules)
    # mlp/vocab/heads are split over 'model': the rules really shard the weights.
    assert shardings["decoder"]["logits_dense"]["kernel"].spec == jax.sharding.PartitionSpec(None, "model")
    params = jax.device_put(variables["params"], shardings)
    batch_sh = partitioning.batch_sharding(mesh)
    with partitioning.activate(mesh, rules):
        fn = jax.jit(lambda p, e, d, t: model.apply({"params": p}, e, d, t, enable_dropout=False),
                     in_shardings=(shardings, batch_sh, batch_sh, batch_sh))
        sharded = fn(params, *(jax.device_put(x, batch_sh) for x in (enc, dec_in, tgt)))
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(sharded), single, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_close_to_float32():
    base = dict(TINY, mlp_activations=("gelu", "linear"), logits_via_embedding=False)
    enc, dec_in, tgt = _batch(np.random.RandomState(6))
    m32, m16 = T5(T5Config(**base)), T5(T5Config(**base, dtype="bfloat16"))
    variables = m32.init(jax.random.PRNGKey(7), enc, dec_in, tgt, enable_dropout=False)
    l32 = m32.apply(variables, enc, dec_in, tgt, enable_dropout=False)
    l16 = m16.apply(variables, enc, dec_in, tgt, enable_dropout=False)
    assert l16.dtype == jnp.float32  # logits are computed in float32, as in T5X
    assert jax.tree_util.tree_leaves(variables["params"])[0].dtype == jnp.float32
    # Tolerances in units of bf16's unit roundoff u = 2**-8 (8 significand bits). The
    # yardstick, computed independently: the float32 model on the bf16-rounded weights
    # (relative rounding error <= u/2 per weight, activations exact). bf16 compute rounds
    # the same weights and, in addition, the activations of every layer, so its error must
    # clearly exceed the weights-only one (1.85x here; a model that leaves attention or the
    # whole computation in float32 is at <= 1.2x) and stays within a few u.
    u = 2.0 ** -8
    rel_rms = lambda x: float(jnp.sqrt(jnp.mean((x - l32) ** 2) / jnp.mean(l32 ** 2)))  # noqa
    rounded = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32),
                                     variables)
    weights_only = rel_rms(m32.apply(rounded, enc, dec_in, tgt, enable_dropout=False))
    assert u / 2 < weights_only < 2 * u
    assert 1.4 * weights_only < rel_rms(l16) < 4 * u
    assert float(jnp.max(jnp.abs(l16 - l32)) / jnp.max(jnp.abs(l32))) < 4 * u  # max: 2.35u


def test_dropout_changes_outputs_only_when_enabled():
    cfg = T5Config(**dict(TINY, dropout_rate=0.3), mlp_activations=("relu",))
    model = T5(cfg)
    enc, dec_in, tgt = _batch(np.random.RandomState(8))
    variables = model.init(jax.random.PRNGKey(9), enc, dec_in, tgt, enable_dropout=False)
    a = model.apply(variables, enc, dec_in, tgt, enable_dropout=False)
    b = model.apply(variables, enc, dec_in, tgt, enable_dropout=False)
    c = model.apply(variables, enc, dec_in, tgt, enable_dropout=True,
                    rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - c))) > 1e-3
