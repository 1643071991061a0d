"""Dropout, input noise, max-norm and per-layer activations (issue 14).

The C++ draws are exposed by ``Network.draws(rows, step)``; ``fastmlp.reference`` takes them as
arguments, so every gradient and every training step is compared against the reference with the
very masks the engine used. The generator itself is tested statistically.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import reference as ref
from helpers import HIDDEN, LOSS_OUTPUT, TOL, copy_params, make_data

SIZES = [6, 9, 7, 4]


def net_with(hidden, output, dtype, *, dropout=(0.2, 0.5, 0.3), input_noise=0.0, max_norm=None, seed=11, sizes=SIZES):
    return fastmlp.Network(
        sizes,
        activation=hidden,
        output_activation=output,
        dtype=dtype,
        seed=seed,
        dropout=list(dropout),
        input_noise=input_noise,
        max_norm=max_norm,
    )


# --- the generator ---------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_keep_rate_is_one_minus_p(p):
    net = fastmlp.Network([300, 200, 2], dropout=[p, p], seed=5)
    _, masks = net.draws(500, 7)
    for m in masks:
        n = m.size
        kept = float(m.sum())
        sd = np.sqrt(n * p * (1 - p))
        assert abs(kept - n * (1 - p)) < 5 * sd, (kept, n * (1 - p), sd)
        assert set(np.unique(m)) <= {0.0, 1.0}


def test_masks_are_independent_across_rows_units_steps_and_layers():
    net = fastmlp.Network([256, 256, 2], dropout=[0.5, 0.5], seed=1)
    _, (m0, m1) = net.draws(256, 0)
    _, (n0, _) = net.draws(256, 1)
    # Correlations between neighbouring rows, neighbouring units, two steps and two layers: all ~0.
    for a, b in [(m0[:-1], m0[1:]), (m0[:, :-1], m0[:, 1:]), (m0, n0), (m0, m1)]:
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) < 5 / np.sqrt(a.size), r
    assert not np.array_equal(m0, n0)


def test_draws_are_a_function_of_seed_step_and_row_only():
    a = fastmlp.Network([20, 30, 3], dropout=[0.2, 0.5], input_noise=0.3, seed=42)
    b = fastmlp.Network([20, 30, 3], dropout=[0.2, 0.5], input_noise=0.3, seed=42, dtype="float64")
    c = fastmlp.Network([20, 30, 3], dropout=[0.2, 0.5], input_noise=0.3, seed=43)
    na, ma = a.draws(50, 3)
    nb, mb = b.draws(50, 3)
    _, mc = c.draws(50, 3)
    for x, y in zip(ma, mb):
        np.testing.assert_array_equal(x, y)  # same draws in either dtype
    np.testing.assert_allclose(na, nb, rtol=1e-6)
    assert not np.array_equal(ma[1], mc[1])
    # Row r of a batch does not depend on the batch's size.
    _, small = a.draws(10, 3)
    np.testing.assert_array_equal(small[1], ma[1][:10])


def test_input_noise_is_standard_normal_times_sigma():
    sigma = 0.7
    net = fastmlp.Network([400, 2, 2], input_noise=sigma, dtype="float64", seed=3)
    noise, masks = net.draws(500, 0)
    assert masks == [None, None]
    e = noise.ravel() / sigma
    n = e.size
    assert abs(e.mean()) < 5 / np.sqrt(n)
    assert abs(e.std() - 1) < 0.01
    assert abs(np.mean(np.abs(e) < 1) - 0.682689) < 0.005
    assert abs(np.mean(e**4) - 3) < 0.05


# --- gradients against the reference with the engine's masks --------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("loss,output", LOSS_OUTPUT)
def test_training_gradient_equals_reference_with_the_same_masks(hidden, loss, output, dtype, rng):
    net = net_with(hidden, output, dtype, input_noise=0.25)
    X, Y = make_data(rng, 33, SIZES[0], SIZES[-1], loss, dtype)
    step = 5
    value = net.loss_and_grad(X, Y, loss, training_step=step)
    noise, masks = net.draws(len(X), step)
    W, b = copy_params(net)
    v_ref, gW, gb = ref.loss_and_grad(
        W, b, X, Y, loss, hidden, output, 0.01, dropout=net.dropout, masks=masks, noise=noise
    )
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(value, v_ref, **tol)
    for got, want in zip(net.weight_grads + net.bias_grads, gW + gb):
        np.testing.assert_allclose(got, want, **tol)
    # Evaluation (no training_step) is the plain network: no dropout, no noise.
    plain = net.loss_and_grad(X, Y, loss)
    v_plain, _, _ = ref.loss_and_grad(W, b, X, Y, loss, hidden, output, 0.01)
    np.testing.assert_allclose(plain, v_plain, **tol)
    assert abs(plain - value) > 1e-6


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_per_layer_activations_equal_reference(dtype, rng):
    acts = ["tanh", "leaky_relu", "logistic"]
    net = fastmlp.Network(
        [5, 8, 7, 6, 3], activation=acts, output_activation="softmax", dtype=dtype, seed=2, dropout=[0.1, 0.4, 0.0, 0.2]
    )
    assert net.activations == tuple(acts) and net.activation == acts
    X, Y = make_data(rng, 40, 5, 3, "log_loss", dtype)
    W, b = copy_params(net)
    tol = TOL[dtype] if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(net.forward(X), ref.predict(W, b, X, acts, "softmax"), **tol)
    value = net.loss_and_grad(X, Y, "log_loss", training_step=0)
    noise, masks = net.draws(40, 0)
    assert noise is None and masks[2] is None
    v_ref, gW, gb = ref.loss_and_grad(W, b, X, Y, "log_loss", acts, "softmax", dropout=net.dropout, masks=masks)
    np.testing.assert_allclose(value, v_ref, **tol)
    for got, want in zip(net.weight_grads + net.bias_grads, gW + gb):
        np.testing.assert_allclose(got, want, **tol)


def test_per_layer_glorot_bounds_follow_each_layer():
    sizes = [50, 40, 30, 20]
    net = fastmlp.Network(sizes, activation=["logistic", "relu"], seed=0, dtype="float64")
    bounds = [ref.glorot_bound(a, b, f) for (a, b), f in zip(zip(sizes[:-1], sizes[1:]), ["logistic", "relu", "relu"])]
    for W, bound in zip(net.weights, bounds):
        assert np.abs(W).max() <= bound
        assert np.abs(W).max() > 0.9 * bound


def test_training_gradient_matches_finite_differences_with_fixed_masks(rng):
    net = net_with(["tanh", "logistic"], "softmax", "float64", input_noise=0.1)
    X, Y = make_data(rng, 12, SIZES[0], SIZES[-1], "log_loss", "float64")
    step = 9
    net.loss_and_grad(X, Y, "log_loss", training_step=step)
    grads = np.array(net.grads)
    params = net.params
    eps = 1e-6
    for i in rng.choice(net.n_params, 25, replace=False):
        keep = params[i]
        params[i] = keep + eps
        up = net.loss_and_grad(X, Y, "log_loss", training_step=step)
        params[i] = keep - eps
        down = net.loss_and_grad(X, Y, "log_loss", training_step=step)
        params[i] = keep
        assert abs((up - down) / (2 * eps) - grads[i]) < 1e-7 * max(1.0, abs(grads[i])), i


# --- training --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_train_epoch_equals_reference_with_the_same_draws(opt, dtype, rng):
    net = net_with("relu", "softmax", dtype, input_noise=0.2, max_norm=0.8)
    X, Y = make_data(rng, 70, SIZES[0], SIZES[-1], "log_loss", dtype)
    order = rng.permutation(70)
    W, b = copy_params(net)
    if opt == "sgd":
        o, o_ref = fastmlp.SGD(lr=0.1, momentum=0.9), ref.SGD(lr=0.1, momentum=0.9)
    else:
        o, o_ref = fastmlp.Adam(lr=0.01), ref.Adam(lr=0.01)
    start = net.training_steps
    draws = {}
    for k in range(2):  # two epochs: the step count carries over
        first = net.training_steps
        for s in range(4):
            draws[(k, s)] = net.draws(min(20, 70 - 20 * s), first + s)
        loss = net.train_epoch(X, Y, "log_loss", o, batch_size=20, order=order, l2=1e-3)
        loss_ref = ref.train_epoch(
            W,
            b,
            X,
            Y,
            "log_loss",
            o_ref,
            20,
            order,
            "relu",
            "softmax",
            l2=1e-3,
            dropout=net.dropout,
            draws=lambda bi, rows, k=k: draws[(k, bi)],
            max_norm_limit=0.8,
        )
        tol = dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(loss, loss_ref, **tol)
        for got, want in zip(net.weights + net.biases, W + b):
            np.testing.assert_allclose(got, want, **tol)
    assert net.training_steps == start + 8
    for W_l in net.weights[:-1]:
        assert np.linalg.norm(W_l.astype(np.float64), axis=0).max() <= 0.8 * (1 + 1e-5)


def test_max_norm_leaves_the_output_layer_and_small_units_alone(rng):
    net = fastmlp.Network([10, 20, 5], max_norm=0.5, seed=0, dtype="float64")
    X, Y = make_data(rng, 50, 10, 5, "squared_error", "float64")
    before_out = None
    net.weights[1][...] *= 10  # the output layer's columns are far over the limit
    before_out = np.linalg.norm(net.weights[1], axis=0)
    W, b = copy_params(net)
    o, o_ref = fastmlp.SGD(lr=0.0), ref.SGD(lr=0.0)  # no update: only the constraint acts
    net.train_epoch(X, Y, "squared_error", o, batch_size=50, shuffle=False)
    ref.train_epoch(W, b, X, Y, "squared_error", o_ref, 50, np.arange(50), max_norm_limit=0.5)
    norms = np.linalg.norm(net.weights[0], axis=0)
    assert norms.max() <= 0.5 * (1 + 1e-12)
    np.testing.assert_allclose(net.weights[0], W[0], rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(net.weights[1], axis=0), before_out, rtol=1e-9)


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastmlp
    threads = int(sys.argv[1])
    fastmlp.set_num_threads(threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 40))
    y = rng.integers(0, 5, 256)
    net = fastmlp.Network([40, 64, 48, 5], activation=["relu", "tanh"], output_activation="softmax",
                          dtype="float64", seed=123, dropout=[0.2, 0.5, 0.5], input_noise=0.1, max_norm=1.5)
    opt = fastmlp.Adam(lr=0.01)
    for _ in range(2):
        net.train_epoch(X, y, "log_loss", opt, batch_size=128)
    print(json.dumps(net.params.tolist()))
""")


