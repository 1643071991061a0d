"""fastmlp.distributed's pure helpers (no MPI needed); the MPI path is tested in tests/mpi."""

from __future__ import annotations

import numpy as np
import pytest

from fastmlp.distributed import global_order, shard_indices


@pytest.mark.parametrize("n,size", [(10, 1), (10, 3), (7, 7), (1001, 4)])
def test_shard_indices_are_equal_disjoint_blocks(n, size):
    parts = [shard_indices(n, r, size) for r in range(size)]
    m = n // size
    assert all(p.shape == (m,) and p.dtype == np.int64 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(m * size))
    seeded = [shard_indices(n, r, size, seed=9) for r in range(size)]
    flat = np.concatenate(seeded)
    assert np.unique(flat).size == m * size and flat.max() < n
    assert all(np.array_equal(a, shard_indices(n, r, size, seed=9)) for r, a in enumerate(seeded))
    if size > 1 and m > 1:
        assert not np.array_equal(flat, np.concatenate(parts))


def test_shard_indices_bad_input():
    with pytest.raises(ValueError, match=r"n_samples \(2\) must be at least the number of ranks \(3\)"):
        shard_indices(2, 0, 3)
    with pytest.raises(ValueError, match="rank must be <= 1"):
        shard_indices(10, 2, 2)
    with pytest.raises(TypeError, match="size must be an int"):
        shard_indices(10, 0, 2.0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        shard_indices(10, 0, 2, seed=-1)


def test_global_order_interleaves_local_batches():
    # Two ranks, shards of 5 rows, local batch 2: global batches of 4 (the last of 2).
    a, b = np.array([4, 0, 3, 1, 2]), np.array([1, 2, 0, 4, 3])
    got = global_order([a, b], 2)
    np.testing.assert_array_equal(got, [4, 0, 6, 7, 3, 1, 5, 9, 2, 8])
    assert np.array_equal(np.sort(got), np.arange(10))
    np.testing.assert_array_equal(global_order([a], 3), a)


def test_global_order_bad_input():
    with pytest.raises(ValueError, match="one order per rank, got none"):
        global_order([], 2)
    with pytest.raises(ValueError, match=r"local_orders\[1\] must be a 1-D integer array of 3"):
        global_order([np.arange(3), np.arange(4)], 2)
    with pytest.raises(ValueError, match=r"local_orders\[0\]"):
        global_order([np.arange(3.0)], 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        global_order([np.arange(3)], 0)
