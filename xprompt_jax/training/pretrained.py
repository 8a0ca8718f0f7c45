"""Pretrained T5 weights for the frozen model: T5X (legacy / orbax) or Hugging Face,
detected from the path, placed straight onto their shardings when given."""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

HF_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json",
            "pytorch_model.bin", "pytorch_model.bin.index.json", "flax_model.msgpack")


def detect_format(path: str) -> str:
    """'hf' for a Hugging Face directory or weight file, else 't5x'."""
    path = os.fspath(path)
    if path.endswith((".safetensors", ".bin", ".msgpack")) and not path.endswith("checkpoint"):
        return "hf"
    if os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in HF_FILES):
        return "hf"
    return "t5x"


def load_pretrained_params(path: str, checkpoint_format: str = "auto",
                           shardings: Optional[Any] = None, dtype: Optional[Any] = None):
    """The T5X-named parameter tree of a pretrained checkpoint."""
    from xprompt_jax import checkpoints

    fmt = detect_format(path) if checkpoint_format == "auto" else checkpoint_format
    if fmt == "hf":
        return checkpoints.load_hf_params(path, shardings=shardings, dtype=dtype)
    if fmt == "t5x":
        return checkpoints.load_t5x_params(path, shardings=shardings, dtype=dtype)
    raise ValueError(f"checkpoint_format {checkpoint_format!r}; expected 'auto', 't5x' or 'hf'")


def load_embedding(path: str, checkpoint_format: str = "auto") -> np.ndarray:
    """Only the token embedding table `[vocab, e]` (for vocab-based prompt initializers)."""
    params = load_pretrained_params(path, checkpoint_format)
    try:
        return np.asarray(params["token_embedder"]["embedding"])
    except KeyError as e:
        raise KeyError(f"checkpoint {path} has no token_embedder/embedding") from e