def test_same_seed_same_weights_whatever_the_threads_and_the_split():
    """The masks are keyed by (seed, step, row), not by thread: 1 thread, 2 threads by row slices
    and 2 threads sharing columns train the same weights (to the rounding of a different sum order)."""
    runs = {}
    for name, threads, split in [("1", 1, None), ("2-slices", 2, "slices"), ("2-columns", 2, "columns")]:
        env = dict(os.environ)
        env.pop("FASTMLP_STEP_SPLIT", None)
        if split:
            env["FASTMLP_STEP_SPLIT"] = split
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(threads)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=True,
        )
        runs[name] = np.array(json.loads(out.stdout))
    for name in ("2-slices", "2-columns"):
        np.testing.assert_allclose(runs[name], runs["1"], rtol=1e-9, atol=1e-12, err_msg=name)


def test_inference_ignores_dropout_and_noise(rng):
    net = net_with("relu", "softmax", "float64", input_noise=1.0)
    X = rng.standard_normal((30, SIZES[0]))
    W, b = copy_params(net)
    np.testing.assert_allclose(net.forward(X), ref.predict(W, b, X, "relu", "softmax"), rtol=1e-12)
    np.testing.assert_array_equal(net.forward(X), net.forward(X))


def test_sparse_inputs_take_hidden_dropout_but_not_input_perturbation(rng):
    sp = pytest.importorskip("scipy.sparse")
    X = sp.random(40, SIZES[0], density=0.3, format="csr", random_state=0)
    y = rng.integers(0, 4, 40)
    ok = net_with("relu", "softmax", "float64", dropout=(0.0, 0.5, 0.5))
    ok.train_epoch(X, y, "log_loss", fastmlp.SGD(lr=0.1), batch_size=10)
    for kw in (dict(dropout=(0.2, 0.0, 0.0)), dict(dropout=(0.0, 0.0, 0.0), input_noise=0.1)):
        bad = net_with("relu", "softmax", "float64", **kw)
        before = np.array(bad.params)
        with pytest.raises(ValueError, match="dense X"):
            bad.train_epoch(X, y, "log_loss", fastmlp.SGD(lr=0.1), batch_size=10)
        np.testing.assert_array_equal(bad.params, before)
        assert bad.training_steps == 0


