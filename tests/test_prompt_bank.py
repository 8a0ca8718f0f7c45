"""PromptBank: N prompts on one frozen model, one per example by its id token.

References are independent single-prompt models (`SoftPrompt`, `MaskedSoftPrompt`,
`ResPrompt`) run on the same text without the id token."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.models import PromptedT5, T5Config
from xprompt_jax.prompts import SoftPrompt, initializers
from xprompt_jax.prompts.bank import (PromptBank, check_prompt_ids, per_prompt_loss_weights,
                                      tile_for_prompts, with_prompt_ids)
from xprompt_jax.prompts.resprompt import ResPrompt
from xprompt_jax.xprompt.masked_prompt import MaskedSoftPrompt

CFG = dict(vocab_size=80, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
           num_decoder_layers=2, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, dropout_rate=0.0,
           mlp_activations=("gelu", "linear"), logits_via_embedding=False)
M, E = 4, 16


def _batch(b=5, seed=0):
    rng = np.random.RandomState(seed)
    enc = rng.randint(2, 80, (b, 9))
    enc[1, 5:] = 0
    tgt = rng.randint(2, 80, (b, 5))
    tgt[-1, 3:] = 0
    dec = np.concatenate([np.zeros((b, 1), int), tgt[:, :-1]], axis=1)
    return enc, dec, tgt


def _init(model, enc, dec, tgt):
    return model.init(jax.random.PRNGKey(0), jnp.asarray(enc), jnp.asarray(dec),
                      jnp.asarray(tgt), enable_dropout=False)


def _loss(model, variables, enc, dec, tgt, rows=None):
    """Summed token loss of the batch (of `rows` only: a 0/1 `[B]` weight, so every
    reference has the same shapes and compiles once)."""
    row_weight = np.ones(len(tgt), np.float32) if rows is None else rows

    def per_example(params):
        logits = model.apply({**variables, "params": params}, enc, dec, tgt,
                             enable_dropout=False)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        nll = -jnp.take_along_axis(logp, jnp.asarray(tgt)[..., None], -1)[..., 0]
        return jnp.sum(nll * (tgt > 0) * row_weight[:, None])
    return per_example


def _bank_model(prompts):
    n = prompts.shape[0]
    bank = PromptBank(SoftPrompt(M), num_prompts=n)
    return PromptedT5(T5Config(**CFG), prompt=bank)


def test_bank_of_one_equals_soft_prompt_bitwise():
    enc, dec, tgt = _batch()
    p = np.random.RandomState(1).uniform(-0.5, 0.5, (M, E)).astype(np.float32)
    single = PromptedT5(T5Config(**CFG), prompt=SoftPrompt(M, initializers.from_array(p)))
    v1 = _init(single, enc, dec, tgt)
    bank = _bank_model(p[None])
    ids_enc = with_prompt_ids({"encoder_input_tokens": enc}, 0, 80)["encoder_input_tokens"]
    vb = _init(bank, ids_enc, dec, tgt)
    assert vb["params"]["prompt"]["bank"]["prompt"].shape == (1, M, E)
    params = dict(vb["params"])
    params.update({k: v for k, v in v1["params"].items() if k != "prompt"})
    params["prompt"] = {"bank": {"prompt": jnp.asarray(p)[None]}}
    vb = {**vb, "params": params}
    out1 = np.asarray(single.apply(v1, enc, dec, tgt, enable_dropout=False))
    outb = np.asarray(bank.apply(vb, ids_enc, dec, tgt, enable_dropout=False))
    np.testing.assert_array_equal(out1, outb)  # bitwise
    # logical axes: the bank axis leads, then the prompt's own axes
    axes = vb["params_axes"]["prompt"]["bank"]["prompt_axes"].names
    assert tuple(axes) == ("prompt_bank", "prompt", "prompt_embed")
    g1 = jax.grad(_loss(single, v1, enc, dec, tgt))(v1["params"])["prompt"]["prompt"]
    gb = jax.grad(_loss(bank, vb, ids_enc, dec, tgt))(params)["prompt"]["bank"]["prompt"]
    np.testing.assert_allclose(np.asarray(gb[0]), np.asarray(g1), rtol=1e-6, atol=1e-7)


def _single_variables(kind, bank_vars, i, frozen):
    """Entry i of a bank's variables as the variables of a single-prompt model."""
    params = {**frozen, "prompt": jax.tree_util.tree_map(
        lambda x: x[i], bank_vars["params"]["prompt"]["bank"])}
    out = {"params": params}
    if "prompt_masks" in bank_vars:
        out["prompt_masks"] = {"prompt": jax.tree_util.tree_map(
            lambda x: x[i], bank_vars["prompt_masks"]["prompt"]["bank"])}
    return out


INNER = {
    "soft": lambda: SoftPrompt(M),
    "masked": lambda: MaskedSoftPrompt(M, num_pieces=4, token_prune_mode="remove"),
    "resprompt": lambda: ResPrompt(M, bottleneck=3),
}


