"""Optimizers and schedules against independent references.

Adafactor: a NumPy (float64) transcription of T5X's `Adafactor.apply_param_gradient`
update rule (Shazeer & Stern 2018 with T5X's conventions), written here without optax.
AdamW / SGD: torch.optim. Schedules: closed forms.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xprompt_jax.training import optimizers, schedules


# --------------------------------------------------------------------------------------
# NumPy reference: T5X Adafactor (heuristic factoring, rank <= 2 params)
# --------------------------------------------------------------------------------------

class RefAdafactor:
    """T5X's Adafactor update rule, per leaf, in float64 NumPy."""

    def __init__(self, lr=0.3, decay_rate=0.8, step_offset=0, mbps=False, wd=1e-5, clip=1.0,
                 min_dim=128, beta1=None, eps1=1e-30, eps2=1e-3, factored=True,
                 wd_lr_exponent=None, global_norm_clip=None):
        self.__dict__.update(locals())
        del self.__dict__["self"]
        self.step = 0
        self.state = None

    def _factored_dims(self, shape):
        if not self.factored or len(shape) < 2:
            return None
        order = np.argsort(shape)
        if shape[order[-2]] < self.min_dim:
            return None
        return int(order[-2]), int(order[-1])  # (row dim = smaller, col dim = larger)

    def _init(self, p):
        fd = self._factored_dims(p.shape)
        st = {"m": np.zeros(p.shape)}
        if fd is None:
            st["v"] = np.zeros(p.shape)
        else:
            d1, d0 = fd
            st["v_row"] = np.zeros(np.delete(p.shape, d0))
            st["v_col"] = np.zeros(np.delete(p.shape, d1))
        return st

    def apply(self, params, grads):
        params = {k: np.asarray(v, np.float64) for k, v in params.items()}
        grads = {k: np.asarray(v, np.float64) for k, v in grads.items()}
        if self.state is None:
            self.state = {k: self._init(p) for k, p in params.items()}
        lr = self.lr(self.step) if callable(self.lr) else self.lr
        if self.global_norm_clip:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
            scale = self.global_norm_clip * min(1.0 / self.global_norm_clip, 1.0 / norm)
            grads = {k: g * scale for k, g in grads.items()}
        wd = self.wd
        if self.wd_lr_exponent:
            wd = (1.0 if wd is None else wd) * lr ** self.wd_lr_exponent
        t = self.step - self.step_offset + 1.0
        beta2 = 1.0 - t ** (-self.decay_rate)
        out = {}
        for k, p in params.items():
            g, st = grads[k], self.state[k]
            g2 = g * g + self.eps1
            fd = self._factored_dims(p.shape)
            if fd is None:
                st["v"] = beta2 * st["v"] + (1 - beta2) * g2
                y = g / np.sqrt(st["v"])
            else:
                d1, d0 = fd
                st["v_row"] = beta2 * st["v_row"] + (1 - beta2) * g2.mean(axis=d0)
                st["v_col"] = beta2 * st["v_col"] + (1 - beta2) * g2.mean(axis=d1)
                r = st["v_row"] / st["v_row"].mean()
                v_hat = np.expand_dims(r, d0) * np.expand_dims(st["v_col"], d1)
                y = g / np.sqrt(v_hat)
            if self.clip is not None:
                y = y / max(1.0, math.sqrt(float(np.mean(y * y))) / self.clip)
            scale = lr
            if self.mbps:
                scale = lr * max(math.sqrt(float(np.mean(p * p))), self.eps2)
            sub = scale * y
            if self.beta1 is not None:
                st["m"] = self.beta1 * st["m"] + (1 - self.beta1) * sub
                sub = st["m"]
            out[k] = ((1.0 - wd) * p if wd is not None else p) - sub
        self.step += 1
        return out


def _quadratic_grads(params, targets, scales):
    """A deterministic gradient field: g = scale * (p - target) (+ a fixed ripple)."""
    return {k: scales[k] * (np.asarray(params[k], np.float64) - targets[k])
            + 0.05 * np.sin(np.arange(targets[k].size).reshape(targets[k].shape))
            for k in params}


