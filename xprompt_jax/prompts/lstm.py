"""A (multi-layer, bidirectional) LSTM that computes exactly what `torch.nn.LSTM` computes
(`bidirectional=True`, `batch_first=True`, zero initial states, no dropout), for P-Tuning's
LSTM prompt encoder. It runs over one unbatched sequence `[T, in]` (the prompt tokens).

Per direction and layer, with gates in PyTorch's order i, f, g, o:

    gates = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh           [4H]
    i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of the four H-slices
    c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

The backward direction reads the sequence from the end; its outputs are put back in the
original order and concatenated after the forward outputs (`[T, 2H]`), which is the next
layer's input. Params (per `layer_<k>_forward` / `layer_<k>_backward`): `w_ih` `[in, 4H]` and
`w_hh` `[H, 4H]` (the transposes of torch's `weight_ih_l<k>[_reverse]`,
`weight_hh_l<k>[_reverse]`), `b_ih`, `b_hh` `[4H]` (torch keeps two bias vectors; so do
we, so that weights copy over one to one). All are initialized U[-1/sqrt(H), 1/sqrt(H)]
as in torch. Logical axes: `w_ih` `('prompt_embed' | 'prompt_hidden_in', 'prompt_hidden')`,
`w_hh` `('prompt_hidden_in', 'prompt_hidden')`, biases `('prompt_hidden',)` (a square
matrix needs two names; all of them are replicated).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import PRECISION, param, torch_uniform


class LSTMDirection(nn.Module):
    """One direction of one layer: `[T, in]` -> `[T, H]`."""

    hidden: int
    reverse: bool = False
    input_axis: str = "prompt_embed"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim != 2:
            raise ValueError(f"LSTMDirection expects an unbatched sequence [T, in], got shape "
                             f"{x.shape}")
        h_size, in_size = self.hidden, x.shape[-1]
        init = torch_uniform(h_size)
        w_ih = param(self, "w_ih", init, (in_size, 4 * h_size), (self.input_axis,
                                                                 "prompt_hidden"))
        w_hh = param(self, "w_hh", init, (h_size, 4 * h_size), ("prompt_hidden_in",
                                                                "prompt_hidden"))
        b_ih = param(self, "b_ih", init, (4 * h_size,), ("prompt_hidden",))
        b_hh = param(self, "b_hh", init, (4 * h_size,), ("prompt_hidden",))
        x = x.astype(jnp.float32)
        if self.reverse:
            x = x[::-1]
        x_gates = jnp.matmul(x, w_ih, precision=PRECISION) + b_ih  # [T, 4H]

        def step(carry, xg):
            h, c = carry
            gates = xg + (jnp.matmul(h, w_hh, precision=PRECISION) + b_hh)
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((h_size,), jnp.float32)
        _, hs = jax.lax.scan(step, (zeros, zeros), x_gates)
        return hs[::-1] if self.reverse else hs


class BiLSTM(nn.Module):
    """`num_layers` bidirectional layers: `[T, in]` -> `[T, 2H]` (torch.nn.LSTM outputs)."""

    hidden: int
    num_layers: int = 2

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.hidden <= 0 or self.num_layers <= 0:
            raise ValueError(f"BiLSTM needs hidden > 0 and num_layers > 0, got hidden="
                             f"{self.hidden}, num_layers={self.num_layers}")
        for k in range(self.num_layers):
            axis = "prompt_embed" if k == 0 else "prompt_hidden_in"
            fwd = LSTMDirection(self.hidden, False, axis, name=f"layer_{k}_forward")(x)
            bwd = LSTMDirection(self.hidden, True, axis, name=f"layer_{k}_backward")(x)
            x = jnp.concatenate([fwd, bwd], axis=-1)
        return x