# --- settings: checks, files, copies, export -------------------------------------------------------
@pytest.mark.parametrize(
    "kw,err,match",
    [
        (dict(dropout=1.0), ValueError, "dropout"),
        (dict(dropout=-0.1), ValueError, "dropout"),
        (dict(dropout="0.5"), TypeError, "dropout"),
        (dict(dropout=[0.1, 0.2]), ValueError, "dropout must be a number or a list of 3"),
        (dict(dropout=[0.1, 0.2, float("nan")]), ValueError, r"dropout\[2\]"),
        (dict(input_noise=-1.0), ValueError, "input_noise"),
        (dict(max_norm=0.0), ValueError, "max_norm"),
        (dict(max_norm=float("inf")), ValueError, "max_norm"),
        (dict(activation=["relu"]), ValueError, "one activation per hidden layer"),
        (dict(activation=["relu", "softmax"]), ValueError, r"activation\[1\]"),
        (dict(activation=("relu", 3)), TypeError, r"activation\[1\]"),
    ],
)
def test_network_settings_are_checked(kw, err, match):
    with pytest.raises(err, match=match):
        fastmlp.Network(SIZES, **kw)


def test_a_number_is_the_hidden_layers_rate():
    net = fastmlp.Network(SIZES, dropout=0.5)
    assert net.dropout == (0.0, 0.5, 0.5)
    assert fastmlp.Network([3, 2]).dropout == (0.0,)


