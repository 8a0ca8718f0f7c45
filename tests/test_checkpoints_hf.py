"""Hugging Face T5 weights -> T5X params, and HF config -> T5Config (transformers 5.x rules).

Random tiny `T5ForConditionalGeneration`s are saved with transformers itself; every loaded
array is compared with the corresponding (transposed) torch tensor, named here by hand.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from xprompt_jax.checkpoints import (ParamsMismatchError, config_from_hf, flatten,  # noqa: E402
                                     load_hf_checkpoint, load_hf_params)
from xprompt_jax.models.config import T5Config  # noqa: E402

SIZES = dict(vocab_size=40, d_model=8, d_kv=4, num_heads=2, d_ff=12, num_layers=2,
             num_decoder_layers=3, relative_attention_num_buckets=6,
             relative_attention_max_distance=16, dropout_rate=0.0, layer_norm_epsilon=1e-5)


def _hf_model(kind):
    """'v1_0': relu, tied, rescaled. 'v1_1': gated-gelu with a separate lm_head (as the
    public T5.1.1 checkpoints). 'v1_1_tied': what transformers 5.x builds from scratch with
    tie_word_embeddings=False: tied head, no rescaling."""
    torch.manual_seed({"v1_0": 0, "v1_1": 1, "v1_1_tied": 2}[kind])
    if kind == "v1_0":
        cfg = transformers.T5Config(feed_forward_proj="relu", **SIZES)
    else:
        cfg = transformers.T5Config(feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                    **SIZES)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0.0, 0.3)  # layer norms too, so that none is all ones
    if kind == "v1_1":
        model.lm_head.weight = torch.nn.Parameter(torch.randn(40, 8) * 0.3)
    return model


def _hub_like_config(directory):
    """Rewrite a 5.x config.json as the hub's T5.1.1 files are: tie false, no scale key."""
    path = directory / "config.json"
    cfg = json.loads(path.read_text())
    cfg.pop("scale_decoder_outputs", None)
    cfg["tie_word_embeddings"] = False
    path.write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for kind in ("v1_0", "v1_1", "v1_1_tied"):
        model = _hf_model(kind)
        d = tmp_path_factory.mktemp(kind)
        model.save_pretrained(d)
        if kind == "v1_1":
            _hub_like_config(d)
        out[kind] = (model, d)
    return out


def _np(t):
    return t.detach().cpu().numpy()


def _reference(model, separate_head):
    """{T5X path: array} from the torch model's tensors, mapped by hand."""
    sd = {k: _np(v) for k, v in model.state_dict().items()}
    ref = {("token_embedder", "embedding"): sd["shared.weight"]}
    attn = {"q": "query", "k": "key", "v": "value", "o": "out"}
    mlp = ["wi_0", "wi_1", "wo"] if "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd \
        else ["wi", "wo"]
    for stack, n, subs in (
            ("encoder", 2, [("SelfAttention", "attention", "pre_attention_layer_norm")]),
            ("decoder", 3, [("SelfAttention", "self_attention", "pre_self_attention_layer_norm"),
                            ("EncDecAttention", "encoder_decoder_attention",
                             "pre_cross_attention_layer_norm")])):
        ref[(stack, "relpos_bias", "rel_embedding")] = \
            sd[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T
        for i in range(n):
            for j, (hf_mod, t5x_mod, norm) in enumerate(subs):
                for a, b in attn.items():
                    ref[(stack, f"layers_{i}", t5x_mod, b, "kernel")] = \
                        sd[f"{stack}.block.{i}.layer.{j}.{hf_mod}.{a}.weight"].T
                ref[(stack, f"layers_{i}", norm, "scale")] = \
                    sd[f"{stack}.block.{i}.layer.{j}.layer_norm.weight"]
            j = len(subs)
            for w in mlp:
                ref[(stack, f"layers_{i}", "mlp", w, "kernel")] = \
                    sd[f"{stack}.block.{i}.layer.{j}.DenseReluDense.{w}.weight"].T
            ref[(stack, f"layers_{i}", "pre_mlp_layer_norm", "scale")] = \
                sd[f"{stack}.block.{i}.layer.{j}.layer_norm.weight"]
        ref[(stack, f"{stack}_norm", "scale")] = sd[f"{stack}.final_layer_norm.weight"]
    if separate_head:
        ref[("decoder", "logits_dense", "kernel")] = _np(model.lm_head.weight).T
    return ref


def _assert_equal(params, ref):
    flat = flatten(params)
    assert set(flat) == set(ref), (set(flat) ^ set(ref))
    for path, want in ref.items():
        got = np.asarray(flat[path])
        assert got.dtype == np.float32, path
        np.testing.assert_array_equal(got, want, err_msg="/".join(path))


# ------------------------------------------------------------------- what transformers does
def test_transformers_head_behaviour_is_as_documented(saved):
    """The facts `config_from_hf` relies on (transformers 5.x)."""
    for kind, (model, d) in saved.items():
        loaded = transformers.T5ForConditionalGeneration.from_pretrained(d)
        tied = loaded.lm_head.weight.data_ptr() == loaded.shared.weight.data_ptr()
        scale = getattr(loaded.config, "scale_decoder_outputs", loaded.config.tie_word_embeddings)
        assert (tied, scale) == {"v1_0": (True, True), "v1_1": (False, False),
                                 "v1_1_tied": (True, False)}[kind], kind


# ------------------------------------------------------------------- weights
@pytest.mark.parametrize("kind", ["v1_0", "v1_1", "v1_1_tied"])
def test_safetensors_dir_matches_torch_tensors(saved, kind):
    model, d = saved[kind]
    params = load_hf_params(d)
    config = config_from_hf(d)
    if kind == "v1_0":
        assert config.logits_via_embedding
        _assert_equal(params, _reference(model, separate_head=False))
    else:
        assert not config.logits_via_embedding
        ref = _reference(model, separate_head=True)  # v1_1_tied: lm_head IS shared
        _assert_equal(params, ref)
    if kind == "v1_1_tied":
        np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                      params["token_embedder"]["embedding"].T)


