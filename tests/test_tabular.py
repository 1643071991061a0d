"""fastmlp.tabular: the preprocessing against a plain NumPy computation, unseen and missing values at predict time,
DataFrame vs array input, reproducibility, scikit-learn's checks, pickling, bad input."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

import fastmlp
from fastmlp.tabular import TabularPreprocessor, smooth_clip

pd = pytest.importorskip("pandas")

SMALL = {"hidden_layer_sizes": (16,), "max_iter": 5, "n_threads": 1}  # fast fits for behaviour tests


def plain_robust(x_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The documented formula, written out: (x − median)/IQR, then z/sqrt(1 + (z/3)²); missing → 0."""
    present = x_train[~np.isnan(x_train)]
    med = np.median(present)
    iqr = np.percentile(present, 75) - np.percentile(present, 25)
    z = (x - med) / iqr
    z = z / np.sqrt(1 + (z / 3) ** 2)
    return np.where(np.isnan(x), 0.0, z)


def table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    num = rng.standard_t(2, size=n) * 5 + 3  # heavy tails: the clip matters
    gappy = np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))
    return pd.DataFrame(
        {
            "num": num,
            "gappy": gappy,
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])),
            "text": rng.choice(["a", "b", None], n, p=[0.6, 0.3, 0.1]).astype(object),
            "flag": rng.random(n) < 0.3,
            "count": rng.integers(0, 5, n),
        }
    )


def test_numeric_columns_match_the_plain_formula():
    df = table()
    pre = TabularPreprocessor().fit(df)
    out = pre.transform(df)
    names = list(pre.feature_names_out_)
    assert np.allclose(out[:, names.index("num")], plain_robust(df["num"].to_numpy(), df["num"].to_numpy()))
    gappy = df["gappy"].to_numpy()
    assert np.allclose(out[:, names.index("gappy")], plain_robust(gappy, gappy))
    assert np.array_equal(out[:, names.index("gappy_missing")], np.isnan(gappy).astype(float))
    count = df["count"].to_numpy(dtype=float)  # integers are numbers
    assert np.allclose(out[:, names.index("count")], plain_robust(count, count))
    assert "num_missing" not in names  # no missing in training: no indicator
    assert np.abs(out[:, names.index("num")]).max() < 3.0  # the smooth clip's range


def test_scale_falls_back_to_the_half_range_then_to_one():
    x = np.array([[0.0], [0.0], [0.0], [0.0], [0.0], [4.0], [-2.0]])  # IQR 0, range 6
    out = TabularPreprocessor().fit_transform(x)
    assert np.allclose(out[:, 0], smooth_clip(x[:, 0] / 3.0))
    const = TabularPreprocessor().fit_transform(np.full((5, 1), 7.0))
    assert np.array_equal(const, np.zeros((5, 1)))


def test_categorical_columns_are_one_hot_most_frequent_first_with_codes():
    df = table()
    pre = TabularPreprocessor().fit(df)
    enc = pre.encode(df)
    names = list(pre.feature_names_out_)
    counts = df["colour"].value_counts()
    order = list(counts.index)  # most frequent first (no ties here)
    assert [n for n in names if n.startswith("colour=")] == [f"colour={v}" for v in order]
    for v in order:
        assert np.array_equal(enc.X[:, names.index(f"colour={v}")], (df["colour"] == v).to_numpy(dtype=float))
    # object column with None: a missing column, rows of None hot there and nowhere else
    text = df["text"].to_numpy()
    miss = df["text"].isna().to_numpy()  # None, or NaN where pandas made the column a string dtype
    assert np.array_equal(enc.X[:, names.index("text=<missing>")], miss.astype(float))
    assert np.array_equal(enc.X[:, names.index("text=a")], (text == "a").astype(float))
    # bool columns are categorical
    assert {"flag=False", "flag=True"} <= set(names)
    # codes: 1.. in the order of the levels, 0 for missing; cardinality = levels + 1
    j = enc.categorical_columns.index(list(df.columns).index("colour"))
    assert enc.cardinalities[j] == 4
    assert np.array_equal(enc.codes[:, j], np.array([order.index(v) + 1 for v in df["colour"]]))
    k = enc.categorical_columns.index(list(df.columns).index("text"))
    assert np.array_equal(enc.codes[:, k] == 0, miss)