@pytest.mark.parametrize("kind", sorted(INNER))
def test_per_example_prompts_match_own_prompt_alone(kind):
    """Mixed ids in one batch: each example's logits and its prompt's gradient equal a
    single-prompt model with that prompt run on that example alone."""
    n = 3
    enc, dec, tgt = _batch(b=5)
    ids = np.array([2, 0, 1, 2, 0])
    bank = PromptedT5(T5Config(**CFG), prompt=PromptBank(INNER[kind](), num_prompts=n))
    single = PromptedT5(T5Config(**CFG), prompt=INNER[kind]())
    ids_enc = with_prompt_ids({"encoder_input_tokens": enc}, ids, 80, n)["encoder_input_tokens"]
    vb = _init(bank, ids_enc, dec, tgt)
    entries = jax.tree_util.tree_leaves(vb["params"]["prompt"])
    assert all(x.shape[0] == n for x in entries)
    assert not np.allclose(entries[0][0], entries[0][1])  # entries initialised apart
    if kind == "masked":  # per-prompt masks: entry 1 loses token 1 and some pieces
        masks = jax.tree_util.tree_map(np.array, vb["prompt_masks"])
        masks["prompt"]["bank"]["token_mask"][1, 1] = 0.0
        masks["prompt"]["bank"]["piece_mask"][2, 0, :2] = 0.0
        vb = {**vb, "prompt_masks": masks}
    frozen = {k: v for k, v in vb["params"].items() if k != "prompt"}
    logits = np.asarray(bank.apply(vb, ids_enc, dec, tgt, enable_dropout=False))
    grads = jax.grad(_loss(bank, vb, ids_enc, dec, tgt))(vb["params"])["prompt"]
    for i in range(n):
        vi = _single_variables(kind, vb, i, frozen)
        rows = np.flatnonzero(ids == i)
        # the single-prompt model on the whole batch (rows are independent in T5), its
        # loss restricted to the rows of prompt i
        ref = np.asarray(single.apply(vi, enc, dec, tgt, enable_dropout=False))
        np.testing.assert_allclose(logits[rows], ref[rows], rtol=1e-5, atol=1e-5)
        gref = jax.grad(_loss(single, vi, enc, dec, tgt, (ids == i).astype(np.float32)))(
            vi["params"])
        got = jax.tree_util.tree_map(lambda x: x[i], grads["bank"])
        for a, b in zip(jax.tree_util.tree_leaves(got),
                        jax.tree_util.tree_leaves(gref["prompt"])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_out_of_range_ids():
    with pytest.raises(ValueError, match=r"bank of 3 prompts.*row 1: id 3"):
        check_prompt_ids([0, 3, 1], 3)
    with pytest.raises(ValueError, match="out of range"):
        with_prompt_ids({"encoder_input_tokens": np.ones((2, 3), int)}, [0, -1], 80, 2)
    # inside jit: NaN rows, never a silently clamped prompt
    enc, dec, tgt = _batch(b=2)
    bank = _bank_model(np.zeros((2, M, E)))
    good = with_prompt_ids({"encoder_input_tokens": enc}, [0, 1], 80)["encoder_input_tokens"]
    variables = _init(bank, good, dec, tgt)
    bad = with_prompt_ids({"encoder_input_tokens": enc}, [0, 5], 80)["encoder_input_tokens"]
    logits = np.asarray(bank.apply(variables, bad, dec, tgt, enable_dropout=False))
    assert np.isfinite(logits[0]).all() and np.isnan(logits[1]).all()


def test_decode_path_and_tiling():
    """Greedy decoding (incremental decode rebuilds masks from raw tokens) of a tiled batch:
    row b*K+k equals the single-prompt decode of example b with prompt k."""
    from xprompt_jax.models import decoding

    n = 2
    enc, _, _ = _batch(b=3)
    bank = PromptedT5(T5Config(**CFG), prompt=PromptBank(SoftPrompt(M), num_prompts=n))
    single = PromptedT5(T5Config(**CFG), prompt=SoftPrompt(M))
    feats = tile_for_prompts({"encoder_input_tokens": enc}, [0, 1], 80, n)
    assert feats["encoder_input_tokens"].shape == (6, 10)
    assert list(feats["encoder_input_tokens"][:, 0]) == [80, 81] * 3
    vb = _init(bank, feats["encoder_input_tokens"], np.zeros((6, 4), int), np.ones((6, 4), int))
    frozen = {k: v for k, v in vb["params"].items() if k != "prompt"}
    out = np.asarray(decoding.decode_tokens(bank, vb, jnp.asarray(feats["encoder_input_tokens"]),
                                            4, eos_id=1))
    for k in range(n):
        ref = np.asarray(decoding.decode_tokens(single, _single_variables("soft", vb, k, frozen),
                                                jnp.asarray(enc), 4, eos_id=1))
        np.testing.assert_array_equal(out[k::n], ref)


def test_per_prompt_loss_weights():
    w = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], np.float32)
    out = per_prompt_loss_weights(w, np.array([0, 1, 0]), 2)
    np.testing.assert_allclose(out.sum(1), [2 / 5, 1.0, 3 / 5])
