"""XPrompt masks and importance scores against independent references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.models import PromptedT5, T5Config
from xprompt_jax.prompts import initializers
from xprompt_jax.training import losses
from xprompt_jax.xprompt import MaskedSoftPrompt, make_mask_gradient_fn, mask_variables

CFG = T5Config(vocab_size=60, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
               num_encoder_layers=2, num_decoder_layers=2, relative_attention_num_buckets=8,
               relative_attention_max_distance=16, dropout_rate=0.0,
               mlp_activations=("gelu", "linear"), logits_via_embedding=False)
M, K = 5, 4


def _model(mode="remove", k=K):
    prompt = np.random.RandomState(0).uniform(-0.5, 0.5, (M, 16)).astype(np.float32)
    return PromptedT5(CFG, prompt=MaskedSoftPrompt(M, initializers.from_array(prompt),
                                                   num_pieces=k, token_prune_mode=mode))


def _batch(seed=1, b=4):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, 60, (b, 7))
    enc[0, 5:] = 0
    tgt = rng.randint(2, 60, (b, 3))
    tgt[1, 2:] = 0
    dec = np.concatenate([np.zeros((b, 1), int), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": jnp.asarray(enc), "decoder_input_tokens": jnp.asarray(dec),
            "decoder_target_tokens": jnp.asarray(tgt)}


def _init(model, batch):
    return model.init(jax.random.PRNGKey(0), batch["encoder_input_tokens"],
                      batch["decoder_input_tokens"], batch["decoder_target_tokens"],
                      enable_dropout=False)


def _logits(model, variables, batch, token_mask=None, piece_mask=None):
    variables = dict(variables)
    if token_mask is not None:
        variables["prompt_masks"] = mask_variables(jnp.asarray(token_mask, jnp.float32),
                                                   jnp.asarray(piece_mask, jnp.float32))
    return model.apply(variables, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                       batch["decoder_target_tokens"], enable_dropout=False)


def test_masks_are_a_collection_initialised_to_ones():
    model, batch = _model(), _batch()
    variables = _init(model, batch)
    masks = variables["prompt_masks"]["prompt"]
    np.testing.assert_array_equal(masks["token_mask"], np.ones(M))
    np.testing.assert_array_equal(masks["piece_mask"], np.ones((M, K)))
    assert "prompt_masks" not in variables["params"]


def test_embed_size_not_divisible_by_pieces_fails_clearly():
    with pytest.raises(ValueError, match="not divisible by num_pieces k=3"):
        _init(_model(k=3), _batch())


def test_fully_masked_piece_has_no_effect_on_logits():
    model, batch = _model(), _batch()
    variables = _init(model, batch)
    piece = np.ones((M, K), np.float32)
    piece[2, 1] = 0.0
    base = _logits(model, variables, batch, np.ones(M), piece)
    changed = jax.tree_util.tree_map(lambda x: x, variables)
    p = np.asarray(variables["params"]["prompt"]["prompt"]).copy()
    p[2, 4:8] = 77.0  # the values of piece (2, 1): e/k = 4 dims
    changed["params"] = {**variables["params"], "prompt": {"prompt": jnp.asarray(p)}}
    np.testing.assert_allclose(_logits(model, changed, batch, np.ones(M), piece), base,
                               rtol=1e-6, atol=1e-6)
    # while an unmasked piece does matter
    assert float(jnp.max(jnp.abs(_logits(model, changed, batch, np.ones(M), np.ones((M, K)))
                                 - _logits(model, variables, batch, np.ones(M), np.ones((M, K))))
                         )) > 1e-4


def test_removed_token_has_no_effect_but_zeroed_token_does():
    batch = _batch()
    token = np.ones(M, np.float32)
    token[3] = 0.0
    pieces = np.ones((M, K), np.float32)
    removed, zeroed = _model("remove"), _model("zero")
    variables = _init(removed, batch)
    p = np.asarray(variables["params"]["prompt"]["prompt"]).copy()
    p[3] = 0.0
    no_token3 = {**variables, "params": {**variables["params"], "prompt": {"prompt": p}}}
    full_ref = _logits(removed, no_token3, batch, np.ones(M), pieces)  # token 3 = zero vector
    out_removed = _logits(removed, variables, batch, token, pieces)
    out_zeroed = _logits(zeroed, variables, batch, token, pieces)
    # zero mode == a zero vector that is still attended
    np.testing.assert_allclose(out_zeroed, full_ref, rtol=1e-6, atol=1e-6)
    # remove mode differs from that (T5 attends to a zero vector) ...
    assert float(jnp.max(jnp.abs(out_removed - out_zeroed))) > 1e-5
    # ... and no value of the removed token changes any output
    p2 = np.asarray(variables["params"]["prompt"]["prompt"]).copy()
    p2[3] = 50.0
    other = {**variables, "params": {**variables["params"], "prompt": {"prompt": p2}}}
    np.testing.assert_allclose(_logits(removed, other, batch, token, pieces), out_removed,
                               rtol=1e-6, atol=1e-6)


def _per_example_loss(model, variables, batch, token_mask, piece_mask):
    logits = _logits(model, variables, batch, token_mask, piece_mask)
    weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
    return losses.per_example_loss(logits, batch["decoder_target_tokens"], weights)


def test_per_example_importance_equals_brute_force_and_inner_product_identity():
    model, batch = _model(), _batch()
    variables = _init(model, batch)
    trainable = {"prompt": variables["params"]["prompt"]}
    frozen = {"params": {k: v for k, v in variables["params"].items() if k != "prompt"}}
    token_mask, piece_mask = jnp.ones(M), jnp.ones((M, K))
    g_token, g_piece, count = jax.jit(make_mask_gradient_fn(model, per_example=True))(
        trainable, frozen, token_mask, piece_mask, batch)
    assert count == 4
    # brute force: one jax.grad per example
    ref_token, ref_piece = np.zeros(M), np.zeros((M, K))
    single_grad = jax.jit(jax.grad(
        lambda t, p, single: _per_example_loss(model, variables, single, t, p)[0],
        argnums=(0, 1)))
    for b in range(4):
        single = {k: v[b:b + 1] for k, v in batch.items()}
        gt, gp = single_grad(token_mask, piece_mask, single)
        ref_token += np.abs(np.asarray(gt))
        ref_piece += np.abs(np.asarray(gp))
        # identity: dL/dgamma_i = <dL/dP^_i, P_i>, P^ the masked prompt
        prompt = variables["params"]["prompt"]["prompt"]

        def loss_of_effective(effective):
            params = {**variables["params"], "prompt": {"prompt": effective}}
            return _per_example_loss(model, {**variables, "params": params}, single,
                                     token_mask, piece_mask)[0]

        g_eff = jax.jit(jax.grad(loss_of_effective))(prompt)  # masks are ones: P^ == P
        np.testing.assert_allclose(np.sum(np.asarray(g_eff) * np.asarray(prompt), axis=1),
                                   np.asarray(gt), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g_token), ref_token, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_piece), ref_piece, rtol=1e-4, atol=1e-7)
    # per_example=False is |gradient of the batch mean| (x B), a different quantity
    b_token, _, _ = make_mask_gradient_fn(model, per_example=False)(
        trainable, frozen, token_mask, piece_mask, batch)
    mean_grad = jax.grad(lambda t: jnp.mean(_per_example_loss(model, variables, batch, t,
                                                              piece_mask)))(token_mask)
    np.testing.assert_allclose(np.asarray(b_token), 4 * np.abs(np.asarray(mean_grad)),
                               rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(b_token) <= np.asarray(g_token) + 1e-6)  # triangle inequality
