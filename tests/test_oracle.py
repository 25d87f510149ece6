"""The planted-truth oracle of benchmarks/oracle.py on arrays small enough to check by hand."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from benchmarks.oracle import oracle_lists, oracle_scores


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
