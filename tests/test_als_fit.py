import numpy as np
import pytest
import scipy.sparse as sp

from stages.als_fit import _fit_implicit, _fit_weighted, _user_groups, fit_als
from stages.candidates import top_n_items
from stages.common import PipelineError

PARAMS = dict(factors=4, regularization=0.01, iterations=15, alpha=10.0, seed=1, other_domain_weight=1.0)


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


def _two_domains(n_groups=4, users_per_group=30, items_per_domain=6, only_share=0.5, seed=0):
    """Planted tastes shared by two domains: group g's users take group g's items of each domain they use.
    Columns: domain 0 (items of group 0, 1, ...) then domain 1 likewise. Of each group, the first `only_share`
    of the users use domain 0 only, the rest both domains. Returns (matrix, item domain, users of domain 0
    only, group of each user)."""
    rng = np.random.default_rng(seed)
    n_items = n_groups * items_per_domain
    rows, cols, only, group = [], [], [], []
    for g in range(n_groups):
        for u in range(users_per_group):
            user = g * users_per_group + u
            group.append(g)
            domains = (0,) if u < users_per_group * only_share else (0, 1)
            if domains == (0,):
                only.append(user)
            for d in domains:
                chosen = rng.choice(items_per_domain, size=items_per_domain - 1, replace=False)
                rows += [user] * len(chosen)
                cols += list(d * n_items + g * items_per_domain + chosen)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                           shape=(n_groups * users_per_group, 2 * n_items))
    return matrix, np.repeat([0, 1], n_items), np.array(only), np.array(group)


def test_weighted_loop_with_weight_one_is_implicit_bit_for_bit():
    """The loop behind other_domain_weight < 1 is implicit's own (start values, solver, order): with w = 1 it
    must give exactly implicit's factors, users grouped by domain or not."""
    matrix, domain, _, _ = _two_domains()
    matrix = matrix.tolil()
    matrix[5, :] = 0  # a user with no event at all
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    args = (4, 0.01, 6, 10.0, 3, 2)
    expected = _fit_implicit(matrix, *args)
    got = _fit_weighted(matrix, domain, 1.0, *args)
    assert len(_user_groups(matrix, domain, 1.0)) == 2  # domain 0 only, both (with the user without events)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_user_groups_scale_the_items_of_unused_domains():
    matrix, domain, only, _ = _two_domains(only_share=0.7)  # 84 users of domain 0 only, 36 of both
    groups = {len(rows): (rows, scale) for rows, _, scale in _user_groups(matrix, domain, 0.25)}
    rows, scale = groups[len(only)]
    assert np.array_equal(rows, only)
    assert np.array_equal(scale, np.where(domain == 0, 1.0, 0.5).astype(np.float32))  # sqrt(0.25)
    both = groups[matrix.shape[0] - len(only)][1]
    assert (both == 1.0).all()


def test_other_domain_weight_zero_carries_the_taste_to_the_unused_domain():
    """Users of domain 0 only must get their group's domain-1 items first: their taste reaches the other domain
    through the users of both, even when no implied negative of theirs lies in it (w = 0)."""
    matrix, domain, only, group = _two_domains(only_share=0.7)
    n_items = (domain == 0).sum()
    params = {**PARAMS, "other_domain_weight": 0.0}
    users, items = fit_als(matrix, **params, item_domain=domain)
    zvuk = np.flatnonzero(domain == 1)
    top, _ = top_n_items(users[only], items[zvuk], sp.csr_matrix((len(only), len(zvuk))), n=6)
    assert ((zvuk[top] - n_items) // 6 == group[only][:, None]).all()


def test_other_domain_weight_changes_the_fit_and_is_checked():
    matrix, domain, _, _ = _two_domains()
    plain = fit_als(matrix, **PARAMS, item_domain=domain)
    weighted = fit_als(matrix, **{**PARAMS, "other_domain_weight": 0.0}, item_domain=domain)
    assert not np.array_equal(plain[0], weighted[0])
    assert np.array_equal(fit_als(matrix, **PARAMS)[0], plain[0])  # no item_domain: one domain, plain ALS
    with pytest.raises(PipelineError, match=r"als.other_domain_weight=1.5 is out of range: must be a number >= 0.0 "
                                            r"and <= 1.0"):
        fit_als(matrix, **{**PARAMS, "other_domain_weight": 1.5}, item_domain=domain)
    with pytest.raises(PipelineError, match="3 item domains for a matrix of 48 items"):
        fit_als(matrix, **PARAMS, item_domain=np.zeros(3))


def test_solve_users_is_implicits_exact_user_solve_with_the_negatives_scaled():
    from implicit.cpu.als import user_factor

    from stages.als_fit import solve_users

    rng = np.random.default_rng(3)
    items = rng.standard_normal((9, 3)).astype(np.float32)
    confidence = sp.csr_matrix(np.array([[0, 4.0, 0, 0, 2.0, 0, 0, 0, 0],
                                         [0, 0, 0, 0, 0, 0, 0, 0, 0],  # no event: a zero vector
                                         [1.5, 0, 0, 7.0, 0, 0, 0, 3.0, 0]], dtype=np.float32))
    vectors = solve_users(confidence, items, regularization=0.1)
    for row in (0, 2):
        expected = user_factor(items.astype(np.float64), items.T.astype(np.float64) @ items, confidence, row, 0.1, 3)
        np.testing.assert_allclose(vectors[row], expected, rtol=1e-5)
    assert not vectors[1].any()
    # Items 5..8 count a quarter in the implied negatives: Y'Y is built from their rows scaled by 0.5.
    scale = np.where(np.arange(9) >= 5, 0.5, 1.0)
    scaled = items * scale[:, None]
    expected = user_factor(items.astype(np.float64), scaled.T.astype(np.float64) @ scaled, confidence, 0, 0.1, 3)
    np.testing.assert_allclose(solve_users(confidence, items, regularization=0.1, item_scale=scale)[0], expected,
                               rtol=1e-5)
