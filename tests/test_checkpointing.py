"""RunCheckpointer: sharded round trip with optax states, keep-N-plus-best pruning that
survives a restart, stale temporary directories, prompt-tuning numpy export."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from xprompt_jax.training import checkpointing
from xprompt_jax.training.checkpointing import RunCheckpointer, load_numpy_prompt

# How orbax names a checkpoint that is still being written (atomic-rename mode, local file
# systems): orbax 0.12 writes `<step>.orbax-checkpoint-tmp` (older releases appended
# `-<timestamp>`) and renames it to `<step>` when finalized.
ORBAX_TMP = ".orbax-checkpoint-tmp"


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))


def _host(x):
    return np.asarray(jax.device_get(x))


def _tree_bits_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb, f"structure differs:\n{ta}\n{tb}"
    for x, y in zip(la, lb):
        x, y = _host(x), _host(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _step_dirs(model_dir):
    names = os.listdir(os.path.join(model_dir, "checkpoints"))
    return sorted(int(n) for n in names if n.isdigit())


def _numpy_dirs(model_dir):
    root = os.path.join(model_dir, "numpy_checkpoints")
    return sorted(int(n.split("_")[1]) for n in os.listdir(root) if n.startswith("checkpoint_"))


def _small_state(value=0.0):
    return {"params": {"prompt": {"prompt": jnp.full((4, 2), value, jnp.float32)}},
            "step": 0}


def test_round_trip_sharded_optax_state(tmp_path, mesh):
    key = jax.random.PRNGKey(0)
    k1, k2 = jax.random.split(key)
    params = {
        "prompt": {"prompt": jax.device_put(jax.random.normal(k1, (8, 4)),
                                            NamedSharding(mesh, P("data", "model")))},
        "net": {"kernel": jax.device_put(jax.random.normal(k2, (4, 6)).astype(jnp.bfloat16),
                                         NamedSharding(mesh, P(None, "model")))},
    }
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.masked(optax.adamw(1e-3), {"prompt": {"prompt": True}, "net": {"kernel": False}}),
        optax.adafactor(1e-2),
    )
    opt_state = tx.init(params)
    # One real update so the moments are not trivially zero.
    grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) * 0.1, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    state = {"params": params, "opt_state": opt_state, "step": 7,
             "masks": {"token": np.array([1, 0, 1, 1, 0, 1, 1, 1], np.int32)}}
    meta = {"data": {"position": 1234}, "eval": {"accuracy": np.float32(0.75)},
            "run": {"name": "unit", "ratios": (0.1, 0.2)}}

    ckpt = RunCheckpointer(tmp_path, keep=3)
    assert ckpt.restore() is None  # fresh run: nothing to resume
    assert ckpt.latest_step() is None and ckpt.best_step() is None
    assert ckpt.save(7, state, meta=meta, metric=0.75) is True

    # Restore onto shardings different from the saved ones (and replicated for the rest).
    requested = {("params", "prompt", "prompt"): NamedSharding(mesh, P(None, "model")),
                 ("params", "net", "kernel"): NamedSharding(mesh, P("data", None))}
    replicated = NamedSharding(mesh, P())

    def to_target(path, x):
        if isinstance(x, jax.ShapeDtypeStruct):
            names = tuple(checkpointing._key_name(k) for k in path)
            return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                        sharding=requested.get(names, replicated))
        return x

    abstract = jax.eval_shape(lambda: jax.tree_util.tree_map(jnp.asarray, state))
    target = jax.tree_util.tree_map_with_path(to_target, abstract)
    target["step"] = 0            # a Python int leaf comes back as a Python int
    target["masks"]["token"] = np.zeros(8, np.int32)  # a numpy leaf comes back as numpy

    fresh = RunCheckpointer(tmp_path, keep=3)
    restored, restored_meta = fresh.restore(target=target)
    assert restored["step"] == 7 and isinstance(restored["step"], int)
    assert isinstance(restored["masks"]["token"], np.ndarray)
    state_for_compare = dict(state, step=np.asarray(7))
    restored_for_compare = dict(restored, step=np.asarray(restored["step"]))
    _tree_bits_equal(state_for_compare, restored_for_compare)  # namedtuples included
    assert isinstance(restored["opt_state"][1], optax.MaskedState)
    assert isinstance(restored["opt_state"][1].inner_state[0].mu["net"]["kernel"],
                      optax.MaskedNode)
    for path, leaf in jax.tree_util.tree_leaves_with_path(restored):
        if isinstance(leaf, jax.Array):
            names = tuple(checkpointing._key_name(k) for k in path)
            want = requested.get(names, replicated)
            assert leaf.sharding.is_equivalent_to(want, leaf.ndim), names
    assert restored_meta == {"data": {"position": 1234}, "eval": {"accuracy": 0.75},
                             "run": {"name": "unit", "ratios": [0.1, 0.2]}}
    assert fresh.restore_meta() == restored_meta
    assert fresh.metric(7) == 0.75 and fresh.best_step() == 7

    # abstract_like keeps each array's own sharding.
    again, _ = fresh.restore(7, target=checkpointing.abstract_like(state))
    assert again["params"]["prompt"]["prompt"].sharding == params["prompt"]["prompt"].sharding
    with pytest.raises(FileNotFoundError, match="step 8"):
        fresh.restore(8)


def test_keep_n_plus_best_survives_restart(tmp_path):
    metrics = {1: 0.1, 2: 0.9, 3: 0.3, 4: 0.5, 5: 0.4, 6: 0.2}
    ckpt = RunCheckpointer(tmp_path, keep=2, best_mode="max")
    for step, metric in metrics.items():
        ckpt.save(step, _small_state(step), meta={"step": step}, metric=metric)
    assert ckpt.all_steps() == [2, 5, 6]
    assert _step_dirs(tmp_path) == [2, 5, 6]
    assert _numpy_dirs(tmp_path) == [2, 5, 6]
    assert ckpt.best_step() == 2 and ckpt.best_metric() == pytest.approx(0.9)
    record = json.loads((tmp_path / "best_checkpoint.json").read_text())
    assert record["best_step"] == 2 and record["steps"] == [2, 5, 6]

    # A new process on the same directory still knows (and protects) the best.
    ckpt = RunCheckpointer(tmp_path, keep=2, best_mode="max")
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 6
    ckpt.save(7, _small_state(7), metric=0.3)
    assert ckpt.all_steps() == [2, 6, 7]
    assert _step_dirs(tmp_path) == [2, 6, 7] and _numpy_dirs(tmp_path) == [2, 6, 7]
    state, meta = ckpt.restore(ckpt.best_step())
    assert meta == {"step": 2}
    np.testing.assert_array_equal(_host(state["params"]["prompt"]["prompt"]), np.full((4, 2), 2.0))

    # A new best replaces the old one, which then ages out; steps without a metric
    # (periodic saves between evaluations) only count as recent ones.
    ckpt.save(8, _small_state(8), metric=0.95)
    ckpt.save(9, _small_state(9))
    assert ckpt.all_steps() == [8, 9] and ckpt.best_step() == 8
    assert _numpy_dirs(tmp_path) == [8, 9]


def test_min_mode_ties_and_force(tmp_path):
    ckpt = RunCheckpointer(tmp_path, keep=1, best_mode="min", save_numpy=False)
    ckpt.save(1, _small_state(1), metric=2.0)
    ckpt.save(2, _small_state(2), metric=1.0)
    ckpt.save(3, _small_state(3), metric=1.0)   # a tie keeps the earlier step
    ckpt.save(4, _small_state(4), metric=float("nan"))  # NaN is never best
    assert ckpt.best_step() == 2 and ckpt.all_steps() == [2, 4]
    assert not (tmp_path / "numpy_checkpoints").exists()
    # An existing step is left alone unless forced.
    assert ckpt.save(4, _small_state(40), meta={"v": 1}) is False
    assert ckpt.restore_meta(4) == {}
    assert ckpt.save(4, _small_state(40), meta={"v": 2}, metric=0.5, force=True) is True
    state, meta = ckpt.restore(4)
    assert meta == {"v": 2} and ckpt.best_step() == 4 and ckpt.all_steps() == [4]
    np.testing.assert_array_equal(_host(state["params"]["prompt"]["prompt"]), 40.0)
    with pytest.raises(ValueError, match="best_mode"):
        RunCheckpointer(tmp_path, best_mode="best")
    with pytest.raises(ValueError, match="keep"):
        RunCheckpointer(tmp_path, keep=0)


def test_stale_temporary_directories_are_ignored(tmp_path):
    ckpt = RunCheckpointer(tmp_path, keep=3)
    ckpt.save(1, _small_state(1.0), meta={"step": 1}, metric=0.5)
    # A killed save of step 5: a complete-looking but never renamed orbax directory (no
    # finalization), plus an unfinished numpy export.
    root = tmp_path / "checkpoints"
    stale = root / f"5{ORBAX_TMP}-1712345678"
    shutil.copytree(root / "1", stale)
    os.remove(stale / "commit_success.txt")
    (tmp_path / "numpy_checkpoints" / "checkpoint_5.tmp-99").mkdir()

    # A reader (no cleanup) ignores it.
    reader = RunCheckpointer(tmp_path, read_only=True)
    assert reader.all_steps() == [1] and reader.latest_step() == 1
    state, meta = reader.restore()
    assert meta == {"step": 1}
    with pytest.raises(FileNotFoundError):
        reader.restore(5)
    with pytest.raises(RuntimeError, match="read-only"):
        reader.save(2, _small_state())

    # A writer ignores it too and removes the leftovers; saving step 5 works.
    writer = RunCheckpointer(tmp_path, keep=3)
    assert writer.latest_step() == 1 and writer.best_step() == 1
    writer.save(5, _small_state(5.0), meta={"step": 5})
    assert writer.all_steps() == [1, 5]
    assert not any(ORBAX_TMP in n for n in os.listdir(root))  # cleaned up at start-up
    assert _step_dirs(tmp_path) == [1, 5]
    assert sorted(os.listdir(tmp_path / "numpy_checkpoints")) == ["checkpoint_1", "checkpoint_5"]
    assert writer.restore()[1] == {"step": 5}

    # A read-only checkpointer on an empty directory creates nothing.
    empty = RunCheckpointer(tmp_path / "none", read_only=True)
    assert empty.restore() is None and not (tmp_path / "none").exists()


def test_numpy_export_names_contents_and_loading(tmp_path, mesh):
    prompt = jax.device_put(jnp.arange(32, dtype=jnp.float32).reshape(8, 4) / 7,
                            NamedSharding(mesh, P("data", None)))
    state = {
        "params": {"encoder": {"prompt": {"prompt": {"prompt": prompt.astype(jnp.bfloat16)}},
                               "mlp": {"kernel": jnp.ones((3, 3))}},
                   "mask": jnp.array([1, 0, 1], jnp.int32)},
        "opt_state": (optax.EmptyState(),), "step": 3,
    }
    ckpt = RunCheckpointer(tmp_path, numpy_filter=[r".*prompt.*", r"mask"])
    ckpt.save(3, state)
    ndir = tmp_path / "numpy_checkpoints" / "checkpoint_3"
    # prompt-tuning naming: '/' -> '.', no `target.` prefix, no `.npy` suffix.
    assert sorted(os.listdir(ndir)) == ["encoder.prompt.prompt.prompt", "mask"]
    expected = np.asarray(jax.device_get(prompt.astype(jnp.bfloat16))).astype(np.float32)
    loaded = np.load(ndir / "encoder.prompt.prompt.prompt")
    assert loaded.dtype == np.float32  # bf16 exported as float32 (T5X's save dtype)
    np.testing.assert_array_equal(loaded, expected)
    np.testing.assert_array_equal(np.load(ndir / "mask"), [1, 0, 1])
    assert np.load(ndir / "mask").dtype == np.int32

    np.testing.assert_array_equal(load_numpy_prompt(ndir / "encoder.prompt.prompt.prompt",
                                                    (8, 4)), expected)
    np.testing.assert_array_equal(
        load_numpy_prompt(ndir, param_path="encoder/prompt/prompt/prompt"), expected)
    np.testing.assert_array_equal(load_numpy_prompt(ndir, (None, 4),
                                                    param_path="encoder.prompt.prompt.prompt"),
                                  expected)
    with pytest.raises(ValueError) as err:
        load_numpy_prompt(ndir / "encoder.prompt.prompt.prompt", expected_shape=(6, 4))
    msg = str(err.value)
    assert str(ndir / "encoder.prompt.prompt.prompt") in msg
    assert "(8, 4)" in msg and "(6, 4)" in msg
    with pytest.raises(ValueError, match="param_path"):
        load_numpy_prompt(ndir)  # two files: which one?
    with pytest.raises(FileNotFoundError):
        load_numpy_prompt(ndir, param_path="decoder/prompt")

    # Explicit numpy_params (e.g. a TrainState's params) and a `.npy` suffix.
    other = RunCheckpointer(tmp_path / "run2", numpy_suffix=".npy")
    other.save(1, {"step": 1, "anything": jnp.zeros(2)},
               numpy_params={"prompt": {"prompt": jnp.full((2, 3), 0.5)}})
    ndir2 = tmp_path / "run2" / "numpy_checkpoints" / "checkpoint_1"
    assert os.listdir(ndir2) == ["prompt.prompt.npy"]
    np.testing.assert_array_equal(load_numpy_prompt(ndir2 / "prompt.prompt.npy", (2, 3)), 0.5)
    np.testing.assert_array_equal(load_numpy_prompt(ndir2 / "prompt.prompt"), 0.5)
    np.testing.assert_array_equal(load_numpy_prompt(ndir2), 0.5)  # single file
    assert not any(".tmp-" in n for n in os.listdir(tmp_path / "run2" / "numpy_checkpoints"))


def test_save_killed_before_finalize_leaves_an_ignored_temp_dir(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    ckpt = RunCheckpointer(tmp_path, keep=3)
    ckpt.save(1, _small_state(1.0), meta={"step": 1}, metric=0.1)

    async def killed(self):  # the process dies after writing, before the rename
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", killed)
    with pytest.raises(BaseException, match="killed"):
        ckpt.save(2, _small_state(2.0), meta={"step": 2}, metric=0.9)
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    leftovers = [n for n in os.listdir(root) if n.startswith("2")]
    assert leftovers and all(n.startswith(f"2{ORBAX_TMP}") for n in leftovers), leftovers
    assert _numpy_dirs(tmp_path) == [1, 2]  # exported before the orbax save: an orphan

    reader = RunCheckpointer(tmp_path, read_only=True)
    assert reader.all_steps() == [1] and reader.best_step() == 1
    assert reader.restore()[1] == {"step": 1}
    resumed = RunCheckpointer(tmp_path, keep=3)
    assert resumed.latest_step() == 1
    resumed.save(2, _small_state(2.0), meta={"step": 2}, metric=0.9)
    assert resumed.all_steps() == [1, 2] and resumed.best_step() == 2
    assert resumed.restore()[1] == {"step": 2}
    assert not any(ORBAX_TMP in n for n in os.listdir(root))
    assert _numpy_dirs(tmp_path) == [1, 2]  # the orphan was replaced by the new export
