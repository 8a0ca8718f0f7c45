"""`T5Config`: the hyperparameters of a T5 encoder-decoder (T5X's `network.T5Config`).

Field names follow T5X's `t5x/examples/t5/network.py` so that T5X gin files bind them
unchanged; a few fields of ours extend it (relative-attention sizes, embedding lookup).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp

_DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}


def canonical_dtype(dtype: Any):
    """Maps 'bfloat16' / jnp.bfloat16 / np.dtype to a jnp scalar type."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    return jnp.dtype(dtype).type


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Global hyperparameters of a T5 model.

    T5 1.0: `mlp_activations=('relu',)`, `logits_via_embedding=True` (tied embedding,
    logits scaled by emb_dim**-0.5). T5 1.1 / LM-adapted: `('gelu', 'linear')`,
    `logits_via_embedding=False` (separate `decoder/logits_dense`).
    """

    vocab_size: int = 32128
    dtype: Any = "float32"
    emb_dim: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    head_dim: int = 64
    mlp_dim: int = 2048
    mlp_activations: Sequence[str] = ("relu",)
    dropout_rate: float = 0.1
    logits_via_embedding: bool = True
    float32_attention_logits: bool = True
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    # 'gather' (fast on CPU/GPU) or 'one_hot' (T5X's matmul lookup, good on TPU).
    embedding_lookup: str = "gather"
    # Activation rematerialisation of encoder/decoder layers (models/remat.py): 'none',
    # 'full', 'dots_with_no_batch_dims_saveable' (alias 'minimal'), 'dots_saveable'.
    remat_policy: str = "none"

    def __post_init__(self):
        object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
        if self.embedding_lookup not in ("gather", "one_hot"):
            raise ValueError(
                f"T5Config.embedding_lookup={self.embedding_lookup!r}; expected 'gather' or 'one_hot'"
            )
        for name in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim",
                     "relative_attention_num_buckets"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"T5Config.{name} must be positive, got {getattr(self, name)}")
        canonical_dtype(self.dtype)
        from .remat import check_policy
        check_policy(self.remat_policy)

    @property
    def compute_dtype(self):
        return canonical_dtype(self.dtype)

    def replace(self, **changes) -> "T5Config":
        return dataclasses.replace(self, **changes)


def config_from_params(params, **overrides):
    """T5Config sizes inferred from a T5X parameter tree (heads from the relpos table)."""
    enc, dec = params["encoder"], params["decoder"]
    vocab, emb = params["token_embedder"]["embedding"].shape
    heads, buckets = enc["relpos_bias"]["rel_embedding"].shape
    inner = enc["layers_0"]["attention"]["query"]["kernel"].shape[1]
    mlp = enc["layers_0"]["mlp"]
    gated = "wi_0" in mlp
    mlp_dim = (mlp["wi_0"] if gated else mlp["wi"])["kernel"].shape[1]
    return T5Config(
        vocab_size=vocab, emb_dim=emb, num_heads=heads, head_dim=inner // heads, mlp_dim=mlp_dim,
        num_encoder_layers=sum(k.startswith("layers_") for k in enc),
        num_decoder_layers=sum(k.startswith("layers_") for k in dec),
        mlp_activations=("gelu", "linear") if gated else ("relu",),
        logits_via_embedding="logits_dense" not in dec, relative_attention_num_buckets=buckets,
        dropout_rate=0.0, **overrides)
