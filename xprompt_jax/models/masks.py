"""Attention masks and biases (T5X conventions: 1 = attend, 0 = masked).

Shapes: masks are `[B, 1, Q, K]` (broadcast over heads); `bias_from_mask` turns a mask into
an additive bias of the same shape.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax.numpy as jnp

Array = jnp.ndarray

# T5X uses -1e10 for masked logits; large but finite so fully masked rows stay finite.
MASKED_LOGIT = -1e10


def make_attention_mask(query_input: Array, key_input: Array,
                        pairwise_fn: Callable = jnp.multiply, dtype=jnp.float32) -> Array:
    """`[B, Q]` x `[B, K]` -> `[B, 1, Q, K]` mask from a pairwise function."""
    mask = pairwise_fn(query_input[..., :, None], key_input[..., None, :])
    return mask[..., None, :, :].astype(dtype)


def make_causal_mask(x: Array, dtype=jnp.float32) -> Array:
    """`[B, T]` -> `[B, 1, T, T]` lower-triangular mask."""
    idxs = jnp.broadcast_to(jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape)
    return make_attention_mask(idxs, idxs, jnp.greater_equal, dtype=dtype)


def combine_masks(*masks: Optional[Array], dtype=jnp.float32) -> Optional[Array]:
    """Logical AND of the non-None masks (None if all are None)."""
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    mask = masks[0]
    for other in masks[1:]:
        mask = jnp.logical_and(mask, other)
    return mask.astype(dtype)


def combine_biases(*biases: Optional[Array]) -> Optional[Array]:
    """Sum of the non-None biases (None if all are None)."""
    biases = [b for b in biases if b is not None]
    if not biases:
        return None
    out = biases[0]
    for other in biases[1:]:
        out = out + other
    return out


def make_decoder_mask(decoder_target_tokens: Array, dtype=jnp.float32,
                      decoder_segment_ids: Optional[Array] = None) -> Array:
    """Causal, padding (target > 0) and segment mask for decoder self-attention: `[B, 1, T, T]`."""
    valid = decoder_target_tokens > 0
    masks = [make_causal_mask(decoder_target_tokens, dtype=dtype),
             make_attention_mask(valid, valid, dtype=dtype)]
    if decoder_segment_ids is not None:
        masks.append(make_attention_mask(decoder_segment_ids, decoder_segment_ids,
                                         jnp.equal, dtype=dtype))
    return combine_masks(*masks, dtype=dtype)


def bias_from_mask(mask: Optional[Array], dtype) -> Optional[Array]:
    """0 where mask > 0, MASKED_LOGIT elsewhere; same shape as `mask`."""
    if mask is None:
        return None
    return jnp.where(mask > 0, 0.0, MASKED_LOGIT).astype(dtype)
