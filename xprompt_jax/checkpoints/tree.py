"""Parameter trees: flatten / unflatten nested dicts, shapes a config implies, and checks.

Paths are tuples of string keys; they print as `'encoder/layers_0/attention/query/kernel'`.
Only `Mapping`s are walked (plain dicts, flax `FrozenDict`); everything else is a leaf, so a
`None` leaf or a flax box (`nn.Partitioned`, `LogicallyPartitioned`) stays one leaf.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

Path = Tuple[str, ...]


class ParamsMismatchError(ValueError):
    """A parameter tree does not match the expected names or shapes.

    Attributes: `missing`, `unexpected` (lists of path strings) and `mismatched`
    (list of `(path, found_shape, expected_shape)`).
    """

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


def path_str(path: Iterable[str]) -> str:
    return "/".join(str(p) for p in path)


def flatten(tree: Mapping, is_leaf: Optional[Callable[[Any], bool]] = None) -> Dict[Path, Any]:
    """Nested mappings -> `{(k1, k2, ...): leaf}` in insertion order.

    `is_leaf(x)` may stop the walk at a mapping (e.g. a TensorStore spec dict). An empty
    mapping contributes no entry.
    """
    out: Dict[Path, Any] = {}

    def walk(node, prefix):
        if isinstance(node, Mapping) and not (is_leaf is not None and is_leaf(node)):
            for key, value in node.items():
                walk(value, prefix + (str(key),))
        else:
            out[prefix] = node

    if not isinstance(tree, Mapping):
        raise TypeError(f"expected a nested mapping of parameters, got {type(tree).__name__}")
    walk(tree, ())
    return out


def unflatten(flat: Mapping[Path, Any]) -> Dict[str, Any]:
    """`{(k1, k2): leaf}` -> nested plain dicts."""
    root: Dict[str, Any] = {}
    for path, value in flat.items():
        if not path:
            raise ValueError("cannot unflatten an empty path")
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"path {path_str(path)} passes through a leaf")
        node[path[-1]] = value
    return root


def _unbox(x):
    # flax metadata boxes (nn.Partitioned, LogicallyPartitioned) keep the value in `.unbox()`.
    unbox = getattr(x, "unbox", None)
    return unbox() if callable(unbox) else x


def leaf_shape(x) -> Tuple[int, ...]:
    """Shape of an array, `ShapeDtypeStruct`, flax box, or a shape given as a tuple/list."""
    x = _unbox(x)
    if hasattr(x, "shape"):
        return tuple(int(d) for d in x.shape)
    if isinstance(x, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in x):
        return tuple(int(d) for d in x)
    raise TypeError(f"cannot read a shape from {type(x).__name__}")


def leaf_dtype(x):
    x = _unbox(x)
    dt = getattr(x, "dtype", None)
    return None if dt is None else np.dtype(dt)


def _fmt_list(items, limit=20) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_params_match(params: Mapping, expected: Mapping, *, check_dtype: bool = False,
                       what: str = "checkpoint", against: str = "model") -> None:
    """Raises `ParamsMismatchError` unless `params` has exactly the paths and shapes of
    `expected`.

    `params` leaves: arrays or anything with `.shape`. `expected` leaves: arrays,
    `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape(model.init, ...)['params']`), flax
    boxes, or shape tuples. The message lists missing and unexpected paths and, for each
    shape mismatch, the parameter and both shapes. With `check_dtype`, dtypes must match
    too (where the expected leaf has one).
    """
    if isinstance(expected, Mapping) and "params" in expected and "params" not in params \
            and len(expected) <= 2:
        hint = (f" (the expected tree has a top-level 'params' collection: pass "
                f"variables['params'])")
    else:
        hint = ""
    got = flatten(params)
    want = flatten(expected)
    missing = [path_str(p) for p in want if p not in got]
    unexpected = [path_str(p) for p in got if p not in want]
    mismatched = []
    for p, w in want.items():
        if p not in got:
            continue
        gs, ws = leaf_shape(got[p]), leaf_shape(w)
        if gs != ws:
            mismatched.append((path_str(p), gs, ws))
        elif check_dtype:
            gd, wd = leaf_dtype(got[p]), leaf_dtype(w)
            if gd is not None and wd is not None and gd != wd:
                mismatched.append((path_str(p), f"{gs} {gd}", f"{ws} {wd}"))
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{what} parameters do not match the {against}{hint}:"]
    if missing:
        lines.append(f"  missing from {what} ({len(missing)}): {_fmt_list(missing)}")
    if unexpected:
        lines.append(f"  unexpected in {what} ({len(unexpected)}): {_fmt_list(unexpected)}")
    for name, gs, ws in mismatched[:50]:
        lines.append(f"  {name}: {what} shape {gs} != {against} shape {ws}")
    if len(mismatched) > 50:
        lines.append(f"  ... ({len(mismatched) - 50} more shape mismatches)")
    raise ParamsMismatchError("\n".join(lines), missing, unexpected, mismatched)


def expected_param_shapes(config) -> Dict[str, Any]:
    """The T5X parameter tree (`jax.ShapeDtypeStruct`s, float32) a `T5Config` implies.

    Independent of the model code: DenseGeneral kernels are 2-D `[in, out]`,
    `rel_embedding` is `[heads, buckets]`, `decoder/logits_dense/kernel` `[emb, vocab]`
    exists only when `logits_via_embedding` is False.
    """
    import jax
    import jax.numpy as jnp

    def sds(*shape):
        return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), jnp.float32)

    e, v, m = config.emb_dim, config.vocab_size, config.mlp_dim
    inner = config.num_heads * config.head_dim
    acts = tuple(config.mlp_activations)

    def attention():
        return {"query": {"kernel": sds(e, inner)}, "key": {"kernel": sds(e, inner)},
                "value": {"kernel": sds(e, inner)}, "out": {"kernel": sds(inner, e)}}

    def mlp():
        out = {}
        if len(acts) == 1:
            out["wi"] = {"kernel": sds(e, m)}
        else:
            for i in range(len(acts)):
                out[f"wi_{i}"] = {"kernel": sds(e, m)}
        out["wo"] = {"kernel": sds(m, e)}
        return out

    def scale():
        return {"scale": sds(e)}

    relpos = {"rel_embedding": sds(config.num_heads, config.relative_attention_num_buckets)}
    encoder = {"relpos_bias": dict(relpos)}
    for i in range(config.num_encoder_layers):
        encoder[f"layers_{i}"] = {"pre_attention_layer_norm": scale(), "attention": attention(),
                                  "pre_mlp_layer_norm": scale(), "mlp": mlp()}
    encoder["encoder_norm"] = scale()
    decoder = {"relpos_bias": dict(relpos)}
    for i in range(config.num_decoder_layers):
        decoder[f"layers_{i}"] = {
            "pre_self_attention_layer_norm": scale(), "self_attention": attention(),
            "pre_cross_attention_layer_norm": scale(), "encoder_decoder_attention": attention(),
            "pre_mlp_layer_norm": scale(), "mlp": mlp()}
    decoder["decoder_norm"] = scale()
    if not config.logits_via_embedding:
        decoder["logits_dense"] = {"kernel": sds(e, v)}
    return {"token_embedder": {"embedding": sds(v, e)}, "encoder": encoder, "decoder": decoder}


def resolve_expected(expected) -> Optional[Mapping]:
    """`expected` may be None, a shapes tree, or a `T5Config` (-> `expected_param_shapes`)."""
    if expected is None:
        return None
    if isinstance(expected, Mapping):
        return expected
    if hasattr(expected, "emb_dim") and hasattr(expected, "mlp_activations"):
        return expected_param_shapes(expected)
    raise TypeError("expected= must be a tree of shapes / ShapeDtypeStructs or a T5Config, "
                    f"got {type(expected).__name__}")