def _run_both(tx, ref, params0, steps=4, seed=0, grad_mults=None):
    rng = np.random.default_rng(seed)
    targets = {k: rng.normal(size=v.shape) for k, v in params0.items()}
    scales = {k: np.exp(rng.normal(size=v.shape)) for k, v in params0.items()}
    p_jax = {k: jnp.asarray(v, jnp.float32) for k, v in params0.items()}
    p_ref = {k: np.asarray(v, np.float64) for k, v in params0.items()}
    state = tx.init(p_jax)
    update = jax.jit(tx.update)
    for i in range(steps):
        mult = 1.0 if grad_mults is None else grad_mults[i]
        g_ref = {k: mult * g for k, g in _quadratic_grads(p_ref, targets, scales).items()}
        g_jax = {k: mult * jnp.asarray(g, jnp.float32)
                 for k, g in _quadratic_grads(p_jax, targets, scales).items()}
        upd, state = update(g_jax, state, p_jax)
        p_jax = optax.apply_updates(p_jax, upd)
        p_ref = ref.apply(p_ref, g_ref)
        for k in params0:
            np.testing.assert_allclose(np.asarray(p_jax[k]), p_ref[k], rtol=2e-5, atol=2e-6,
                                       err_msg=f"leaf {k} at step {i}")
    return p_jax, state


def _params(seed=0, shapes=None):
    rng = np.random.default_rng(seed)
    shapes = shapes or {"vec": (7,), "mat": (3, 5), "wide": (4, 200)}
    return {k: rng.uniform(-0.5, 0.5, size=s) for k, s in shapes.items()}


def test_adafactor_defaults_are_lester():
    sig = inspect.signature(optimizers.adafactor).parameters
    assert sig["learning_rate"].default == 0.3
    assert sig["decay_rate"].default == 0.8
    assert sig["multiply_by_parameter_scale"].default is False
    assert sig["weight_decay_rate"].default == 1e-5
    assert sig["clipping_threshold"].default == 1.0
    assert sig["momentum"].default is None
    assert sig["step_offset"].default == 0


def test_adafactor_default_matches_t5x_reference():
    # Default config: only `big` has two dims >= 128 (min_dim_size_to_factor) and is factored.
    shapes = {"vec": (7,), "mat": (3, 5), "wide": (4, 200), "big": (130, 150),
              "skinny": (127, 300)}
    _, state = _run_both(optimizers.adafactor(), RefAdafactor(), _params(0, shapes), steps=4)
    assert state[0].v_row["big"].shape == (130,) and state[0].v_col["big"].shape == (150,)
    assert state[0].v["skinny"].shape == (127, 300) and state[0].v["wide"].shape == (4, 200)


def test_adafactor_factored_matches_reference():
    shapes = {"vec": (7,), "mat": (3, 5), "wide": (4, 200), "tall": (200, 4)}
    tx = optimizers.adafactor(min_dim_size_to_factor=3)
    _, state = _run_both(tx, RefAdafactor(min_dim=3), _params(1, shapes), steps=4, seed=1)
    # The factored leaves really carry row/col statistics (not a full `v`).
    fstate = state[0]
    shapes_of = lambda tree: {k: tuple(v.shape) for k, v in tree.items()}  # noqa: E731
    assert shapes_of(fstate.v_row) == {"vec": (1,), "mat": (3,), "wide": (4,), "tall": (4,)}
    assert shapes_of(fstate.v_col) == {"vec": (1,), "mat": (5,), "wide": (200,),
                                       "tall": (200,)}
    assert shapes_of(fstate.v) == {"vec": (7,), "mat": (1,), "wide": (1,), "tall": (1,)}


def test_adafactor_options_match_reference():
    sched = schedules.warmup_then_decay(0.5, warmup_steps=2, decay="rsqrt")
    tx = optimizers.adafactor(learning_rate=sched, multiply_by_parameter_scale=True,
                              momentum=0.9, weight_decay_rate=1e-3,
                              weight_decay_rate_lr_exponent=1.0, global_norm_clip_threshold=0.5,
                              decay_rate=0.5, step_offset=0)
    ref = RefAdafactor(lr=lambda s: float(sched(s)), mbps=True, beta1=0.9, wd=1e-3,
                       wd_lr_exponent=1.0, global_norm_clip=0.5, decay_rate=0.5)
    _run_both(tx, ref, _params(3), steps=5, seed=3)


