"""The planted-truth oracle of benchmarks/oracle.py on arrays small enough to check by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmarks.oracle import (counted_weights, oracle_lists, oracle_scores, segment_means, taste_log_likelihood,
                              taste_posterior)
from benchmarks.shapes import ORACLE_CEILINGS, oracle_ratios
from tests.conftest import run_module


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


def test_segment_means_average_each_list_maker_over_the_users_of_each_segment():
    users = [30, 10, 20, 40]  # user_idx out of order, so that a positional mix-up shows
    per_user = {"final": pd.Series([0.3, 0.1, 0.2, 0.4], index=users),
                "oracle": pd.Series([1.0, 0.5, 0.0, 0.9], index=users)}
    segment = pd.Series(["cross", "warm", "warm", "cold"], index=[30, 20, 10, 40])
    table = segment_means(per_user, segment).set_index("segment")
    assert table.loc["warm", "truth users"] == 2
    assert table.loc["warm", "final"] == (0.1 + 0.2) / 2 and table.loc["warm", "oracle"] == (0.5 + 0.0) / 2
    assert table.loc["cross", "final"] == 0.3 and table.loc["cold", "oracle"] == 0.9


def test_taste_posterior_finds_the_cluster_the_events_came_from():
    # Two clusters of two items each, equal weights on the one day: an event on item 2 or 3 is three times as
    # likely from taste 1 as from taste 0 at taste_strength 0.5 (0.5/2 + 0.5/4 against 0.5/4).
    weights = np.ones((1, 4))
    cluster = np.array([0, 0, 1, 1])
    user = np.array([0, 0, 1])
    log_likelihood = taste_log_likelihood(user, np.zeros(3, dtype=np.int64), np.array([2, 3, 0]), weights,
                                          cluster, taste_strength=0.5, n_tastes=2, n_users=3)
    posterior = taste_posterior(log_likelihood)
    np.testing.assert_allclose(posterior[0], [1 / 10, 9 / 10])  # two events of cluster 1: 3 x 3 to 1
    np.testing.assert_allclose(posterior[1], [3 / 4, 1 / 4])    # one event of cluster 0
    np.testing.assert_allclose(posterior[2], [1 / 2, 1 / 2])    # no event: the uniform prior


def test_taste_posterior_ignores_a_cluster_with_nothing_released_yet():
    # Cluster 1 has no weight on day 0, so a user of taste 1 drew every event of that day from the whole
    # catalog; a user of taste 0 drew from cluster 0, which is the whole catalog that day: the event on item 0
    # is as likely under either taste (a division by cluster 1's zero weight would make it nan).
    weights = np.array([[1.0, 1.0, 0.0, 0.0]])
    cluster = np.array([0, 0, 1, 1])
    log_likelihood = taste_log_likelihood(np.array([0]), np.array([0]), np.array([0]), weights, cluster,
                                          taste_strength=0.5, n_tastes=2, n_users=1)
    # taste 0: 0.5 x 1/2 + 0.5 x 1/2 = 1/2; taste 1 (falls back to the catalog): 1/2 as well
    np.testing.assert_allclose(taste_posterior(log_likelihood)[0], [1 / 2, 1 / 2])


def test_oracle_runs_on_a_pipeline_run_and_prints_what_benchmarks_shapes_reads(tiny_pipeline):
    result = run_module(tiny_pipeline, "benchmarks.oracle")
    assert result.returncode == 0, result.stderr
    ratios = oracle_ratios(result.stdout)
    assert set(ratios) == set(ORACLE_CEILINGS) and all(value > 0 for value in ratios.values())
    # Inferring the taste from the events cannot beat being given it, on average over many users; on a tiny
    # sample allow the noise of a few users.
    assert ratios["inferred"] <= ratios["knowable"] * 1.02
    assert "| domain   | segment   |" in result.stdout
