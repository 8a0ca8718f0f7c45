"""Building blocks of the reparameterized prompts: dense layers and LayerNorm with logical
axes, PyTorch's default initialization, and full float32 matmul precision.

- `torch_uniform(fan_in)`: U[-1/sqrt(fan_in), 1/sqrt(fan_in)], what `torch.nn.Linear`
  draws for its weight (kaiming_uniform with a=sqrt(5)) and bias, and `torch.nn.LSTM` for
  all its weights and biases (with fan_in = hidden size). The reparameterized prompts use
  it for their networks so that they start where the PyTorch reference implementations
  (HF PEFT, the ResPrompt authors' code) start, in distribution.
- `Dense`: `[..., in] -> [..., out]`, kernel `[in, out]` (the transpose of torch's
  `weight`), optional bias `[out]`.
- `LayerNorm`: torch's `nn.LayerNorm` (biased variance, eps inside the square root,
  learnable `scale` (ones) and `bias` (zeros)) over the last axis.

Logical axes: `prompt_embed` (e), `prompt_hidden` (a network's hidden width),
`prompt_hidden_in` (the input side of a hidden -> hidden matrix: one array cannot use a
name twice), `prompt` (n, per-token params). The partitioning rules
(`training/partitioning.PROMPT_AXIS_RULES`) replicate them all.

Matmuls use `Precision.HIGHEST`: the prompt networks are tiny, and on accelerators the
default precision of float32 matmuls may be reduced (TF32 / bf16 passes), which would make
the projected prompt differ from its float32 reference.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

PRECISION = jax.lax.Precision.HIGHEST
ACTIVATIONS = {
    None: lambda x: x,
    "none": lambda x: x,
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    # torch.nn.GELU's default is the exact (erf) form.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "tanh": jnp.tanh,
}


def activation(name: Optional[str]) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """`relu`, `gelu` (exact erf form, as torch), `tanh`, or None/'none'/'linear'."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of relu, gelu, tanh, "
                         "none") from None


def torch_uniform(fan_in: int):
    """Initializer U[-1/sqrt(fan_in), 1/sqrt(fan_in)] (torch.nn.Linear / nn.LSTM default)."""
    if fan_in <= 0:
        raise ValueError(f"torch_uniform: fan_in must be positive, got {fan_in}")
    bound = 1.0 / math.sqrt(fan_in)

    def init(rng, shape, dtype=jnp.float32):
        return jax.random.uniform(rng, shape, dtype, minval=-bound, maxval=bound)

    return init


def param(module: nn.Module, name: str, init, shape: Sequence[int],
          axes: Tuple[str, ...]) -> jnp.ndarray:
    """A float32 parameter with logical axes (checked against the shape)."""
    shape = tuple(int(s) for s in shape)
    if len(axes) != len(shape):
        raise ValueError(f"{module.__class__.__name__}.{name}: axes {axes} do not match the "
                         f"shape {shape}")
    return nn_partitioning.param_with_axes(name, init, shape, jnp.float32, axes=axes)


class Dense(nn.Module):
    """`[..., in] -> [..., features]`; params `kernel` `[in, features]`, `bias` `[features]`.

    Kernel and bias are drawn from `torch_uniform(in)` unless `kernel_init` / `bias_init`
    are given (closures `init(rng, shape, dtype)`).
    """

    features: int
    use_bias: bool = True
    kernel_axes: Tuple[str, str] = ("prompt_embed", "prompt_hidden")
    kernel_init: Optional[Callable] = None
    bias_init: Optional[Callable] = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        fan_in = x.shape[-1]
        kernel = param(self, "kernel", self.kernel_init or torch_uniform(fan_in),
                       (fan_in, self.features), self.kernel_axes)
        y = jnp.matmul(x.astype(jnp.float32), kernel, precision=PRECISION)
        if self.use_bias:
            y = y + param(self, "bias", self.bias_init or torch_uniform(fan_in),
                          (self.features,), (self.kernel_axes[1],))
        return y


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * scale + bias`.

    Params `scale` (ones) and `bias` (zeros), `[e]`, logical axis `axis_name`; or `[n, e]`
    per token when `per_token_length` is set (axes `('prompt', axis_name)`).
    """

    epsilon: float = 1e-5
    axis_name: str = "prompt_embed"
    per_token_length: Optional[int] = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.per_token_length is None:
            shape, axes = (x.shape[-1],), (self.axis_name,)
        else:
            shape, axes = (self.per_token_length, x.shape[-1]), ("prompt", self.axis_name)
        scale = param(self, "scale", nn.initializers.ones, shape, axes)
        bias = param(self, "bias", nn.initializers.zeros, shape, axes)
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class PerTokenDense(nn.Module):
    """A separate dense layer per prompt token: `[n, in] -> [n, features]`; params `kernel`
    `[n, in, features]` and `bias` `[n, features]`, both from `torch_uniform(in)`."""

    features: int
    use_bias: bool = True
    kernel_axes: Tuple[str, str] = ("prompt_embed", "prompt_hidden")

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim != 2:
            raise ValueError(f"PerTokenDense expects [n, in], got shape {x.shape}")
        length, fan_in = x.shape
        init = torch_uniform(fan_in)
        kernel = param(self, "kernel", init, (length, fan_in, self.features),
                       ("prompt",) + tuple(self.kernel_axes))
        y = jnp.einsum("ni,nio->no", x.astype(jnp.float32), kernel, precision=PRECISION)
        if self.use_bias:
            y = y + param(self, "bias", init, (length, self.features),
                          ("prompt", self.kernel_axes[1]))
        return y
