"""Greedy decoding and temperature sampling with the decoder's key/value cache.

Works with any module that has the T5X `encode` / `decode` interface (`T5`, `PromptedT5`).
`decode_tokens` is pure and jit-compatible; `make_decoder_fn` returns a jitted closure.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from jax import lax

Array = jnp.ndarray


def _init_cache(module, variables, encoded, encoder_input_tokens, max_decode_length):
    """Creates the `cache` collection sized for `max_decode_length` decoder positions."""
    batch = encoder_input_tokens.shape[0]
    dummy = jnp.ones((batch, max_decode_length), jnp.int32)
    _, state = module.apply(variables, encoded, encoder_input_tokens, dummy, dummy,
                            enable_dropout=False, decode=True,
                            max_decode_length=max_decode_length, mutable=["cache"],
                            method=module.decode)
    return jax.tree_util.tree_map(jnp.zeros_like, state["cache"])


def decode_tokens(module, variables: Mapping[str, Any], encoder_input_tokens: Array,
                  max_decode_length: int, *, eos_id: int = 1, temperature: float = 0.0,
                  top_k: int = 0, rng: Optional[Array] = None,
                  decoder_start_id: int = 0) -> Array:
    """Generates `[B, max_decode_length]` tokens (pad 0 after EOS).

    `temperature == 0` is greedy argmax; otherwise samples from softmax(logits / T),
    optionally restricted to the `top_k` largest logits. `variables` holds at least
    `params` (and any other non-cache collections the module reads).
    """
    variables = {k: v for k, v in variables.items() if k != "cache"}
    encoded = module.apply(variables, encoder_input_tokens, enable_dropout=False,
                           method=module.encode)
    cache = _init_cache(module, variables, encoded, encoder_input_tokens, max_decode_length)
    batch = encoder_input_tokens.shape[0]
    if temperature > 0 and rng is None:
        raise ValueError("temperature sampling needs an rng key")
    rng = jax.random.PRNGKey(0) if rng is None else rng

    def step(state):
        i, cache, cur, out, done, rng = state
        logits, new_state = module.apply(
            {**variables, "cache": cache}, encoded, encoder_input_tokens, cur[:, None],
            cur[:, None], enable_dropout=False, decode=True, max_decode_length=max_decode_length,
            mutable=["cache"], method=module.decode)
        logits = logits[:, -1, :].astype(jnp.float32)
        rng, sub = jax.random.split(rng)
        if temperature > 0:
            scaled = logits / temperature
            if top_k:
                kth = lax.top_k(scaled, top_k)[0][:, -1:]
                scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
            nxt = jax.random.categorical(sub, scaled, axis=-1)
        else:
            nxt = jnp.argmax(logits, axis=-1)
        nxt = jnp.where(done, 0, nxt).astype(jnp.int32)
        out = lax.dynamic_update_slice(out, nxt[:, None], (0, i))
        done = done | (nxt == eos_id)
        return i + 1, new_state["cache"], nxt, out, done, rng

    def cond(state):
        i, _, _, _, done, _ = state
        return (i < max_decode_length) & ~jnp.all(done)

    init = (jnp.array(0, jnp.int32), cache, jnp.full((batch,), decoder_start_id, jnp.int32),
            jnp.zeros((batch, max_decode_length), jnp.int32), jnp.zeros((batch,), bool), rng)
    return lax.while_loop(cond, step, init)[3]


def make_decoder_fn(module, max_decode_length: int, **kwargs):
    """Jitted `fn(variables, encoder_input_tokens[, rng]) -> [B, L]` tokens."""

    @jax.jit
    def fn(variables, encoder_input_tokens, rng=None):
        return decode_tokens(module, variables, encoder_input_tokens, max_decode_length,
                             rng=rng, **kwargs)

    return fn


greedy_decode = functools.partial(decode_tokens, temperature=0.0)
