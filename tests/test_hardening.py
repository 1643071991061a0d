"""Issue 11: the failures found by trying to break fastmlp, and the last scikit-learn differences.

Each test failed before its fix. Cases that could exhaust memory or hang run in a child
process with a timeout and an address-space limit.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import scipy.sparse as sp

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor, _compat
from fastmlp.network import Network

rng = np.random.default_rng(0)
X = rng.standard_normal((80, 3))
Y_REG = X @ np.array([0.5, -1.0, 2.0])
Y_CLF = (X[:, 0] + X[:, 1] > 0).astype(int)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        return fn(*args, **kw)


def _fitted_reg(**kw):
    params = dict(hidden_layer_sizes=(6,), max_iter=5, random_state=0, learning_rate_init=0.01)
    return _quiet(MLPRegressor(**{**params, **kw}).fit, X, Y_REG)


def _snapshot(est):
    return (est.n_iter_, est.t_, list(est.loss_curve_), [np.array(c).tobytes() for c in est.coefs_])


def _run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# --- files --------------------------------------------------------------------------


@pytest.mark.slow
def test_load_reads_only_regular_files(tmp_path):
    """/dev/zero was read without end (OOM at 23 GB); a FIFO blocked. Now both are a ValueError at once
    (in a child under an address-space limit, so a regression fails instead of exhausting memory)."""
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    result = _run_child(
        f"""
        import resource, fastmlp
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, vm + 2**30))
        for path in ("/dev/zero", {str(fifo)!r}):
            try:
                fastmlp.load(path)
            except ValueError as e:
                assert "not a regular file" in str(e), e
                print("refused", path)
    """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["refused /dev/zero", f"refused {fifo}"]
    with pytest.raises(IsADirectoryError):
        fastmlp.load(tmp_path)


def _zip_claiming(members: dict[str, bytes], claimed: dict[str, int]) -> bytes:
    """A stored ZIP whose local and central entries consistently claim claimed[name] bytes for each
    member while holding only members[name]."""
    out, central = bytearray(), bytearray()
    for name, data in members.items():
        size, crc, n = claimed.get(name, len(data)), zlib.crc32(data), name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crc, size, size, len(n), 0) + n + data
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, size, size, len(n), 0, 0, 0, 0, 0, offset
            )
            + n
        )
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + eocd)


def test_forged_consistent_sizes_are_rejected_before_allocating(tmp_path):
    """Metadata, .npy headers and ZIP entries all agree on 1 GiB of weights in a few KB: refused from
    the sizes alone (they exceed the file), without allocating."""
    est = _fitted_reg()
    est.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as z:
        meta = json.loads(str(z["__fastmlp__"][()]))
    F, H = X.shape[1], 2**30 // (8 * (X.shape[1] + 2))
    meta["params"]["hidden_layer_sizes"] = {"tuple": [H]}
    meta["attributes"].pop("optimizer", None)
    members, claimed = {}, {}
    for name, shape in (("coefs_0", (F, H)), ("intercepts_0", (H,)), ("coefs_1", (H, 1)), ("intercepts_1", (1,))):
        import io as _io

        f = _io.BytesIO()
        np.lib.format.write_array_header_1_0(f, dict(descr="<f8", fortran_order=False, shape=shape))
        members[name + ".npy"] = f.getvalue() + b"\0" * 64
        claimed[name + ".npy"] = len(f.getvalue()) + 8 * int(np.prod(shape))
    f = _io.BytesIO()
    np.lib.format.write_array(f, np.array(json.dumps(meta)))
    members["__fastmlp__.npy"] = f.getvalue()
    path = tmp_path / "forged.npz"
    path.write_bytes(_zip_claiming(members, claimed))
    assert path.stat().st_size < 10_000 and sum(claimed.values()) > 2**30 - 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more than the file's"):
            fastmlp.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak


@pytest.fixture
def umask():
    def set_mask(mask):
        old.append(os.umask(mask))

    old = []
    yield set_mask
    if old:
        os.umask(old[0])


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_save_creates_files_with_the_umask_mode(tmp_path, umask, mask, mode):
    umask(mask)
    _fitted_reg().save(tmp_path / "m.npz")
    assert stat.S_IMODE((tmp_path / "m.npz").stat().st_mode) == mode


def test_save_keeps_an_existing_files_mode_and_writes_through_symlinks(tmp_path):
    est = _fitted_reg()
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    est.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    np.testing.assert_array_equal(fastmlp.load(target).predict(X), est.predict(X))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]  # no temporary left
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "new.npz")
    est.save(dangling)
    assert dangling.is_symlink() and (tmp_path / "new.npz").is_file()


def test_save_and_load_take_str_bytes_and_pathlike(tmp_path):
    est = _fitted_reg()
    for path in (str(tmp_path / "a.npz"), os.fsencode(tmp_path / "b.npz"), tmp_path / "c.npz"):
        est.save(path)
        np.testing.assert_array_equal(fastmlp.load(path).predict(X), est.predict(X))
    with pytest.raises(TypeError, match=r"path must be a str, bytes or os.PathLike"):
        est.save(3.5)


# --- estimators: a failed call changes nothing ---------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        dict(learning_rate="step", lr_gamma=np.inf),
        dict(learning_rate="cosine", lr_min=np.inf),
        dict(learning_rate="step", lr_step_size=np.inf),
        dict(warmup_epochs=np.inf),
        dict(learning_rate_init=np.inf),
        dict(alpha=np.inf),
        dict(weight_decay=np.inf, solver="adamw"),
    ],
)
def test_invalid_hyperparameters_fail_before_touching_the_fitted_model(params):
    est = _fitted_reg()
    before, score = _snapshot(est), est.score(X, Y_REG)
    est.set_params(**params)
    name = next(k for k in params if k not in ("learning_rate", "solver"))
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        est.fit(X, Y_REG)
    assert _snapshot(est) == before and est.score(X, Y_REG) == score


def test_adam_partial_fit_with_infinite_rate_changes_nothing():
    est = MLPRegressor(hidden_layer_sizes=(6,), random_state=0)
    for _ in range(3):
        est.partial_fit(X, Y_REG)
    before, state = _snapshot(est), est._optimizer.state_dict()
    est.set_params(learning_rate_init=np.inf)
    with pytest.raises(ValueError, match="'learning_rate_init' parameter"):
        est.partial_fit(X, Y_REG)
    assert _snapshot(est) == before
    after = est._optimizer.state_dict()
    assert after["t"] == state["t"] and after["m"].tobytes() == state["m"].tobytes()


def test_a_refused_concurrent_fit_changes_nothing():
    """A second thread's fit, started in the middle of the first, is refused and leaves the first's
    fit exactly as it would have been alone."""
    params = dict(hidden_layer_sizes=(6,), max_iter=8, random_state=0, n_threads=1, learning_rate_init=0.01)
    alone = _quiet(MLPRegressor(**params).fit, X, Y_REG)
    errors = []

    def second_fit(metrics):
        if metrics["epoch"] == 3:

            def run():
                try:
                    est.fit(X, Y_REG)
                except RuntimeError as e:
                    errors.append(e)

            t = threading.Thread(target=run)
            t.start()
            t.join()

    est = MLPRegressor(**params, callbacks=[second_fit])
    _quiet(est.fit, X, Y_REG)
    assert len(errors) == 1 and "already being fitted" in str(errors[0])
    assert est.n_iter_ == alone.n_iter_ == 8 and est.loss_curve_ == alone.loss_curve_
    for a, b in zip(est.coefs_ + est.intercepts_, alone.coefs_ + alone.intercepts_):
        assert a.tobytes() == b.tobytes()


# --- save/load and pickle keep everything ---------------------------------------------


def _typed(params):
    return {k: (type(v), repr(v)) for k, v in params.items()}


def test_save_load_round_trips_get_params_with_their_types(tmp_path):
    y = np.array(["a", "b", "c", "d"] * 20)
    est = MLPClassifier(
        hidden_layer_sizes=(5, 3),
        class_weight={"a": 2.0, "b": 1, "c": 0.5, "d": 1.0},
        random_state=np.int64(3),
        dtype=np.float32,
        max_iter=2,
        lr_step_size=7,
        tol=np.inf,
    )
    _quiet(est.fit, X, y)
    est.save(tmp_path / "m.npz")
    back = fastmlp.load(tmp_path / "m.npz")
    assert _typed(back.get_params()) == _typed({**est.get_params(), "random_state": 3})
    for class_weight, labels in (
        ({2: 5.0, 0: 1.0}, [0, 2]),
        ({True: 3.0}, [False, True]),
        ({1.0: 2.0}, [1.0, 2.0]),
        (None, [0, 1]),
    ):
        yy = np.array(labels * 40)
        est = _quiet(
            MLPClassifier((4,), max_iter=1, class_weight=class_weight, dtype="float64", random_state=None).fit, X, yy
        )
        est.save(tmp_path / "m.npz")
        back = fastmlp.load(tmp_path / "m.npz")
        assert _typed(back.get_params()) == _typed(est.get_params())
        _quiet(back.fit, X, yy)  # refitting the loaded model works (class_weight keys are classes)


@pytest.mark.parametrize(
    "solver,extra",
    [
        ("adam", {}),
        ("sgd", {}),
        ("sgd", dict(learning_rate="invscaling")),
        ("adamw", {}),
        ("rmsprop", {}),
        ("adagrad", {}),
    ],
)
@pytest.mark.parametrize("how", ["pickle", "save"])
def test_partial_fit_continues_after_pickle_and_save_as_if_uninterrupted(tmp_path, solver, extra, how):
    def make():
        return MLPRegressor(hidden_layer_sizes=(6,), solver=solver, random_state=0, learning_rate_init=0.01, **extra)

    straight, resumed = make(), make()
    for _ in range(3):
        straight.partial_fit(X, Y_REG)
        resumed.partial_fit(X, Y_REG)
    if how == "pickle":
        resumed = pickle.loads(pickle.dumps(resumed))
    else:
        resumed.save(tmp_path / "m.npz")
        resumed = fastmlp.load(tmp_path / "m.npz")
    for _ in range(3):
        straight.partial_fit(X, Y_REG)
        resumed.partial_fit(X, Y_REG)
    for a, b in zip(straight.coefs_ + straight.intercepts_, resumed.coefs_ + resumed.intercepts_):
        assert a.tobytes() == b.tobytes()


def test_optimizer_objects_pickle_their_state():
    net = Network([3, 4, 1], dtype="float64", seed=0)
    opt = fastmlp.Adam(lr=0.01)
    for _ in range(2):
        net.loss_and_grad(X, Y_REG[:, None], "squared_error")
        opt.step(net)
    copy = pickle.loads(pickle.dumps(opt))
    assert copy.t == 2 and copy.state_dict()["v"].tobytes() == opt.state_dict()["v"].tobytes()
    with pytest.raises(ValueError, match="as long as the others"):
        copy.load_state_dict({**opt.state_dict(), "v": np.zeros(3)})
    assert copy.state_dict()["m"].tobytes() == opt.state_dict()["m"].tobytes()  # unchanged


# --- without scikit-learn: the same split and error types ----------------------------


@pytest.mark.parametrize(
    "labels", [[0] * 30 + [1] * 50, [0] * 10 + [1] * 10 + [2] * 10 + [3] * 7, None, [True] * 2 + [False] * 61]
)
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_fallback_split_is_scikit_learns(monkeypatch, labels, seed):
    from sklearn.model_selection import train_test_split

    n = 63 if labels is None else len(labels)
    stratify = None if labels is None else np.array(labels).reshape(-1, 1)
    want = train_test_split(np.arange(n), test_size=0.1, random_state=np.random.RandomState(seed), stratify=stratify)
    monkeypatch.setattr(_compat, "HAVE_SKLEARN", False)
    got = _compat.train_test_split_indices(n, 0.1, np.random.RandomState(seed), stratify)
    assert [a.tolist() for a in got] == [a.tolist() for a in want]


def test_fallback_stratification_error_is_scikit_learns(monkeypatch):
    monkeypatch.setattr(_compat, "HAVE_SKLEARN", False)
    with pytest.raises(ValueError, match=r"have only 1 member.*Classes with too few members are: \['True'\]"):
        _compat.train_test_split_indices(4, 0.1, np.random.RandomState(0), np.array([[False]] * 3 + [[True]]))


def test_without_scikit_learn_the_scores_and_errors_are_the_same():
    est = _quiet(MLPClassifier((5,), early_stopping=True, max_iter=5, random_state=0).fit, X, Y_CLF)
    result = _run_child("""
        import sys, json, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "sklearn" or name.startswith("sklearn."):
                    raise ImportError("blocked")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from fastmlp import MLPClassifier
        rng = np.random.default_rng(0)
        X = rng.standard_normal((80, 3))
        y = (X[:, 0] + X[:, 1] > 0).astype(int)
        warnings.simplefilter("ignore")
        est = MLPClassifier((5,), early_stopping=True, max_iter=5, random_state=0).fit(X, y)
        try:
            MLPClassifier().predict(X)
        except Exception as e:
            kinds = [isinstance(e, ValueError), isinstance(e, AttributeError), type(e).__name__]
        print(json.dumps([est.validation_scores_, kinds]))
    """)
    assert result.returncode == 0, result.stderr
    scores, kinds = json.loads(result.stdout)
    assert scores == est.validation_scores_
    assert kinds == [True, True, "NotFittedError"]


# --- to_sklearn, sparse input ----------------------------------------------------------


def test_to_sklearn_warns_naming_each_dropped_setting():
    est = _fitted_reg(solver="adamw", learning_rate="cosine", l1=0.01, clip_norm=1.0)
    with pytest.warns(UserWarning, match="to_sklearn") as record:
        sk = est.to_sklearn()
    message = str(record[0].message)
    for name in ("l1=0.01", "clip_norm=1.0", "solver='adamw'", "learning_rate='cosine'"):
        assert name in message
    np.testing.assert_allclose(sk.predict(X), est.predict(X), rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fitted_reg(n_threads=1, dtype="float64").to_sklearn()  # nothing dropped that matters: silent


@pytest.mark.parametrize("call", ["forward", "train_epoch", "loss_and_grad", "objective"])
def test_complex_sparse_X_is_a_type_error_like_dense(call):
    net = Network([3, 4, 1], dtype="float64", seed=0)
    Xc = sp.csr_matrix(X.astype(np.complex128) + 1j)
    args = {
        "forward": (),
        "train_epoch": (Y_REG, "squared_error", fastmlp.SGD(0.01)),
        "loss_and_grad": (Y_REG, "squared_error"),
        "objective": (Y_REG, "squared_error"),
    }[call]
    before = net.params.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: refused, not cast
        with pytest.raises(TypeError, match="X must be real"):
            getattr(net, call)(Xc, *args)
    assert net.params.tobytes() == before.tobytes()


def test_loss_and_grad_takes_sparse_X():
    net = Network([3, 4, 1], dtype="float64", seed=0)
    dense = net.loss_and_grad(X, Y_REG, "squared_error")
    grads = net.grads.copy()
    assert net.loss_and_grad(sp.csr_matrix(X), Y_REG, "squared_error") == pytest.approx(dense, rel=1e-14)
    np.testing.assert_allclose(net.grads, grads, rtol=1e-12, atol=1e-15)


def test_sparse_X_with_a_billion_columns_is_a_value_error_before_allocating():
    Xs = sp.csr_matrix((np.ones(4), ([0, 1, 2, 3], [0, 5, 10**9 - 1, 7])), shape=(4, 10**9))
    est = MLPRegressor(hidden_layer_sizes=(100,), max_iter=1)
    with pytest.raises(ValueError, match="GiB"):
        est.fit(Xs, np.arange(4.0))
    assert not hasattr(est, "coefs_")


# --- Ctrl-C during lbfgs ------------------------------------------------------------------


def _interrupt_objective(monkeypatch, at_call):
    calls = [0]
    original = Network.run_objective

    def objective(self, *args):
        calls[0] += 1
        if calls[0] == at_call:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Network, "run_objective", objective)


def test_lbfgs_ctrl_c_keeps_the_last_iterate(monkeypatch):
    _interrupt_objective(monkeypatch, at_call=12)
    est = MLPRegressor(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=100, random_state=0)
    try:
        with pytest.warns(UserWarning, match="Training interrupted by user."):
            est.fit(X, Y_REG)
    except KeyboardInterrupt:  # would end the whole pytest session
        pytest.fail("Ctrl-C during lbfgs escaped fit")
    monkeypatch.undo()
    assert est.n_iter_ >= 1 and est.n_iter_ < 12 and np.isfinite(est.loss_)
    net = est._network()
    assert est.loss_ == net.objective(X, Y_REG, "squared_error", l2=est.alpha)
    assert est.score(X, Y_REG) > 0


def test_lbfgs_ctrl_c_before_the_first_iteration_changes_nothing(monkeypatch):
    est = MLPRegressor(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=3, random_state=0)
    _interrupt_objective(monkeypatch, at_call=1)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X, Y_REG)
    assert not hasattr(est, "coefs_")


# --- scikit-learn's own test_mlp.py cases, directly ----------------------------------------


def test_non_finite_message_begins_with_scikit_learns_sentence():
    est = MLPRegressor(hidden_layer_sizes=(6,), solver="sgd", learning_rate_init=1e10, max_iter=5)
    with pytest.raises(ValueError) as info:
        _quiet(est.fit, X * 1e10, Y_REG)
    assert str(info.value).startswith(
        "Solver produced non-finite parameter weights. The input data may contain "
        "large values and need to be preprocessed. "
    )


@pytest.mark.parametrize("verbose", [True, 1, 10])
def test_any_true_verbose_prints_iteration_lines(capsys, verbose):
    _fitted_reg(verbose=verbose, max_iter=3)
    out = capsys.readouterr().out
    assert [line.split(",")[0] for line in out.splitlines()] == ["Iteration 1", "Iteration 2", "Iteration 3"]


def test_diverging_fit_with_early_stopping_records_nan_and_keeps_the_best_weights():
    est = MLPRegressor(
        hidden_layer_sizes=(20,),
        activation="identity",
        solver="sgd",
        learning_rate_init=1,
        max_iter=20,
        early_stopping=True,
        random_state=0,
    )
    with pytest.warns(fastmlp.ConvergenceWarning, match="diverged"):
        est.fit(X * 10, Y_REG * 100)
    assert np.isnan(est.validation_scores_[-1]) and isinstance(est.validation_scores_[-1], float)
    assert len(est.validation_scores_) == est.n_iter_ < 20
    assert all(np.isfinite(c).all() for c in est.coefs_ + est.intercepts_)