def test_settings_survive_pickle_and_save_load(tmp_path, rng):
    net = net_with(["relu", "tanh"], "softmax", "float32", input_noise=0.3, max_norm=2.0)
    X, Y = make_data(rng, 30, SIZES[0], SIZES[-1], "log_loss", "float32")
    net.train_epoch(X, Y, "log_loss", fastmlp.SGD(lr=0.1), batch_size=10)
    for other in (pickle.loads(pickle.dumps(net)), _save_load(net, tmp_path)):
        assert other.activations == net.activations
        assert other.dropout == pytest.approx(net.dropout)
        assert (other.input_noise, other.max_norm) == pytest.approx((net.input_noise, net.max_norm))
        assert other.training_steps == net.training_steps == 3
        np.testing.assert_array_equal(other.forward(X), net.forward(X))
        # The next step draws the same masks, so training continues identically.
        np.testing.assert_array_equal(
            other.draws(10, other.training_steps)[1][1], net.draws(10, net.training_steps)[1][1]
        )


def _save_load(net, tmp_path):
    path = tmp_path / "net.npz"
    net.save(path)
    return fastmlp.Network.load(path)


def test_summary_names_the_settings(capsys):
    net = net_with(["relu", "tanh"], "softmax", "float32", input_noise=0.3, max_norm=2.0)
    net.summary()
    out = capsys.readouterr().out
    assert "input dropout" in out and "tanh" in out and "input_noise=0.3" in out and "max_norm=2" in out
    plain = fastmlp.Network(SIZES)
    plain.summary()
    assert "dropout" not in capsys.readouterr().out


# --- estimators ------------------------------------------------------------------------------------
pytestmark_estimators = pytest.mark.filterwarnings("ignore:Stochastic Optimizer:Warning")


def _blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 8)) * 3
    y = rng.integers(0, 3, n)
    return centers[y] + rng.standard_normal((n, 8)), y


