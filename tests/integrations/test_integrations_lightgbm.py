"""lossdsl.lightgbm: same models as LightGBM's built-in objectives, weights, shapes, init score."""

import math

import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")
import lossdsl  # noqa: E402
import lossdsl.lightgbm as ll  # noqa: E402

ROUNDS = 8
PARAMS = {"verbose": -1, "num_threads": 1, "num_leaves": 7, "learning_rate": 0.3,
          "deterministic": True}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    n = 300
    X = rng.normal(size=(n, 4))
    y = X[:, 0] - 0.5 * X[:, 1] + 0.5 * rng.normal(size=n)
    return {
        "X": X,
        "y": y,
        "binary": (y > 0).astype(float),
        "counts": rng.poisson(np.exp(0.5 * X[:, 0])).astype(float),
        "classes": np.digitize(X[:, 0] + 0.3 * rng.normal(size=n), [-0.5, 0.5]),
        "weight": rng.uniform(0.2, 3.0, size=n),
    }


def _train(data, label, objective, extra=None, num_class=None, weighted=False, rounds=ROUNDS):
    n = len(label)
    start = np.zeros((n, num_class)) if num_class else np.zeros(n)
    dataset = lgb.Dataset(data["X"], label, weight=data["weight"] if weighted else None,
                          init_score=start)
    params = {**PARAMS, **(extra or {}), "objective": objective}
    if num_class:
        params["num_class"] = num_class
    return lgb.train(params, dataset, rounds)


