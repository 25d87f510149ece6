"""The planted-truth oracle of benchmarks/oracle.py on arrays small enough to check by hand."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from benchmarks.oracle import counted_weights, oracle_lists, oracle_scores


def test_oracle_scores_mix_the_taste_and_the_catalog():
    weights = np.array([[1.0, 1.0, 2.0, 0.0],   # day 0
                        [1.0, 1.0, 2.0, 4.0]])  # day 1: item 3 released
    cluster = np.array([0, 0, 1, 1])
    scores = oracle_scores(weights, cluster, np.array([0, 1]), taste_strength=0.5, n_tastes=2)
    overall = weights / weights.sum(axis=1, keepdims=True)
    in_cluster_1 = np.array([[0, 0, 1.0, 0.0], [0, 0, 1 / 3, 2 / 3]])
    expected_1 = 0.5 * overall.sum(axis=0) + 0.5 * in_cluster_1.sum(axis=0)
    np.testing.assert_allclose(scores[1], expected_1)
    assert scores[0, 0] > scores[1, 0] and scores[1, 2] > scores[0, 2]  # the own cluster weighs more


def test_oracle_lists_skip_seen_items_and_follow_the_taste():
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1]]))
    lists = oracle_lists(scores, np.array([0, 1]), seen, k=2)
    assert lists.tolist() == [[1, 2], [2, 1]]


def test_counted_weights_keep_the_shapes_and_take_the_levels_from_the_events():
    weights = np.array([[2.0, 0.0, 1.0],   # day 0: item 1 not released yet
                        [2.0, 3.0, 1.0],   # day 1: its release burst
                        [2.0, 1.5, 1.0]])  # day 2: the burst decays (the day after the cut-off)
    # Events of days 0 and 1 in proportion to the weights, at 10 events per unit of weight a day: exact levels.
    exact = counted_weights(weights, 10 * weights[:2] / weights[:2].sum(axis=1, keepdims=True))
    np.testing.assert_allclose(exact / exact[0, 0], weights / weights[0, 0])
    # Item 2 taken twice as often as planted (at item 0's expense, so the days' totals stay): twice the level,
    # same shape; an item never taken: nothing.
    counts = 10 * weights[:2] / weights[:2].sum(axis=1, keepdims=True)
    counts[:, 0] -= counts[:, 2]
    counts[:, 2] *= 2
    doubled = counted_weights(weights, counts)
    np.testing.assert_allclose(doubled[:, 2], 2 * exact[:, 2])
    counts[:, 1] = 0
    np.testing.assert_allclose(counted_weights(weights, counts)[:, 1], 0)