def test_a_large_column_keeps_its_most_frequent_levels_and_an_other_bucket():
    rng = np.random.default_rng(0)
    levels = np.array([f"L{i:02d}" for i in range(12)])
    p = np.arange(12, 0, -1) / np.arange(12, 0, -1).sum()
    x = rng.choice(levels, size=(3000, 1), p=p).astype(object)
    pre = TabularPreprocessor(max_onehot_levels=5).fit(x)
    plan = pre.plans_[0]
    top = list(pd.Series(x[:, 0]).value_counts().index)
    assert plan.levels == top and plan.onehot == 4 and plan.other
    out = pre.transform(x)
    assert out.shape == (3000, 5)
    assert np.array_equal(out[:, 4], (~np.isin(x[:, 0], top[:4])).astype(float))  # the rest in "other"
    assert np.array_equal(out.sum(axis=1), np.ones(3000))
    enc = pre.encode(x)
    assert enc.cardinalities == (13,)  # every level keeps its code for an embedding
    assert np.array_equal(enc.codes[:, 0], np.array([top.index(v) + 1 for v in x[:, 0]]))


def test_unseen_categories_and_missing_values_at_predict_time_are_handled():
    df = table()
    pre = TabularPreprocessor(max_onehot_levels=32).fit(df)
    names = list(pre.feature_names_out_)
    new = df.head(4).copy()
    new["colour"] = pd.Categorical(["purple", None, "red", "blue"])  # unseen, missing (none in training)
    new["text"] = np.array(["zzz", None, "a", 17], dtype=object)  # unseen, missing (seen), known, odd type
    new["num"] = [np.nan, np.inf, -np.inf, 1.0]  # missing where training had none; infinities: the clip's limits
    enc = pre.encode(new)
    colour = enc.X[:, [i for i, n in enumerate(names) if n.startswith("colour=")]]
    assert np.array_equal(colour[:2], np.zeros((2, 3)))  # unseen and missing: no level is hot
    assert colour[2, names.index("colour=red") - names.index("colour=red")] in (0.0, 1.0)
    assert colour[2].sum() == 1 and colour[3].sum() == 1
    text = enc.X[:, [i for i, n in enumerate(names) if n.startswith("text=")]]
    assert np.array_equal(text[[0, 3]].sum(axis=1), [0, 0])  # unseen: nothing hot
    assert text[1, [n for n in names if n.startswith("text=")].index("text=<missing>")] == 1.0
    num = enc.X[:, names.index("num")]
    assert num[0] == 0.0 and num[1] == 3.0 and num[2] == -3.0
    assert enc.codes[0].tolist()[:2] == [0, 0]  # colour, text: unseen → code 0
    # a column that was categorical in training comes as numbers: unseen levels, and NaN is missing
    floats = new.assign(text=[1.5, np.nan, 2.5, 3.5])
    text_f = pre.encode(floats).X[:, [i for i, n in enumerate(names) if n.startswith("text=")]]
    assert np.array_equal(text_f[:, -1], [0.0, 1.0, 0.0, 0.0]) and text_f[:, :-1].sum() == 0
    # the estimator too: a category seen only at predict time is no error
    y = (df["num"] > 3).to_numpy()
    clf = fastmlp.TabularClassifier(**SMALL, random_state=0).fit(df, y)
    assert clf.predict(new).shape == (4,)
    assert np.isfinite(clf.predict_proba(new)).all()


def test_a_numeric_column_that_gets_text_at_predict_time_reads_it_as_missing():
    x = np.arange(20, dtype=float).reshape(10, 2)
    pre = TabularPreprocessor().fit(x)
    odd = np.array([["oops", 3.0], [1.0, None]], dtype=object)
    out = pre.transform(odd)
    assert out[0, 0] == 0.0 and out[1, 1] == 0.0  # the medians
    assert out[0, 1] == pytest.approx(pre.transform(np.array([[0.0, 3.0]]))[0, 1])


def test_dataframe_and_array_inputs_give_the_same_model():
    df = table().drop(columns=["colour", "flag"])  # object and numeric columns: expressible as one object array
    y = (df["num"] + (df["text"] == "a") > 3).to_numpy()
    arr = df.to_numpy(dtype=object)
    a = fastmlp.TabularClassifier(**SMALL, random_state=3).fit(df, y)
    b = fastmlp.TabularClassifier(**SMALL, random_state=3).fit(arr, y)
    assert np.array_equal(a.predict_proba(df), b.predict_proba(arr))
    assert list(a.feature_names_in_) == list(df.columns) and not hasattr(b, "feature_names_in_")
    assert a.n_features_in_ == b.n_features_in_ == 4


def test_categorical_features_marks_integer_codes():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=100), rng.integers(0, 3, 100)])
    pre = TabularPreprocessor(categorical_features=[1]).fit(x)
    assert pre.transform(x).shape == (100, 4)  # one numeric + three levels
    assert TabularPreprocessor(categorical_features=[False, True]).fit(x).transform(x).shape == (100, 4)
    df = pd.DataFrame(x, columns=["a", "b"])
    assert TabularPreprocessor(categorical_features=["b"]).fit(df).transform(df).shape == (100, 4)