@pytest.mark.parametrize("kind", ["v1_0", "v1_1"])
def test_pytorch_bin_and_state_dict(saved, tmp_path, kind):
    """`pytorch_model.bin` as transformers 4.x wrote it (every key, tied ones sharing
    storage; transformers 5.x only writes safetensors), and in-memory state dicts."""
    model, d = saved[kind]
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    ref = _reference(model, separate_head=(kind == "v1_1"))
    _assert_equal(load_hf_params(tmp_path), ref)
    _assert_equal(load_hf_params(tmp_path / "pytorch_model.bin"), ref)
    # in memory, no config: a head that differs from `shared` is a separate head
    _assert_equal(load_hf_params(model.state_dict()), ref)
    numpy_sd = {k: _np(v) for k, v in model.state_dict().items()}
    _assert_equal(load_hf_params(numpy_sd, config=d / "config.json"), ref)


def _flax_layout(model):
    """The HF Flax parameter tree (modeling_flax_t5 names; kernels [in, out])."""
    tree = {}
    for name, t in model.state_dict().items():
        if name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
            continue
        parts = name.split(".")
        arr = _np(t)
        if parts[-2] in ("shared", "relative_attention_bias"):
            parts[-1] = "embedding"
        elif parts[-2] in ("layer_norm", "final_layer_norm"):
            pass
        else:
            parts[-1], arr = "kernel", arr.T
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = arr
    return tree


