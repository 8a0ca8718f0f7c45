"""Loaders for pretrained T5 weights, all returning the T5X parameter tree.

- `load_t5x_params` / `load_t5x_checkpoint`: T5X checkpoints, legacy (msgpack + zarr via
  TensorStore) and orbax (OCDBT), optionally straight onto a sharding.
- `load_hf_params` / `load_hf_checkpoint` / `config_from_hf`: Hugging Face T5
  (safetensors, PyTorch .bin, Flax msgpack, or an in-memory state dict).
- `check_params_match` / `expected_param_shapes`: name and shape checks against a model.
- `pretrained.load_pretrained_params` (format detected from the path; a Hugging Face Hub
  name is read from the local HF cache, `hf_cache`) and `pretrained.load_embedding` (only
  the token embedding, for prompt initializers).
"""

from .hf import load_hf_checkpoint, load_hf_params
from .hf_config import config_from_hf, hf_scales_decoder_outputs, read_hf_config
from .t5x import T5XCheckpoint, find_t5x_checkpoint, load_t5x_checkpoint, load_t5x_params
from .tree import (ParamsMismatchError, check_params_match, expected_param_shapes, flatten,
                   unflatten)

__all__ = [
    "load_t5x_params",
    "load_t5x_checkpoint",
    "find_t5x_checkpoint",
    "T5XCheckpoint",
    "load_hf_params",
    "load_hf_checkpoint",
    "config_from_hf",
    "read_hf_config",
    "hf_scales_decoder_outputs",
    "check_params_match",
    "expected_param_shapes",
    "ParamsMismatchError",
    "flatten",
    "unflatten",
]
