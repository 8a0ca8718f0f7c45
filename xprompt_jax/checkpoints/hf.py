"""Hugging Face T5 weights -> the T5X parameter tree (names and layouts).

HF torch names (linear weights `[out, in]`; `S` = encoder/decoder, `i` = block) -> T5X
(kernels `[in, out]`, i.e. transposed):
- shared.weight [V, d] -> token_embedder/embedding [V, d]
- S.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, H]
  -> S/relpos_bias/rel_embedding [H, buckets]
- encoder.block.i.layer.0: SelfAttention.{q,k,v,o} -> encoder/layers_i/attention/
  {query,key,value,out}/kernel; layer_norm -> pre_attention_layer_norm/scale
- encoder.block.i.layer.1: DenseReluDense.{wi | wi_0, wi_1; wo} -> mlp/{same}/kernel;
  layer_norm -> pre_mlp_layer_norm/scale
- decoder.block.i.layer.0: SelfAttention -> self_attention, layer_norm ->
  pre_self_attention_layer_norm
- decoder.block.i.layer.1: EncDecAttention -> encoder_decoder_attention, layer_norm ->
  pre_cross_attention_layer_norm
- decoder.block.i.layer.2: DenseReluDense -> mlp, layer_norm -> pre_mlp_layer_norm
- S.final_layer_norm.weight -> encoder/encoder_norm/scale, decoder/decoder_norm/scale
- lm_head.weight [V, d] -> decoder/logits_dense/kernel [d, V] (untied models)

`encoder.embed_tokens` / `decoder.embed_tokens` (copies of `shared`) and the unused
`decoder.block.0.layer.1.EncDecAttention.relative_attention_bias` of old T5 1.0 files are
ignored. Flax files (`encoder/block/0/layer/0/SelfAttention/q/kernel`, kernels already
`[in, out]`) are renamed to the torch layout first. For the output head see
`hf_config`'s docstring.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from . import hf_config
from . import hf_files
from . import paths
from . import placement
from . import tree as tree_lib

Path = Tuple[str, ...]

_ATTN = {"q": "query", "k": "key", "v": "value", "o": "out"}
# stack -> sub-layer index -> (HF module, T5X block name, T5X norm name)
_SUBLAYERS = {
    "encoder": {0: ("SelfAttention", "attention", "pre_attention_layer_norm"),
                1: ("DenseReluDense", "mlp", "pre_mlp_layer_norm")},
    "decoder": {0: ("SelfAttention", "self_attention", "pre_self_attention_layer_norm"),
                1: ("EncDecAttention", "encoder_decoder_attention",
                    "pre_cross_attention_layer_norm"),
                2: ("DenseReluDense", "mlp", "pre_mlp_layer_norm")},
}
_IGNORED = {
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
}
_STACK_NORM = {"encoder": "encoder_norm", "decoder": "decoder_norm"}

_RE_BLOCK = re.compile(r"^(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)$")
_RE_ATTN = re.compile(r"^(SelfAttention|EncDecAttention)\.([qkvo])\.weight$")
_RE_RELPOS = re.compile(r"^SelfAttention\.relative_attention_bias\.weight$")
_RE_MLP = re.compile(r"^DenseReluDense\.(wi|wi_\d+|wo)\.weight$")
_RE_FINAL = re.compile(r"^(encoder|decoder)\.final_layer_norm\.weight$")


def flax_to_torch_layout(weights: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """HF Flax names/layouts -> HF torch names/layouts (`kernel` [in, out] -> `weight`
    [out, in]; `embedding` -> `weight`, same layout)."""
    out = {}
    for name, arr in weights.items():
        parts = name.split("/")
        if parts[-1] == "kernel":
            out[".".join(parts[:-1]) + ".weight"] = np.asarray(arr).T
        elif parts[-1] == "embedding":
            out[".".join(parts[:-1]) + ".weight"] = np.asarray(arr)
        else:
            out[".".join(parts)] = np.asarray(arr)
    return out


def _map_name(name: str) -> Tuple[Optional[Path], bool]:
    """HF torch name -> (T5X path, transpose?) or (None, False) if not a T5 weight."""
    if name == "shared.weight":
        return ("token_embedder", "embedding"), False
    if name == "lm_head.weight":
        return ("decoder", "logits_dense", "kernel"), True
    m = _RE_FINAL.match(name)
    if m:
        stack = m.group(1)
        return (stack, _STACK_NORM[stack], "scale"), False
    m = _RE_BLOCK.match(name)
    if not m:
        return None, False
    stack, block, sub, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    kinds = _SUBLAYERS[stack]
    if sub not in kinds:
        return None, False
    hf_module, t5x_block, t5x_norm = kinds[sub]
    layer = f"layers_{block}"
    if rest == "layer_norm.weight":
        return (stack, layer, t5x_norm, "scale"), False
    if _RE_RELPOS.match(rest):
        if block == 0 and sub == 0:
            return (stack, "relpos_bias", "rel_embedding"), True
        return None, False
    m = _RE_ATTN.match(rest)
    if m and m.group(1) == hf_module:
        return (stack, layer, t5x_block, _ATTN[m.group(2)], "kernel"), True
    m = _RE_MLP.match(rest)
    if m and hf_module == "DenseReluDense":
        return (stack, layer, "mlp", m.group(1), "kernel"), True
    return None, False


def _convert(weights: Dict[str, np.ndarray]) -> Tuple[Dict[Path, np.ndarray], Optional[np.ndarray]]:
    """Torch-layout HF weights -> (T5X flat params without the head, lm_head [V, d] or None)."""
    flat: Dict[Path, np.ndarray] = {}
    unexpected = []
    lm_head = None
    for name, arr in weights.items():
        if name in _IGNORED:
            continue
        path, transpose = _map_name(name)
        if path is None:
            unexpected.append(name)
            continue
        arr = np.asarray(arr)
        if name == "lm_head.weight":
            lm_head = arr
            continue
        if transpose:
            if arr.ndim != 2:
                raise tree_lib.ParamsMismatchError(
                    f"Hugging Face weight {name} should be 2-D, has shape {arr.shape}")
            arr = arr.T
        flat[path] = arr
    if unexpected:
        raise tree_lib.ParamsMismatchError(
            f"Hugging Face checkpoint has weights that are not part of a T5 model "
            f"({len(unexpected)}): {tree_lib._fmt_list(unexpected)}", unexpected=unexpected)
    emb = ("token_embedder", "embedding")
    if emb not in flat:
        for alt in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            if alt in weights:
                flat[emb] = np.asarray(weights[alt])
                break
        else:
            raise tree_lib.ParamsMismatchError(
                "Hugging Face checkpoint has no shared.weight (token embedding)",
                missing=["shared.weight"])
    return flat, lm_head


def _head_is_separate(lm_head: Optional[np.ndarray], shared: np.ndarray) -> bool:
    if lm_head is None:
        return False
    return lm_head.shape != shared.shape or not np.array_equal(lm_head, shared)


def _resolve_config(config, directory: Optional[str]):
    """-> (T5Config or None, HF config dict or None)."""
    if config is None:
        if directory is not None:
            cfg_file = paths.join(directory, "config.json")
            if paths.isfile(cfg_file):
                config = cfg_file
        if config is None:
            return None, None
    if _is_t5config(config):
        return config, None
    hf = hf_config.read_hf_config(config)
    return hf_config.config_from_hf(hf), hf


def _logits_kernel(flat, lm_head, cfg, hf) -> None:
    """Adds `decoder/logits_dense/kernel` where the model's logits need it (in place)."""
    shared = flat[("token_embedder", "embedding")]
    separate = _head_is_separate(lm_head, shared)
    kernel_path = ("decoder", "logits_dense", "kernel")
    if cfg is None:  # weights alone: a head that differs from `shared` is a separate head
        if separate:
            flat[kernel_path] = lm_head.T
        return
    if cfg.logits_via_embedding:
        if separate:
            if hf is not None:
                raise ValueError(
                    "Hugging Face checkpoint has a separate lm_head.weight (different from "
                    "shared.weight) while its config makes transformers rescale decoder "
                    f"outputs by d_model**-0.5 (scale_decoder_outputs="
                    f"{hf.get('scale_decoder_outputs')!r}, tie_word_embeddings="
                    f"{hf.get('tie_word_embeddings')!r}, model_type={hf.get('model_type')!r}): "
                    "T5Config cannot express a separate head with rescaling "
                    "(logits_via_embedding=True ties the head to the embedding, False does "
                    "not rescale). Fix the config (tie_word_embeddings: false for T5.1.1) or "
                    "the weights.")
            raise ValueError(
                "T5Config.logits_via_embedding=True (tied head) but the Hugging Face "
                "checkpoint has a separate lm_head.weight that differs from shared.weight; "
                "use logits_via_embedding=False")
        return
    # unscaled logits: a separate head, or the shared embedding used without rescaling
    flat[kernel_path] = (lm_head if lm_head is not None else shared).T


