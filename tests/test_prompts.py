"""Prompt initializers: ranges, sampling without replacement, class labels, files, text."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xprompt_jax.errors import DataError
from xprompt_jax.prompts import initializers, make_initializer

EMBEDDING = np.random.RandomState(0).normal(size=(6000, 8)).astype(np.float32)


def test_uniform_and_reference_uniform_ranges():
    sym = np.asarray(initializers.uniform()(jax.random.PRNGKey(0), (100, 64)))
    assert sym.min() >= -0.5 and sym.max() <= 0.5 and sym.min() < -0.45 and sym.max() > 0.45
    ref = np.asarray(initializers.reference_uniform()(jax.random.PRNGKey(0), (100, 64)))
    assert ref.min() >= 0.0 and ref.max() < 0.5 and ref.min() < 0.01


def test_sampled_vocab_rows_are_distinct_rows_of_the_first_5000():
    value = np.asarray(initializers.sampled_vocab(EMBEDDING)(jax.random.PRNGKey(1), (300, 8)))
    # each prompt row equals exactly one embedding row among the first 5000
    matches = [np.flatnonzero((EMBEDDING == row).all(axis=1)) for row in value]
    rows = [int(m[0]) for m in matches]
    assert all(len(m) == 1 for m in matches)
    assert max(rows) < 5000 and len(set(rows)) == 300
    with pytest.raises(ValueError, match="population"):
        initializers.sampled_vocab(EMBEDDING, population=10)(jax.random.PRNGKey(0), (11, 8))


def test_class_labels_are_mean_subword_embeddings_then_sampled():
    labels = [[5, 6], [7], [8, 9, 10]]
    value = np.asarray(initializers.class_labels(EMBEDDING, labels)(jax.random.PRNGKey(2), (5, 8)))
    np.testing.assert_allclose(value[0], EMBEDDING[[5, 6]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(value[1], EMBEDDING[7], rtol=1e-6)
    np.testing.assert_allclose(value[2], EMBEDDING[[8, 9, 10]].mean(0), rtol=1e-6)
    for row in value[3:]:
        assert (EMBEDDING[:5000] == row).all(axis=1).any()


def test_from_file_checks_the_shape(tmp_path):
    path = tmp_path / "prompt.prompt.npy"
    np.save(path, np.ones((4, 8), np.float32))
    init = make_initializer("from_file", path=str(path))
    np.testing.assert_array_equal(init(jax.random.PRNGKey(0), (4, 8)), np.ones((4, 8)))
    with pytest.raises(ValueError, match=r"prompt\.prompt\.npy.*\(4, 8\).*\(5, 8\)"):
        init(jax.random.PRNGKey(0), (5, 8))
    with pytest.raises(DataError, match="prompt init file .*missing.npy does not exist"):
        make_initializer("from_file", path=str(tmp_path / "missing.npy"))


def test_from_text_tiles_the_text_embeddings():
    value = np.asarray(initializers.from_text(EMBEDDING, [3, 4])(jax.random.PRNGKey(0), (5, 8)))
    np.testing.assert_array_equal(value, EMBEDDING[[3, 4, 3, 4, 3]])


def test_make_initializer_names_and_errors():
    assert jnp.asarray(make_initializer("uniform")(jax.random.PRNGKey(0), (2, 3))).shape == (2, 3)
    with pytest.raises(ValueError, match="embedding"):
        make_initializer("sampled_vocab")
    with pytest.raises(ValueError, match="unknown prompt init"):
        make_initializer("nope")
