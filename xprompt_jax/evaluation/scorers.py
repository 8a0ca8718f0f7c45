"""The jitted kernels of evaluation: verbalizer scores and greedy decoding.

Rank classification encodes each example once and scores all its L verbalizers from that
encoding: the verbalizers lie side by side in one decoder row (`decoder_segment_ids`,
block-diagonal causal mask; `training.data.option_features`), so the encoder and the
decoder's cross-attention keys/values run once per example instead of L times. T5 has no
absolute positions and its relative position biases depend only on offsets within a
segment, so each verbalizer's score equals the score of a separate (example, verbalizer)
row up to float rounding (tests/test_eval_speed.py checks it against that per-row
reference; bench/eval_speed.py measures the speed-up).

The jits are module-level with the (hashable) model static, so evaluators of equal models
(stage 1 and rewind trainers, references, serving) share compiled executables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..fileio import host_array
from ..models import decoding


def token_log_probs(logits, targets):
    """`[B, T, V]` logits, `[B, T]` targets -> `[B, T]` log p(target) (float32), without a
    `[B, T, V]` log-softmax buffer (logit - logsumexp)."""
    logits = logits.astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32),
                                       axis=-1)[..., 0]
    return target_logit - jax.nn.logsumexp(logits, axis=-1)


def option_scores(model, variables, batch, num_options: int):
    """`[B, L]` sums of target-token log-probabilities of each of the L = `num_options`
    verbalizers of a row (`option_features`: encoder `[B, S]`, decoder rows `[B, T]` with
    segments 1..L); one encoder pass per row; 0 for absent options."""
    tokens = batch["encoder_input_tokens"]
    encoded = model.apply(variables, tokens, enable_dropout=False,
                          method=model.encode)  # [B, S(+m), E]
    logits = model.apply(variables, encoded, tokens, batch["decoder_input_tokens"],
                         batch["decoder_target_tokens"],
                         decoder_segment_ids=batch["decoder_segment_ids"],
                         enable_dropout=False, method=model.decode)  # [B, T, V]
    token_logp = token_log_probs(logits, batch["decoder_target_tokens"])
    token_logp = token_logp * batch["decoder_loss_weights"]
    segment = batch["decoder_segment_ids"][..., None] == jnp.arange(1, num_options + 1)
    return jnp.sum(jnp.where(segment, token_logp[..., None], 0.0), axis=1)  # [B, L]


def decode(model, variables, tokens, max_decode_length: int, eos_id: int):
    """Greedy decode `[B, S]` -> `[B, max_decode_length]` token ids."""
    return decoding.decode_tokens(model, variables, tokens, max_decode_length, eos_id=eos_id)


_option_scores_jit = jax.jit(option_scores, static_argnums=(0, 3))
_decode_jit = jax.jit(decode, static_argnums=(0, 3, 4))


def score_options(model, variables, features, num_options: int):
    """Host `[B, L]` verbalizer scores of an `option_features` batch (jitted)."""
    return host_array(_option_scores_jit(model, variables, features, num_options))


def generate(model, variables, tokens, max_decode_length: int, eos_id: int):
    """Host `[B, max_decode_length]` greedy decodes of `[B, S]` tokens (jitted)."""
    return host_array(_decode_jit(model, variables, jnp.asarray(tokens), max_decode_length,
                                  eos_id))
