"""Hugging Face T5 `config.json` -> our `T5Config`, with transformers' output-head rules.

How transformers computes T5 logits (checked against transformers 5.23,
`models/t5/configuration_t5.py` and `modeling_t5.py`):

- `T5Config.__post_init__` sets `scale_decoder_outputs = (tie_word_embeddings kwarg is not
  False)` and then forces `tie_word_embeddings = True`. A `scale_decoder_outputs` key in
  the config (5.x writes it into config.json) overrides the derived value.
- `T5ForConditionalGeneration` computes `lm_head(out * d_model**-0.5)` when
  `scale_decoder_outputs`, else `lm_head(out)`.
- `lm_head.weight` is tied to `shared.weight` unless the checkpoint holds both and they
  differ (then they stay separate). So a model created from scratch is tied; built with
  `tie_word_embeddings=False` it is tied and *not* rescaled.
- transformers 4.x: `tie_word_embeddings` alone decides both (True: tied and rescaled,
  False: separate head, no rescaling) - the same rule when no `scale_decoder_outputs`.
- mT5 (5.23 `modeling_mt5.py`) never rescales.

Our `T5Config.logits_via_embedding=True` means logits = (out @ embedding.T) / sqrt(emb):
exactly transformers' tied-and-rescaled case. Everything unscaled is
`logits_via_embedding=False` with `decoder/logits_dense/kernel` = lm_head.T (or
shared.T where the head is tied); `load_hf_params` builds that kernel. A separate head
*with* rescaling has no T5Config equivalent and is rejected there.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Tuple

from . import paths

# transformers ACT2FN name -> name understood by xprompt_jax.models.layers.activation_fn
_ACTIVATIONS = {
    "relu": "relu",
    "gelu_new": "gelu",            # tanh approximation == flax nn.gelu(approximate=True)
    "gelu_pytorch_tanh": "gelu",
    "gelu": "gelu_exact",          # erf GELU
    "silu": "silu",
    "swish": "silu",
}

_SUPPORTED_MODEL_TYPES = ("t5", "mt5")


def _to_dict(config_or_path) -> Dict[str, Any]:
    if isinstance(config_or_path, Mapping):
        return dict(config_or_path)
    if isinstance(config_or_path, (str, os.PathLike)):
        path = paths.fspath(config_or_path)
        if paths.isdir(path):
            path = paths.join(path, "config.json")
        if not paths.exists(path):
            raise FileNotFoundError(f"Hugging Face config not found: {path}")
        from ..fileio import parse_json  # imported here: this module loads without jax

        return parse_json(paths.read_text(path), path, "Hugging Face config")
    to_dict = getattr(config_or_path, "to_dict", None)
    if callable(to_dict):  # a transformers PretrainedConfig
        d = dict(to_dict())
        for key in ("scale_decoder_outputs", "tie_word_embeddings", "model_type"):
            if hasattr(config_or_path, key):
                d[key] = getattr(config_or_path, key)
        return d
    raise TypeError("config_or_path must be a config.json path, a directory holding one, a "
                    f"dict or a transformers config, got {type(config_or_path).__name__}")


def read_hf_config(config_or_path) -> Dict[str, Any]:
    """The HF config as a dict (from a path, a directory, a dict or a transformers config)."""
    return _to_dict(config_or_path)


def hf_scales_decoder_outputs(hf: Mapping[str, Any]) -> bool:
    """Whether transformers multiplies decoder outputs by d_model**-0.5 before the head."""
    if hf.get("model_type") == "mt5":
        return False
    if "scale_decoder_outputs" in hf:
        return bool(hf["scale_decoder_outputs"])
    return hf.get("tie_word_embeddings", None) is not False


def mlp_activations(feed_forward_proj: str) -> Tuple[str, ...]:
    """HF `feed_forward_proj` -> T5Config.mlp_activations, as transformers parses it."""
    parts = feed_forward_proj.split("-")
    if (len(parts) > 1 and parts[0] != "gated") or len(parts) > 2:
        raise ValueError(f"HF config feed_forward_proj={feed_forward_proj!r} is not "
                         "'{ACT}' or 'gated-{ACT}'")
    gated = parts[0] == "gated" and len(parts) == 2
    act = "gelu_new" if feed_forward_proj == "gated-gelu" else parts[-1]
    if act not in _ACTIVATIONS:
        raise ValueError(f"HF config feed_forward_proj={feed_forward_proj!r}: activation "
                         f"{act!r} has no equivalent here (supported: {sorted(_ACTIVATIONS)})")
    ours = _ACTIVATIONS[act]
    return (ours, "linear") if gated else (ours,)


def config_from_hf(config_or_path, **overrides):
    """A `T5Config` equal to a Hugging Face T5 config.

    `config_or_path`: a `config.json` path, a directory holding one, a dict, or a
    transformers `T5Config`. `overrides` replace fields afterwards (e.g. `dtype='bfloat16'`,
    `dropout_rate=0.0`).

    `logits_via_embedding` is True exactly when transformers rescales decoder outputs
    (`scale_decoder_outputs`, see the module docstring): T5 1.0 (tied head) gives True;
    public T5.1.1 / LM-adapted (`tie_word_embeddings: false`, separate `lm_head`) False.
    """
    from xprompt_jax.models.config import T5Config

    hf = _to_dict(config_or_path)
    model_type = hf.get("model_type")
    if model_type is not None and model_type not in _SUPPORTED_MODEL_TYPES:
        raise ValueError(f"HF config model_type={model_type!r} is not supported (expected one "
                         f"of {_SUPPORTED_MODEL_TYPES})")
    required = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
    missing = [k for k in required if k not in hf]
    if missing:
        raise ValueError(f"HF T5 config lacks {missing}")
    num_layers = int(hf["num_layers"])
    num_decoder_layers = hf.get("num_decoder_layers")
    fields = dict(
        vocab_size=int(hf["vocab_size"]),
        emb_dim=int(hf["d_model"]),
        num_heads=int(hf["num_heads"]),
        head_dim=int(hf["d_kv"]),
        mlp_dim=int(hf["d_ff"]),
        num_encoder_layers=num_layers,
        num_decoder_layers=num_layers if num_decoder_layers is None else int(num_decoder_layers),
        mlp_activations=mlp_activations(hf.get("feed_forward_proj", "relu")),
        dropout_rate=float(hf.get("dropout_rate", 0.1)),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
        relative_attention_num_buckets=int(hf.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(hf.get("relative_attention_max_distance", 128)),
        logits_via_embedding=hf_scales_decoder_outputs(hf),
    )
    fields.update(overrides)
    return T5Config(**fields)