@pytest.mark.parametrize("text,builtin,label,scale", [
    ("half_mse(y, p)", "regression", "y", 1.0),
    ("bce_logits(y, p)", "binary", "binary", 1.0),
    # LightGBM's poisson Hessian is exp(p + poisson_max_delta_step), the step 0.7
    ("exp(p) - y*p", "poisson", "counts", math.exp(0.7)),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_same_model_as_builtin(data, text, builtin, label, scale, weighted):
    objective = ll.objective(text, hessian_scale=scale, target="cpu")
    ours = _train(data, data[label], objective, weighted=weighted)
    theirs = _train(data, data[label], builtin, weighted=weighted)
    X = data["X"]
    assert np.abs(theirs.predict(X, raw_score=True)).max() > 0.5
    np.testing.assert_allclose(ours.predict(X, raw_score=True),
                               theirs.predict(X, raw_score=True), rtol=1e-6, atol=1e-6)


def test_same_model_as_multiclass(data):
    # LightGBM's multiclass Hessian is K/(K-1) p (1 - p)
    objective = ll.objective("sparse_cce_logits(y, z)", hessian_scale=3 / 2, target="cpu")
    ours = _train(data, data["classes"], objective, num_class=3, weighted=True)
    theirs = _train(data, data["classes"], "multiclass", num_class=3, weighted=True)
    raw = ours.predict(data["X"], raw_score=True)
    assert raw.shape == (300, 3)
    np.testing.assert_allclose(raw, theirs.predict(data["X"], raw_score=True), atol=1e-6)


def test_multiclass_shapes_both_layouts(data):
    objective = ll.objective("sparse_cce_logits(y, z)", target="cpu")
    dataset = lgb.Dataset(data["X"], data["classes"]).construct()
    scores = np.zeros((300, 3))
    gradient, hessian = objective(scores, dataset)
    assert gradient.shape == hessian.shape == (300, 3)
    np.testing.assert_allclose(gradient, 1 / 3 - np.eye(3)[data["classes"]])
    # LightGBM < 4: flat class-major scores in, flat class-major gradients out
    flat_gradient, _ = objective(scores.T.reshape(-1), dataset)
    np.testing.assert_array_equal(flat_gradient, gradient.T.reshape(-1))


def test_weights_applied_weight_two_equals_duplicated_row(data):
    X, y = data["X"], data["y"]
    weight = np.ones(len(y))
    weight[:60] = 2.0
    objective = ll.objective("pseudo_huber(y, p)", target="cpu")
    scores = np.linspace(-1, 1, 300)
    g_weighted, h_weighted = objective(y, scores, weight)
    g_dup, h_dup = objective(np.concatenate([y, y[:60]]), np.concatenate([scores, scores[:60]]))
    np.testing.assert_allclose(g_weighted[:60], g_dup[:60] + g_dup[300:])
    np.testing.assert_allclose(h_weighted[:60], h_dup[:60] + h_dup[300:])
    # With a bin per distinct value and depth-1 trees, LightGBM itself treats a weight of 2
    # and a duplicated row alike (otherwise its bin boundaries and row-count heuristics
    # differ, for built-in objectives too).
    settings = {"n_estimators": ROUNDS, "max_depth": 1, "n_jobs": 1, "verbose": -1,
                "min_child_samples": 1, "min_data_in_bin": 1, "max_bin": 1023,
                "deterministic": True}
    weighted = lgb.LGBMRegressor(objective=objective, **settings).fit(X, y, sample_weight=weight)
    duplicated = lgb.LGBMRegressor(objective=objective, **settings).fit(
        np.vstack([X, X[:60]]), np.concatenate([y, y[:60]]))
    unweighted = lgb.LGBMRegressor(objective=objective, **settings).fit(X, y)
    np.testing.assert_allclose(weighted.predict(X), duplicated.predict(X), atol=1e-9)
    assert np.abs(weighted.predict(X) - unweighted.predict(X)).max() > 1e-2


def test_sklearn_weighted_matches_builtin(data):
    X, y, w = data["X"], data["binary"], data["weight"]
    settings = {"n_estimators": ROUNDS, "num_leaves": 7, "learning_rate": 0.3, "n_jobs": 1,
                "verbose": -1, "deterministic": True}
    ours = lgb.LGBMClassifier(objective=ll.objective("bce_logits(y, p)", target="cpu"),
                              **settings).fit(X, y, sample_weight=w, init_score=np.zeros(300))
    theirs = lgb.LGBMClassifier(objective="binary", boost_from_average=False,
                                **settings).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours.predict(X, raw_score=True),
                               theirs.predict(X, raw_score=True), atol=1e-6)


def test_sklearn_multiclass(data):
    objective = ll.objective("cce_logits(y, z)", target="cpu")
    model = lgb.LGBMClassifier(objective=objective, n_estimators=ROUNDS, num_leaves=7,
                               n_jobs=1, verbose=-1).fit(data["X"], data["classes"])
    raw = model.predict(data["X"], raw_score=True)
    assert raw.shape == (300, 3)
    assert np.mean(np.argmax(raw, axis=1) == data["classes"]) > 0.7


def test_init_score_and_metric(data):
    objective = ll.objective("exp(p) - y*p", target="cpu")
    counts, w = data["counts"], data["weight"]
    start = ll.init_score(objective, counts, w)
    assert start == pytest.approx(math.log(np.sum(w * counts) / np.sum(w)), abs=1e-8)
    dataset = lgb.Dataset(data["X"], counts, weight=w, init_score=objective.base_margin(counts, w))
    history = {}
    booster = lgb.train({**PARAMS, "objective": objective, "metric": "None"}, dataset, ROUNDS,
                        valid_sets=[dataset], valid_names=["train"],
                        feval=ll.metric(objective, name="poisson_deviance"),
                        callbacks=[lgb.record_evaluation(history)])
    curve = history["train"]["poisson_deviance"]
    assert curve[-1] < curve[0]
    # LightGBM does not store the init score: add it back to raw predictions
    raw = booster.predict(data["X"], raw_score=True) + start
    expected = lossdsl.compile("exp(p) - y*p", reduction="weighted_mean")(y=counts, p=raw,
                                                                     sample_weight=w)
    assert curve[-1] == pytest.approx(expected, rel=1e-7)  # LightGBM sums scores in float32 trees
    name, value, higher_is_better = ll.metric("exp(p) - y*p")(counts, raw, w)
    assert (name, higher_is_better) == ("lossdsl", False)
    assert value == pytest.approx(expected)


def test_quantile_trains_with_constant_hessian(data):
    X, y = data["X"], data["y"]
    objective = ll.objective("quantile(y, p, 0.8)", target="cpu")
    assert objective.policy == "constant"
    start = objective.init_score(y)
    assert np.mean(y <= start) == pytest.approx(0.8, abs=0.01)
    booster = lgb.train({**PARAMS, "objective": objective},
                        lgb.Dataset(X, y, init_score=np.full(300, start)), 40)
    fitted = booster.predict(X, raw_score=True) + start
    assert np.mean(y <= fitted) == pytest.approx(0.8, abs=0.08)
    pinball = lossdsl.compile("quantile(y, p, 0.8)")
    assert pinball(y=y, p=fitted) < 0.8 * pinball(y=y, p=np.full(300, start))


def _newsvendor(seed=0, n=3000):
    """Daily demand with a per-row price and unit cost: a stock-out loses price - cost, an
    unsold unit costs cost (critical ratios 0.7 to 0.95: L2's mean forecast is too low)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    mean = np.exp(2.5 + 0.5 * X[:, 0] - 0.3 * X[:, 1])
    demand = rng.negative_binomial(3, 3 / (3 + mean)).astype(float)
    price = rng.uniform(5, 50, n)
    cost = price * rng.uniform(0.05, 0.3, n)
    return X, demand, price, cost


def _stock_cost(demand, order, price, cost):
    return float(np.sum(np.where(order < demand, (price - cost) * (demand - order),
                                 cost * (order - demand))))


def test_smoothed_newsvendor_trains_with_default_hessian():
    """The Huber-smoothed cost docs/business-costs.md recommends has a Hessian that is 0
    outside its quadratic zone. "auto" used to floor it at 1e-16 there: Newton leaves
    exploded, orders went negative and the cost ended above plain L2's."""
    X, demand, price, cost = _newsvendor()
    train, test = slice(0, 2000), slice(2000, None)
    text = "where(p < y, price - cost, cost)*huber(y, p, 0.5)"
    objective = ll.objective(text, inputs={"price": price[train], "cost": cost[train]},
                             rows=demand[train], target="cpu")
    assert objective.policy == "constant"
    start = objective.init_score(demand[train])
    params = {**PARAMS, "num_leaves": 15, "learning_rate": 0.1}
    model = lgb.train({**params, "objective": objective},
                      lgb.Dataset(X[train], demand[train], init_score=np.full(2000, start)), 50)
    order = model.predict(X[test], raw_score=True) + start
    assert demand.min() <= order.min() and order.max() <= demand.max()
    l2 = lgb.train({**params, "objective": "regression"}, lgb.Dataset(X[train], demand[train]),
                   50)
    ours = _stock_cost(demand[test], order, price[test], cost[test])
    plain = _stock_cost(demand[test], l2.predict(X[test]), price[test], cost[test])
    constant = _stock_cost(demand[test], np.full(1000, start), price[test], cost[test])
    assert ours < 0.95 * plain and ours < 0.9 * constant


def test_per_row_inputs_bound_to_a_dataset():
    X, demand, price, cost = _newsvendor(n=600)
    text = "where(p < y, price - cost, cost)*huber(y, p, 0.5)"
    dataset = lgb.Dataset(X, demand, init_score=np.full(600, 10.0))
    objective = ll.objective(text, inputs={"price": price, "cost": cost}, rows=dataset,
                             target="cpu")
    booster = lgb.train({**PARAMS, "objective": objective}, dataset, 3)
    assert booster.current_iteration() == 3
    with pytest.raises(lossdsl.LossError, match="another Dataset"):
        lgb.train({**PARAMS, "objective": objective}, lgb.Dataset(X, demand), 1)
    with pytest.raises(lossdsl.LossShapeError, match="input 'price'"):
        lgb.cv({**PARAMS, "objective": objective}, dataset, 1, nfold=3, stratified=False)


def test_per_row_inputs_refuse_shuffled_rows_sklearn():
    X, demand, price, cost = _newsvendor(n=600)
    text = "where(p < y, price - cost, cost)*huber(y, p, 0.5)"
    objective = ll.objective(text, inputs={"price": price, "cost": cost}, rows=demand,
                             target="cpu")
    model = lgb.LGBMRegressor(objective=objective, n_estimators=3, n_jobs=1, verbose=-1)
    order = np.random.default_rng(0).permutation(600)
    with pytest.raises(lossdsl.LossError, match="shuffled"):
        model.fit(X[order], demand[order])
    with pytest.raises(lossdsl.LossShapeError, match="input 'price' holds values for the 600"):
        model.fit(X[:400], demand[:400])
    model.fit(X, demand)  # its own rows, in order


@pytest.mark.parametrize("weighted", [False, True])
def test_huber_default_policy_is_lightgbm_huber(data, weighted):
    """LightGBM's built-in huber uses the clipped residual and a Hessian of 1 per unit of
    weight, the policy "auto" now picks for a Hessian that is 0 outside a quadratic zone (the
    floored exact Hessian trained another model)."""
    objective = ll.objective("huber(y, p, 0.5)", target="cpu")
    assert objective.policy == "constant"
    ours = _train(data, data["y"], objective, weighted=weighted)
    theirs = _train(data, data["y"], "huber", extra={"alpha": 0.5}, weighted=weighted)
    X = data["X"]
    assert np.abs(theirs.predict(X, raw_score=True)).max() > 0.5
    np.testing.assert_allclose(ours.predict(X, raw_score=True),
                               theirs.predict(X, raw_score=True), rtol=1e-6, atol=1e-6)


def test_nan_labels_and_a_missing_num_class_are_refused_with_advice(data):
    """LightGBM's Dataset stores a NaN label as 0 without a word, and asymmetric_l1's
    gradient at a NaN label is finite (its where() compares false): both paths used to train
    on such rows silently. A loss over classes met by one score per row used to fail deep in
    the kernel binding ("rowmax needs a per-class matrix")."""
    X, y = data["X"], data["y"].copy()
    y[[3, 17]] = np.nan
    objective = ll.objective("asymmetric_l1(y, p, 4, 1)")
    with pytest.raises(lossdsl.LossError, match=r"2 label\(s\) are NaN \(the first at row 3\)"):
        ll.train(objective, PARAMS, lgb.Dataset(X, y, free_raw_data=False), 2)
    with pytest.raises(lossdsl.LossError, match="NaN.*LightGBM would train on"):
        objective.gradients(y, np.zeros(len(y)))
    classes = ll.objective("sparse_cce_logits(y, z)")
    with pytest.raises(lossdsl.LossShapeError, match="LightGBM gave one score per row: train "
                                                     "with num_class=K"):
        lgb.train({**PARAMS, "objective": classes}, lgb.Dataset(X, data["classes"]), 2)


def test_malformed_evaluation_sets_say_what_evals_holds():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 2)), rng.normal(size=60)
    data = lgb.Dataset(X, y, free_raw_data=False)
    params = {"num_threads": 1, "verbose": -1}
    with pytest.raises(lossdsl.LossError, match="evals must hold"):
        ll.train(ll.objective("mse"), params, data, 2, evals=[data])
    with pytest.raises(lossdsl.LossError, match="its objective is None"):
        ll.train(ll.objective("mse"), params, data, 2, evals=[("valid", data, None)])


