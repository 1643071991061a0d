"""The estimators' own behaviour: the features beyond scikit-learn, bad input,
persistence, and life without scikit-learn."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
import zipfile

import numpy as np
import pytest

import fastmlp
from fastmlp import ConvergenceWarning, MLPClassifier, MLPRegressor


@pytest.fixture
def blobs(rng):
    centers = rng.standard_normal((3, 5)) * 3
    y = rng.integers(0, 3, 240)
    return centers[y] + rng.standard_normal((240, 5)), np.array(["a", "b", "c"])[y]


def _quiet_fit(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


# --- extras ------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["adamw", "rmsprop", "adagrad", "sgd", "adam"])
def test_every_solver_learns(solver, blobs):
    X, y = blobs
    lr = {"sgd": 0.05, "adagrad": 0.05}.get(solver, 0.01)
    est = _quiet_fit(MLPClassifier((16,), solver=solver, learning_rate_init=lr, max_iter=30, random_state=0), X, y)
    assert est.loss_curve_[-1] < 0.5 * est.loss_curve_[0]
    assert est.score(X, y) > 0.9


def test_leaky_relu_and_slope(blobs):
    X, y = blobs
    a = _quiet_fit(MLPClassifier((8,), activation="leaky_relu", max_iter=5, random_state=0), X, y)
    b = _quiet_fit(MLPClassifier((8,), activation="leaky_relu", leaky_relu_slope=0.3, max_iter=5, random_state=0), X, y)
    r = _quiet_fit(MLPClassifier((8,), activation="relu", max_iter=5, random_state=0), X, y)
    # Same initial weights; different slopes give different training.
    assert not np.allclose(a.coefs_[0], b.coefs_[0]) and not np.allclose(a.coefs_[0], r.coefs_[0])
    np.testing.assert_allclose(b.predict_proba(X).sum(axis=1), 1, rtol=1e-12)


def test_l1_shrinks_weights_and_clipping_bounds_the_first_step(blobs):
    X, y = blobs
    plain = _quiet_fit(MLPClassifier((8,), max_iter=20, random_state=0, learning_rate_init=0.02), X, y)
    l1 = _quiet_fit(MLPClassifier((8,), max_iter=20, random_state=0, learning_rate_init=0.02, l1=5.0), X, y)
    assert np.abs(l1.coefs_[0]).sum() < 0.8 * np.abs(plain.coefs_[0]).sum()
    assert l1.loss_curve_[0] > plain.loss_curve_[0]  # the L1 term is part of the reported loss
    sgd = dict(max_iter=1, random_state=0, solver="sgd", momentum=0.0, batch_size=240)
    first = _quiet_fit(MLPClassifier((8,), learning_rate_init=1e-300, **sgd), X, y)  # the initial weights
    first = [np.array(p) for p in first.coefs_ + first.intercepts_]
    free = _quiet_fit(MLPClassifier((8,), **sgd), X, y)
    clipped = _quiet_fit(MLPClassifier((8,), clip_norm=1e-3, **sgd), X, y)

    def moved(est):
        return np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(est.coefs_ + est.intercepts_, first)))

    assert moved(free) > 1e-5 and moved(clipped) == pytest.approx(1e-3 * 1e-3, rel=1e-9)  # lr × clipped norm


@pytest.mark.parametrize("schedule", ["step", "exponential", "cosine"])
def test_schedules_and_warmup_drive_the_learning_rate(schedule, blobs):
    X, y = blobs
    seen = []
    est = MLPClassifier(
        (8,),
        learning_rate=schedule,
        learning_rate_init=0.01,
        lr_gamma=0.5,
        lr_step_size=2,
        warmup_epochs=1,
        max_iter=6,
        random_state=0,
        batch_size=60,
        callbacks=[lambda m: seen.append(m["learning_rate"])],
    )
    _quiet_fit(est, X, y)
    s = fastmlp.Schedule(schedule, 0.01, gamma=0.5, step_size=2, total_epochs=6, warmup_epochs=1)
    # the rate of each epoch's last step (batch 3 of 4)
    np.testing.assert_allclose(seen, [s.at(e + 0.75, 0.25) for e in range(6)], rtol=1e-12)


def test_class_weight_equals_sample_weight(blobs):
    X, y = blobs
    cw = {"a": 3.0, "b": 0.5}
    a = _quiet_fit(MLPClassifier((6,), max_iter=5, random_state=0, class_weight=cw), X, y)
    w = np.select([y == "a", y == "b"], [3.0, 0.5], 1.0)
    b = _quiet_fit(MLPClassifier((6,), max_iter=5, random_state=0), X, y, sample_weight=w)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)
    bal = _quiet_fit(MLPClassifier((6,), max_iter=5, random_state=0, class_weight="balanced"), X[:100], y[:100])
    counts = {c: np.sum(y[:100] == c) for c in "abc"}
    wb = np.array([100 / (3 * counts[c]) for c in y[:100]])
    c = _quiet_fit(MLPClassifier((6,), max_iter=5, random_state=0), X[:100], y[:100], sample_weight=wb)
    np.testing.assert_allclose(bal.loss_curve_, c.loss_curve_, rtol=1e-12)
    with pytest.raises(ValueError, match="class_weight has labels"):
        MLPClassifier(class_weight={"z": 1.0}).fit(X, y)


def test_validation_data_and_callbacks(blobs, rng):
    X, y = blobs
    calls = []

    def stop_after_three(m):
        calls.append(m)
        return m["epoch"] < 3

    est = MLPClassifier((8,), max_iter=50, random_state=0, callbacks=[stop_after_three])
    est.fit(X[:200], y[:200], validation_data=(X[200:], y[200:]))
    assert est.n_iter_ == 3 and len(est.validation_loss_curve_) == 3 and len(calls) == 3
    assert {"epoch", "loss", "learning_rate", "seconds", "samples_per_second", "validation_loss"} <= set(calls[0])
    assert est.validation_loss_curve_[-1] < est.validation_loss_curve_[0]
    es = _quiet_fit(
        MLPClassifier((8,), max_iter=30, random_state=0, early_stopping=True),
        X[:200],
        y[:200],
        validation_data=(X[200:], y[200:]),
    )
    assert es.best_validation_score_ == max(es.validation_scores_)
    assert len(es.validation_scores_) == len(es.validation_loss_curve_) == es.n_iter_
    with pytest.raises(ValueError, match="classes not in"):
        est.fit(X, y, validation_data=(X[:3], np.array(["a", "b", "zz"])))
    with pytest.raises(TypeError, match="validation_data must be a tuple"):
        est.fit(X, y, validation_data=X)


def test_verbose_prints_scikit_learns_lines_and_a_progress_bar(blobs, capsys):
    X, y = blobs
    _quiet_fit(MLPClassifier((4,), max_iter=2, verbose=True, random_state=0), X, y)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iteration 1, loss = ") and len(out) == 2
    _quiet_fit(MLPClassifier((4,), max_iter=2, verbose=2, random_state=0), X, y)
    captured = capsys.readouterr()
    assert "samples/s" in captured.err and "Iteration" not in captured.out
    # stderr is not a terminal here: one plain line per epoch, no carriage returns, no tqdm bar.
    lines = captured.err.splitlines()
    assert "\r" not in captured.err and len(lines) == 2
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]


def test_tol_stopping_and_convergence_warning(blobs):
    X, y = blobs
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = MLPClassifier((4,), max_iter=500, tol=0.5, n_iter_no_change=2, random_state=0).fit(X, y)
    # epoch 1 improves on inf; epochs 2, 3, 4 do not improve by 0.5: the count exceeds 2 after epoch 4
    assert est.n_iter_ == 4


def test_dtype_and_n_threads(blobs):
    X, y = blobs
    est = _quiet_fit(MLPClassifier((4,), max_iter=2, dtype="float32", n_threads=1, random_state=0), X, y)
    assert est.coefs_[0].dtype == np.float32 and est.predict_proba(X).dtype == np.float32
    before = fastmlp.get_num_threads()
    _quiet_fit(MLPClassifier((4,), max_iter=2, n_threads=1, random_state=0), X, y)
    assert fastmlp.get_num_threads() == before


def test_warm_start_continues_from_user_set_coefs(blobs):
    X, y = blobs
    est = _quiet_fit(MLPClassifier((4,), max_iter=1, random_state=0), X, y)
    est.coefs_ = [np.zeros_like(c) for c in est.coefs_]
    est.intercepts_ = [np.zeros_like(b) for b in est.intercepts_]
    np.testing.assert_allclose(est.predict_proba(X), 1 / 3)  # predict sees the new arrays
    est.set_params(warm_start=True, max_iter=1, learning_rate_init=1e-9)
    _quiet_fit(est, X, y)
    assert est.loss_curve_[-1] == pytest.approx(np.log(3), rel=1e-6)
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X, np.where(y == "c", "d", y))


def test_partial_fit_needs_classes_and_is_absent_for_lbfgs(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, y)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")
    est = MLPClassifier((4,), random_state=0).partial_fit(X[:10], y[:10], classes=["a", "b", "c", "d"])
    assert list(est.classes_) == ["a", "b", "c", "d"] and est.n_iter_ == 1 and est.t_ == 10
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X[:2], ["a", "z"])


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,error,match",
    [
        (dict(hidden_layer_sizes=(4, 0)), ValueError, "hidden_layer_sizes must be > 0"),
        (dict(hidden_layer_sizes="4"), TypeError, "hidden_layer_sizes"),
        (dict(activation="hardswish"), ValueError, "'activation' parameter must be one of"),
        (dict(activation="swish"), ValueError, "'activation' parameter must be one of"),  # aliases: Network only
        (dict(solver="newton"), ValueError, "'solver' parameter"),
        (dict(alpha=-1.0), ValueError, "'alpha' parameter must be a real number in"),
        (dict(batch_size=0), ValueError, "'batch_size' parameter"),
        (dict(batch_size="big"), ValueError, "'batch_size' parameter"),
        (dict(learning_rate="linear"), ValueError, "'learning_rate' parameter"),
        (dict(learning_rate_init=0.0), ValueError, "'learning_rate_init'"),
        (dict(max_iter=1.5), TypeError, "'max_iter' parameter must be an int"),
        (dict(momentum=1.5), ValueError, "'momentum'"),
        (dict(shuffle="yes"), TypeError, "'shuffle' parameter must be a bool"),
        (dict(validation_fraction=1.0), ValueError, "'validation_fraction'"),
        (dict(dtype="float16"), ValueError, "'dtype' parameter"),
        (dict(n_threads=0), ValueError, "'n_threads'"),
        (dict(clip_norm=0.0), ValueError, "'clip_norm'"),
        (dict(l1=float("nan")), ValueError, "'l1'"),
        (dict(callbacks=[1]), TypeError, "'callbacks'"),
        (dict(random_state="seed"), ValueError, "random_state"),
    ],
)
def test_bad_parameters_name_themselves_and_change_nothing(params, error, match, blobs):
    X, y = blobs
    est = _quiet_fit(MLPClassifier((4,), max_iter=2, random_state=0), X, y)
    before = [np.array(c) for c in est.coefs_]
    curve = list(est.loss_curve_)
    est.set_params(**params)
    with pytest.raises(error, match=match):
        est.fit(X, y)
    for a, b in zip(est.coefs_, before):
        np.testing.assert_array_equal(a, b)
    assert est.loss_curve_ == curve


def test_bad_data(blobs):
    X, _ = blobs
    est = _quiet_fit(MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0), X, X[:, 0])
    with pytest.raises(ValueError, match="X has 4 features, but MLPRegressor is expecting 5"):
        est.predict(X[:, :4])
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        est.fit(X, X[:, 0], sample_weight=-np.ones(len(X)))
    with pytest.raises(ValueError, match="poisson"):
        MLPRegressor(loss="poisson").fit(X, X[:, 0] - 100)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        MLPClassifier().fit(X, X[:, 0])
    with pytest.raises(ValueError, match="requires y"):
        MLPClassifier().fit(X, None)


# --- persistence --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "regression"])
def test_save_load_round_trip(kind, blobs, tmp_path, rng):
    X, y = blobs
    if kind == "multilabel":
        y = (rng.random((len(X), 3)) < 0.5).astype(int)
    est = (
        MLPRegressor(hidden_layer_sizes=(6,), max_iter=3)
        if kind == "regression"
        else MLPClassifier((6,), max_iter=3, early_stopping=True)
    )
    target = X[:, 0] if kind == "regression" else y
    _quiet_fit(est.set_params(random_state=0, l1=0.01, callbacks=[print]), X, target)
    path = tmp_path / "model.npz"
    est.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind
    back = fastmlp.load(path)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert back.get_params()["callbacks"] is None and back.l1 == 0.01
    for name in (
        "n_iter_",
        "t_",
        "loss_",
        "loss_curve_",
        "n_outputs_",
        "out_activation_",
        "best_loss_",
        "validation_scores_",
        "best_validation_score_",
    ):
        assert getattr(back, name) == getattr(est, name), name
    # NumPy alone reads it, without pickle.
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__fastmlp__"]))
        assert (
            meta["format"] == "fastmlp.estimator" and meta["version"] == 2
        )  # plain networks: what older fastmlp reads
        np.testing.assert_array_equal(z["coefs_0"], est.coefs_[0])
    # It trains on.
    if kind != "regression":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            back.set_params(warm_start=True, early_stopping=False).fit(X, y)


def test_load_rejects_foreign_and_damaged_files(tmp_path, blobs):
    X, y = blobs
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match="not a fastmlp model file"):
        fastmlp.load(foreign)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable fastmlp model file"):
        fastmlp.load(text)
    est = _quiet_fit(MLPClassifier((4,), max_iter=1, random_state=0), X, y)
    good = tmp_path / "good.npz"
    est.save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="fastmlp model file"):
        fastmlp.load(truncated)
    newer = tmp_path / "newer.npz"
    with zipfile.ZipFile(good) as z:
        arrays = {n[:-4]: np.load(io.BytesIO(z.read(n))) for n in z.namelist()}
    meta = json.loads(str(arrays["__fastmlp__"]))
    meta["version"] = 99
    arrays["__fastmlp__"] = np.array(json.dumps(meta))
    np.savez(newer, **arrays)
    with pytest.raises(ValueError, match="format version 99"):
        fastmlp.load(newer)
    arrays["__fastmlp__"] = np.array(json.dumps(dict(meta, version=1)))
    del arrays["intercepts_1"]
    np.savez(newer, **arrays)
    with pytest.raises(ValueError, match="damaged"):
        fastmlp.load(newer)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __fastmlp__=np.array([{"format": "x"}], dtype=object))
    with pytest.raises(ValueError):
        fastmlp.load(pickled)


def test_pickle_clone_pipeline_grid_search(blobs):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = blobs
    est = _quiet_fit(MLPClassifier((6,), max_iter=5, random_state=0), X, y)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    back.partial_fit(X, y)  # a fresh optimizer after unpickling
    assert clone(est).get_params() == est.get_params() and not hasattr(clone(est), "coefs_")
    pipe = make_pipeline(StandardScaler(), MLPClassifier((6,), max_iter=30, random_state=0, learning_rate_init=0.01))
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_score_ > 0.9


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "poisson"])
def test_to_sklearn_gives_the_same_predictions(kind, blobs, rng):
    X, y = blobs
    if kind == "multilabel":
        y = (rng.random((len(X), 3)) < 0.5).astype(int)
    est = (
        MLPRegressor(hidden_layer_sizes=(5,), loss="poisson", max_iter=3)
        if kind == "poisson"
        else MLPClassifier((5,), max_iter=3)
    )
    _quiet_fit(est.set_params(random_state=0, solver="adamw"), X, np.abs(X[:, 0]) if kind == "poisson" else y)
    with pytest.warns(UserWarning, match="solver='adamw'"):  # dropped: scikit-learn has no adamw
        sk = est.to_sklearn()
    assert type(sk).__module__.startswith("sklearn.")
    if kind == "poisson":
        np.testing.assert_allclose(sk.predict(X), est.predict(X), rtol=1e-12)
    else:
        np.testing.assert_array_equal(sk.predict(X), est.predict(X))
        np.testing.assert_allclose(sk.predict_proba(X), est.predict_proba(X), rtol=1e-12)
    with pytest.raises(ValueError, match="leaky_relu"):
        _quiet_fit(MLPClassifier((3,), activation="leaky_relu", max_iter=1), X, y).to_sklearn()


# --- without scikit-learn -------------------------------------------------------------

NO_SKLEARN = textwrap.dedent("""
    import sys, warnings
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "sklearn" or name.startswith("sklearn."):
                raise ImportError("scikit-learn is blocked for this test")
    sys.meta_path.insert(0, Block())
    import numpy as np
    import fastmlp
    from fastmlp import MLPClassifier, MLPRegressor, ConvergenceWarning
    assert "sklearn" not in sys.modules
    assert issubclass(ConvergenceWarning, UserWarning)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4)); y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    warnings.simplefilter("ignore", ConvergenceWarning)
    for solver in ("adam", "sgd", "lbfgs"):
        clf = MLPClassifier((8,), solver=solver, max_iter=200, random_state=0, early_stopping=solver == "adam",
                            learning_rate_init=0.05, n_iter_no_change=30)
        clf.fit(X, y)
        assert clf.score(X, y) > 0.85, (solver, clf.score(X, y))
        assert set(clf.predict(X)) <= {"yes", "no"} and clf.predict_proba(X).shape == (150, 2)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=100, learning_rate_init=0.02, random_state=0)
    reg.fit(X, X @ np.ones(4))
    assert reg.score(X, X @ np.ones(4)) > 0.9
    reg.partial_fit(X, X @ np.ones(4))
    assert reg.get_params()["hidden_layer_sizes"] == (8,)
    reg.set_params(alpha=0.5); assert reg.alpha == 0.5
    try:
        reg.set_params(nonsense=1)
    except ValueError as e:
        assert "nonsense" in str(e)
    else:
        raise AssertionError("set_params accepted an unknown name")
    assert repr(MLPClassifier(alpha=0.5)) == "MLPClassifier(alpha=0.5)"
    try:
        reg.predict(X[:, :3])
    except ValueError as e:
        assert "expecting 4 features" in str(e)
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        clf.save(os.path.join(d, "m.npz"))
        back = fastmlp.load(os.path.join(d, "m.npz"))
        assert (back.predict(X) == clf.predict(X)).all()
    try:
        clf.to_sklearn()
    except ImportError as e:
        assert "scikit-learn" in str(e)
    assert "sklearn" not in sys.modules
    print("OK without scikit-learn")
""")


def test_works_without_scikit_learn():
    result = subprocess.run(
        [sys.executable, "-c", NO_SKLEARN],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="error::DeprecationWarning"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK without scikit-learn")