@pytestmark_estimators
def test_estimator_with_dropout_learns_and_is_reproducible():
    X, y = _blobs()
    kw = dict(
        hidden_layer_sizes=(32, 16),
        activation=["relu", "tanh"],
        dropout=[0.1, 0.3, 0.3],
        input_noise=0.1,
        max_norm=3.0,
        max_iter=30,
        random_state=0,
    )
    a = fastmlp.MLPClassifier(**kw).fit(X, y)
    b = fastmlp.MLPClassifier(**kw).fit(X, y)
    c = fastmlp.MLPClassifier(**{**kw, "random_state": 1}).fit(X, y)
    assert a.score(X, y) > 0.95
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    assert not np.allclose(a.coefs_[0], c.coefs_[0])
    for W in a.coefs_[:-1]:
        assert np.linalg.norm(W, axis=0).max() <= 3.0 * (1 + 1e-6)
    # Dropout is off at prediction time: predict_proba is deterministic.
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))


@pytestmark_estimators
def test_estimator_defaults_are_unchanged_by_the_new_settings():
    X, y = _blobs()
    a = fastmlp.MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    b = fastmlp.MLPClassifier(
        hidden_layer_sizes=(16,), max_iter=5, random_state=0, dropout=0.0, activation=["relu"]
    ).fit(X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])


@pytest.mark.parametrize(
    "kw,err,match",
    [
        (dict(dropout=1.5), ValueError, "'dropout'"),
        (dict(dropout=[0.1]), ValueError, "'dropout'"),
        (dict(dropout="x"), TypeError, "'dropout'"),
        (dict(input_noise=-1), ValueError, "'input_noise'"),
        (dict(max_norm=0), ValueError, "'max_norm'"),
        (dict(activation=["relu", "relu"]), ValueError, "'activation'"),
        (dict(activation=["softmax"]), ValueError, "'activation'"),
        (dict(dropout=0.5, solver="lbfgs"), ValueError, "stochastic solver"),
        (dict(max_norm=1.0, solver="lbfgs"), ValueError, "stochastic solver"),
    ],
)
def test_estimator_settings_are_checked_at_fit(kw, err, match):
    X, y = _blobs(60)
    est = fastmlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, **kw)
    with pytest.raises(err, match=match):
        est.fit(X, y)
    assert not hasattr(est, "coefs_")


def test_estimator_round_trips_keep_the_settings(tmp_path):
    X, y = _blobs(120)
    est = fastmlp.MLPRegressor(
        hidden_layer_sizes=(16, 8), activation=["tanh", "relu"], dropout=0.2, max_norm=2.0, max_iter=5, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y.astype(float))
    path = tmp_path / "m.npz"
    est.save(path)
    for other in (fastmlp.load(path), pickle.loads(pickle.dumps(est))):
        assert other.get_params()["activation"] == ["tanh", "relu"]
        assert other.dropout == 0.2 and other.max_norm == 2.0
        np.testing.assert_array_equal(other.predict(X), est.predict(X))


def test_to_sklearn_warns_about_dropout_and_refuses_mixed_activations():
    pytest.importorskip("sklearn")
    X, y = _blobs(120)
    est = fastmlp.MLPClassifier(hidden_layer_sizes=(8, 8), dropout=0.3, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        est.fit(X, y)
    with pytest.warns(UserWarning, match="dropout=0.3"):
        sk = est.to_sklearn()
    np.testing.assert_allclose(sk.predict_proba(X), est.predict_proba(X), rtol=1e-6)
    same = fastmlp.MLPClassifier(hidden_layer_sizes=(8, 8), activation=["tanh", "tanh"], max_iter=3, random_state=0)
    mixed = fastmlp.MLPClassifier(hidden_layer_sizes=(8, 8), activation=["tanh", "relu"], max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=Warning)
        same.fit(X, y)
        mixed.fit(X, y)
    assert same.to_sklearn().activation == "tanh"
    with pytest.raises(ValueError, match="one activation for every hidden layer"):
        mixed.to_sklearn()