def test_adafactor_first_step_is_clipped_sign_update():
    rng = np.random.default_rng(4)
    p = {"prompt": jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)}
    g = {"prompt": jnp.asarray(rng.normal(size=(6, 8)) * 1e-3, jnp.float32)}
    tx = optimizers.adafactor()
    update = jax.jit(tx.update)
    upd, _ = update(g, tx.init(p), p)
    # beta2_1 = 1 - 1**-0.8 = 0, so v = g^2 + eps1 and u = g / |g| (rms exactly 1: no clip).
    expected = -0.3 * np.sign(np.asarray(g["prompt"])) - 1e-5 * np.asarray(p["prompt"])
    np.testing.assert_allclose(np.asarray(upd["prompt"]), expected, rtol=1e-6, atol=1e-9)
    # Gradient scale does not matter on the first step.
    upd2, _ = update(jax.tree.map(lambda x: 1e3 * x, g), tx.init(p), p)
    np.testing.assert_allclose(np.asarray(upd2["prompt"]), expected, rtol=1e-6, atol=1e-9)


def test_adafactor_update_clipping_caps_rms_at_lr():
    rng = np.random.default_rng(5)
    p = {"w": jnp.asarray(rng.normal(size=(5, 9)), jnp.float32)}
    g1 = rng.normal(size=(5, 9))
    tx = optimizers.adafactor(weight_decay_rate=None)
    update = jax.jit(tx.update)
    state = tx.init(p)
    _, state = update({"w": jnp.asarray(g1, jnp.float32)}, state, p)
    # Step 2 with a 100x larger gradient: beta2_2 = 1 - 2^-0.8, so |g|/sqrt(v) ~ 1.32 > 1.
    g2 = 100.0 * g1
    upd, _ = update({"w": jnp.asarray(g2, jnp.float32)}, state, p)
    beta2 = 1 - 2.0 ** -0.8
    y = g2 / np.sqrt(beta2 * (g1 ** 2) + (1 - beta2) * g2 ** 2)
    assert np.sqrt(np.mean(y ** 2)) > 1.2  # clipping is active here
    expected = -0.3 * y / np.sqrt(np.mean(y ** 2))
    np.testing.assert_allclose(np.asarray(upd["w"]), expected, rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(upd["w"]) ** 2)), 0.3, rtol=1e-5)


@pytest.mark.parametrize("lr", [0.3, 0.01])
def test_adafactor_weight_decay_is_not_lr_scaled(lr):
    p = {"prompt": jnp.asarray(np.linspace(-1, 1, 12).reshape(3, 4), jnp.float32)}
    zero = jax.tree.map(jnp.zeros_like, p)
    tx = optimizers.adafactor(learning_rate=lr, weight_decay_rate=0.1)
    upd, _ = jax.jit(tx.update)(zero, tx.init(p), p)
    new = optax.apply_updates(p, upd)
    # T5X: new_param = (1 - weight_decay_rate) * param - lr * u, with u = 0 for a zero grad.
    np.testing.assert_allclose(np.asarray(new["prompt"]), 0.9 * np.asarray(p["prompt"]),
                               rtol=1e-6)
    # With T5X's weight_decay_rate_lr_exponent the rate becomes rate * lr ** exponent.
    tx = optimizers.adafactor(learning_rate=lr, weight_decay_rate=0.1,
                              weight_decay_rate_lr_exponent=1.0)
    upd, _ = jax.jit(tx.update)(zero, tx.init(p), p)
    np.testing.assert_allclose(np.asarray(upd["prompt"]), -0.1 * lr * np.asarray(p["prompt"]),
                               rtol=1e-6)


def test_adafactor_default_weight_decay_effect():
    rng = np.random.default_rng(6)
    p = {"prompt": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)}
    g = {"prompt": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)}
    with_wd = optimizers.adafactor()
    without = optimizers.adafactor(weight_decay_rate=None)
    u1, _ = jax.jit(with_wd.update)(g, with_wd.init(p), p)
    u0, _ = jax.jit(without.update)(g, without.init(p), p)
    np.testing.assert_allclose(np.asarray(u1["prompt"] - u0["prompt"]),
                               -1e-5 * np.asarray(p["prompt"]), rtol=0, atol=5e-8)


def test_adafactor_state_is_float32_for_bf16_params():
    p = {"prompt": jnp.ones((4, 6), jnp.bfloat16)}
    tx = optimizers.adafactor(momentum=0.9)
    state = tx.init(p)
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype,
                                                                             jnp.floating)}
    assert dtypes == {jnp.dtype(jnp.float32)}
    upd, _ = jax.jit(tx.update)({"prompt": jnp.full((4, 6), 0.5, jnp.bfloat16)}, state, p)
    assert optax.apply_updates(p, upd)["prompt"].dtype == jnp.bfloat16