@pytest.mark.parametrize("layout", ["(n, K)", "class-major"])
def test_train_from_a_multiclass_init_score_is_lgb_train(layout):
    """A multiclass Dataset's init_score, (n, K) or flat class-major, is where train starts
    with init_score=False, as lgb.train (LightGBM 4 returns it as (n, K), which train read
    as class-major: scrambled start scores)."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(600, 4)), rng.integers(0, 3, 600).astype(float)
    start = rng.normal(size=(600, 3)) * 0.3
    given = start if layout == "(n, K)" else start.T.ravel()
    params = {"learning_rate": 0.3, "num_leaves": 8, "verbose": -1, "num_threads": 1,
              "deterministic": True, "num_class": 3}
    reference = lgb.train({**params, "objective": ll.objective("sparse_cce_logits(y, z)")},
                          lgb.Dataset(X, y, init_score=given), 3)
    ours = ll.train(ll.objective("sparse_cce_logits(y, z)"), params,
                    lgb.Dataset(X, y, init_score=given, free_raw_data=False), 3,
                    init_score=False)
    np.testing.assert_allclose(ours.predict(X, raw_score=True),
                               reference.predict(X, raw_score=True), atol=1e-9)


def test_dataset_parameters_in_params_reach_the_dataset_as_in_lgb_train():
    """max_bin, zero_as_missing and the like are read when the Dataset is constructed; the
    Booster built by train() took them from params and ignored them (13 thresholds on a
    feature with max_bin=3); linear_tree set on the Dataset escaped the refusal."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    X[::7, 1] = 0.0
    y = np.round(3 * X[:, 0] + rng.normal(size=500))
    params = {"num_leaves": 8, "verbose": -1, "max_bin": 3, "zero_as_missing": True}
    ours = ll.train("asymmetric_l1(y, p, 3, 1)", params, lgb.Dataset(X, y, free_raw_data=False),
                    5)
    theirs = lgb.train({**params, "objective": "quantile", "alpha": 0.75}, lgb.Dataset(X, y), 5)
    for model in (ours, theirs):
        trees = model.trees_to_dataframe()
        splits = trees[trees.split_feature.notna()]
        assert splits.query("split_feature == 'Column_0'").threshold.nunique() <= 2
        assert set(splits.missing_type) == {"Zero"}
    built = lgb.Dataset(X, y, free_raw_data=False).construct()
    with pytest.raises(lossdsl.LossError, match="already constructed"):
        ll.train("asymmetric_l1(y, p, 3, 1)", params, built, 2)
    with pytest.raises(lossdsl.LossError, match="linear_tree"):
        ll.train("asymmetric_l1(y, p, 3, 1)", {"verbose": -1},
                 lgb.Dataset(X, y, free_raw_data=False, params={"linear_tree": True}), 2)


def test_monotone_constraints_are_refused_with_leaf_refit():
    """A refitted leaf need not keep the order a monotone constraint imposed: the model fell
    by 1.35 as the constrained feature rose (LightGBM's quantile objective refuses them)."""
    xgb = pytest.importorskip("xgboost")
    import lossdsl.xgboost as lx

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = np.round(2 * X[:, 0] + rng.normal(size=300))
    text = "asymmetric_l1(y, p, 4, 1)"
    for name, value in (("monotone_constraints", [1, 0, 0]), ("mc", "1,0,0")):
        with pytest.raises(lossdsl.LossError, match="monotone"):
            ll.train(text, {"verbose": -1, name: value}, lgb.Dataset(X, y, free_raw_data=False),
                     3)
    ll.train(text, {"verbose": -1, "monotone_constraints": [1, 0, 0]},
             lgb.Dataset(X, y, free_raw_data=False), 3, refit=False)
    with pytest.raises(lossdsl.LossError, match="monotone"):
        lx.train(text, {"monotone_constraints": "(1,0,0)"}, xgb.DMatrix(X, y), 3)
    lx.train(text, {"monotone_constraints": "(0,0,0)"}, xgb.DMatrix(X, y), 3)
