"""Thread control: fastmlp.set_num_threads, OMP_NUM_THREADS and threadpoolctl all act on one knob."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl  # in the test extra

import fastmlp


@pytest.fixture
def restore_threads():
    before = fastmlp.get_num_threads()
    yield
    fastmlp.set_num_threads(before)


def test_set_and_get(restore_threads):
    for n in (1, 2, 3):
        fastmlp.set_num_threads(n)
        assert fastmlp.get_num_threads() == n


@pytest.mark.parametrize("bad", [0, -1])
def test_set_rejects_non_positive(bad, restore_threads):
    before = fastmlp.get_num_threads()
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastmlp.set_num_threads(bad)
    assert fastmlp.get_num_threads() == before


@pytest.mark.parametrize("bad", [1.5, "2", None])
def test_set_rejects_non_int(bad):
    with pytest.raises(TypeError, match="n must be an int"):
        fastmlp.set_num_threads(bad)


def test_omp_num_threads_is_honoured():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", "import fastmlp; print(fastmlp.get_num_threads())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1"
    env["OMP_NUM_THREADS"] = "3"
    out = subprocess.run(
        [sys.executable, "-c", "import fastmlp; print(fastmlp.get_num_threads())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "3"


def test_threadpoolctl_limits_fastmlp(restore_threads):
    fastmlp.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert fastmlp.get_num_threads() == 1
    assert fastmlp.get_num_threads() == 2
    apis = {(p["user_api"], p["internal_api"]) for p in threadpoolctl.threadpool_info()}
    assert ("openmp", "openmp") in apis


def test_results_do_not_depend_on_more_threads_than_rows(restore_threads):
    # A batch smaller than the thread count must still be computed whole.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 4))
    net = fastmlp.Network([4, 8, 2], dtype="float64", seed=0)
    fastmlp.set_num_threads(1)
    one = net.forward(X)
    fastmlp.set_num_threads(8)
    np.testing.assert_array_equal(net.forward(X), one)


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_every_threading_mode_gives_the_one_thread_result(threads, restore_threads):
    # Batch 128 splits into slices, one per thread (the last batch, 104 rows,
    # too); a batch of 20 rows through [512, 1024, 10] is one slice whose
    # products split their columns across the threads.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 64))
    y = rng.integers(0, 10, 1000)
    Xw = rng.standard_normal((100, 512))

    def train(n):
        fastmlp.set_num_threads(n)
        net = fastmlp.Network([64, 256, 128, 10], output_activation="softmax", dtype="float64", seed=0)
        wide = fastmlp.Network([512, 1024, 10], output_activation="softmax", dtype="float64", seed=0)
        losses = [
            net.train_epoch(X, y, "log_loss", fastmlp.Adam(1e-3), batch_size=128, l2=1e-3, clip_norm=5.0),
            wide.train_epoch(Xw, y[:100], "log_loss", fastmlp.SGD(0.01, 0.9), batch_size=20, l2=1e-3),
        ]
        return losses, np.r_[net.params, wide.params], np.r_[net.forward(X[:100]), wide.forward(Xw[:7])]

    one, many = train(1), train(threads)
    np.testing.assert_allclose(many[0], one[0], rtol=1e-10)
    np.testing.assert_allclose(many[1], one[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(many[2], one[2], rtol=1e-9, atol=1e-12)
