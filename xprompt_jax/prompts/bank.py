"""`PromptBank`: N prompts `[N, m, e]` on one frozen model, one selected per example.

Any prompt module that produces `[m, e]` can be banked (`SoftPrompt`, `MaskedSoftPrompt`
with per-prompt masks, `EPTPrompt`, `PTuningPrompt`, `ResPrompt`): the bank `nn.vmap`s it
`num_prompts` times, so every variable of the inner module gains a leading axis N (params:
`prompt/bank/<inner path>` `[N, ...]`, logical axis `prompt_bank`, replicated; XPrompt
masks: `prompt_masks/prompt/bank/token_mask` `[N, m]`, `piece_mask` `[N, m, k]`).

**How the prompt id reaches the model.** T5X's `EncoderDecoderModel` passes only its
standard features (`encoder_input_tokens`, `decoder_*`) to the module, so the id travels
inside `encoder_input_tokens`, as in google-research/prompt-tuning's multitask prompts: the
first input token of every example is a reserved **prompt-id token**
`id_token_base + prompt_id`. `id_token_base` defaults to the model's `vocab_size` (the
embedding rows): such tokens are never real pieces, so an id token can not be confused
with text, and a model without a bank fails loudly on one (out of the embedding table)
rather than silently reading it as a word. `PromptedT5` strips the id token before
embedding (in `encode` and when `decode` rebuilds the cross-attention mask), so an example
with id i sees exactly what a single-prompt model with prompt i sees on the same text.
The id token takes one position of the `inputs` feature length.

**Shared + task prompt composition** (`composition='add'|'concat'`, as
google-research/prompt-tuning's multitask prompts): a shared prompt S `[m_s, e]`, a plain
`SoftPrompt` param `prompt/shared/prompt` (logical axes `('prompt', 'prompt_embed')`, no
bank axis; every example's loss trains it), is combined with every bank entry T_i
`[m, e]`: `'add'` gives S + T_i `[m, e]` (m_s = m), `'concat'` gives `concat(S, T_i)`
`[m_s + m, e]` (S first; a banked `position_mask` is extended with m_s valid positions).
`all_prompts` returns the composed prompts, so everything downstream (selection by id,
`prompt_tokens`, export) sees each id's prompt exactly as it enters the encoder.

Ids are validated on the host wherever batches are built (`check_prompt_ids`: a clear
error naming the offending rows); inside jit an out-of-range id yields NaN prompt rows
(never a silently clamped, wrong prompt), which the trainer's non-finite guard reports.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax.linen import partitioning as nn_partitioning

from . import initializers
from .soft_prompt import SoftPrompt

BANK_AXIS = "prompt_bank"
BANK_NAME = "bank"  # the attribute name of the vmapped inner module
MASKS = "prompt_masks"
SHARED_NAME = "shared"  # the shared prompt of a composed bank: params prompt/shared/prompt
COMPOSITIONS = (None, "add", "concat")


def compose(shared, prompts, composition: Optional[str]):
    """Shared `[m_s, e]` with per-entry prompts `[..., m, e]` -> `[..., m', e]`: 'add'
    (m' = m = m_s), 'concat' (m' = m_s + m, shared first); None: `prompts` unchanged.
    Works on jax and numpy arrays (the host-side export uses it too)."""
    if composition is None:
        return prompts
    xp = jnp if isinstance(prompts, jnp.ndarray) or isinstance(shared, jnp.ndarray) else np
    if composition == "add":
        if shared.shape != prompts.shape[-2:]:
            raise ValueError(f"composition 'add': shared prompt {tuple(shared.shape)} and task "
                             f"prompts {tuple(prompts.shape[-2:])} must have the same shape "
                             "(SHARED_PROMPT_LENGTH = PROMPT_LENGTH)")
        return shared.astype(prompts.dtype) + prompts
    if composition == "concat":
        lead = prompts.shape[:-2]
        shared = xp.broadcast_to(shared.astype(prompts.dtype), lead + tuple(shared.shape))
        return xp.concatenate([shared, prompts], axis=-2)
    raise ValueError(f"PromptBank.composition {composition!r}; expected one of {COMPOSITIONS}")


def _inner_fields(module: nn.Module) -> dict:
    return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
            if f.init and f.name not in ("parent", "name")}


class PromptBank(nn.Module):
    """`num_prompts` copies of `prompt` (a prompt module producing `[m, e]`), selected per
    example by the prompt id of its leading id token (see module docstring)."""

    prompt: nn.Module = None
    num_prompts: int = 1
    id_token_base: Optional[int] = None
    # shared + task composition (module docstring): None | 'add' | 'concat'; the shared
    # prompt's length m_s (default: the inner prompt's `length`) and initializer.
    composition: Optional[str] = None
    shared_length: Optional[int] = None
    shared_init: Callable = initializers.uniform()

    per_example_ids = True  # read by PromptedT5: strip the id token, pass the ids

    def setup(self):
        if self.prompt is None:
            raise ValueError("PromptBank.prompt is not set (e.g. @soft_prompt.SoftPrompt())")
        if isinstance(self.prompt, PromptBank):
            raise ValueError("PromptBank.prompt can not itself be a PromptBank")
        if self.num_prompts < 1:
            raise ValueError(f"PromptBank.num_prompts must be >= 1, got {self.num_prompts}")
        inner_cls = type(self.prompt)
        methods = ["__call__"] + (["position_mask"] if hasattr(inner_cls, "position_mask")
                                  else [])
        banked = nn_partitioning.vmap_with_axes(
            inner_cls, variable_axes={"params": 0, MASKS: 0},
            split_rngs={"params": True}, in_axes=None, axis_size=self.num_prompts,
            partitioning_axis_names={"params": BANK_AXIS}, methods=methods)
        self.bank = banked(**_inner_fields(self.prompt))
        if self.composition not in COMPOSITIONS:
            raise ValueError(f"PromptBank.composition {self.composition!r}; expected one of "
                             f"{COMPOSITIONS}")
        if self.composition is not None:
            self.shared = SoftPrompt(self.shared_prompt_length(), self.shared_init,
                                     name=SHARED_NAME)

    def shared_prompt_length(self) -> int:
        """m_s of a composed bank (`shared_length`, else the inner prompt's `length`)."""
        length = self.shared_length
        if length is None:
            length = getattr(self.prompt, "length", None)
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"PromptBank.shared_length must be set (a positive int) for "
                             f"composition {self.composition!r}; got {length!r}")
        return length

    def all_prompts(self, embedded: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, E]` -> every prompt of the bank `[N, m, E]` (float32), composed with the
        shared prompt when `composition` is set (`[N, m_s + m, E]` for 'concat')."""
        prompts = self.bank(embedded[:1])
        if prompts.ndim != 3:
            raise ValueError(f"PromptBank: the inner prompt module returned "
                             f"{prompts.shape[1:]} per entry; a banked prompt must be [m, e]")
        if self.composition is None:
            return prompts
        return compose(self.shared(embedded[:1]), prompts, self.composition)

    def __call__(self, embedded: jnp.ndarray,
                 prompt_ids: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        """`[B, T, E]`, ids `[B]` int -> `[B, m, E]` (each example's own prompt).

        Without ids: the bank's prompts `[N, m, E]` when N > 1 (as `prompt_tokens` needs),
        `[m, E]` for a bank of one."""
        prompts = self.all_prompts(embedded)
        if prompt_ids is None:
            return prompts[0] if self.num_prompts == 1 else prompts
        ids = jnp.asarray(prompt_ids, jnp.int32)
        valid = (ids >= 0) & (ids < self.num_prompts)
        picked = jnp.take(prompts, jnp.clip(ids, 0, self.num_prompts - 1), axis=0)
        return jnp.where(valid[:, None, None], picked, jnp.nan)  # [B, m, E]

    def position_mask(self, batch_size: int,
                      prompt_ids: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        """`[B, m]` bool: each example's own prompt's attendable positions."""
        if not hasattr(type(self.prompt), "position_mask"):
            return None
        masks = self.bank.position_mask(1)[:, 0]  # [N, m]
        if self.composition == "concat":  # the shared positions always attend
            masks = jnp.concatenate(
                [jnp.ones((masks.shape[0], self.shared_prompt_length()), masks.dtype), masks],
                axis=1)
        if prompt_ids is None:
            return jnp.broadcast_to(masks[0], (batch_size,) + masks.shape[1:])
        ids = jnp.clip(jnp.asarray(prompt_ids, jnp.int32), 0, self.num_prompts - 1)
        return jnp.take(masks, ids, axis=0)


# ---------------------------------------------------------------- the id token (host side)

def id_token_base(model) -> int:
    """The token value of prompt id 0 for `model` (a PromptedT5 with a PromptBank)."""
    bank = getattr(model, "prompt", None)
    base = getattr(bank, "id_token_base", None)
    return int(model.config.vocab_size if base is None else base)


def num_prompts(model) -> int:
    """N of the model's PromptBank; 0 for a model without one."""
    bank = getattr(model, "prompt", None)
    return int(bank.num_prompts) if isinstance(bank, PromptBank) else 0


def check_prompt_ids(ids: Any, num: int, where: str = "batch") -> np.ndarray:
    """`ids` `[B]` as int32; ValueError naming the rows whose id is not in [0, num)."""
    ids = np.asarray(ids)
    bad = np.flatnonzero((ids < 0) | (ids >= num))
    if bad.size:
        rows = ", ".join(f"row {int(r)}: id {int(ids[r])}" for r in bad[:5])
        raise ValueError(f"{where}: prompt id out of range for a bank of {num} prompts "
                         f"(valid ids 0..{num - 1}; {rows}{' ...' if bad.size > 5 else ''})")
    return ids.astype(np.int32)


def prepend_id_tokens(tokens: np.ndarray, ids: Any, base: int,
                      num: Optional[int] = None) -> np.ndarray:
    """`[B, S]` tokens, ids `[B]` -> `[B, 1 + S]` with the id token `base + id` first."""
    tokens = np.asarray(tokens)
    ids = np.broadcast_to(np.asarray(ids), tokens.shape[:1])
    if num is not None:
        ids = check_prompt_ids(ids, num)
    return np.concatenate([(base + ids).astype(tokens.dtype)[:, None], tokens], axis=1)


def with_prompt_ids(features: Mapping[str, np.ndarray], ids: Any, base: int,
                    num: Optional[int] = None) -> dict:
    """A feature batch with the id token prepended to `encoder_input_tokens` (the decoder
    features are unchanged)."""
    out = dict(features)
    out["encoder_input_tokens"] = prepend_id_tokens(features["encoder_input_tokens"], ids,
                                                    base, num)
    return out


def tile_for_prompts(features: Mapping[str, np.ndarray], prompt_ids: Sequence[int],
                     base: int, num: Optional[int] = None) -> dict:
    """Every example once per prompt in `prompt_ids` (K of them): `[B, ...]` -> `[B*K, ...]`,
    row `b*K + k` = example b with prompt `prompt_ids[k]` (id token prepended)."""
    ids = np.asarray(list(prompt_ids), np.int32)
    k = len(ids)
    tiled = {name: np.repeat(np.asarray(v), k, axis=0) for name, v in features.items()}
    batch = next(iter(features.values())).shape[0]
    return with_prompt_ids(tiled, np.tile(ids, batch), base, num)


def per_prompt_loss_weights(weights: np.ndarray, ids: np.ndarray, num: int) -> np.ndarray:
    """`decoder_loss_weights` `[B, T]` rescaled so that, under loss normalization 'sum',
    each prompt's loss is its own token mean (`sum w*l / max(sum w, 1)` over its rows):
    joint training of N prompts then gives every prompt the gradient it would get alone."""
    weights = np.asarray(weights, np.float32)
    totals = np.zeros((num,), np.float32)
    np.add.at(totals, ids, weights.sum(axis=1))
    return weights / np.maximum(totals, 1.0)[ids][:, None]
