"""Hugging Face PEFT prompt-tuning adapters, in and out.

A PEFT prompt-tuning adapter directory (what `PeftModel.save_pretrained` writes for a
`PromptTuningConfig`) holds:

- `adapter_config.json`: `peft_type` PROMPT_TUNING, `task_type` SEQ_2_SEQ_LM,
  `num_virtual_tokens` n, `token_dim` e, `num_transformer_submodules` (1: the prompt
  prefixes the encoder input only, as in Lester et al. and this package; 2, PEFT's
  seq2seq default: a second prompt also prefixes the decoder input), `num_attention_heads`,
  `num_layers`, `base_model_name_or_path`, ...
- `adapter_model.safetensors` (older PEFT: `adapter_model.bin`): one tensor
  `prompt_embeddings` `[n * num_transformer_submodules, e]`.

PEFT prepends the virtual tokens to the embedded input and extends the attention mask with
ones: the same placement as `PromptedT5` (after the embedding lookup, before dropout), so
an `[n, e]` prompt means the same in both.

`write_peft_adapter(dir, prompt)` writes an encoder-only adapter; `read_peft_adapter(dir)`
reads one back as `[n, e]` float32 (adapters with a decoder prompt are refused: this
package prompts the encoder only). Needs `safetensors` (the `[hf]` extra).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Optional

import numpy as np

from ..errors import CheckpointError
from ..fileio import write_bytes_atomic, write_text_atomic
from . import hf_files

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SAFETENSORS = "adapter_model.safetensors"
ADAPTER_BIN = "adapter_model.bin"
WEIGHT_KEY = "prompt_embeddings"
PEFT_TYPE = "PROMPT_TUNING"
TASK_TYPE = "SEQ_2_SEQ_LM"


class PeftAdapterError(CheckpointError):
    """A PEFT adapter directory is missing, malformed or not an encoder prompt (a CLI
    prints it on one line)."""


@dataclasses.dataclass(frozen=True)
class PeftPrompt:
    """A prompt read from a PEFT adapter: `prompt` `[n, e]` float32 and its config."""

    prompt: np.ndarray
    config: Dict[str, Any]
    path: str


def adapter_config(num_virtual_tokens: int, token_dim: int, *,
                   base_model_name_or_path: Optional[str] = None,
                   num_attention_heads: Optional[int] = None,
                   num_layers: Optional[int] = None) -> Dict[str, Any]:
    """The `adapter_config.json` of an encoder-only seq2seq prompt-tuning adapter (the
    fields of PEFT's `PromptTuningConfig`)."""
    return {
        "peft_type": PEFT_TYPE,
        "task_type": TASK_TYPE,
        "auto_mapping": None,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "num_virtual_tokens": int(num_virtual_tokens),
        "token_dim": int(token_dim),
        "num_transformer_submodules": 1,
        "num_attention_heads": None if num_attention_heads is None else int(num_attention_heads),
        "num_layers": None if num_layers is None else int(num_layers),
        "modules_to_save": None,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
    }


def _safetensors_numpy():
    try:
        from safetensors import numpy as st_numpy
    except ImportError as e:
        raise ImportError("PEFT adapters need the `safetensors` package "
                          "(pip install 'xprompt_jax[hf]')") from e
    return st_numpy


def write_peft_adapter(directory: str, prompt, *, base_model_name_or_path: Optional[str] = None,
                       num_attention_heads: Optional[int] = None,
                       num_layers: Optional[int] = None) -> Dict[str, str]:
    """Writes `prompt` `[n, e]` as a PEFT prompt-tuning adapter (encoder prompt only) into
    `directory`; returns `{'adapter_config': path, 'adapter_weights': path}`."""
    prompt = np.ascontiguousarray(np.asarray(prompt, np.float32))
    if prompt.ndim != 2 or prompt.shape[0] == 0:
        raise PeftAdapterError(f"a PEFT prompt is [num_virtual_tokens, token_dim]; got shape "
                               f"{prompt.shape}")
    st_numpy = _safetensors_numpy()
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    files = {"adapter_config": os.path.join(directory, ADAPTER_CONFIG),
             "adapter_weights": os.path.join(directory, ADAPTER_SAFETENSORS)}
    config = adapter_config(prompt.shape[0], prompt.shape[1],
                            base_model_name_or_path=base_model_name_or_path,
                            num_attention_heads=num_attention_heads, num_layers=num_layers)
    # through temporaries renamed into place: never written through a planted symlink
    write_bytes_atomic(files["adapter_weights"],
                       st_numpy.save({WEIGHT_KEY: prompt}, metadata={"format": "pt"}))
    write_text_atomic(files["adapter_config"], json.dumps(config, indent=2, sort_keys=True))
    return files


def _read_weights(directory: str) -> np.ndarray:
    path = None
    for name in (ADAPTER_SAFETENSORS, ADAPTER_BIN):
        if os.path.isfile(os.path.join(directory, name)):
            path = os.path.join(directory, name)
            break
    if path is None:
        raise PeftAdapterError(f"PEFT adapter {directory}: neither {ADAPTER_SAFETENSORS} nor "
                               f"{ADAPTER_BIN} found")
    if path.endswith(".safetensors"):
        _safetensors_numpy()  # the [hf] extra's clear ImportError
    try:
        # The Hugging Face weight reader (bfloat16 included, whatever was imported before).
        weights, _ = hf_files.read_weight_file(path)
    except ImportError:
        raise
    except Exception as e:  # pylint: disable=broad-except  # safetensors / torch: corrupt file
        what = "safetensors file" if path.endswith(".safetensors") else "adapter_model.bin"
        hint = "; cut short or corrupt?" if path.endswith(".safetensors") else ""
        raise PeftAdapterError(f"{path}: unreadable {what} ({type(e).__name__}: "
                               f"{str(e).strip()[:200]}{hint})") from None
    if WEIGHT_KEY not in weights:
        raise PeftAdapterError(f"{path}: no {WEIGHT_KEY!r} tensor (found {sorted(weights)[:5]}); "
                               "not a prompt-tuning adapter")
    return np.asarray(weights[WEIGHT_KEY], np.float32)


def read_peft_adapter(directory: str) -> PeftPrompt:
    """Reads a PEFT prompt-tuning adapter directory: the encoder prompt `[n, e]`."""
    directory = os.path.abspath(os.fspath(directory))
    config_path = os.path.join(directory, ADAPTER_CONFIG)
    if not os.path.isfile(config_path):
        raise PeftAdapterError(f"PEFT adapter config not found: {config_path}")
    with open(config_path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise PeftAdapterError(f"{config_path}: not valid JSON ({e})") from e
    if config.get("peft_type") != PEFT_TYPE:
        raise PeftAdapterError(f"{config_path}: peft_type is {config.get('peft_type')!r}; only "
                               f"{PEFT_TYPE} adapters hold a soft prompt")
    if config.get("task_type") not in (TASK_TYPE, None):
        raise PeftAdapterError(f"{config_path}: task_type is {config.get('task_type')!r}; "
                               f"expected {TASK_TYPE} (a T5 encoder-decoder prompt)")
    # PEFT fills a missing value with 2 for SEQ_2_SEQ_LM.
    submodules = config.get("num_transformer_submodules") or 2
    if submodules != 1:
        raise PeftAdapterError(
            f"{config_path}: num_transformer_submodules is {submodules}: the adapter also "
            "prefixes the decoder input with a prompt, which xprompt_jax does not do (it "
            "prompts the encoder only); train the PEFT adapter with "
            "num_transformer_submodules=1")
    n, e = config.get("num_virtual_tokens"), config.get("token_dim")
    prompt = _read_weights(directory)
    if prompt.ndim != 2 or (n is not None and prompt.shape[0] != n) or \
            (e is not None and prompt.shape[1] != e):
        raise PeftAdapterError(f"PEFT adapter {directory}: {WEIGHT_KEY} has shape "
                               f"{prompt.shape}; adapter_config.json says num_virtual_tokens="
                               f"{n}, token_dim={e}")
    return PeftPrompt(prompt=prompt, config=config, path=directory)
