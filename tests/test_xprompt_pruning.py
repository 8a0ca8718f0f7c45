"""Pruning schedules, parameter counts and candidate choice (closed-form expectations)."""

import numpy as np
import pytest

from xprompt_jax.xprompt import pruning, search


def test_token_pruning_removes_lowest_scorers_to_the_ratio():
    scores = np.array([5.0, 1.0, 4.0, 0.5, 3.0, 2.0, 6.0, 0.1, 7.0, 8.0])
    mask = pruning.prune_tokens(scores, np.ones(10), 0.3)
    np.testing.assert_array_equal(np.flatnonzero(mask == 0), [1, 3, 7])  # 3 lowest
    # iterative: 0.5 on top of that prunes 2 more among survivors with *new* scores
    new_scores = np.array([0.0, 9, 0.2, 9, 9, 9, 9, 9, 0.3, 9])
    mask2 = pruning.prune_tokens(new_scores, mask, 0.5)
    np.testing.assert_array_equal(np.flatnonzero(mask2 == 0), [0, 1, 2, 3, 7])
    reversed_mask = pruning.prune_tokens(scores, np.ones(10), 0.3, variant="reversed")
    np.testing.assert_array_equal(np.flatnonzero(reversed_mask == 0), [6, 8, 9])  # 3 highest
    with pytest.raises(ValueError, match="keep at least one"):
        pruning.prune_tokens(scores, np.ones(10), 1.0)


def test_piece_pruning_global_and_per_token():
    token_mask = np.array([1, 0, 1], np.float32)
    scores = np.arange(12, dtype=np.float64).reshape(3, 4)[::-1].copy()  # row 0 highest
    base = int(pruning.effective_piece_mask(token_mask, np.ones((3, 4))).sum())
    assert base == 8
    glob = pruning.prune_pieces(scores, np.ones((3, 4)), token_mask, 0.5, base)
    # 4 of the 8 live pieces pruned: all of token 2's (lowest), token 1 untouched (dead)
    np.testing.assert_array_equal(glob, [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    per = pruning.prune_pieces(scores, np.ones((3, 4)), token_mask, 0.5, base, per_token=True)
    np.testing.assert_array_equal(per.sum(axis=1), [2, 4, 2])
    np.testing.assert_array_equal(per[0], [0, 0, 1, 1])  # lowest two of token 0 (scores 11..8)


def test_parameter_count_is_surviving_pieces_times_piece_size():
    token_mask = np.array([1, 1, 0, 1], np.float32)
    piece_mask = np.ones((4, 16), np.float32)
    piece_mask[0, :5] = 0
    piece_mask[2, :] = 1  # its token is pruned: does not count
    assert pruning.trainable_parameter_count(token_mask, piece_mask, 768) == (48 - 5) * 48
    values = pruning.value_mask(token_mask, piece_mask, 32)
    assert values.shape == (4, 32) and values[0, :10].sum() == 0 and values[2].sum() == 0
    assert values.sum() == (48 - 5) * 2


def test_random_masks_keep_the_counts():
    token_mask = np.array([1, 0, 1, 1, 0], np.float32)
    piece_mask = np.ones((5, 8), np.float32)
    piece_mask[0, :3] = 0
    t, p = pruning.random_masks_like(token_mask, piece_mask, seed=3)
    assert t.sum() == 3
    assert pruning.effective_piece_mask(t, p).sum() == pruning.effective_piece_mask(
        token_mask, piece_mask).sum()
    t2, p2 = pruning.random_masks_like(token_mask, piece_mask, seed=3)
    np.testing.assert_array_equal(p, p2)


def test_choose_best_prefers_metric_then_sparser():
    results = [{"main_metric": 70.0}, {"main_metric": 75.0}, {"main_metric": 75.0},
               {"main_metric": None}]
    assert search.choose_best(results, [100, 80, 60, 10]) == 2
    assert search.choose_best([{"main_metric": 1.0}, {"main_metric": 2.0}], [5, 9]) == 1


def test_default_ratios():
    assert pruning.default_ratios() == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    with pytest.raises(ValueError):
        pruning.ratios_checked((0.5, 0.2))
