"""Pretrained T5 weights for the frozen model: T5X (legacy / orbax) or Hugging Face,
detected from the path, placed straight onto their shardings when given. A Hugging Face Hub
name (`google/t5-v1_1-base`) is read from the local Hugging Face cache (`hf_cache`)."""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ..errors import CheckpointError, ConfigError, XPromptError
from . import hf_cache
from .read_errors import quiet_failed_reads, unreadable_reason

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
    from .hf import load_hf_params
    from .t5x import load_t5x_params

    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"INITIAL_CHECKPOINT_PATH={path!r}: expected a path")
    path = hf_cache.resolve(path, "INITIAL_CHECKPOINT_PATH")
    fmt = detect_format(path) if checkpoint_format == "auto" else checkpoint_format
    if fmt not in ("hf", "t5x"):
        raise ConfigError(f"CHECKPOINT_FORMAT={checkpoint_format!r}; expected 'auto', 't5x' "
                          "or 'hf'")
    if not os.path.exists(path) and "://" not in os.fspath(path):
        raise CheckpointError(f"pretrained checkpoint {path} does not exist "
                              "(INITIAL_CHECKPOINT_PATH)")
    load = load_hf_params if fmt == "hf" else load_t5x_params
    quiet_failed_reads()  # a damaged file: one line, not TensorStore's leftover reads
    try:
        return load(path, shardings=shardings, dtype=dtype)
    except XPromptError:
        raise
    except Exception as e:  # tensorstore / orbax / msgpack / safetensors errors
        raise CheckpointError(f"pretrained checkpoint {path} ({fmt}) cannot be read: "
                              f"{unreadable_reason(e)} (INITIAL_CHECKPOINT_PATH)") from e


def load_embedding(path: str, checkpoint_format: str = "auto") -> np.ndarray:
    """Only the token embedding table `[vocab, e]` (for vocab-based prompt initializers)."""
    params = load_pretrained_params(path, checkpoint_format)
    try:
        return np.asarray(params["token_embedder"]["embedding"])
    except KeyError as e:
        raise KeyError(f"checkpoint {path} has no token_embedder/embedding") from e
