"""`FixedMaskPrompt`: a soft prompt with XPrompt masks read from a file as constants.

The rewind stage of XPrompt under `t5x/train.py` (gin/t5x/xprompt_rewind.gin). T5X's
`EncoderDecoderModel` applies only the `params` collection (plus `cache` when decoding), so
the masks cannot live in a variable collection as in `MaskedSoftPrompt`: here they are
NumPy constants loaded from the `masks.npz` that `python -m xprompt_jax.prune` writes
(`token_mask` gamma `[m]`, `piece_mask` zeta `[m, k]`), baked into the traced computation.

    prompt = P * gamma[:, None] * repeat(zeta, e/k, axis=-1)

Params: `prompt` `[m, e]` with logical axes `('prompt', 'prompt_embed')` - the same path
and axes as `SoftPrompt` / `MaskedSoftPrompt`, so the numpy export, the partitioning rules
and T5X's Adafactor factor rules are unchanged. Pruned entries get no gradient; initialised
from `rewound_prompt.npy` (stage-1 prompt * value mask) they stay exactly zero.

`token_prune_mode='remove'` (default, as `MaskedSoftPrompt`) also drops pruned tokens from
attention through `position_mask`; `'zero'` keeps them attendable as zero vectors.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax.linen import partitioning as nn_partitioning

from ..errors import DataError
from ..fileio import NPY_MAGIC, absolute, is_file, is_local, save_npz_atomic
from ..prompts import initializers
from ..prompts.soft_prompt import PROMPT_AXES
from .masked_prompt import TOKEN_PRUNE_MODES

MASKS_FILE = "masks.npz"
REWOUND_PROMPT_FILE = "rewound_prompt.npy"


def save_masks(path, token_mask, piece_mask) -> str:
    """Writes `token_mask` `[m]` and `piece_mask` `[m, k]` (float32 0/1) to an `.npz`
    (atomically). Returns the path."""
    token_mask = np.asarray(token_mask, np.float32)
    piece_mask = np.asarray(piece_mask, np.float32)
    _check_shapes(token_mask, piece_mask, os.fspath(path))
    save_npz_atomic(path, token_mask=token_mask, piece_mask=piece_mask)
    return os.fspath(path)


def _check_shapes(token_mask: np.ndarray, piece_mask: np.ndarray, where: str) -> None:
    if token_mask.ndim != 1 or piece_mask.ndim != 2 or piece_mask.shape[0] != token_mask.shape[0]:
        raise DataError(f"{where}: expected token_mask [m] and piece_mask [m, k], got "
                         f"{token_mask.shape} and {piece_mask.shape}")


@functools.lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
    del mtime_ns, size  # cache keys only: a rewritten file is read again
    with epath.Path(path).open("rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # a .npz is a zip archive; np.load would call a text
        # file "pickled data" and return a lone .npy array
        kind = "an .npy array" if head == NPY_MAGIC[:4] else "empty" if not head else \
            f"no .npz archive (it starts with {head!r})"
        raise DataError(f"masks file {path}: {kind}; expected the masks.npz that `python -m "
                        "xprompt_jax.prune` writes")
    try:
        with epath.Path(path).open("rb") as f, np.load(f, allow_pickle=False) as data:
            missing = {"token_mask", "piece_mask"} - set(data.files)
            if missing:
                raise DataError(f"masks file {path} lacks {sorted(missing)} (has "
                                f"{data.files}); write it with `python -m xprompt_jax.prune`")
            token_mask = np.asarray(data["token_mask"], np.float32)
            piece_mask = np.asarray(data["piece_mask"], np.float32)
    except DataError:
        raise
    except Exception as e:  # pylint: disable=broad-except  # zipfile / numpy: corrupt
        raise DataError(f"masks file {path}: unreadable .npz ({type(e).__name__}: "
                        f"{str(e).strip()[:200]}; cut short or corrupt?)") from None
    _check_shapes(token_mask, piece_mask, path)
    if not (np.isfinite(token_mask).all() and np.isfinite(piece_mask).all()):
        raise DataError(f"masks file {path}: NaN or Inf in the masks")
    token_mask.setflags(write=False)
    piece_mask.setflags(write=False)
    return token_mask, piece_mask


def load_masks(path) -> Tuple[np.ndarray, np.ndarray]:
    """`(token_mask [m], piece_mask [m, k])` float32 from a `masks.npz` (cached per file
    version)."""
    path = absolute(path)  # local or remote (gs://), through epath
    if not is_file(path):
        raise DataError(f"XPrompt masks file not found: {path} (written by "
                                "`python -m xprompt_jax.prune --output_dir=...` as masks.npz)")
    if is_local(path):
        stat = os.stat(path)
        return _load_cached(path, stat.st_mtime_ns, stat.st_size)
    stat = epath.Path(path).stat()
    return _load_cached(path, int(stat.mtime * 1e9), int(stat.length))


class FixedMaskPrompt(nn.Module):
    """Soft prompt `[length, e]` times constant token/piece masks from `masks_path`."""

    length: int = 20
    init: Callable = initializers.uniform()
    masks_path: Optional[str] = None
    token_prune_mode: str = "remove"

    def masks(self) -> Tuple[np.ndarray, np.ndarray]:
        """The `(token_mask [m], piece_mask [m, k])` constants, checked against `length`."""
        if self.token_prune_mode not in TOKEN_PRUNE_MODES:
            raise ValueError(f"token_prune_mode={self.token_prune_mode!r}; expected one of "
                             f"{TOKEN_PRUNE_MODES}")
        if not self.masks_path:
            raise ValueError("FixedMaskPrompt.masks_path is not set (gin: MASKS_PATH = "
                             "'<prune output_dir>/masks.npz')")
        token_mask, piece_mask = load_masks(self.masks_path)
        if token_mask.shape[0] != self.length:
            raise DataError(f"masks in {self.masks_path} are for {token_mask.shape[0]} prompt "
                             f"tokens but FixedMaskPrompt.length={self.length} (PROMPT_LENGTH)")
        return token_mask, piece_mask

    @nn.compact
    def __call__(self, embedded: jnp.ndarray) -> jnp.ndarray:
        """`[B, T, E]` -> masked prompt `[m, E]` (float32)."""
        embed_dim = embedded.shape[-1]
        token_mask, piece_mask = self.masks()
        num_pieces = piece_mask.shape[1]
        if embed_dim % num_pieces:
            raise DataError(f"XPrompt pieces: embedding size {embed_dim} is not divisible by "
                             f"the {num_pieces} pieces of {self.masks_path}")
        prompt = nn_partitioning.param_with_axes("prompt", self.init, (self.length, embed_dim),
                                                 jnp.float32, axes=PROMPT_AXES)
        values = token_mask[:, None] * np.repeat(piece_mask, embed_dim // num_pieces, axis=1)
        return prompt * jnp.asarray(values, jnp.float32)

    def position_mask(self, batch_size: int) -> jnp.ndarray:
        """`[B, m]` bool: False for pruned tokens (mode 'remove'); all True for 'zero'."""
        token_mask, _ = self.masks()
        keep = np.ones_like(token_mask, bool) if self.token_prune_mode == "zero" else \
            token_mask > 0
        return jnp.broadcast_to(jnp.asarray(keep), (batch_size, self.length))
