"""The parallel runtime (cpp/include/fastmlp/parallel.hpp) under every way OpenMP can grant threads.

Results must not depend on how many threads OpenMP actually grants (OMP_THREAD_LIMIT,
OMP_DYNAMIC, a call from inside another library's parallel region or from a joblib
thread), a forked child must work, an absurd OMP_NUM_THREADS must not abort, and
the same input must give bit-identical outputs whatever the buffers' addresses.
Everything that could hang or abort runs in a child process with a timeout.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp

TIMEOUT = 120

# One script for every child: builds the same data and networks, runs every
# entry point on 1 thread and then with `threads` requested under the child's
# environment, and prints the largest differences as JSON.
_ENTRY_POINTS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastmlp

    def data():
        rng = np.random.default_rng(0)
        X = rng.normal(size=(1024, 20))
        y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int)
        return X, y

    def run(threads, dtype):
        # "bf16": a float32 network whose products take bf16 operands
        precision, dtype = ("bf16", "float32") if dtype == "bf16" else (None, dtype)
        fastmlp.set_num_threads(threads)
        X, y = data()
        Y = np.eye(2)[y]
        out = {}
        # 20-256-256-2: big enough that every path splits (slices, columns, parameter chunks).
        net = fastmlp.Network([20, 256, 256, 2], activation="tanh", output_activation="softmax",
                              dtype=dtype, seed=3, precision=precision)
        out["forward"] = net.forward(X)
        net.loss_and_grad(X, Y, "log_loss")
        out["grads"] = net.grads.copy()
        opt = fastmlp.Adam(1e-3)
        for _ in range(2):
            net.train_epoch(X, Y, loss="log_loss", optimizer=opt, batch_size=256, shuffle=True, l2=1e-4,
                            clip_norm=5.0)
        out["trained"] = net.params.copy()
        clf = fastmlp.MLPClassifier(hidden_layer_sizes=(64,), max_iter=15, random_state=0, n_threads=threads,
                                    dtype=dtype, precision=precision)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X, y)
        out["proba"] = clf.predict_proba(X)
        return out

    def compare(dtype, threads, call=lambda f: f()):
        one = run(1, dtype)
        box = {}
        call(lambda: box.update(run(threads, dtype)))
        return {k: float(np.max(np.abs(one[k] - box[k]))) for k in one}

    def main(mode, threads):
        result = {}
        for dtype in ("float64", "float32", "bf16"):
            if mode == "openmp":  # inside another library's OpenMP region
                call = lambda f: fastmlp._core._call_in_openmp_region(f, 2)
            elif mode == "joblib":  # from a joblib worker thread
                from joblib import Parallel, delayed
                call = lambda f: Parallel(n_jobs=2, backend="threading")(delayed(f)() for _ in range(1))
            else:
                call = lambda f: f()
            result[dtype] = compare(dtype, threads, call)
        print(json.dumps(result))

    main(sys.argv[1], int(sys.argv[2]))
""")

# Differences allowed between a 1-thread and a many-thread result: the sums
# are split differently (float rounding), nothing else.
_TOLERANCE = {"float64": 1e-9, "float32": 2e-4, "bf16": 2e-3}


def _child(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


def _check_entry_points(mode: str, threads: int, env: dict[str, str]) -> None:
    done = _child(_ENTRY_POINTS, mode, str(threads), env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for dtype, diffs in result.items():
        assert set(diffs) == {"forward", "grads", "trained", "proba"}
        for name, diff in diffs.items():
            assert diff <= _TOLERANCE[dtype], f"{dtype} {name}: {diff} ({mode}, {env})"


# Both ways a step can split a batch (parallel.hpp: plan_step): row slices (what
# this network gets by default) and the pass shared column by column (forced).
SPLITS = [{}, {"FASTMLP_STEP_SPLIT": "columns"}]


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLITS, ids=["slices", "shared-pass"])
@pytest.mark.parametrize(
    "env",
    [{"OMP_THREAD_LIMIT": "1"}, {"OMP_DYNAMIC": "true"}, {"OMP_THREAD_LIMIT": "3", "OMP_NUM_THREADS": "2"}],
    ids=["thread-limit-1", "dynamic", "thread-limit-3"],
)
def test_results_do_not_depend_on_the_threads_openmp_grants(env, split):
    # 4 threads asked for: under OMP_THREAD_LIMIT=1 one is granted, under 3 three.
    _check_entry_points("plain", 4, {**env, **split})


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLITS, ids=["slices", "shared-pass"])
def test_called_from_inside_another_librarys_openmp_region(split):
    _check_entry_points("openmp", 2, split)


