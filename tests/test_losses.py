"""Losses against NumPy closed forms and torch.nn.functional.cross_entropy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.training import losses

B, T, V = 3, 5, 11


def _batch(seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=(B, T, V))).astype(np.float32)
    targets = rng.integers(1, V, size=(B, T)).astype(np.int32)
    weights = np.ones((B, T), np.float32)
    weights[0, 3:] = 0.0   # padded example
    weights[2, 1:] = 0.0   # a single target token
    targets[weights == 0] = 0
    return logits, targets, weights


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    lz = m + np.log(np.exp(x - m).sum(-1, keepdims=True))
    return x - lz, lz[..., 0]


def _np_token_loss(logits, targets, ls=0.0, z=0.0):
    """T5X per-token loss in float64 with a dense soft-target matrix."""
    logp, log_z = _np_log_softmax(logits)
    conf, low = 1.0 - ls, ls / (V - 1)
    soft = np.full(logits.shape, low)
    np.put_along_axis(soft, targets[..., None].astype(np.int64), conf, axis=-1)
    const = -(conf * math.log(conf) + (V - 1) * low * math.log(low + 1e-20))
    return -(soft * logp).sum(-1) + z * log_z ** 2 - const, z * log_z ** 2, soft


def test_cross_entropy_with_logits_closed_form():
    logits, targets, _ = _batch(1)
    _, log_z = _np_log_softmax(logits)
    onehot = np.eye(V, dtype=np.float32)[targets]
    loss, zl = losses.cross_entropy_with_logits(jnp.asarray(logits), jnp.asarray(onehot),
                                                z_loss=1e-4)
    picked = np.take_along_axis(logits.astype(np.float64), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(zl), 1e-4 * log_z ** 2, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(loss), log_z - picked + 1e-4 * log_z ** 2,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ls,z", [(0.0, 0.0), (0.1, 1e-4), (0.3, 0.0)])
def test_compute_weighted_cross_entropy_matches_numpy(ls, z):
    logits, targets, weights = _batch(2)
    want_tok, want_z, _ = _np_token_loss(logits, targets, ls, z)
    total, total_z, wsum = losses.compute_weighted_cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), label_smoothing=ls,
        z_loss=z)
    np.testing.assert_allclose(float(total), (want_tok * weights).sum(), rtol=1e-5)
    np.testing.assert_allclose(float(total_z), (want_z * weights).sum(), rtol=1e-5, atol=1e-9)
    assert float(wsum) == weights.sum()
    # No weights: every position counts, weight_sum = B * T; a factor divides both sums.
    total, total_z, wsum = losses.compute_weighted_cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), label_smoothing=ls, z_loss=z,
        loss_normalizing_factor=7.0)
    np.testing.assert_allclose(float(total), want_tok.sum() / 7.0, rtol=1e-5)
    np.testing.assert_allclose(float(total_z), want_z.sum() / 7.0, rtol=1e-5, atol=1e-9)
    assert float(wsum) == B * T


def test_gather_form_equals_dense_t5x_form():
    logits, targets, _ = _batch(3)
    ls = 0.2
    _, _, soft = _np_token_loss(logits, targets, ls)
    conf, low = 1 - ls, ls / (V - 1)
    const = -(conf * math.log(conf) + (V - 1) * low * math.log(low + 1e-20))
    dense, _ = losses.cross_entropy_with_logits(jnp.asarray(logits),
                                                jnp.asarray(soft, jnp.float32), 1e-3)
    total, _, _ = losses.compute_weighted_cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), label_smoothing=ls, z_loss=1e-3)
    np.testing.assert_allclose(float(total), float(jnp.sum(dense)) - B * T * const, rtol=1e-5)


def test_perfect_prediction_of_smoothed_targets_is_zero():
    _, targets, _ = _batch(4)
    ls = 0.1
    conf, low = 1 - ls, ls / (V - 1)
    logits = np.full((B, T, V), math.log(low), np.float32)
    np.put_along_axis(logits, targets[..., None].astype(np.int64), math.log(conf), axis=-1)
    total, _, _ = losses.compute_weighted_cross_entropy(jnp.asarray(logits),
                                                        jnp.asarray(targets), label_smoothing=ls)
    assert abs(float(total)) < 1e-4
    # Without subtracting the constant the loss would be the soft targets' entropy.
    assert -(conf * math.log(conf) + ls * math.log(low)) > 0.3


def test_label_smoothing_matches_torch_up_to_constant():
    torch = pytest.importorskip("torch")  # the hf extra (absent in the T5X env)
    F = torch.nn.functional
    logits, targets, weights = _batch(5)
    ls = 0.1
    # T5X spreads ls over the V-1 wrong classes; torch spreads eps over all V classes, so
    # T5X(ls) has the same soft targets as torch(eps = ls * V / (V - 1)).
    eps = ls * V / (V - 1)
    t_targets = torch.tensor(np.where(weights > 0, targets, -100), dtype=torch.long)
    want = F.cross_entropy(torch.tensor(logits).permute(0, 2, 1), t_targets,
                           ignore_index=-100, label_smoothing=eps, reduction="mean").item()
    conf, low = 1 - ls, ls / (V - 1)
    const = -(conf * math.log(conf) + (V - 1) * low * math.log(low + 1e-20))
    got = float(losses.token_mean_loss(jnp.asarray(logits), jnp.asarray(targets),
                                       jnp.asarray(weights), label_smoothing=ls))
    np.testing.assert_allclose(got + const, want, rtol=1e-5)
    # Per token as well.
    want_tok = F.cross_entropy(torch.tensor(logits).permute(0, 2, 1),
                               torch.tensor(targets, dtype=torch.long), label_smoothing=eps,
                               reduction="none").numpy()
    got_tok = losses.per_example_loss(jnp.asarray(logits), jnp.asarray(targets),
                                      jnp.ones((B, T)), label_smoothing=ls, normalize="sum")
    np.testing.assert_allclose(np.asarray(got_tok) + T * const, want_tok.sum(-1), rtol=1e-5)


def test_token_mean_loss_matches_hf_mean():
    torch = pytest.importorskip("torch")  # the hf extra (absent in the T5X env)
    F = torch.nn.functional
    logits, targets, weights = _batch(6)
    labels = torch.tensor(np.where(weights > 0, targets, -100), dtype=torch.long)
    want = F.cross_entropy(torch.tensor(logits).view(-1, V), labels.view(-1),
                           ignore_index=-100).item()
    got = losses.token_mean_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # weights=None: T5X's convention, id 0 is padding.
    got_none = losses.token_mean_loss(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(float(got_none), want, rtol=1e-5)


def test_normalizations():
    logits, targets, weights = _batch(7)
    tok, ztok, _ = _np_token_loss(logits, targets, 0.0, 1e-3)
    wsum = weights.sum()
    per_ex = (tok * weights).sum(-1) / weights.sum(-1)
    cases = {
        "mean_tokens": (tok * weights).sum() / wsum,
        "NUM_REAL_TARGET_TOKENS": (tok * weights).sum() / wsum,
        "sum": (tok * weights).sum(),
        None: (tok * weights).sum(),
        "mean_examples": per_ex.mean(),
        "average_per_sequence": per_ex.mean(),
        "mean_total_tokens": (tok * weights).sum() / (B * T),
        2.5: (tok * weights).sum() / 2.5,
    }
    args = (jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    for norm, want in cases.items():
        loss, zl, ws = losses.normalized_cross_entropy(*args, z_loss=1e-3,
                                                       loss_normalization=norm)
        np.testing.assert_allclose(float(loss), want, rtol=1e-5, err_msg=str(norm))
        assert float(ws) == wsum
        got = losses.token_mean_loss(*args, z_loss=1e-3, loss_normalization=norm)
        np.testing.assert_allclose(float(got), want, rtol=1e-5, err_msg=str(norm))
    zl = losses.normalized_cross_entropy(*args, z_loss=1e-3)[1]
    np.testing.assert_allclose(float(zl), (ztok * weights).sum() / wsum, rtol=1e-5)
    with pytest.raises(ValueError):
        losses.token_mean_loss(*args, loss_normalization="median")


def test_per_example_loss():
    logits, targets, weights = _batch(8)
    weights[1, 2] = 0.5
    tok, _, _ = _np_token_loss(logits, targets)
    args = (jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    got = losses.per_example_loss(*args)
    assert got.shape == (B,)
    np.testing.assert_allclose(np.asarray(got), (tok * weights).sum(-1) / weights.sum(-1),
                               rtol=1e-5)
    got_sum = losses.per_example_loss(*args, normalize="sum")
    np.testing.assert_allclose(np.asarray(got_sum), (tok * weights).sum(-1), rtol=1e-5)
    # An example without target tokens gives 0, not NaN; same for an all-padding batch.
    w0 = weights.copy()
    w0[2] = 0.0
    got0 = losses.per_example_loss(args[0], args[1], jnp.asarray(w0))
    assert float(got0[2]) == 0.0 and np.isfinite(np.asarray(got0)).all()
    assert float(losses.token_mean_loss(args[0], args[1], jnp.zeros((B, T)))) == 0.0
    assert float(losses.token_mean_loss(args[0], args[1], jnp.zeros((B, T)),
                                        loss_normalization="mean_examples")) == 0.0


def test_padding_positions_ignored_and_gradients():
    logits, targets, weights = _batch(9)
    z = 1e-3

    @jax.jit
    def f(lg, tg):
        return losses.token_mean_loss(lg, tg, jnp.asarray(weights), label_smoothing=0.1,
                                      z_loss=z)

    grad_f = jax.jit(jax.grad(f))

    base = float(f(jnp.asarray(logits), jnp.asarray(targets)))
    # Changing logits or target ids at padding positions changes nothing.
    noisy = logits.copy()
    noisy[weights == 0] = 1e4
    other_t = targets.copy()
    other_t[weights == 0] = 7
    assert float(f(jnp.asarray(noisy), jnp.asarray(other_t))) == pytest.approx(base, rel=1e-6)
    # Gradient: closed form w * ((1 + 2 z log_z) softmax - soft_targets) / sum(w)
    # (T5X's custom VJP formula for the first output).
    g = np.asarray(grad_f(jnp.asarray(noisy), jnp.asarray(targets)))
    assert np.isfinite(g).all()
    assert np.all(g[weights == 0] == 0.0)
    logp, log_z = _np_log_softmax(noisy)
    _, _, soft = _np_token_loss(noisy, targets, 0.1)
    want = ((1 + 2 * z * log_z)[..., None] * np.exp(logp) - soft) * weights[..., None]
    np.testing.assert_allclose(g, want / weights.sum(), rtol=1e-4, atol=1e-7)
    # Extreme logits (bf16-like ranges) still give finite values and gradients.
    big = jnp.asarray(logits * 1e4)
    assert np.isfinite(float(f(big, jnp.asarray(targets))))
    assert np.isfinite(np.asarray(grad_f(big, jnp.asarray(targets)))).all()


def test_bf16_logits_are_upcast_and_shape_checked():
    logits, targets, weights = _batch(10)
    f32 = losses.token_mean_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    bf = jnp.asarray(logits, jnp.bfloat16)
    got = losses.token_mean_loss(bf, jnp.asarray(targets), jnp.asarray(weights))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), float(f32), rtol=2e-2)
    with pytest.raises(ValueError):
        losses.compute_weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(targets[0]))
    with pytest.raises(ValueError):
        losses.compute_weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                              label_smoothing=1.0)
