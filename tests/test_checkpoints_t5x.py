"""T5X checkpoint loading (legacy msgpack + zarr, orbax/OCDBT) against the raw fixture files.

The references are read here independently of the loader: the legacy msgpack with
`msgpack` (decoding flax's ndarray ext type by hand) and its zarr arrays with TensorStore's
`file` driver; the orbax checkpoint with TensorStore's `ocdbt` kvstore.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
import tensorstore as ts
from jax.sharding import NamedSharding, PartitionSpec as P

from xprompt_jax.checkpoints import (ParamsMismatchError, T5XCheckpoint, check_params_match,
                                     expected_param_shapes, find_t5x_checkpoint, flatten,
                                     load_t5x_checkpoint, load_t5x_params)
from xprompt_jax.checkpoints import placement, t5x_legacy
from xprompt_jax.models.config import T5Config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEGACY = FIXTURES / "t5x_tiny_legacy" / "checkpoint_3"
ORBAX = FIXTURES / "t5x_tiny_orbax" / "checkpoint_3"

# Sizes from tests/fixtures/README.md
LEGACY_CONFIG = T5Config(vocab_size=32128, emb_dim=4, num_heads=2, head_dim=2, mlp_dim=8,
                         mlp_activations=("gelu", "linear"), num_encoder_layers=2,
                         num_decoder_layers=2, relative_attention_num_buckets=4,
                         relative_attention_max_distance=8, logits_via_embedding=False,
                         dropout_rate=0.0)
ORBAX_CONFIG = T5Config(vocab_size=32128, emb_dim=8, num_heads=4, head_dim=3, mlp_dim=16,
                        mlp_activations=("gelu", "linear"), num_encoder_layers=2,
                        num_decoder_layers=2, relative_attention_num_buckets=32,
                        relative_attention_max_distance=128, logits_via_embedding=False,
                        dropout_rate=0.0)


# ----------------------------------------------------------------------------- references
def _ext_hook(code, data):
    if code == 1:  # flax.serialization: ndarray as msgpack (shape, dtype name, buffer)
        shape, dtype_name, buffer = msgpack.unpackb(data)
        return np.frombuffer(buffer, dtype=np.dtype(dtype_name)).reshape(shape)
    raise AssertionError(f"unexpected msgpack ext type {code}")


def _raw_legacy():
    """{path: np.ndarray} of the legacy target params, read straight from the files."""
    with open(LEGACY / "checkpoint", "rb") as f:
        raw = msgpack.unpackb(f.read(), ext_hook=_ext_hook, raw=False)
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict) and "driver" not in node:
            for k, v in node.items():
                walk(v, prefix + (k,))
        elif isinstance(node, dict):  # a zarr spec: the data sits in a sibling directory
            name = node["kvstore"]["path"]
            spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(LEGACY / name)}}
            out[prefix] = ts.open(spec).result().read().result()
        else:
            out[prefix] = np.asarray(node)

    walk(raw["optimizer"]["target"], ())
    return raw, out


def _ocdbt(name):
    spec = {"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": f"file://{ORBAX}/state/",
                                          "path": name + "/"}}
    return ts.open(spec).result().read().result()


@pytest.fixture(scope="module")
def legacy_raw():
    return _raw_legacy()


@pytest.fixture(scope="module")
def legacy_params():
    return load_t5x_params(LEGACY)


@pytest.fixture(scope="module")
def orbax_params():
    return load_t5x_params(ORBAX)


def _assert_shapes(params, config):
    check_params_match(params, expected_param_shapes(config), check_dtype=True)
    for path, arr in flatten(params).items():
        assert isinstance(arr, np.ndarray), path
        assert arr.dtype == np.float32, path


# ----------------------------------------------------------------------------- legacy
def test_legacy_names_shapes_dtypes(legacy_params):
    _assert_shapes(legacy_params, LEGACY_CONFIG)
    assert legacy_params["token_embedder"]["embedding"].shape == (32128, 4)
    assert legacy_params["decoder"]["logits_dense"]["kernel"].shape == (4, 32128)
    assert legacy_params["encoder"]["relpos_bias"]["rel_embedding"].shape == (2, 4)


def test_legacy_arrays_equal_raw_files(legacy_params, legacy_raw):
    _, ref = legacy_raw
    ours = flatten(legacy_params)
    assert set(ours) == set(ref)
    for path, want in ref.items():
        np.testing.assert_array_equal(ours[path], want, err_msg="/".join(path))
    # both storage kinds were exercised: zarr directories and inline msgpack arrays
    assert (LEGACY / "target.token_embedder.embedding").is_dir()
    assert not (LEGACY / "target.decoder.decoder_norm.scale").exists()


def test_legacy_optimizer_state_and_step(legacy_raw):
    raw, _ = legacy_raw
    params, opt_state, step = load_t5x_params(LEGACY, return_optimizer_state=True,
                                              return_step=True)
    assert step == 3 and int(opt_state["step"]) == 3
    ref_v = raw["optimizer"]["state"]["param_states"]["encoder"]["layers_0"]["mlp"]["wi_0"][
        "kernel"]["v"]
    np.testing.assert_array_equal(
        opt_state["param_states"]["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]["v"], ref_v)
    assert set(opt_state["param_states"]) == set(params)
    only_step = load_t5x_params(LEGACY, return_step=True)
    assert isinstance(only_step, tuple) and only_step[1] == 3


def test_legacy_path_forms(legacy_params):
    assert find_t5x_checkpoint(LEGACY) == ("legacy", str(LEGACY / "checkpoint"))
    # the msgpack file itself, and the model dir (latest checkpoint_N) give the same params
    for path in (LEGACY / "checkpoint", LEGACY.parent, str(LEGACY) + "/"):
        other = flatten(load_t5x_params(path))
        for p, arr in flatten(legacy_params).items():
            np.testing.assert_array_equal(other[p], arr)


def test_legacy_spec_resolution():
    spec = {"driver": "zarr", "metadata": {"shape": [4, 4]},
            "kvstore": {"driver": "gfile", "path": "target.encoder.x.kernel"}}
    local = t5x_legacy.resolve_spec(spec, "/ckpt/checkpoint_3")
    assert local["kvstore"] == {"driver": "file",
                                "path": "/ckpt/checkpoint_3/target.encoder.x.kernel"}
    assert local["metadata"] == {"shape": [4, 4]}
    assert spec["kvstore"]["driver"] == "gfile"  # input untouched
    remote = t5x_legacy.resolve_spec(spec, "gs://bucket/models/checkpoint_3")
    assert remote["kvstore"] == {"driver": "gcs", "bucket": "bucket",
                                 "path": "models/checkpoint_3/target.encoder.x.kernel"}
    # absolute paths recorded elsewhere keep only their last component
    moved = {"driver": "zarr", "kvstore": {"driver": "gcs", "bucket": "old",
                                           "path": "a/b/checkpoint_3/target.y"}}
    assert t5x_legacy.resolve_spec(moved, "/new/checkpoint_3")["kvstore"] == {
        "driver": "file", "path": "/new/checkpoint_3/target.y"}
    old_style = {"driver": "zarr", "kvstore": {"driver": "file", "path": "/elsewhere/"},
                 "path": "target.z"}
    resolved = t5x_legacy.resolve_spec(old_style, "/new/c")
    assert resolved["kvstore"] == {"driver": "file", "path": "/new/c/target.z"}
    assert "path" not in resolved


# ----------------------------------------------------------------------------- orbax
def test_orbax_names_shapes_dtypes(orbax_params):
    _assert_shapes(orbax_params, ORBAX_CONFIG)
    assert orbax_params["encoder"]["layers_0"]["attention"]["query"]["kernel"].shape == (8, 12)
    assert orbax_params["decoder"]["relpos_bias"]["rel_embedding"].shape == (4, 32)


def test_orbax_arrays_equal_raw_ocdbt(orbax_params):
    for path, arr in flatten(orbax_params).items():
        np.testing.assert_array_equal(arr, _ocdbt("target." + ".".join(path)),
                                      err_msg="/".join(path))


def test_orbax_optimizer_state_step_and_path_forms(orbax_params):
    ckpt = load_t5x_checkpoint(ORBAX / "state", restore_optimizer_state=True)
    assert isinstance(ckpt, T5XCheckpoint) and ckpt.format == "orbax"
    assert ckpt.step == 3 and ckpt.path == str(ORBAX / "state")
    v = ckpt.optimizer_state["param_states"]["decoder"]["logits_dense"]["kernel"]["v_row"]
    np.testing.assert_array_equal(v, _ocdbt("state.param_states.decoder.logits_dense.kernel.v_row"))
    np.testing.assert_array_equal(ckpt.params["token_embedder"]["embedding"],
                                  orbax_params["token_embedder"]["embedding"])
    params, step = load_t5x_params(ORBAX.parent, return_step=True)  # latest checkpoint_N
    assert step == 3
    np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                  orbax_params["decoder"]["logits_dense"]["kernel"])


# ----------------------------------------------------------------------------- sharding
def _mesh():
    assert jax.device_count() >= 8, "tests/conftest.py should force 8 CPU devices"
    return jax.make_mesh((4, 2), ("data", "model"))


def _rule(mesh):
    """2-D params: rows over 'data', columns over 'model' where they divide; else replicated."""
    def fn(path, shape):
        if len(shape) == 2:
            spec = P("data" if shape[0] % 4 == 0 else None, "model" if shape[1] % 2 == 0 else None)
        elif len(shape) == 1 and shape[0] % 2 == 0:
            spec = P("model")
        else:
            spec = P()
        return NamedSharding(mesh, spec)
    return fn


@pytest.mark.parametrize("which", ["legacy", "orbax"])
def test_sharded_load_equals_unsharded(which, legacy_params, orbax_params):
    path, ref = (LEGACY, legacy_params) if which == "legacy" else (ORBAX, orbax_params)
    mesh = _mesh()
    rule = _rule(mesh)
    tree = {}
    flat_ref = flatten(ref)
    for p, arr in flat_ref.items():
        tree.setdefault(p[0], {})
        node = tree
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node[p[-1]] = rule("/".join(p), arr.shape)
    for shardings in (tree, rule):
        sharded = flatten(load_t5x_params(path, shardings=shardings))
        for p, arr in flat_ref.items():
            got = sharded[p]
            assert isinstance(got, jax.Array), p
            assert got.sharding.is_equivalent_to(rule("/".join(p), arr.shape), arr.ndim), p
            np.testing.assert_array_equal(np.asarray(got), arr, err_msg="/".join(p))
    emb = sharded[("token_embedder", "embedding")]
    assert emb.addressable_shards[0].data.shape == (32128 // 4, emb.shape[1] // 2)


@pytest.mark.parametrize("which", ["legacy", "orbax"])
def test_sharded_load_with_dtype(which, legacy_params, orbax_params):
    path, ref = (LEGACY, legacy_params) if which == "legacy" else (ORBAX, orbax_params)
    mesh = _mesh()
    params = load_t5x_params(path, shardings=NamedSharding(mesh, P()), dtype="bfloat16")
    emb = params["token_embedder"]["embedding"]
    assert emb.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(emb), ref["token_embedder"]["embedding"].astype(jnp.bfloat16))
    host = load_t5x_params(path, dtype=jnp.bfloat16)
    assert host["encoder"]["encoder_norm"]["scale"].dtype == jnp.bfloat16


def test_sharded_reads_only_shards():
    """A sharded parameter is read slice by slice, each distinct slice once."""
    mesh = _mesh()
    full = np.arange(32 * 6, dtype=np.float32).reshape(32, 6)
    reads = []

    def reader(index):
        reads.append(index)
        return full[index]

    arr = placement.materialize("x", full.shape, reader, NamedSharding(mesh, P("data", "model")))
    np.testing.assert_array_equal(np.asarray(arr), full)
    assert len(reads) == 8 and all(full[i].shape == (8, 3) for i in reads)
    reads.clear()
    placement.materialize("x", full.shape, reader, NamedSharding(mesh, P("data", None)))
    assert len(reads) == 4  # replicas over 'model' share one read


def test_shardings_tree_must_match(legacy_params):
    replicated = NamedSharding(_mesh(), P())
    tree = jax.tree_util.tree_map(lambda _: replicated, legacy_params)
    del tree["token_embedder"]
    tree["encoder"]["bogus"] = replicated
    with pytest.raises(ParamsMismatchError) as err:
        load_t5x_params(LEGACY, shardings=tree)
    assert "token_embedder/embedding" in str(err.value) and "encoder/bogus" in str(err.value)


# ----------------------------------------------------------------------------- errors
def test_wrong_shape_names_parameter_and_both_shapes():
    wrong = LEGACY_CONFIG.replace(mlp_dim=16)
    with pytest.raises(ParamsMismatchError) as err:
        load_t5x_params(LEGACY, expected=wrong)
    msg = str(err.value)
    assert "encoder/layers_0/mlp/wi_0/kernel" in msg and "(4, 8)" in msg and "(4, 16)" in msg
    assert ("encoder/layers_0/mlp/wi_0/kernel", (4, 8), (4, 16)) in err.value.mismatched
    with pytest.raises(ParamsMismatchError, match=r"decoder/logits_dense/kernel"):
        load_t5x_params(ORBAX, expected=ORBAX_CONFIG.replace(logits_via_embedding=True))


def test_check_params_match_lists_missing_and_unexpected():
    expected = expected_param_shapes(LEGACY_CONFIG)
    params = {"token_embedder": {"embedding": np.zeros((32128, 4))},
              "extra": {"w": np.zeros(3)}}
    with pytest.raises(ParamsMismatchError) as err:
        check_params_match(params, expected)
    assert "extra/w" in err.value.unexpected
    assert "encoder/encoder_norm/scale" in err.value.missing
    assert "missing from checkpoint" in str(err.value) and "extra/w" in str(err.value)
    with pytest.raises(ParamsMismatchError, match="variables\\['params'\\]"):
        check_params_match(params, {"params": expected})


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nope" / "checkpoint_7"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_t5x_params(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no T5X checkpoint in .*empty"):
        load_t5x_params(tmp_path / "empty")


def test_missing_zarr_array_is_named(tmp_path):
    import shutil
    copy = tmp_path / "checkpoint_3"
    shutil.copytree(LEGACY, copy)
    shutil.rmtree(copy / "target.encoder.layers_1.mlp.wo.kernel")
    with pytest.raises(FileNotFoundError, match="encoder/layers_1/mlp/wo/kernel"):
        load_t5x_params(copy)


# ----------------------------------------------------------------------------- the model
def test_fixture_params_fit_and_run_the_model(legacy_params, orbax_params):
    models = pytest.importorskip("xprompt_jax.models")
    tokens = jnp.ones((1, 3), jnp.int32)
    for params, config in ((legacy_params, LEGACY_CONFIG), (orbax_params, ORBAX_CONFIG)):
        model = models.T5(config)
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, tokens, tokens,
                                                   enable_dropout=False))
        check_params_match(params, shapes["params"])
    model = models.T5(LEGACY_CONFIG)  # one forward pass (compiling is the slow part)
    logits = jax.jit(lambda p, e, d, t: model.apply({"params": p}, e, d, t, enable_dropout=False))(
        legacy_params, jnp.array([[3, 4, 5, 1, 0]]), jnp.array([[0, 6, 7]]), jnp.array([[6, 7, 1]]))
    assert logits.shape == (1, 3, 32128) and bool(jnp.all(jnp.isfinite(logits)))


def test_relative_paths_load(fixtures_dir, monkeypatch):
    """A relative checkpoint path (as the README's demo command passes) loads in both formats."""
    import os

    from xprompt_jax.checkpoints import load_t5x_params

    monkeypatch.chdir(fixtures_dir)
    for rel in ("t5x_tiny_orbax/checkpoint_3", "t5x_tiny_legacy/checkpoint_3"):
        assert not os.path.isabs(rel)
        params = load_t5x_params(rel)
        assert params["token_embedder"]["embedding"].shape[0] == 32128