@pytest.mark.slow
@pytest.mark.parametrize("split", SPLITS, ids=["slices", "shared-pass"])
def test_called_from_a_joblib_thread(split):
    _check_entry_points("joblib", 2, split)


def test_the_openmp_region_helper_really_runs_inside_a_region():
    seen = []
    fastmlp._core._call_in_openmp_region(lambda: seen.append(1), 2)
    assert seen == [1]
    with pytest.raises(ZeroDivisionError):
        fastmlp._core._call_in_openmp_region(lambda: 1 / 0, 2)


# --- fork: the child's next multi-thread call used to hang forever.

_FORK = textwrap.dedent("""
    import os, sys, warnings
    import numpy as np
    import fastmlp

    warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() with threads running
    fastmlp.set_num_threads(2)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2048, 30)); Y = np.eye(3)[rng.integers(0, 3, 2048)]
    net = fastmlp.Network([30, 256, 256, 3], output_activation="softmax", seed=0)
    opt = fastmlp.SGD(0.05)
    net.train_epoch(X, Y, loss="log_loss", optimizer=opt, batch_size=512)   # the parent's pool now exists

    def work(_=None):
        # What a worker does: predict, and train a copy of the network.
        twin = fastmlp.Network([30, 256, 256, 3], output_activation="softmax", seed=1)
        twin.params[:] = net.params
        loss = twin.train_epoch(X, Y, loss="log_loss", optimizer=fastmlp.SGD(0.05), batch_size=512, shuffle=False)
        half = fastmlp.Network([30, 256, 256, 3], output_activation="softmax", seed=1, precision="bf16")
        half.params[:] = net.params
        half_loss = half.train_epoch(X, Y, loss="log_loss", optimizer=fastmlp.SGD(0.05), batch_size=512,
                                     shuffle=False)
        return net.forward(X), twin.params.copy(), loss, half.forward(X), half.params.copy(), half_loss

    expected = work()

    def same(got):
        return all(np.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(got, expected))

    mode = sys.argv[1]
    if mode == "os.fork":
        pid = os.fork()
        if pid == 0:
            ok = same(work()) and fastmlp.get_num_threads() == 2
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    elif mode == "pool":
        import multiprocessing as mp
        with mp.get_context("fork").Pool(2) as pool:
            assert all(same(r) for r in pool.map(work, range(4)))
    elif mode == "joblib":
        from joblib import Parallel, delayed
        results = Parallel(n_jobs=2, backend="multiprocessing")(delayed(work)(i) for i in range(4))
        assert all(same(r) for r in results)
    elif mode == "twice":  # a fork of a fork
        pid = os.fork()
        if pid == 0:
            work()
            pid2 = os.fork()
            if pid2 == 0:
                os._exit(0 if same(work()) else 3)
            _, status = os.waitpid(pid2, 0)
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 4)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    print("ok")
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["os.fork", "pool", "joblib", "twice"])
def test_a_forked_child_trains_and_predicts(mode):
    done = _child(_FORK, mode, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


@pytest.mark.slow
def test_an_absurd_omp_num_threads_neither_aborts_nor_hangs():
    script = textwrap.dedent("""
        import resource, numpy as np, fastmlp
        # Under an address-space limit 3000 threads' stacks (8 MiB each) could not be
        # created; 256 can. Counted from what is mapped now (AddressSanitizer maps a lot).
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + (6 << 30), vm + (6 << 30)))
        print(fastmlp.get_num_threads())
        rng = np.random.default_rng(0)
        X = rng.normal(size=(4096, 64)); Y = np.eye(2)[rng.integers(0, 2, 4096)]
        net = fastmlp.Network([64, 128, 2], output_activation="softmax", seed=0)
        net.train_epoch(X, Y, loss="log_loss", optimizer=fastmlp.SGD(0.1), batch_size=1024)
        assert np.isfinite(net.forward(X)).all()
        print("ok")
    """)
    done = _child(script, env={"OMP_NUM_THREADS": "3000"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines == [str(fastmlp._core.thread_limit()), "ok"]
    assert "OMP_NUM_THREADS=3000 is above fastmlp's limit" in done.stderr


# --- bit-identical outputs whatever the buffers' alignment


def _offset_array(shape: tuple[int, int], dtype: str, offset: int) -> np.ndarray:
    """A C-contiguous array whose data starts `offset` elements into a fresh buffer."""
    size = shape[0] * shape[1]
    return np.empty(size + 64, dtype=dtype)[offset : offset + size].reshape(shape)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", ["relu", "tanh", "logistic", "leaky_relu", "identity"])
@pytest.mark.parametrize("output", ["softmax", "logistic", "identity", "tanh", "exp"])
def test_forward_is_bit_identical_whatever_the_alignment(output, hidden, dtype):
    net = fastmlp.Network([13, 37, 11], activation=hidden, output_activation=output, dtype=dtype, seed=0)
    X = np.random.default_rng(0).normal(size=(150, 13)).astype(dtype)
    expected = net.forward(X)
    for call in range(100):
        x = _offset_array(X.shape, dtype, call % 17)
        x[...] = X
        out = _offset_array(expected.shape, dtype, (call * 7) % 19)
        assert net.forward(x, out=out) is out
        np.testing.assert_array_equal(out, expected)


def test_forward_out_is_checked():
    net = fastmlp.Network([3, 4, 2], dtype="float32", seed=0)
    X = np.ones((5, 3), dtype=np.float32)
    before = net.params.copy()
    with pytest.raises(TypeError, match="out must have dtype float32, got float64"):
        net.forward(X, out=np.empty((5, 2)))
    with pytest.raises(TypeError, match=r"out must be a numpy.ndarray"):
        net.forward(X, out=[[0.0, 0.0]] * 5)
    with pytest.raises(ValueError, match=r"out must have shape \(5, 2\), got \(5, 3\)"):
        net.forward(X, out=np.empty((5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous, aligned and writable"):
        net.forward(X, out=np.empty((2, 5), dtype=np.float32).T)
    unaligned = np.frombuffer(bytearray(5 * 2 * 4 + 1), dtype=np.float32, offset=1).reshape(5, 2)
    assert not unaligned.flags.aligned
    with pytest.raises(ValueError, match="C-contiguous, aligned and writable"):
        net.forward(X, out=unaligned)
    readonly = np.empty((5, 2), dtype=np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="C-contiguous, aligned and writable"):
        net.forward(X, out=readonly)
    shared = np.ones((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="must not overlap X"):
        net.forward(shared, out=shared.reshape(-1)[:10].reshape(5, 2))
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_proba_is_bit_identical_across_calls_and_round_trips(dtype, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 10))
    y = rng.integers(0, 3, 300)
    clf = fastmlp.MLPClassifier(hidden_layer_sizes=(32,), activation="tanh", max_iter=5, random_state=0, dtype=dtype)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    expected = clf.predict_proba(X)
    keep = []
    for call in range(100):
        keep.append(np.empty(call % 23 + 1))  # moves the allocator, so the outputs land at other addresses
        np.testing.assert_array_equal(clf.predict_proba(X), expected)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), expected)
    clf.save(tmp_path / "model.npz")
    np.testing.assert_array_equal(fastmlp.load(tmp_path / "model.npz").predict_proba(X), expected)