def test_adafactor_skip_nan_updates():
    p = {"w": jnp.asarray(np.arange(6.0).reshape(2, 3), jnp.float32)}
    g = np.ones((2, 3), np.float32)
    g[0, 1] = np.nan
    tx = optimizers.adafactor(skip_nan_updates=True, weight_decay_rate=None)
    state = tx.init(p)
    upd, state = jax.jit(tx.update)({"w": jnp.asarray(g)}, state, p)
    # The NaN enters the leaf's clipping rms, so (as in T5X) every element of the new param
    # would be NaN and every element keeps its old value; the second-moment slot is NaN
    # only at [0, 1], and only that entry keeps its old value (0).
    np.testing.assert_array_equal(np.asarray(upd["w"]), np.zeros((2, 3), np.float32))
    assert not any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(state))
    flat_v = [np.asarray(x) for x in jax.tree.leaves(state) if np.shape(x) == (2, 3)]
    assert len(flat_v) == 1
    v = flat_v[0]
    assert v[0, 1] == 0.0 and np.allclose(np.delete(v.ravel(), 1), 1.0)
    # Without the option the NaN propagates.
    tx2 = optimizers.adafactor(weight_decay_rate=None)
    upd2, _ = jax.jit(tx2.update)({"w": jnp.asarray(g)}, tx2.init(p), p)
    assert np.isnan(np.asarray(upd2["w"])).any()


def test_optimizer_state_only_from_trainable_params():
    full = {"encoder": {"kernel": jnp.zeros((64, 48))},
            "prompt": {"prompt": jnp.ones((20, 32)), "mlp": jnp.ones((32, 130))}}
    trainable = {"prompt": full["prompt"]}
    trainable_size = sum(x.size for x in jax.tree.leaves(trainable))
    for name, tx in [("adafactor", optimizers.adafactor(momentum=0.9)),
                     ("adafactor_factored", optimizers.adafactor(min_dim_size_to_factor=8)),
                     ("adamw", optimizers.adamw(max_grad_norm=1.0)),
                     ("sgd", optimizers.sgd(momentum=0.9))]:
        state = tx.init(trainable)
        leaves = jax.tree_util.tree_leaves_with_path(state)
        assert leaves, name
        for path, leaf in leaves:
            assert leaf.shape != (64, 48), (name, path)
            if leaf.ndim and leaf.size > 1:
                keys = [getattr(k, "key", None) for k in path]
                assert "prompt" in keys and "encoder" not in keys, (name, path)
        assert sum(x.size for x in jax.tree.leaves(state)) <= 3 * trainable_size + 16, name
        if name == "adafactor":
            upd, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, trainable), state,
                                        trainable)
            assert jax.tree.structure(upd) == jax.tree.structure(trainable)


# --------------------------------------------------------------------------------------
# AdamW / SGD against torch
# --------------------------------------------------------------------------------------

def _torch_run(opt_factory, params0, targets, steps, max_grad_norm=None):
    torch = pytest.importorskip("torch")  # the hf extra (absent in the T5X env)
    tparams = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in params0]
    opt = opt_factory(tparams)
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(((p - torch.tensor(t)) ** 2 * (i + 1.0)).sum() + torch.sin(p).sum()
                   for i, (p, t) in enumerate(zip(tparams, targets)))
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(tparams, max_grad_norm)
        opt.step()
    return [p.detach().numpy() for p in tparams]


def _jax_run(tx, params0, targets, steps):
    # float64 on both sides: Adam normalises small gradients, so float32 rounding of a
    # near-zero gradient would show up at the 1e-6 level and hide real differences.
    with jax.enable_x64(True):
        return _jax_run_x64(tx, params0, targets, steps)


