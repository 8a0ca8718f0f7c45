"""`PromptedT5`: T5 with a prompt prepended to the embedded encoder input.

The prompt enters after the token embedding lookup and before input dropout (as in
google-research/prompt-tuning). The encoder attention mask gains m leading positions, and
the decoder's cross-attention mask is rebuilt from the same extended mask in `decode`
(incremental decoding included, which only sees raw tokens). Parameters of the frozen T5
keep their T5X paths; the prompt lives under `prompt/` (e.g. `prompt/prompt`).

With a `PromptBank` (`prompts/bank.py`) each example's first encoder token is its
prompt-id token: `encode` and `decode` strip it and give each example its own prompt.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .t5 import T5

Array = jnp.ndarray

PACKING_ERROR = ("PromptedT5 does not support packed examples ({what} was given): prompts "
                 "are prefixed to every sequence. Use seqio.EncDecFeatureConverter(pack=False).")


class PromptedT5(T5):
    """T5X `network.Transformer` interface with a prompt module (`prompt`)."""

    prompt: Optional[nn.Module] = None

    def _check_unpacked(self, **segment_ids):
        for what, value in segment_ids.items():
            if value is not None:
                raise ValueError(PACKING_ERROR.format(what=what))

    def split_prompt_ids(self, encoder_input_tokens: Array):
        """`[B, S]` -> (prompt ids `[B]` or None, tokens without the id token).

        With a per-example prompt module (`PromptBank`) the first token of every example
        is its prompt-id token `id_token_base + id` (`prompts/bank.py`); it is removed here,
        so the rest of the model sees the example's text only."""
        if not getattr(self.prompt, "per_example_ids", False):
            return None, encoder_input_tokens
        base = self.prompt.id_token_base
        base = self.config.vocab_size if base is None else base
        return encoder_input_tokens[:, 0] - base, encoder_input_tokens[:, 1:]

    def prompt_valid_mask(self, batch_size: int, length: int,
                          prompt_ids: Optional[Array] = None) -> Array:
        """`[B, m]` bool: prompt positions that take part in attention."""
        position_mask = getattr(self.prompt, "position_mask", None)
        mask = None
        if position_mask is not None:
            mask = (position_mask(batch_size) if prompt_ids is None
                    else position_mask(batch_size, prompt_ids))
        if mask is None:
            return jnp.ones((batch_size, length), bool)
        mask = jnp.asarray(mask).astype(bool)
        if mask.shape != (batch_size, length):
            raise ValueError(f"prompt position_mask has shape {mask.shape}, expected "
                             f"{(batch_size, length)}")
        return mask

    def prompt_embeddings(self, embedded: Array, prompt_ids: Optional[Array] = None) -> Array:
        """Runs the prompt module: `[B, T, E]` (ids `[B]` for a bank) -> `[B, m, E]` in the
        compute dtype."""
        if self.prompt is None:
            raise ValueError("PromptedT5.prompt is not set")
        prompt = self.prompt(embedded) if prompt_ids is None else self.prompt(embedded,
                                                                              prompt_ids)
        if prompt.ndim == 2:
            prompt = jnp.broadcast_to(prompt[None], (embedded.shape[0],) + prompt.shape)
        if prompt.ndim != 3 or prompt.shape[0] != embedded.shape[0] or \
                prompt.shape[-1] != embedded.shape[-1]:
            raise ValueError(f"prompt module returned shape {prompt.shape}; expected [m, "
                             f"{embedded.shape[-1]}] or [{embedded.shape[0]}, m, "
                             f"{embedded.shape[-1]}]")
        return prompt.astype(embedded.dtype)

    def prompt_tokens(self) -> Array:
        """The prompt as it enters the encoder, `[m, E]` (or `[B=1, m, E]` for per-example
        prompt modules), float32, without any input: for metrics and export."""
        probe = jnp.zeros((1, 1, self.config.emb_dim), jnp.float32)
        prompt = self.prompt(probe)
        return prompt

    def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Optional[Array] = None,
               encoder_positions: Optional[Array] = None, *,
               enable_dropout: bool = True) -> Array:
        """`[B, S]` tokens -> encoded `[B, m + S, E]` (prompt positions first)."""
        del encoder_positions
        self._check_unpacked(encoder_segment_ids=encoder_segment_ids)
        prompt_ids, encoder_input_tokens = self.split_prompt_ids(encoder_input_tokens)
        embedded = self.embed_encoder_tokens(encoder_input_tokens)
        prompt = self.prompt_embeddings(embedded, prompt_ids)
        batch, length = prompt.shape[:2]
        valid = jnp.concatenate([self.prompt_valid_mask(batch, length, prompt_ids),
                                 encoder_input_tokens > 0], axis=1)
        return self.encode_embedded(jnp.concatenate([prompt, embedded], axis=1), valid,
                                    enable_dropout=enable_dropout)

    def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None,
               decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
               decode: bool = False, max_decode_length: Optional[int] = None,
               encoder_valid_mask: Optional[Array] = None) -> Array:
        """Logits `[B, T, vocab]`; the cross-attention mask covers prompt + input.

        `decoder_segment_ids` `[B, T]` alone (no encoder segments) lays several target
        sequences of one input side by side (block-diagonal causal self-attention, each
        attending to the whole encoding): shared-encoder rank classification."""
        self._check_unpacked(encoder_segment_ids=encoder_segment_ids)
        if encoder_valid_mask is None:
            prompt_ids, encoder_input_tokens = self.split_prompt_ids(encoder_input_tokens)
            batch, source_len = encoder_input_tokens.shape
            prompt_len = encoded.shape[-2] - source_len
            if prompt_len < 0:
                raise ValueError(f"encoded length {encoded.shape[-2]} is shorter than the "
                                 f"encoder input length {source_len}")
            encoder_valid_mask = jnp.concatenate(
                [self.prompt_valid_mask(batch, prompt_len, prompt_ids),
                 encoder_input_tokens > 0], axis=1)
        return super().decode(encoded, encoder_input_tokens, decoder_input_tokens,
                              decoder_target_tokens, None, decoder_segment_ids, decoder_positions,
                              enable_dropout=enable_dropout, decode=decode,
                              max_decode_length=max_decode_length,
                              encoder_valid_mask=encoder_valid_mask)


def projected_prompt(model: PromptedT5, variables: Mapping[str, Any]) -> np.ndarray:
    """The prompt as it enters the encoder, `[n, e]` float32 (the frozen model's params may
    be absent from `variables`). Per-example prompts (`[B, m, e]`) raise ValueError."""
    tokens = np.asarray(jax.device_get(model.apply(dict(variables), method=model.prompt_tokens)),
                        np.float32)
    if tokens.ndim != 2:
        raise ValueError(f"the prompt module returns shape {tokens.shape}; only a prompt "
                         "shared by all examples ([n, e]) can be exported")
    return tokens
