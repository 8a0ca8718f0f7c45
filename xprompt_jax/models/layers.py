"""T5 building blocks with T5X parameter names, layouts and logical axis names.

Parameters are declared with `flax.linen.partitioning.param_with_axes`, so `init` also
returns a `params_axes` collection (what T5X's partitioner reads). Dense kernels are stored
2-D as in T5X (`query/kernel` is `[embed, heads * kv]`, logical axes
`('embed', 'joined_kv')`). Parameters are float32; computation runs in `dtype`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import partitioning as nn_partitioning
from jax import lax

from . import masks as masks_lib

Array = jnp.ndarray
param_with_axes = nn_partitioning.param_with_axes
with_logical_constraint = nn.with_logical_constraint

default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, Iterable) else (x,)


class DenseGeneral(nn.Module):
    """Linear map over `axis` of the input to `features` (T5X `layers.DenseGeneral`).

    The kernel is stored flattened as `[prod(in dims), prod(features)]`.
    """

    features: Union[int, Sequence[int]]
    axis: Union[int, Sequence[int]] = -1
    dtype: Any = jnp.float32
    kernel_init: Callable = default_kernel_init
    kernel_axes: Tuple[str, ...] = ()

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        features = _as_tuple(self.features)
        axis = tuple(a % inputs.ndim for a in _as_tuple(self.axis))
        in_dims = tuple(inputs.shape[a] for a in axis)
        kernel = param_with_axes(
            "kernel", self.kernel_init, (int(np.prod(in_dims)), int(np.prod(features))),
            jnp.float32, axes=self.kernel_axes)
        kernel = jnp.reshape(jnp.asarray(kernel, self.dtype), in_dims + features)
        inputs = jnp.asarray(inputs, self.dtype)
        contract = (axis, tuple(range(len(axis))))
        return lax.dot_general(inputs, kernel, (contract, ((), ())))


class Embed(nn.Module):
    """Token embedding `[vocab, embed]`; `attend` computes logits against it.

    `lookup='gather'` indexes rows (fast on CPU/GPU); `'one_hot'` multiplies a one-hot
    matrix as T5X does (good on TPU). Both give identical values.
    """

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32
    attend_dtype: Any = jnp.float32
    lookup: str = "gather"
    embedding_init: Callable = nn.initializers.normal(stddev=1.0)

    def setup(self):
        self.embedding = param_with_axes(
            "embedding", self.embedding_init, (self.num_embeddings, self.features),
            jnp.float32, axes=("vocab", "embed"))

    def __call__(self, inputs: Array) -> Array:
        """`[B, T]` int tokens -> `[B, T, E]`."""
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError(f"Embed expects integer token ids, got dtype {inputs.dtype}")
        embedding = jnp.asarray(self.embedding, self.dtype)
        if self.lookup == "one_hot":
            iota = lax.iota(jnp.int32, self.num_embeddings)
            one_hot = jnp.array(inputs[..., None] == iota, dtype=self.dtype)
            output = jnp.dot(one_hot, embedding)
        else:
            output = jnp.take(embedding, inputs, axis=0)
        return with_logical_constraint(output, ("batch", "length", "embed"))

    def attend(self, query: Array) -> Array:
        """`[..., E]` -> `[..., vocab]` dot products with every embedding row."""
        query = jnp.asarray(query, self.attend_dtype)
        embedding = jnp.asarray(self.embedding, self.attend_dtype)
        return jnp.dot(query, embedding.T)


class LayerNorm(nn.Module):
    """T5's RMS norm (no mean subtraction, no bias), computed in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x, jnp.float32)
        mean2 = jnp.mean(lax.square(x), axis=-1, keepdims=True)
        y = jnp.asarray(x * lax.rsqrt(mean2 + self.epsilon), self.dtype)
        scale = param_with_axes("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32,
                                axes=("embed",))
        return y * jnp.asarray(scale, self.dtype)


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's log-spaced relative position buckets (memory - query positions)."""
    ret = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    val_if_large = max_exact + (
        np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
        / np.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(np.int32)
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    return ret + np.where(is_small, n, val_if_large)


class RelativePositionBiases(nn.Module):
    """Per-head relative position bias `[1, H, Q, K]` (param `rel_embedding` `[H, buckets]`)."""

    num_buckets: int
    max_distance: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, qlen: int, klen: int, bidirectional: bool = True) -> Array:
        context = np.arange(qlen, dtype=np.int32)[:, None]
        memory = np.arange(klen, dtype=np.int32)[None, :]
        buckets = relative_position_bucket(memory - context, bidirectional,
                                           self.num_buckets, self.max_distance)
        table = param_with_axes(
            "rel_embedding", nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
            (self.num_heads, self.num_buckets), jnp.float32, axes=("heads", "relpos_buckets"))
        table = jnp.asarray(table, self.dtype)
        values = jnp.take(table, jnp.asarray(buckets), axis=1)  # [H, Q, K]
        return values[None]