def load_hf_params(path_or_state_dict, config=None, *, dtype=None, shardings=None):
    """Hugging Face T5 weights as a T5X parameter tree (nested dict).

    Args:
      path_or_state_dict: a directory (with `model.safetensors`,
        `model.safetensors.index.json`, `pytorch_model.bin[.index.json]` or
        `flax_model.msgpack`), one of those files, or an in-memory torch / numpy
        `state_dict` (or nested Flax params).
      config: None (then `config.json` next to the weights is used when there is one), a
        HF config (path / dict / transformers object) or our `T5Config`. With a config the
        tree is checked against the shapes it implies and the output head follows it:
        `decoder/logits_dense/kernel` is present exactly when `logits_via_embedding` is
        False (from `lm_head.weight`, or `shared.weight` for a tied head without
        rescaling). Without any config, a `lm_head.weight` that differs from
        `shared.weight` becomes `logits_dense`.
      dtype: cast every parameter (e.g. 'bfloat16'); None keeps the stored dtype.
      shardings: as in `load_t5x_params` (None: host numpy arrays).

    Raises:
      FileNotFoundError for a missing path / weight file; `ParamsMismatchError` for names
      that are not T5 weights or shapes that do not match the config (naming the parameter
      and both shapes); ValueError for a head layout the config cannot express.
    """
    weights, layout, directory = hf_files.read_hf_weights(path_or_state_dict)
    if layout == hf_files.FLAX:
        weights = flax_to_torch_layout(weights)
    flat, lm_head = _convert(weights)
    cfg, hf = _resolve_config(config, directory)
    _logits_kernel(flat, lm_head, cfg, hf)
    if cfg is not None:
        tree_lib.check_params_match(tree_lib.unflatten(flat),
                                    tree_lib.expected_param_shapes(cfg),
                                    what="Hugging Face checkpoint", against="config")
    placed = placement.place_numpy_tree(flat, shardings=shardings, dtype=dtype)
    return tree_lib.unflatten(placed)


