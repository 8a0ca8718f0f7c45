"""`ResPrompt`: Residual Prompt Tuning (Razdaibiedina et al. 2023).

    out = P + LN(W_u act(W_d P + b_d) + b_u)          P: [n, e] -> out: [n, e]

with `W_d` `[e, b]`, `W_u` `[b, e]` (b = `bottleneck`, default 400), `act` ReLU, and
LayerNorm over e (eps 1e-5, learnable scale and bias; `layer_norm=False` drops it).
`shared=True` (the paper's default): one network for all tokens; `shared=False`: a separate
network (and LayerNorm) per token, kernels `[n, e, b]` / `[n, b, e]`.

Initialization: `P` from `init` (default U[-0.5, 0.5]); W and b as PyTorch's nn.Linear
(`layers.torch_uniform`: U[+-1/sqrt(fan_in)]), LayerNorm scale 1, bias 0 (the authors'
code uses those PyTorch modules).

Params (under `prompt/`): `prompt` `[n, e]`; `down/{kernel, bias}`, `up/{kernel, bias}`,
`layer_norm/{scale, bias}` (with a leading `[n]` axis when not shared).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from . import initializers
from .layers import Dense, LayerNorm, PerTokenDense, activation, param
from .soft_prompt import PROMPT_AXES


class ResPrompt(nn.Module):
    """`[B, T, E]` -> `P + LN(W_u act(W_d P + b_d) + b_u)` `[n, E]` float32."""

    length: int = 10
    bottleneck: int = 400
    layer_norm: bool = True
    shared: bool = True
    activation: str = "relu"
    layer_norm_eps: float = 1e-5
    init: Callable = initializers.uniform()

    @nn.compact
    def __call__(self, embedded: jnp.ndarray) -> jnp.ndarray:
        if self.length <= 0:
            raise ValueError(f"ResPrompt.length must be positive, got {self.length}")
        if self.bottleneck <= 0:
            raise ValueError(f"ResPrompt.bottleneck must be positive, got {self.bottleneck}")
        act = activation(self.activation)
        embed = embedded.shape[-1]
        raw = param(self, "prompt", self.init, (self.length, embed), PROMPT_AXES)  # [n, e]
        dense = Dense if self.shared else PerTokenDense
        x = dense(self.bottleneck, kernel_axes=("prompt_embed", "prompt_hidden"),
                  name="down")(raw)                                               # [n, b]
        x = dense(embed, kernel_axes=("prompt_hidden", "prompt_embed"), name="up")(act(x))
        if self.layer_norm:
            x = LayerNorm(self.layer_norm_eps,
                          per_token_length=None if self.shared else self.length,
                          name="layer_norm")(x)
        return raw + x
