"""`MaskedSoftPrompt`: a soft prompt with XPrompt's token and piece masks.

Params: `prompt` `[m, e]` (same path as `SoftPrompt`, so stage-1 prompts load unchanged).
Non-trainable variables in the `prompt_masks` collection: `token_mask` gamma `[m]` and
`piece_mask` zeta `[m, k]` (k pieces of e/k dims each), initialised to ones.

    masked prompt = P * gamma[:, None] * repeat(zeta, e/k, axis=-1)

Masks may also be given per example (`[B, m]`, `[B, m, k]`): the output is then
`[B, m, e]`. Importance scoring differentiates the loss with respect to such per-example
masks; candidate search stacks several candidates' masks along the batch.

`token_prune_mode='remove'` (default) also removes tokens with gamma == 0 from attention
(a zero vector would still take attention weight); `'zero'` keeps the paper's literal
gamma * P (the zero vector stays attendable).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

from ..prompts import initializers
from ..prompts.soft_prompt import PROMPT_AXES

MASKS = "prompt_masks"
TOKEN_PRUNE_MODES = ("remove", "zero")


def apply_masks(prompt: jnp.ndarray, gamma: jnp.ndarray, zeta: jnp.ndarray,
                num_pieces: int) -> jnp.ndarray:
    """`prompt` `[m, E]` times the token mask `gamma` `[..., m]` and the piece mask `zeta`
    `[..., m, k]` (each piece covers E / k embedding dims) -> `[..., m, E]`."""
    length, embed_dim = prompt.shape
    if gamma.shape[-1] != length or zeta.shape[-2:] != (length, num_pieces):
        raise ValueError(f"prompt masks have shapes {gamma.shape} / {zeta.shape}; expected "
                         f"[..., {length}] / [..., {length}, {num_pieces}]")
    piece_values = jnp.repeat(zeta, embed_dim // num_pieces, axis=-1)  # [..., m, E]
    return prompt * gamma[..., None] * piece_values


class MaskedSoftPrompt(nn.Module):
    """Soft prompt `[m, e]` with token mask `[m]` and piece mask `[m, k]` (see module doc)."""

    length: int = 20
    init: Callable = initializers.uniform()
    num_pieces: int = 16
    token_prune_mode: str = "remove"

    def _masks(self, embed_dim: int):
        if self.token_prune_mode not in TOKEN_PRUNE_MODES:
            raise ValueError(f"token_prune_mode={self.token_prune_mode!r}; expected one of "
                             f"{TOKEN_PRUNE_MODES}")
        if embed_dim % self.num_pieces:
            raise ValueError(f"XPrompt pieces: embedding size {embed_dim} is not divisible by "
                             f"num_pieces k={self.num_pieces}")
        token_mask = self.variable(MASKS, "token_mask", jnp.ones, (self.length,), jnp.float32)
        piece_mask = self.variable(MASKS, "piece_mask", jnp.ones,
                                   (self.length, self.num_pieces), jnp.float32)
        return token_mask.value, piece_mask.value

    @nn.compact
    def __call__(self, embedded: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, E]` -> masked prompt `[m, E]` (or `[B, m, E]` with per-example masks)."""
        embed_dim = embedded.shape[-1]
        prompt = nn_partitioning.param_with_axes("prompt", self.init, (self.length, embed_dim),
                                                 jnp.float32, axes=PROMPT_AXES)
        gamma, zeta = self._masks(embed_dim)
        return apply_masks(prompt, gamma, zeta, self.num_pieces)

    def position_mask(self, batch_size: int) -> jnp.ndarray:
        """`[B, m]` bool: False for removed tokens (mode 'remove'); all True for 'zero'."""
        gamma = self.get_variable(MASKS, "token_mask")
        if gamma is None:
            gamma = jnp.ones((self.length,), jnp.float32)
        if self.token_prune_mode == "zero":
            gamma = jnp.ones_like(gamma)
        return jnp.broadcast_to(gamma > 0, (batch_size, self.length))
