import numpy as np
import pytest
import scipy.sparse as sp

from stages.als_fit import fit_als
from stages.candidates import top_n_items
from stages.common import PipelineError

PARAMS = dict(factors=4, regularization=0.01, iterations=15, alpha=10.0, seed=1)


def _planted(n_groups=4, users_per_group=30, items_per_group=12, seed=0):
    """Users of group g interact with all items of group g but two random ones, and with nothing else.
    Columns: for each group, first the smm items, then the zvuk items (both domains in one matrix)."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for g in range(n_groups):
        for u in range(users_per_group):
            user = g * users_per_group + u
            chosen = rng.choice(items_per_group, size=items_per_group - 2, replace=False)
            rows += [user] * len(chosen)
            cols += list(g * items_per_group + chosen)
    n_users, n_items = n_groups * users_per_group, n_groups * items_per_group
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))


def test_als_recovers_a_held_out_item_of_the_planted_taste():
    matrix = _planted().tolil()
    user, held_out = 0, None
    for item in range(12):  # group 0's items; hold out one the user has
        if matrix[user, item]:
            held_out = item
    matrix[user, held_out] = 0
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    users, items = fit_als(matrix, **PARAMS)
    top, _ = top_n_items(users[[user]], items, matrix[[user]], n=3)
    # 3 of the 39 unseen items are of the user's group: the held-out one and the two never seen.
    assert held_out in top[0]
    assert set(top[0]) <= set(range(12))


def test_user_known_in_one_domain_scores_the_other_domain():
    """Group 0's columns 0-5 play the smm items, 6-11 the zvuk items. A new user with smm events only must
    get group 0's zvuk items first."""
    matrix = _planted().tolil()
    new_user = matrix.shape[0]
    matrix.resize((new_user + 1, matrix.shape[1]))
    for item in (0, 1, 2, 3):
        matrix[new_user, item] = 1
    matrix = matrix.tocsr()
    users, items = fit_als(matrix, **PARAMS)
    zvuk_cols = np.array([c for g in range(4) for c in range(g * 12 + 6, g * 12 + 12)])
    top, _ = top_n_items(users[[new_user]], items[zvuk_cols], sp.csr_matrix((1, len(zvuk_cols))), n=6)
    assert set(zvuk_cols[top[0]]) == set(range(6, 12))


def test_users_and_items_without_events_get_zero_vectors():
    matrix = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=np.float32))
    users, items = fit_als(matrix, **PARAMS)
    assert not users[1].any() and not items[2].any()
    assert users[0].any() and items[0].any()


def test_same_seed_same_factors():
    matrix = _planted()
    a, b = fit_als(matrix, **PARAMS), fit_als(matrix, **PARAMS)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_bad_factors_rejected():
    with pytest.raises(PipelineError, match=r"als.factors=0 is out of range: must be an integer >= 1"):
        fit_als(_planted(), **{**PARAMS, "factors": 0})