def dot_product_attention(query: Array, key: Array, value: Array, bias: Optional[Array],
                          dropout_rng: Optional[Array], dropout_rate: float,
                          deterministic: bool, dtype, float32_logits: bool) -> Array:
    """`[B, Q, H, D]` x `[B, K, H, D]` -> `[B, Q, H, D]`; no 1/sqrt(D) scaling (T5)."""
    if float32_logits:
        query = query.astype(jnp.float32)
        key = key.astype(jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
    if bias is not None:
        logits = logits + bias.astype(logits.dtype)
    weights = jax.nn.softmax(logits).astype(dtype)
    if not deterministic and dropout_rate > 0.0:
        keep_prob = 1.0 - dropout_rate
        # Broadcast the dropout mask over the query axis, as T5X does.
        shape = list(weights.shape)
        shape[-2] = 1
        keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value.astype(dtype))


class MultiHeadDotProductAttention(nn.Module):
    """T5 attention with `query`/`key`/`value`/`out` kernels and an optional decode cache.

    The cache (collection `cache`) holds `cached_key`/`cached_value` `[B, L, H, D]` and
    `cache_index` (scalar). It is created by a first `decode=True` call on full-length
    inputs (T5X convention) and then filled one position per call.
    """

    num_heads: int
    head_dim: int
    dtype: Any = jnp.float32
    dropout_rate: float = 0.0
    float32_logits: bool = True

    @nn.compact
    def __call__(self, inputs_q: Array, inputs_kv: Array, mask: Optional[Array] = None,
                 bias: Optional[Array] = None, *, decode: bool = False,
                 deterministic: bool = True) -> Array:
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        # T5 folds the 1/sqrt(head_dim) logit scaling into the query initializer.
        query_init = lambda *a: init(*a) / jnp.sqrt(self.head_dim).astype(jnp.float32)
        proj = functools.partial(DenseGeneral, features=(self.num_heads, self.head_dim),
                                 kernel_axes=("embed", "joined_kv"), dtype=self.dtype)
        query = proj(kernel_init=query_init, name="query")(inputs_q)
        key = proj(kernel_init=init, name="key")(inputs_kv)
        value = proj(kernel_init=init, name="value")(inputs_kv)
        query = with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        key = with_logical_constraint(key, ("batch", "length", "heads", "kv"))
        value = with_logical_constraint(value, ("batch", "length", "heads", "kv"))

        if decode:
            initialized = self.has_variable("cache", "cached_key")
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape,
                                         value.dtype)
            cache_index = self.variable("cache", "cache_index",
                                        lambda: jnp.array(0, dtype=jnp.int32))
            if initialized:
                batch, length, heads, depth = cached_key.value.shape
                if query.shape[1] != 1:
                    raise ValueError(
                        f"incremental decoding takes one position per call, got query length "
                        f"{query.shape[1]}")
                cur = cache_index.value
                key = lax.dynamic_update_slice(cached_key.value, key, (0, cur, 0, 0))
                value = lax.dynamic_update_slice(cached_value.value, value, (0, cur, 0, 0))
                cached_key.value = key
                cached_value.value = value
                cache_index.value = cur + 1
                step_mask = jnp.broadcast_to(jnp.arange(length) <= cur, (batch, 1, 1, length))
                mask = masks_lib.combine_masks(mask, step_mask)
                if bias is not None:
                    bias = lax.dynamic_slice(bias, (0, 0, cur, 0),
                                             (1, bias.shape[1], 1, bias.shape[3]))

        attention_bias = masks_lib.combine_biases(masks_lib.bias_from_mask(mask, self.dtype),
                                                  bias)
        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        x = dot_product_attention(query, key, value, attention_bias, dropout_rng,
                                  self.dropout_rate, deterministic, self.dtype,
                                  self.float32_logits)
        out = DenseGeneral(features=inputs_q.shape[-1], axis=(-2, -1), kernel_init=init,
                           kernel_axes=("joined_kv", "embed"), dtype=self.dtype, name="out")(x)
        return with_logical_constraint(out, ("batch", "length", "embed"))


_ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,  # tanh approximation, as T5X and HF's gelu_new
    "gelu_exact": functools.partial(nn.gelu, approximate=False),
    "silu": nn.silu,
    "swish": nn.silu,
    "linear": lambda x: x,
}


def activation_fn(name: str) -> Callable:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown MLP activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class MlpBlock(nn.Module):
    """`wi` (or gated `wi_0`, `wi_1`, ...) -> product of activations -> dropout -> `wo`."""

    intermediate_dim: int
    activations: Sequence[str] = ("relu",)
    dropout_rate: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Array, deterministic: bool = True) -> Array:
        hidden = None
        for idx, name in enumerate(self.activations):
            dense_name = "wi" if len(self.activations) == 1 else f"wi_{idx}"
            x = DenseGeneral(self.intermediate_dim, dtype=self.dtype,
                             kernel_axes=("embed", "mlp"), name=dense_name)(inputs)
            x = activation_fn(name)(x)
            hidden = x if hidden is None else hidden * x
        hidden = nn.Dropout(rate=self.dropout_rate, broadcast_dims=(-2,))(
            hidden, deterministic=deterministic)
        hidden = with_logical_constraint(hidden, ("batch", "length", "mlp"))
        out = DenseGeneral(inputs.shape[-1], dtype=self.dtype, kernel_axes=("mlp", "embed"),
                           name="wo")(hidden)
        return with_logical_constraint(out, ("batch", "length", "embed"))