@pytest.mark.parametrize("kind", ["v1_0", "v1_1"])
def test_flax_msgpack(saved, tmp_path, kind):
    from flax import serialization
    model, d = saved[kind]
    tree = _flax_layout(model)
    q = tree["encoder"]["block"]["0"]["layer"]["0"]["SelfAttention"]["q"]["kernel"]
    assert q.shape == (8, 8)
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    (tmp_path / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    ref = _reference(model, separate_head=(kind == "v1_1"))
    _assert_equal(load_hf_params(tmp_path), ref)
    _assert_equal(load_hf_params({"params": tree}, config=d), ref)


def test_sharded_safetensors_index(tmp_path):
    model = _hf_model("v1_0")
    model.save_pretrained(tmp_path, max_shard_size="2KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    _assert_equal(load_hf_params(tmp_path), _reference(model, separate_head=False))


def test_dtype_and_shardings(saved):
    model, d = saved["v1_1"]
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    sharding = NamedSharding(mesh, P())
    params = load_hf_params(d, dtype="bfloat16", shardings=lambda path: sharding)
    emb = params["token_embedder"]["embedding"]
    assert isinstance(emb, jax.Array) and emb.dtype == jnp.bfloat16 and emb.sharding == sharding
    np.testing.assert_array_equal(np.asarray(emb), _np(model.shared.weight).astype(jnp.bfloat16))


def test_load_hf_checkpoint(saved):
    model, d = saved["v1_1"]
    config, params = load_hf_checkpoint(d, dropout_rate=0.1)
    assert config.dropout_rate == 0.1 and not config.logits_via_embedding
    _assert_equal(params, _reference(model, separate_head=True))
    _, bf16 = load_hf_checkpoint(d, dtype="bfloat16")  # dtype casts the params
    assert bf16["decoder"]["logits_dense"]["kernel"].dtype == jnp.bfloat16
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_checkpoint(model.state_dict())


# ------------------------------------------------------------------- config
def test_config_from_hf_fields(saved):
    _, d = saved["v1_1"]
    for source in (d, d / "config.json", json.loads((d / "config.json").read_text()),
                   transformers.T5Config.from_pretrained(d)):
        c = config_from_hf(source)
        assert c == T5Config(vocab_size=40, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=12,
                             num_encoder_layers=2, num_decoder_layers=3,
                             mlp_activations=("gelu", "linear"), dropout_rate=0.0,
                             logits_via_embedding=False, relative_attention_num_buckets=6,
                             relative_attention_max_distance=16, layer_norm_epsilon=1e-5)
    assert config_from_hf(saved["v1_0"][1]).mlp_activations == ("relu",)
    assert config_from_hf(d, dtype="bfloat16").dtype == "bfloat16"
    assert config_from_hf({**SIZES, "num_decoder_layers": None}).num_decoder_layers == 2


@pytest.mark.parametrize("extra", [
    {}, {"tie_word_embeddings": True}, {"tie_word_embeddings": False},
    {"tie_word_embeddings": True, "scale_decoder_outputs": False},
    {"tie_word_embeddings": False, "scale_decoder_outputs": True},
])
def test_logits_via_embedding_equals_transformers_rescaling(extra):
    d = {"model_type": "t5", **SIZES, **extra}
    assert config_from_hf(d).logits_via_embedding == \
        transformers.T5Config.from_dict(d).scale_decoder_outputs
    assert config_from_hf(transformers.T5Config.from_dict(d)).logits_via_embedding == \
        transformers.T5Config.from_dict(d).scale_decoder_outputs


def test_mt5_never_rescales():
    assert not config_from_hf({"model_type": "mt5", **SIZES,
                               "tie_word_embeddings": True}).logits_via_embedding


@pytest.mark.parametrize("proj, acts", [
    ("relu", ("relu",)), ("gated-gelu", ("gelu", "linear")), ("gated-silu", ("silu", "linear")),
    ("gelu", ("gelu_exact",)), ("gated-gelu_new", ("gelu", "linear")), ("silu", ("silu",)),
])
def test_feed_forward_proj(proj, acts):
    assert config_from_hf({**SIZES, "feed_forward_proj": proj}).mlp_activations == acts


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="feed_forward_proj"):
        config_from_hf({**SIZES, "feed_forward_proj": "gated-gelu-x"})
    with pytest.raises(ValueError, match="quick_gelu"):
        config_from_hf({**SIZES, "feed_forward_proj": "quick_gelu"})
    with pytest.raises(ValueError, match="umt5"):
        config_from_hf({**SIZES, "model_type": "umt5"})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        config_from_hf(tmp_path / "none")


# ------------------------------------------------------------------- errors
def test_separate_head_with_rescaling_is_rejected(saved, tmp_path):
    model, d = saved["v1_1"]
    for f in ("model.safetensors",):
        (tmp_path / f).write_bytes((d / f).read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    cfg["tie_word_embeddings"] = True  # transformers: separate head AND rescaling
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="scale_decoder_outputs.*tie_word_embeddings"):
        load_hf_params(tmp_path)
    with pytest.raises(ValueError, match="logits_via_embedding=True"):
        load_hf_params(d, config=config_from_hf(saved["v1_0"][1]).replace(
            mlp_activations=("gelu", "linear")))


def test_wrong_shape_names_parameter_and_both_shapes(saved):
    _, d = saved["v1_1"]
    cfg = json.loads((d / "config.json").read_text())
    cfg["d_ff"] = 16
    with pytest.raises(ParamsMismatchError) as err:
        load_hf_params(d, config=cfg)
    msg = str(err.value)
    assert "encoder/layers_0/mlp/wi_0/kernel" in msg and "(8, 12)" in msg and "(8, 16)" in msg


def test_unexpected_and_missing_weights(saved):
    model, d = saved["v1_0"]
    sd = dict(model.state_dict())
    sd["encoder.block.0.layer.0.SelfAttention.rotary.weight"] = torch.zeros(2)
    with pytest.raises(ParamsMismatchError, match="SelfAttention.rotary.weight"):
        load_hf_params(sd)
    sd = dict(model.state_dict())
    del sd["decoder.block.2.layer.1.EncDecAttention.k.weight"]
    with pytest.raises(ParamsMismatchError, match="decoder/layers_2/encoder_decoder_attention/key"):
        load_hf_params(sd, config=d)


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        load_hf_params(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_params(tmp_path / "empty")


# ------------------------------------------------------------------- logits, end to end
@pytest.mark.parametrize("kind", ["v1_0", "v1_1", "v1_1_tied"])
def test_logits_match_transformers(saved, kind):
    """The head layout chosen from the config reproduces transformers' logits."""
    models = pytest.importorskip("xprompt_jax.models")
    _, d = saved[kind]
    hf = transformers.T5ForConditionalGeneration.from_pretrained(d).eval()
    config, params = load_hf_checkpoint(d)
    enc = np.array([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
    dec = np.array([[0, 11, 12], [0, 13, 14]])
    tgt = np.array([[11, 12, 1], [13, 14, 1]])
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
                 decoder_input_ids=torch.tensor(dec)).logits.numpy()
    model = models.T5(config)
    ours = jax.jit(lambda p, e, d, t: model.apply({"params": p}, e, d, t, enable_dropout=False))(
        params, jnp.asarray(enc), jnp.asarray(dec), jnp.asarray(tgt))
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)