def _jax_run_x64(tx, params0, targets, steps):
    params = [jnp.asarray(v, jnp.float64) for v in params0]

    def loss_fn(ps):
        return sum(jnp.sum((p - t) ** 2 * (i + 1.0)) + jnp.sum(jnp.sin(p))
                   for i, (p, t) in enumerate(zip(ps, targets)))

    state = tx.init(params)

    @jax.jit
    def step(ps, st):
        g = jax.grad(loss_fn)(ps)
        u, st = tx.update(g, st, ps)
        return optax.apply_updates(ps, u), st

    for _ in range(steps):
        params, state = step(params, state)
    return [np.asarray(p) for p in params]


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_adamw_matches_torch(max_grad_norm):
    torch = pytest.importorskip("torch")  # the hf extra (absent in the T5X env)
    rng = np.random.default_rng(7)
    params0 = [rng.normal(size=(5, 3)), rng.normal(size=(4,))]
    targets = [rng.normal(size=(5, 3)), rng.normal(size=(4,))]
    lr, wd = 0.05, 0.01
    got = _jax_run(optimizers.adamw(learning_rate=lr, weight_decay=wd,
                                    max_grad_norm=max_grad_norm), params0, targets, 6)
    want = _torch_run(lambda ps: torch.optim.AdamW(ps, lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                                   weight_decay=wd),
                      params0, targets, 6, max_grad_norm)
    for a, b in zip(got, want):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


def test_adamw_defaults():
    sig = inspect.signature(optimizers.adamw).parameters
    assert (sig["b1"].default, sig["b2"].default, sig["eps"].default,
            sig["weight_decay"].default) == (0.9, 0.999, 1e-8, 0.01)


def test_sgd_momentum_matches_torch():
    torch = pytest.importorskip("torch")  # the hf extra (absent in the T5X env)
    rng = np.random.default_rng(8)
    params0 = [rng.normal(size=(3, 3))]
    targets = [rng.normal(size=(3, 3))]
    got = _jax_run(optimizers.sgd(learning_rate=0.05, momentum=0.9, weight_decay=0.1),
                   params0, targets, 5)
    want = _torch_run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.1),
                      params0, targets, 5)
    np.testing.assert_allclose(got[0], want[0], atol=1e-6, rtol=1e-6)


def test_create_by_name():
    assert isinstance(optimizers.create("adamw", learning_rate=1e-3),
                      optax.GradientTransformation)
    with pytest.raises(ValueError):
        optimizers.create("lamb")


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------

def test_constant_schedule():
    s = schedules.constant(0.3)
    assert [float(s(i)) for i in (0, 1, 10_000)] == pytest.approx([0.3] * 3)


def test_warmup_rsqrt_closed_form():
    s = schedules.warmup_then_decay(1.0, warmup_steps=100, decay="rsqrt")
    for step in (0, 1, 50, 99, 100, 101, 400, 10_000):
        want = step / 100 if step < 100 else math.sqrt(100) / math.sqrt(step)
        assert float(s(step)) == pytest.approx(want, rel=1e-6, abs=1e-7)
    s0 = schedules.warmup_then_decay(0.3, warmup_steps=0, decay="rsqrt")
    assert float(s0(0)) == pytest.approx(0.3) and float(s0(4)) == pytest.approx(0.15)


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
def test_warmup_then_decay_closed_forms(decay):
    peak, w, total, end = 0.3, 10, 110, 0.01
    s = schedules.warmup_then_decay(peak, warmup_steps=w, decay=decay, total_steps=total,
                                    end_value=end)
    for step in (0, 5, 10, 35, 60, 109, 110, 500):
        if step < w:
            want = peak * step / w
        elif decay == "constant":
            want = peak
        else:
            frac = min(max((step - w) / (total - w), 0.0), 1.0)
            if decay == "linear":
                want = peak + (end - peak) * frac
            else:
                want = end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))
        assert float(s(step)) == pytest.approx(want, rel=1e-5, abs=1e-7), step
    # Works under jit with a traced integer step.
    assert float(jax.jit(s)(jnp.asarray(35))) == pytest.approx(float(s(35)))


def test_schedule_validation_and_grid():
    with pytest.raises(ValueError):
        schedules.warmup_then_decay(0.3, warmup_steps=10, decay="linear")
    with pytest.raises(ValueError):
        schedules.warmup_then_decay(0.3, decay="exp")
    assert schedules.learning_rate_grid((0.3, 0.1, 0.3, 1e-3)) == [0.3, 0.1, 1e-3]
    assert schedules.learning_rate_grid() == [3e-3, 1e-2, 3e-2, 1e-1, 3e-1]  # EPT B.2
    with pytest.raises(ValueError):
        schedules.learning_rate_grid((0.3, -1.0))