def test_numpy_input_works_without_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails
    x = np.array([[1.0, "a"], [2.0, "b"], [np.nan, "a"], [4.0, None]] * 10, dtype=object)
    y = np.array([0, 1, 0, 1] * 10)
    clf = fastmlp.TabularClassifier(**SMALL, random_state=0).fit(x, y)
    assert clf.predict(x).shape == (40,)
    reg = fastmlp.TabularRegressor(**SMALL, random_state=0).fit(x[:, :1].astype(float), y * 2.0 + 1)
    assert np.isfinite(reg.predict(x[:, :1].astype(float))).all()


def test_random_state_makes_fits_reproducible():
    df = table()
    y = df["num"].to_numpy() + df["gappy"].fillna(0).to_numpy()
    a = fastmlp.TabularRegressor(**SMALL, random_state=7).fit(df, y).predict(df)
    b = fastmlp.TabularRegressor(**SMALL, random_state=7).fit(df, y).predict(df)
    c = fastmlp.TabularRegressor(**SMALL, random_state=8).fit(df, y).predict(df)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_recipe_learns_and_restores_the_best_epoch():
    df = table(400)
    y = ((df["colour"] == "red") | (df["num"] > 3)).to_numpy()
    params = {"hidden_layer_sizes": (32,), "batch_size": 32, "max_iter": 60, "random_state": 0}
    clf = fastmlp.TabularClassifier(**params, n_iter_no_change=60).fit(df, y)
    inner = clf.model_
    assert inner.label_smoothing == 0.1 and inner.beta_2 == 0.95 and inner.learning_rate == "cosine"
    assert inner.activation == "gelu" and inner.early_stopping
    assert clf.n_iter_ == 60 and clf.best_validation_score_ == max(inner.validation_scores_)
    assert clf.score(df, y) > 0.9
    reg = fastmlp.TabularRegressor(**params)
    yr = 1000.0 + 50.0 * df["num"].clip(-10, 10).to_numpy()  # far from standardized: the target is scaled inside
    reg.fit(df, yr)
    assert reg.y_mean_ == pytest.approx(yr.mean()) and reg.score(df, yr) > 0.9


def test_few_rows_train_without_a_validation_split():
    x = np.arange(20, dtype=float).reshape(10, 2)
    clf = fastmlp.TabularClassifier(**SMALL, random_state=0).fit(x, [0, 1] * 5)
    assert clf.best_validation_score_ is None and clf.n_iter_ == 5


def test_string_labels_and_predict_proba():
    df = table()
    y = np.where(df["num"] > 3, "high", "low").astype(object)
    y[:30] = "mid"
    clf = fastmlp.TabularClassifier(**SMALL, random_state=0).fit(df, y)
    assert list(clf.classes_) == ["high", "low", "mid"]
    proba = clf.predict_proba(df)
    assert proba.shape == (200, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert set(clf.predict(df)) <= {"high", "low", "mid"}


def test_pickle_and_clone():
    from sklearn.base import clone

    df = table()
    y = (df["num"] > 3).to_numpy()
    clf = fastmlp.TabularClassifier(**SMALL, random_state=0).fit(df, y)
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict_proba(df), clf.predict_proba(df))
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params() and not hasattr(fresh, "model_")
    fresh.set_params(max_iter=3)
    assert fresh.max_iter == 3


def test_feature_names_are_checked_at_predict_time():
    df = table()
    y = (df["num"] > 3).to_numpy()
    clf = fastmlp.TabularClassifier(**SMALL, random_state=0).fit(df, y)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(df.rename(columns={"num": "other"}))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        with pytest.raises(ValueError, match="X has 5 features, but TabularClassifier is expecting 6"):
            clf.predict(df.drop(columns=["num"]).to_numpy())


def bad_fit(est, X, y, err, match):
    with pytest.raises(err, match=match):
        est.fit(X, y)


