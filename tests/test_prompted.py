"""PromptedT5: prefix placement, extended masks (full and incremental decode), position
masks, packing rejection, bf16 with a float32 prompt."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.models import PromptedT5, T5, T5Config
from xprompt_jax.prompts import SoftPrompt, initializers

CFG = dict(vocab_size=80, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
           num_decoder_layers=2, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, dropout_rate=0.0,
           mlp_activations=("gelu", "linear"), logits_via_embedding=False)


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, 80, (3, 9))
    enc[1, 5:] = 0
    tgt = rng.randint(2, 80, (3, 5))
    dec = np.concatenate([np.zeros((3, 1), int), tgt[:, :-1]], axis=1)
    return jnp.asarray(enc), jnp.asarray(dec), jnp.asarray(tgt)


def _prompted(prompt_value, **cfg):
    return PromptedT5(T5Config(**{**CFG, **cfg}),
                      prompt=SoftPrompt(prompt_value.shape[0], initializers.from_array(prompt_value)))


def test_prompt_equals_prefixed_embeddings_through_plain_t5():
    """PromptedT5 == T5.encode_embedded on [P; embed(x)] with the extended mask."""
    enc, dec, tgt = _batch()
    prompt = np.random.RandomState(1).uniform(-0.5, 0.5, (4, 16)).astype(np.float32)
    model = _prompted(prompt)
    variables = model.init(jax.random.PRNGKey(0), enc, dec, tgt, enable_dropout=False)
    logits = model.apply(variables, enc, dec, tgt, enable_dropout=False)

    plain = T5(T5Config(**CFG))
    params = {k: v for k, v in variables["params"].items() if k != "prompt"}
    embedded = params["token_embedder"]["embedding"][enc]
    x = jnp.concatenate([jnp.broadcast_to(prompt, (3, 4, 16)), embedded], axis=1)
    valid = jnp.concatenate([jnp.ones((3, 4), bool), enc > 0], axis=1)
    encoded = plain.apply({"params": params}, x, valid, enable_dropout=False,
                          method=plain.encode_embedded)
    ref = plain.apply({"params": params}, encoded, enc, dec, tgt, enable_dropout=False,
                      encoder_valid_mask=valid, method=plain.decode)
    np.testing.assert_allclose(logits, ref, rtol=1e-6, atol=1e-6)
    # and the prompt matters
    other = model.apply(jax.tree_util.tree_map(lambda v: v, {**variables, "params": {
        **variables["params"], "prompt": {"prompt": jnp.zeros((4, 16))}}}), enc, dec, tgt,
        enable_dropout=False)
    assert float(jnp.max(jnp.abs(other - logits))) > 1e-3


def test_incremental_decoding_with_prompt_matches_full_forward():
    enc, dec, tgt = _batch(2)
    prompt = np.random.RandomState(3).uniform(-0.5, 0.5, (3, 16)).astype(np.float32)
    model = _prompted(prompt)
    variables = model.init(jax.random.PRNGKey(0), enc, dec, tgt, enable_dropout=False)
    full = model.apply(variables, enc, dec, tgt, enable_dropout=False)
    encoded = model.apply(variables, enc, enable_dropout=False, method=model.encode)
    assert encoded.shape[1] == 3 + enc.shape[1]
    length = dec.shape[1]
    _, state = model.apply(variables, encoded, enc, dec, tgt, enable_dropout=False, decode=True,
                           max_decode_length=length, mutable=["cache"], method=model.decode)
    cache = jax.tree_util.tree_map(jnp.zeros_like, state["cache"])
    for i in range(length):
        step_logits, state = model.apply({**variables, "cache": cache}, encoded, enc,
                                         dec[:, i:i + 1], tgt[:, i:i + 1], enable_dropout=False,
                                         decode=True, max_decode_length=length,
                                         mutable=["cache"], method=model.decode)
        cache = state["cache"]
        np.testing.assert_allclose(step_logits[:, 0], full[:, i], rtol=1e-5, atol=1e-5)


class _PromptWithPositionMask(nn.Module):
    """A test prompt module that drops positions given by a fixed mask."""

    value: np.ndarray
    keep: tuple

    @nn.compact
    def __call__(self, embedded):
        return self.param("prompt", lambda *_: jnp.asarray(self.value))

    def position_mask(self, batch_size):
        return jnp.broadcast_to(jnp.asarray(self.keep, bool), (batch_size, len(self.keep)))


def test_position_mask_removes_prompt_positions_from_attention():
    """Masked prompt positions have no influence on any output; unmasked ones do."""
    enc, dec, tgt = _batch(4)
    prompt = np.random.RandomState(5).uniform(-0.5, 0.5, (4, 16)).astype(np.float32)
    changed = prompt.copy()
    changed[[1, 3]] = 123.0  # new values in rows 1 and 3 only
    base = _prompted(prompt)
    params = base.init(jax.random.PRNGKey(0), enc, dec, tgt, enable_dropout=False)["params"]

    def run(keep, value):
        model = PromptedT5(T5Config(**CFG), prompt=_PromptWithPositionMask(prompt, keep))
        variables = {"params": {**params, "prompt": {"prompt": jnp.asarray(value)}}}
        return model.apply(variables, enc, dec, tgt, enable_dropout=False)

    dropped = (True, False, True, False)
    np.testing.assert_allclose(run(dropped, changed), run(dropped, prompt), rtol=1e-6, atol=1e-6)
    kept = (True, True, True, True)
    assert float(jnp.max(jnp.abs(run(kept, changed) - run(kept, prompt)))) > 1e-3


def test_packing_is_rejected_with_a_clear_error():
    enc, dec, tgt = _batch()
    model = _prompted(np.zeros((2, 16), np.float32))
    variables = model.init(jax.random.PRNGKey(0), enc, dec, tgt, enable_dropout=False)
    with pytest.raises(ValueError, match="pack=False"):
        model.apply(variables, enc, dec, tgt, encoder_segment_ids=jnp.ones_like(enc),
                    decoder_segment_ids=jnp.ones_like(tgt), enable_dropout=False)


def test_prompt_stays_float32_in_a_bfloat16_model():
    enc, dec, tgt = _batch()
    prompt = np.random.RandomState(6).uniform(-0.5, 0.5, (2, 16)).astype(np.float32)
    model = _prompted(prompt, dtype="bfloat16")
    variables = model.init(jax.random.PRNGKey(0), enc, dec, tgt, enable_dropout=False)
    assert variables["params"]["prompt"]["prompt"].dtype == jnp.float32
    assert variables["params_axes"]["prompt"]["prompt_axes"].names == ("prompt", "prompt_embed")

    def loss(p):
        full = {"params": {**variables["params"], "prompt": {"prompt": p}}}
        return jnp.mean(model.apply(full, enc, dec, tgt, enable_dropout=False))

    grad = jax.grad(loss)(variables["params"]["prompt"]["prompt"])
    assert grad.dtype == jnp.float32 and float(jnp.max(jnp.abs(grad))) > 0
    tokens = model.apply(variables, method=model.prompt_tokens)
    np.testing.assert_array_equal(tokens, prompt)
