"""Read Hugging Face weight files into `{name: np.ndarray}`.

Formats: `model.safetensors` (and sharded `model.safetensors.index.json`),
`pytorch_model.bin` (and `pytorch_model.bin.index.json`; needs torch), Flax
`flax_model.msgpack` (and its `.index.json`); in memory, a torch/numpy `state_dict` or a
nested Flax params dict. Names come back as found: torch layout ('encoder.block.0.layer.0.
SelfAttention.q.weight', `[out, in]`) or Flax layout ('encoder/block/0/layer/0/
SelfAttention/q/kernel', `[in, out]`); `layout` says which.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from . import paths

TORCH = "torch"
FLAX = "flax"

# In order of preference inside a directory.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "flax_model.msgpack",
    "flax_model.msgpack.index.json",
)


def to_numpy(x) -> np.ndarray:
    """torch tensor (incl. bfloat16) / jax array / numpy -> np.ndarray."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        import torch
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            import ml_dtypes
            return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(x)


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
    # safetensors' numpy reader asks numpy for dtype 'bfloat16', which exists only once
    # ml_dtypes has registered it: jax does that on import, but this reader must not depend
    # on jax having been imported first (a fresh process reading a bf16 file failed with
    # "data type 'bfloat16' not understood").
    import ml_dtypes  # noqa: F401  # pylint: disable=unused-import
    from safetensors.numpy import load, load_file
    if paths.is_remote(path):
        return dict(load(paths.read_bytes(path)))
    return dict(load_file(paths.local(path)))


def _read_torch(path: str) -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs torch (pip install xprompt_jax[hf])") from err
    state = torch.load(paths.local(path), map_location="cpu", weights_only=True)
    return {k: to_numpy(v) for k, v in state.items()}


def _read_flax(path: str) -> Dict[str, np.ndarray]:
    from flax import serialization
    tree = serialization.msgpack_restore(paths.read_bytes(path))
    return flatten_flax(tree)


def flatten_flax(tree: Mapping) -> Dict[str, np.ndarray]:
    """Nested Flax params (optionally under 'params') -> {'a/b/kernel': array}."""
    if set(tree.keys()) == {"params"}:
        tree = tree["params"]
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}/{k}" if prefix else str(k)
            if isinstance(v, Mapping):
                walk(v, name)
            else:
                out[name] = to_numpy(v)

    walk(tree, "")
    return out


def _reader_for(name: str):
    if name.endswith(".safetensors"):
        return _read_safetensors, TORCH
    if name.endswith((".bin", ".pt", ".pth")):
        return _read_torch, TORCH
    if name.endswith(".msgpack"):
        return _read_flax, FLAX
    return None, None


def _read_index(index_file: str) -> Tuple[Dict[str, np.ndarray], str]:
    from ..fileio import parse_json  # imported here: this module loads without jax

    index = parse_json(paths.read_text(index_file), index_file, "safetensors index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, Mapping):
        raise ValueError(f"{index_file} has no 'weight_map'")
    base = paths.dirname(index_file)
    out: Dict[str, np.ndarray] = {}
    layout = None
    for shard in sorted(set(weight_map.values())):
        read, layout = _reader_for(shard)
        if read is None:
            raise ValueError(f"{index_file}: unknown shard file type {shard!r}")
        shard_path = paths.inside(base, shard, f"{index_file}: weight_map shard")
        if not paths.exists(shard_path):
            raise FileNotFoundError(f"{index_file} names shard {shard_path}, which does not exist")
        out.update(read(shard_path))
    return out, layout


def read_weight_file(path: str) -> Tuple[Dict[str, np.ndarray], str]:
    name = paths.basename(path)
    if name.endswith(".index.json"):
        return _read_index(path)
    read, layout = _reader_for(name)
    if read is None:
        raise ValueError(f"unknown Hugging Face weight file type: {path} (expected "
                         ".safetensors, .bin / .pt, .msgpack or an .index.json)")
    return read(path), layout


def find_weight_file(directory: str) -> str:
    for name in WEIGHT_FILES:
        candidate = paths.join(directory, name)
        if paths.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"no Hugging Face weights in {directory}: looked for "
                            f"{', '.join(WEIGHT_FILES)}")


def read_hf_weights(path_or_state_dict) -> Tuple[Dict[str, np.ndarray], str, Optional[str]]:
    """`(weights, layout, directory)`: layout 'torch' or 'flax'; directory is where a
    `config.json` may sit (None for in-memory state dicts)."""
    if isinstance(path_or_state_dict, Mapping):
        sd = path_or_state_dict
        if any(isinstance(v, Mapping) for v in sd.values()):
            return flatten_flax(sd), FLAX, None
        if any("/" in str(k) for k in sd):
            return {str(k): to_numpy(v) for k, v in sd.items()}, FLAX, None
        return {str(k): to_numpy(v) for k, v in sd.items()}, TORCH, None
    path = paths.fspath(path_or_state_dict)
    if not paths.exists(path):
        raise FileNotFoundError(f"Hugging Face checkpoint path does not exist: {path}")
    if paths.isdir(path):
        weights, layout = read_weight_file(find_weight_file(path))
        return weights, layout, path
    weights, layout = read_weight_file(path)
    return weights, layout, paths.dirname(path)
