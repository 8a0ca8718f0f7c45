"""Hugging Face PEFT prompt-tuning adapters, in and out.

A PEFT prompt adapter directory (what `PeftModel.save_pretrained` writes for a
`PromptTuningConfig` or a P-Tuning `PromptEncoderConfig`) holds:

- `adapter_config.json`: `peft_type` PROMPT_TUNING or P_TUNING, `task_type` SEQ_2_SEQ_LM,
  `num_virtual_tokens` n, `token_dim` e, `num_transformer_submodules` (1: one prompt for
  the encoder input, as in Lester et al. and this package; 2, PEFT's seq2seq default:
  2n rows, see below), `num_attention_heads`, `num_layers`, `base_model_name_or_path`,
  `peft_version` (PEFT >= 0.18), ...
- `adapter_model.safetensors` (older PEFT: `adapter_model.bin`): one tensor
  `prompt_embeddings` `[n * num_transformer_submodules, e]`.

PEFT prepends the first n rows to the embedded encoder input and extends the attention
mask with ones: the same placement as `PromptedT5` (after the embedding lookup, before
dropout), so an `[n, e]` prompt means the same in both.

- `num_transformer_submodules=2`: since PEFT 0.4.0 a seq2seq model's forward and generate
  prepend only rows [0, n) to the encoder input; rows [n, 2n) (the "decoder half") are never
  read, get no gradient and cannot change the output. The encoder half is imported and the
  decoder half dropped with an INFO line. PEFT 0.1.0-0.3.0 prefixed the decoder input with
  those rows: an adapter written by them (its config has `peft_version` < 0.4.0, or lacks
  the `revision` field that PEFT 0.4.0 added to every config) is refused.
- P_TUNING: the MLP / LSTM prompt encoder is a training-time reparameterisation; PEFT saves
  its output (`get_prompt_embedding_to_save`: the projected prompt) as `prompt_embeddings`
  and runs a loaded adapter on exactly that, so it imports as a plain prompt.

`write_peft_adapter(dir, prompt)` writes an encoder-only PROMPT_TUNING adapter;
`read_peft_adapter(dir)` reads one back as `[n, e]` float32 (`dir` may be a Hugging Face
Hub name in the local cache, as for `PeftModel.from_pretrained`). Needs `safetensors` (the
`[hf]` extra).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any, Dict, Optional

import numpy as np

from ..errors import CheckpointError
from ..fileio import write_bytes_atomic, write_text_atomic
from . import hf_cache, hf_files

logger = logging.getLogger("xprompt_jax")
_NOTED = set()  # adapters whose ignored decoder half was already reported

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SAFETENSORS = "adapter_model.safetensors"
ADAPTER_BIN = "adapter_model.bin"
WEIGHT_KEY = "prompt_embeddings"
PEFT_TYPE = "PROMPT_TUNING"
# Adapter types whose saved `prompt_embeddings` is the prompt PEFT runs (P_TUNING: the
# prompt encoder's output, see the module docstring).
PROMPT_PEFT_TYPES = (PEFT_TYPE, "P_TUNING")
TASK_TYPE = "SEQ_2_SEQ_LM"
# The first PEFT release whose seq2seq prompt tuning / P-tuning leaves the decoder input
# alone (huggingface/peft "Add seq2seq prompt tuning support", released in 0.4.0).
ENCODER_ONLY_SINCE = (0, 4, 0)


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


def _version(text) -> Optional[tuple]:
    """'0.18.1.dev0' / '0.3.0@abc' -> (0, 18, 1); None when absent or unparsable."""
    match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text)) if text else None
    return tuple(int(g or 0) for g in match.groups()) if match else None


def _writer_prompts_decoder(config: Dict[str, Any]) -> Optional[str]:
    """The PEFT version (as text) that wrote `config` when it is one that prefixed the
    decoder input with the second half of a seq2seq prompt; None otherwise."""
    version = _version(config.get("peft_version"))
    if version is not None:
        return config["peft_version"] if version < ENCODER_ONLY_SINCE else None
    # No peft_version (PEFT < 0.18): PEFT 0.4.0 added `revision` (and `auto_mapping`) to
    # every config it saves, so a config without it is older.
    return None if "revision" in config else "< 0.4.0 (no 'revision' field)"


def read_peft_adapter(directory: str) -> PeftPrompt:
    """Reads a PEFT prompt-tuning / P-tuning adapter directory: the encoder prompt
    `[n, e]` (module docstring)."""
    directory = os.path.abspath(os.fspath(hf_cache.resolve(directory, "PEFT adapter")))
    config_path = os.path.join(directory, ADAPTER_CONFIG)
    if not os.path.isfile(config_path):
        raise PeftAdapterError(f"PEFT adapter config not found: {config_path}")
    with open(config_path, "rb") as f:
        try:
            config = json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PeftAdapterError(f"{config_path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise PeftAdapterError(f"{config_path}: expected a JSON object, got "
                               f"{type(config).__name__}")
    peft_type = config.get("peft_type")
    if peft_type not in PROMPT_PEFT_TYPES:
        raise PeftAdapterError(f"{config_path}: peft_type is {peft_type!r}; only "
                               f"{' and '.join(PROMPT_PEFT_TYPES)} adapters hold a soft prompt")
    if config.get("task_type") not in (TASK_TYPE, None):
        raise PeftAdapterError(f"{config_path}: task_type is {config.get('task_type')!r}; "
                               f"expected {TASK_TYPE} (a T5 encoder-decoder prompt)")
    # PEFT fills a missing value with 2 for SEQ_2_SEQ_LM.
    submodules = config.get("num_transformer_submodules") or 2
    if submodules not in (1, 2) or isinstance(submodules, bool):
        raise PeftAdapterError(f"{config_path}: num_transformer_submodules is {submodules!r}; "
                               "a seq2seq prompt adapter has 1 or 2")
    if submodules == 2:
        writer = _writer_prompts_decoder(config)
        if writer is not None:
            raise PeftAdapterError(
                f"{config_path}: num_transformer_submodules is 2 and the adapter was written "
                f"by PEFT {writer}, whose seq2seq {peft_type} also prefixed the decoder input "
                "with the second half of the prompt (PEFT >= 0.4.0 does not); xprompt_jax "
                "prompts the encoder only")
    n, e = config.get("num_virtual_tokens"), config.get("token_dim")
    for field, value in (("num_virtual_tokens", n), ("token_dim", e)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise PeftAdapterError(f"{config_path}: {field} is {value!r}; expected an int >= 1")
    prompt = _read_weights(directory)
    rows = None if n is None else n * submodules
    if prompt.ndim != 2 or (rows is not None and prompt.shape[0] != rows) or \
            (e is not None and prompt.shape[1] != e) or prompt.shape[0] % submodules:
        raise PeftAdapterError(f"PEFT adapter {directory}: {WEIGHT_KEY} has shape "
                               f"{prompt.shape}; adapter_config.json says num_virtual_tokens="
                               f"{n}, token_dim={e}, num_transformer_submodules={submodules}")
    if submodules == 2:
        n = prompt.shape[0] // 2
        if directory not in _NOTED:
            _NOTED.add(directory)
            logger.info("PEFT adapter %s: num_transformer_submodules=2: using rows 0-%d (the "
                        "encoder prompt) and ignoring rows %d-%d, which PEFT >= 0.4.0 never "
                        "feeds to a seq2seq model (no gradient, no effect on the output)",
                        directory, n - 1, n, 2 * n - 1)
        prompt = prompt[:n]
    return PeftPrompt(prompt=np.ascontiguousarray(prompt), config=config, path=directory)
