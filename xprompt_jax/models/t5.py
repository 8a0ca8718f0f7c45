"""T5 1.0 / 1.1 / LM-adapted encoder-decoder in flax linen, numerically equal to T5X.

Parameter tree (T5X names): `token_embedder/embedding`, `encoder/relpos_bias/rel_embedding`,
`encoder/layers_{i}/{pre_attention_layer_norm,attention,pre_mlp_layer_norm,mlp}`,
`encoder/encoder_norm`, `decoder/relpos_bias`, `decoder/layers_{i}/{pre_self_attention_layer_norm,
self_attention,pre_cross_attention_layer_norm,encoder_decoder_attention,pre_mlp_layer_norm,mlp}`,
`decoder/decoder_norm`, `decoder/logits_dense/kernel` (untied models only).

The methods keep the keyword signatures of T5X's example `network.Transformer`, so a T5X
`EncoderDecoderModel` can drive the module. Prompts enter through `encode_embedded`, which
takes already embedded encoder inputs `[B, T, E]` and a validity mask `[B, T]`.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from . import masks as masks_lib
from .config import T5Config
from .layers import (DenseGeneral, Embed, LayerNorm, MlpBlock, MultiHeadDotProductAttention,
                     RelativePositionBiases, with_logical_constraint)
from .remat import remat_layer

Array = jnp.ndarray


def _dropout(cfg: T5Config) -> nn.Dropout:
    return nn.Dropout(rate=cfg.dropout_rate, broadcast_dims=(-2,))


def _attention(cfg: T5Config, name: str) -> MultiHeadDotProductAttention:
    return MultiHeadDotProductAttention(
        num_heads=cfg.num_heads, head_dim=cfg.head_dim, dtype=cfg.compute_dtype,
        dropout_rate=cfg.dropout_rate, float32_logits=cfg.float32_attention_logits, name=name)


def _mlp(cfg: T5Config) -> MlpBlock:
    return MlpBlock(intermediate_dim=cfg.mlp_dim, activations=cfg.mlp_activations,
                    dropout_rate=cfg.dropout_rate, dtype=cfg.compute_dtype, name="mlp")


def _norm(cfg: T5Config, name: str) -> LayerNorm:
    return LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.compute_dtype, name=name)


def _relpos(cfg: T5Config) -> RelativePositionBiases:
    return RelativePositionBiases(
        num_buckets=cfg.relative_attention_num_buckets,
        max_distance=cfg.relative_attention_max_distance, num_heads=cfg.num_heads,
        dtype=cfg.compute_dtype, name="relpos_bias")


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and MLP blocks with residuals: `[B, T, E] -> [B, T, E]`."""

    config: T5Config

    @nn.compact
    def __call__(self, inputs: Array, encoder_mask: Array, encoder_bias: Array,
                 deterministic: bool) -> Array:
        cfg = self.config
        x = _norm(cfg, "pre_attention_layer_norm")(inputs)
        x = _attention(cfg, "attention")(x, x, encoder_mask, encoder_bias,
                                         deterministic=deterministic)
        x = _dropout(cfg)(x, deterministic=deterministic) + inputs
        y = _norm(cfg, "pre_mlp_layer_norm")(x)
        y = _mlp(cfg)(y, deterministic=deterministic)
        y = _dropout(cfg)(y, deterministic=deterministic) + x
        return with_logical_constraint(y, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    """Self-attention (cached when decoding), cross-attention and MLP blocks."""

    config: T5Config

    @nn.compact
    def __call__(self, inputs: Array, encoded: Array, decoder_mask: Optional[Array],
                 encoder_decoder_mask: Optional[Array], decoder_bias: Array,
                 deterministic: bool, decode: bool) -> Array:
        cfg = self.config
        x = _norm(cfg, "pre_self_attention_layer_norm")(inputs)
        x = _attention(cfg, "self_attention")(x, x, decoder_mask, decoder_bias,
                                              deterministic=deterministic, decode=decode)
        x = _dropout(cfg)(x, deterministic=deterministic) + inputs
        y = _norm(cfg, "pre_cross_attention_layer_norm")(x)
        y = _attention(cfg, "encoder_decoder_attention")(y, encoded, encoder_decoder_mask,
                                                         deterministic=deterministic)
        y = _dropout(cfg)(y, deterministic=deterministic) + x
        z = _norm(cfg, "pre_mlp_layer_norm")(y)
        z = _mlp(cfg)(z, deterministic=deterministic)
        z = _dropout(cfg)(z, deterministic=deterministic) + y
        return with_logical_constraint(z, ("batch", "length", "embed"))


class Encoder(nn.Module):
    """Embedded inputs `[B, T, E]` -> encoded `[B, T, E]` (dropout, layers, final norm)."""

    config: T5Config

    @nn.compact
    def __call__(self, embedded: Array, encoder_mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        length = embedded.shape[-2]
        encoder_bias = _relpos(cfg)(length, length, True)
        x = _dropout(cfg)(embedded, deterministic=deterministic).astype(cfg.compute_dtype)
        # remat keeps the name layers_{i}: T5X parameter names are unchanged.
        layer_cls = remat_layer(EncoderLayer, cfg.remat_policy, static_argnums=(4,))
        for i in range(cfg.num_encoder_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(x, encoder_mask, encoder_bias,
                                                   deterministic)
        x = _norm(cfg, "encoder_norm")(x)
        x = _dropout(cfg)(x, deterministic=deterministic)
        return with_logical_constraint(x, ("batch", "length", "embed"))


class Decoder(nn.Module):
    """Decoder tokens `[B, T]` + encoded `[B, S, E]` -> logits `[B, T, vocab]` (float32)."""

    config: T5Config
    shared_embedding: Embed

    @nn.compact
    def __call__(self, encoded: Array, decoder_input_tokens: Array,
                 decoder_mask: Optional[Array], encoder_decoder_mask: Optional[Array],
                 deterministic: bool, decode: bool, max_decode_length: Optional[int]) -> Array:
        cfg = self.config
        length = max_decode_length if (decode and max_decode_length) else \
            decoder_input_tokens.shape[-1]
        decoder_bias = _relpos(cfg)(length, length, False)
        y = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
        y = _dropout(cfg)(y, deterministic=deterministic).astype(cfg.compute_dtype)
        # No remat in incremental decoding (no backward pass; the cache is mutated).
        layer_cls = DecoderLayer if decode else remat_layer(
            DecoderLayer, cfg.remat_policy, static_argnums=(6, 7))
        for i in range(cfg.num_decoder_layers):
            y = layer_cls(cfg, name=f"layers_{i}")(
                y, encoded, decoder_mask, encoder_decoder_mask, decoder_bias,
                deterministic, decode)
        y = _norm(cfg, "decoder_norm")(y)
        y = _dropout(cfg)(y, deterministic=deterministic)
        if cfg.logits_via_embedding:
            logits = self.shared_embedding.attend(y) / jnp.sqrt(y.shape[-1])
        else:
            logits = DenseGeneral(cfg.vocab_size, dtype=jnp.float32,
                                  kernel_axes=("embed", "vocab"), name="logits_dense")(y)
        return with_logical_constraint(logits, ("batch", "length", "vocab"))


class T5(nn.Module):
    """The T5 encoder-decoder (T5X `network.Transformer` interface)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = Embed(num_embeddings=cfg.vocab_size, features=cfg.emb_dim,
                                    dtype=cfg.compute_dtype, attend_dtype=jnp.float32,
                                    lookup=cfg.embedding_lookup, name="token_embedder")
        self.encoder = Encoder(cfg, name="encoder")
        self.decoder = Decoder(cfg, shared_embedding=self.token_embedder, name="decoder")

    # ----------------------------------------------------------------- encoder side
    def embed_encoder_tokens(self, encoder_input_tokens: Array) -> Array:
        """`[B, T]` tokens -> `[B, T, E]` embeddings (no dropout)."""
        return self.token_embedder(encoder_input_tokens.astype(jnp.int32))

    def encode_embedded(self, embedded: Array, valid_mask: Array,
                        segment_ids: Optional[Array] = None, *,
                        enable_dropout: bool = True) -> Array:
        """Encodes precomputed inputs: `embedded` `[B, T, E]`, `valid_mask` `[B, T]` (bool).

        Input dropout is applied here, so a prefix added to `embedded` gets it too.
        """
        mask = masks_lib.make_attention_mask(valid_mask, valid_mask, dtype=self.config.compute_dtype)
        if segment_ids is not None:
            mask = masks_lib.combine_masks(
                mask, masks_lib.make_attention_mask(segment_ids, segment_ids, jnp.equal),
                dtype=self.config.compute_dtype)
        return self.encoder(embedded, mask, deterministic=not enable_dropout)

    def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Optional[Array] = None,
               encoder_positions: Optional[Array] = None, *,
               enable_dropout: bool = True) -> Array:
        """`[B, S]` tokens -> encoded `[B, S, E]`. `encoder_positions` is unused (relative
        positions), accepted for T5X signature compatibility."""
        del encoder_positions
        embedded = self.embed_encoder_tokens(encoder_input_tokens)
        return self.encode_embedded(embedded, encoder_input_tokens > 0, encoder_segment_ids,
                                    enable_dropout=enable_dropout)

    # ----------------------------------------------------------------- decoder side
    def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None,
               decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
               decode: bool = False, max_decode_length: Optional[int] = None,
               encoder_valid_mask: Optional[Array] = None) -> Array:
        """Logits `[B, T, vocab]` for decoder tokens `[B, T]` given `encoded` `[B, S, E]`.

        With `decode=True` the decoder runs one position per call against the `cache`
        collection (T5X incremental decoding). `encoder_valid_mask` `[B, S]` overrides the
        key mask of cross-attention (default: `encoder_input_tokens > 0`); prompted models
        pass their extended mask here.
        """
        del decoder_positions
        dtype = self.config.compute_dtype
        if encoder_valid_mask is None:
            encoder_valid_mask = encoder_input_tokens > 0
        if decode:
            decoder_mask = None
            encoder_decoder_mask = masks_lib.make_attention_mask(
                jnp.ones_like(decoder_target_tokens), encoder_valid_mask, dtype=dtype)
        else:
            decoder_mask = masks_lib.make_decoder_mask(decoder_target_tokens, dtype,
                                                       decoder_segment_ids)
            encoder_decoder_mask = masks_lib.make_attention_mask(
                decoder_target_tokens > 0, encoder_valid_mask, dtype=dtype)
        if encoder_segment_ids is not None:
            if decode:
                raise ValueError("packed (segment_ids) inputs are not supported in incremental "
                                 "decoding")
            encoder_decoder_mask = masks_lib.combine_masks(
                encoder_decoder_mask,
                masks_lib.make_attention_mask(decoder_segment_ids, encoder_segment_ids,
                                              jnp.equal), dtype=dtype)
        return self.decoder(encoded, decoder_input_tokens, decoder_mask, encoder_decoder_mask,
                            deterministic=not enable_dropout, decode=decode,
                            max_decode_length=max_decode_length)

    def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
                 decoder_target_tokens: Array, encoder_segment_ids: Optional[Array] = None,
                 decoder_segment_ids: Optional[Array] = None,
                 encoder_positions: Optional[Array] = None,
                 decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
                 decode: bool = False, max_decode_length: Optional[int] = None) -> Array:
        """Full forward: logits `[B, T, vocab]` (float32)."""
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                              enable_dropout=enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                           decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                           decoder_positions, enable_dropout=enable_dropout, decode=decode,
                           max_decode_length=max_decode_length)
