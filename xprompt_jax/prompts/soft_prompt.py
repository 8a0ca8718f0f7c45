"""`SoftPrompt`: a trainable `[m, e]` prompt (Lester et al. 2021).

Prompt modules only *produce* the prompt; the prompted model prepends it. They are called
with the embedded encoder input `[B, T, E]` (for its embed size and dtype) and return
`[m, e]` (shared by the batch) or `[B, m, e]`. A module may also define
`position_mask(batch_size) -> [B, m] bool` to drop prompt positions from attention.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

from . import initializers

PROMPT_AXES = ("prompt", "prompt_embed")


class SoftPrompt(nn.Module):
    """Param `prompt` `[length, e]`, float32, logical axes `('prompt', 'prompt_embed')`."""

    length: int = 100
    init: Callable = initializers.uniform()

    @nn.compact
    def __call__(self, embedded: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, E]` -> `[m, E]` (float32; the prompted model casts it to the compute dtype)."""
        if self.length <= 0:
            raise ValueError(f"SoftPrompt.length must be positive, got {self.length}")
        return nn_partitioning.param_with_axes(
            "prompt", self.init, (self.length, embedded.shape[-1]), jnp.float32,
            axes=PROMPT_AXES)
