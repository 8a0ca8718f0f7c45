"""`EPTPrompt`: one trainable vector P1 projected through a low-rank network and broadcast
to `length` prompt tokens (EPT: length 1; EPT*: length 10).

    z   = W_u act(W_d P1 + b_d) + b_u          P1: [1, e], W_d: [e, h], W_u: [h, e]
    z   = LN(z)            if layer_norm
    out = P1 + z           if residual, else z
    prompt = broadcast(out, [n, e])

The defaults are the method itself: `hidden=1`, no bias, no nonlinearity, no LayerNorm,
no residual, so every token is `P1 W_d W_u` (a point on the line spanned by W_u: the
projected prompt has rank <= h). The switches `use_bias`, `activation` (`relu`, `gelu`,
`tanh`), `layer_norm` (eps 1e-5, learnable scale/bias) and `residual` are the paper's
ablation (its Figure 9); with all of them on (relu) it is ResPrompt's formula on one token.

Initialization: P1 from `init` (default U[-0.5, 0.5]); W_d, W_u and biases as PyTorch's
nn.Linear (`layers.torch_uniform`: U[+-1/sqrt(fan_in)], i.e. W_d ~ U[+-1/sqrt(e)],
W_u ~ U[+-1/sqrt(h)]); LayerNorm scale 1, bias 0.

Params (under `prompt/`): `prompt` `[1, e]` `('prompt', 'prompt_embed')`; `down/kernel`
`[e, h]`, `up/kernel` `[h, e]` (+ `down/bias`, `up/bias`, `layer_norm/{scale, bias}` when
switched on). Trainable: e + 2eh (+ h + e biases, + 2e LayerNorm); at inference one
projected vector of e numbers serves every token (`inference_rows()` = 1: the paper's
"2.3K/768", Table 4); the exported prompt `[n, e]` repeats it n times.
"""

from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from . import initializers
from .layers import Dense, LayerNorm, activation, param
from .soft_prompt import PROMPT_AXES


class EPTPrompt(nn.Module):
    """`[B, T, E]` -> `[length, E]` float32, every row the same projected vector."""

    length: int = 1
    hidden: int = 1
    use_bias: bool = False
    activation: Optional[str] = None
    layer_norm: bool = False
    residual: bool = False
    layer_norm_eps: float = 1e-5
    init: Callable = initializers.uniform()

    @nn.compact
    def __call__(self, embedded: jnp.ndarray) -> jnp.ndarray:
        if self.length <= 0:
            raise ValueError(f"EPTPrompt.length must be positive, got {self.length}")
        if self.hidden <= 0:
            raise ValueError(f"EPTPrompt.hidden must be positive, got {self.hidden}")
        act = activation(self.activation)
        embed = embedded.shape[-1]
        p1 = param(self, "prompt", self.init, (1, embed), PROMPT_AXES)             # [1, e]
        z = Dense(self.hidden, use_bias=self.use_bias,
                  kernel_axes=("prompt_embed", "prompt_hidden"), name="down")(p1)  # [1, h]
        z = Dense(embed, use_bias=self.use_bias,
                  kernel_axes=("prompt_hidden", "prompt_embed"), name="up")(act(z))  # [1, e]
        if self.layer_norm:
            z = LayerNorm(self.layer_norm_eps, name="layer_norm")(z)
        if self.residual:
            z = p1 + z
        return jnp.broadcast_to(z, (self.length, embed))

    def inference_rows(self) -> int:
        """Rows stored for inference: one (every token is the same broadcast vector)."""
        return 1