def test_bad_input_is_a_clear_error():
    x = np.random.default_rng(0).normal(size=(60, 3))
    y = np.arange(60) % 2
    C, R = fastmlp.TabularClassifier, fastmlp.TabularRegressor
    bad_fit(C(), x[:, 0], y, ValueError, "Expected 2D array")
    bad_fit(C(), x[:0], y[:0], ValueError, "0 sample")
    bad_fit(C(), x[:, :0], y, ValueError, "0 feature")
    bad_fit(C(), x, y[:10], ValueError, "same number of samples, got 60 and 10")
    bad_fit(C(), x, None, ValueError, "requires y to be passed")
    bad_fit(C(), x, x[:, 0], ValueError, "Unknown label type: continuous")
    bad_fit(C(), x, np.zeros(60), ValueError, "single class")
    bad_fit(R(), x, np.ones(60), ValueError, "y is constant")
    bad_fit(R(), x, np.where(y, np.nan, 1.0), ValueError, "finite")
    bad_fit(R(), x, np.array(["a"] * 60), ValueError, "numbers for a regressor")
    bad_fit(C(), x + 1j, y, ValueError, "Complex data not supported")
    bad_fit(R(), x, x[:, 0] + 1j, ValueError, "Complex data not supported")
    empty = x.astype(object)
    empty[:, 1] = None
    bad_fit(C(), empty, y, ValueError, "X column 1 is empty")
    bad_fit(C(), pd.DataFrame({"a": [np.nan] * 60, "b": x[:, 0]}), y, ValueError, "column 'a' is empty")
    inf = x.copy()
    inf[3, 2] = np.inf
    bad_fit(C(), inf, y, ValueError, "X column 2 has infinite values")
    odd = x.astype(object)
    odd[0, 0] = {"a": 1}
    bad_fit(C(), odd, y, TypeError, "column 0: values must be numbers, strings")
    bad_fit(C(), pd.DataFrame({"t": pd.date_range("2020", periods=60)}), y, TypeError, "dates")
    bad_fit(C(hidden_layer_sizes="big"), x, y, TypeError, "hidden_layer_sizes")
    bad_fit(C(hidden_layer_sizes=(0,)), x, y, ValueError, "hidden_layer_sizes")
    bad_fit(C(validation_fraction=1.0), x, y, ValueError, "validation_fraction")
    bad_fit(C(max_iter=0), x, y, ValueError, "max_iter")
    bad_fit(C(max_iter=2.5), x, y, TypeError, "max_iter")
    bad_fit(C(label_smoothing=1.0), x, y, ValueError, "label_smoothing")
    bad_fit(C(dropout=-0.1), x, y, ValueError, "dropout")
    bad_fit(C(max_onehot_levels=1), x, y, ValueError, "max_onehot_levels")
    bad_fit(C(categorical_features=[5]), x, y, ValueError, "categorical_features")
    bad_fit(C(categorical_features=["a"]), x, y, ValueError, "column names need X to be a DataFrame")
    bad_fit(C(activation="nope"), x, y, ValueError, "activation")
    with pytest.raises(TypeError, match="sparse"):
        import scipy.sparse

        C().fit(scipy.sparse.csr_matrix(x), y)
    with pytest.raises(fastmlp.tabular.NotFittedError):
        C().predict(x)


def test_a_failed_fit_changes_nothing():
    x = np.random.default_rng(0).normal(size=(60, 3))
    y = np.arange(60) % 2
    clf = fastmlp.TabularClassifier(**SMALL, random_state=0).fit(x, y)
    before = clf.predict_proba(x)
    state = dict(clf.__dict__)
    with pytest.raises(ValueError):
        clf.fit(x[:, :2], np.zeros(60))  # one class: refused after the columns were read
    with pytest.raises(ValueError):
        clf.set_params(activation="nope").fit(x[:, :2], y)  # refused by the inner network, after preprocessing
    clf.set_params(activation=state["activation"])
    assert clf.__dict__.keys() == state.keys() and clf.n_features_in_ == 3
    assert all(clf.__dict__[k] is state[k] for k in state if k != "activation")
    assert np.array_equal(clf.predict_proba(x), before)


def _sk_cases():
    """scikit-learn's estimator checks (the array interface) for both estimators in float64, every one but
    check_array_api_input (no Array API support, as scikit-learn's MLP: it would only report "skipped"); in float32
    the same but check_methods_subset_invariance: a float32 product's last bits depend on how many rows are
    multiplied together (the GEMM's blocking), so a row predicted alone differs from the same row in a batch by about
    1e-7, scikit-learn's tolerance."""
    try:
        from sklearn.utils.estimator_checks import estimator_checks_generator
    except ImportError:  # scikit-learn is in the test extra; without it the module's other tests still run
        return []
    skip = {
        "float64": {"check_array_api_input"},
        "float32": {"check_array_api_input", "check_methods_subset_invariance"},
    }
    cases = []
    for cls in (fastmlp.TabularClassifier, fastmlp.TabularRegressor):
        for dtype in ("float64", "float32"):
            est = cls(max_iter=30, n_threads=1, dtype=dtype)
            for e, check in estimator_checks_generator(est):
                name = getattr(check, "func", check).__name__
                if name not in skip[dtype]:
                    cases.append(pytest.param(e, check, id=f"{cls.__name__}-{dtype}-{name}"))
    return cases


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("estimator,check", _sk_cases())
def test_scikit_learn_check_estimator(estimator, check):
    check(estimator)
