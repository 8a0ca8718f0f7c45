"""K separately trained prompts (`.npy` `[m, e]` files: `export`'s prompt.npy or a run's
numpy checkpoint) as the K entries of one PromptBank on a model's frozen T5, for
ensembles of separate runs and for serving many prompts."""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..fileio import read_npy
from ..prompts import bank as prompt_bank
from ..prompts import initializers
from ..prompts.soft_prompt import SoftPrompt


def stack_prompt_files(paths: Sequence[str]) -> np.ndarray:
    """`[K, m, e]` float32 of K `.npy` prompt files of one shape (never unpickled)."""
    arrays = []
    for path in paths:
        value = read_npy(path, "prompt file")
        if value.ndim != 2:
            raise ConfigError(f"{path}: expected a [m, e] prompt, got shape {value.shape}")
        if arrays and value.shape != arrays[0].shape:
            raise ConfigError(f"{path}: shape {value.shape} differs from {paths[0]}'s "
                              f"{arrays[0].shape}")
        arrays.append(value.astype(np.float32))
    if not arrays:
        raise ConfigError("no prompt files given")
    return np.stack(arrays)


def bank_model_from_files(model, prompt_files: Sequence[str]) -> Tuple[Any, Dict[str, Any]]:
    """(bank model, trainable params) of K `.npy` prompts on `model`'s frozen T5 (the
    model's own prompt module is replaced)."""
    stacked = stack_prompt_files(list(prompt_files))  # [K, m, e]
    k, m, e = stacked.shape
    if e != model.config.emb_dim:
        raise ConfigError(f"prompt files have embedding size {e}; the model's is "
                          f"{model.config.emb_dim}")
    bank = prompt_bank.PromptBank(SoftPrompt(m, initializers.from_array(stacked[0])),
                                  num_prompts=k)
    return model.clone(prompt=bank), {"prompt": {prompt_bank.BANK_NAME: {
        "prompt": jnp.asarray(stacked)}}}