def _is_t5config(config) -> bool:
    return hasattr(config, "emb_dim") and hasattr(config, "logits_via_embedding")


def load_hf_checkpoint(path_or_state_dict, config=None, *, dtype=None, shardings=None,
                       **config_overrides):
    """`(T5Config, params)` from a Hugging Face T5 checkpoint.

    The config comes from `config` (HF config path / dict / transformers object, or a
    T5Config) or else the `config.json` next to the weights. `config_overrides` replace
    T5Config fields afterwards (e.g. `dropout_rate=0.0`); the params are checked against
    the result. As in `load_hf_params`, `dtype` casts the params; the model's compute dtype
    is `T5Config.dtype` (`cfg.replace(dtype='bfloat16')`).
    """
    if config is None:
        directory = None
        if not isinstance(path_or_state_dict, Mapping):
            p = paths.fspath(path_or_state_dict)
            directory = p if paths.isdir(p) else paths.dirname(p)
        candidate = None if directory is None else paths.join(directory, "config.json")
        if candidate is None or not paths.isfile(candidate):
            where = f"in {directory}" if directory else "for an in-memory state dict"
            raise FileNotFoundError("load_hf_checkpoint needs a Hugging Face config: none was "
                                    f"given and there is no config.json {where}")
        config = candidate
    cfg = config if _is_t5config(config) else hf_config.config_from_hf(config)
    params = load_hf_params(path_or_state_dict, config, dtype=dtype, shardings=shardings)
    if config_overrides:
        cfg = cfg.replace(**config_overrides)
        tree_lib.check_params_match(params, tree_lib.expected_param_shapes(cfg),
                                    what="Hugging Face checkpoint", against="config")
    return cfg, params
