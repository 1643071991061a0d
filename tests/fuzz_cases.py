"""Random calls of the public Network API, described as plain data (a "spec").

A spec (JSON-able dict) says which network, which method, and how to build
X and y: shape, dtype, memory layout (strides, byte order, read-only,
memory-mapped) and values (NaN/inf injected). `run_case(spec)` builds the
arrays from it, calls the method and checks the documented outcome: either
the exception the documentation promises (TypeError or ValueError naming the
argument) or a result equal to `fastmlp.reference`. The same spec runs in
this process (tests/test_fuzz.py) or in a child (`python fuzz_cases.py FILE`),
where a segfault is seen as the child's exit status, not pytest's death.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

import fastmlp
from fastmlp import reference as ref
from helpers import HIDDEN, LOSS_OUTPUT  # noqa: F401  (the core's names; test_fuzz.py draws from them)

# dtypes X or y may come in; the last ones are refused with TypeError.
NUMERIC_DTYPES = (
    "float64",
    "float32",
    "float16",
    "longdouble",
    ">f8",
    ">f4",
    "int8",
    "int32",
    "int64",
    ">i4",
    "uint8",
    "uint16",
    "bool",
)
REFUSED_DTYPES = ("object", "<U3", "S2", "complex64", "complex128", "datetime64[s]", "timedelta64[s]", "V8")
LAYOUTS = ("c", "fortran", "strided", "neg_rows", "neg_all", "read_only", "memmap", "list")
INJECT = (None, "nan", "inf", "-inf", "overflow")
METHODS = ("forward", "loss_and_grad", "train_epoch")

_TMP = tempfile.mkdtemp(prefix="fastmlp-fuzz-")


# --- building arrays from a spec ------------------------------------------


def _values(rng, shape, dtype, scale):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind == "u":
        return rng.integers(0, 10, shape).astype(dt)
    if dt.kind == "i":
        return rng.integers(-5, 6, shape).astype(dt)
    if dt.kind == "f":
        return rng.uniform(-scale, scale, shape).astype(dt)
    base = rng.integers(-5, 6, shape)
    if dt.kind == "c":
        return base.astype(dt)
    if dt.kind == "O":
        return base.astype(float).astype(object)
    if dt.kind in "US":
        return base.astype(dt)
    if dt.kind in "mM":
        return base.astype(dt)
    return np.zeros(shape, dt)


def _inject(a, rng, what):
    if what is None or a.dtype.kind != "f" or a.size == 0:
        return a
    value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "overflow": 1e300}[what]
    if what == "overflow" and float(np.finfo(a.dtype).max) < 1e300:
        return a
    a = a.copy()
    a.flat[int(rng.integers(a.size))] = value
    return a


def _layout(a, kind, tag):
    if a.ndim == 0 or a.size == 0 or kind == "c":
        return a
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
        idx = tuple(slice(None, None, 2) for _ in a.shape)
        big[idx] = a
        return big[idx]
    if kind == "neg_rows":
        return a[::-1].copy()[::-1]
    if kind == "neg_all":
        rev = tuple(slice(None, None, -1) for _ in a.shape)
        return a[rev].copy()[rev]
    if kind == "read_only":
        b = a.copy()
        b.flags.writeable = False
        return b
    if kind == "memmap":
        if a.dtype.kind not in "biuf":
            return a
        path = os.path.join(_TMP, f"{tag}-{os.getpid()}.bin")
        mm = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
        mm[...] = a
        mm.flush()
        del mm
        return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)
    if kind == "list":
        return a.tolist() if a.dtype.kind in "biuf" else a
    raise ValueError(kind)


def build_array(desc, tag):
    rng = np.random.default_rng(desc["seed"])
    a = _values(rng, tuple(desc["shape"]), desc["dtype"], desc.get("scale", 1.0))
    a = _inject(a, rng, desc.get("inject"))
    return _layout(a, desc.get("layout", "c"), tag)


def build_targets(desc, loss, n_outputs):
    """y per its kind: labels (1-D class indices), onehot, values, or an arbitrary array."""
    rng = np.random.default_rng(desc["seed"])
    n = desc["rows"]
    kind = desc["kind"]
    if kind == "labels":
        hi = n_outputs + (1 if desc.get("out_of_range") else 0)
        y = rng.integers(0, hi, n)
        if desc.get("out_of_range") and n:
            y[int(rng.integers(n))] = hi - 1 if rng.random() < 0.5 else -1
        y = y.astype(desc["dtype"]) if desc["dtype"] != "bool" else (y % 2).astype(bool)
    elif kind == "onehot":
        y = np.eye(n_outputs)[rng.integers(0, n_outputs, n)].astype(desc["dtype"])
    elif kind == "binary":
        y = (rng.random((n, n_outputs)) < 0.5).astype(desc["dtype"])
    else:
        y = _values(rng, (n, n_outputs) if desc.get("cols") is None else (n, desc["cols"]), desc["dtype"], 2.0)
    y = _inject(y, rng, desc.get("inject"))
    return _layout(y, desc.get("layout", "c"), "y")


def make_network(spec):
    s = spec["net"]
    return fastmlp.Network(
        s["sizes"], activation=s["activation"], output_activation=s["output"], dtype=s["dtype"], seed=s["seed"]
    )


# --- what the documentation promises --------------------------------------


def _array_error(name, V, n_cols, dtype, what):
    """The documented outcome of as_matrix-like checks: (exception type, pattern) or None."""
    kind = V.dtype.kind
    if kind not in "biuf":
        return TypeError, name
    if V.ndim != 2:
        return ValueError, f"{name} must be 2-D"
    if V.shape[0] == 0:
        return ValueError, f"{name} must have at least one sample"
    if V.shape[1] != n_cols:
        return ValueError, f"{name} must have {n_cols}"
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(V.astype(dtype)).all():
            return ValueError, f"{name} must be finite"
    return None


def expected_error(spec, X, y, net):
    Xa = np.asarray(X)
    err = _array_error("X", Xa, net.n_inputs, net.dtype, "features")
    if err or spec["method"] == "forward":
        return err
    Y = np.asarray(y)
    loss = spec["loss"]
    k = net.n_outputs
    if Y.dtype.kind not in "biuf":
        return TypeError, "y"
    if Y.ndim == 1 and loss == "log_loss":
        if Y.dtype.kind == "f":
            return TypeError, "y for log_loss must be integer class indices"
        if Y.shape[0] != Xa.shape[0]:
            return ValueError, "y must have"
        Yi = Y.astype(np.int64)
        if Y.size and (Yi.min() < 0 or Yi.max() >= k):
            return ValueError, "y must hold class indices"
        return None
    if Y.ndim == 1:
        if k != 1:
            return ValueError, "y must be 2-D"
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2:
        return ValueError, "y must be 2-D"
    if Y.shape != (Xa.shape[0], k):
        return ValueError, "y must have shape"
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(Y.astype(net.dtype)).all():
            return ValueError, "y must be finite"
    return None


def _close(got, want, dtype, what, steps=1, drift=0.0):
    # float32 rounding differences grow with every optimizer step an epoch
    # takes (seen: 2e-3 after an epoch on uint8 inputs up to 255). `drift`:
    # an absolute allowance for parameters after Adam steps, see _compare.
    rtol = 1e-9 if dtype == np.float64 else 2e-4 * (1 if steps <= 1 else 10)
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.isfinite(got).all() == np.isfinite(want).all(), (what, got, want)
    scale = max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=max(rtol * scale, drift), err_msg=what)


def run_case(spec):
    """Runs one spec; raises AssertionError if the outcome is not the documented one."""
    net = make_network(spec)
    X = build_array(spec["X"], "X")
    loss = spec.get("loss")
    y = build_targets(spec["y"], loss, net.n_outputs) if spec["method"] != "forward" else None
    err = expected_error(spec, X, y, net)
    before = net.params.copy()
    W = [w.copy() for w in net.weights]
    b = [c.copy() for c in net.biases]
    try:
        if spec["method"] == "forward":
            got = net.forward(X)
        elif spec["method"] == "loss_and_grad":
            got = net.loss_and_grad(X, y, loss)
        else:
            t = spec["train"]
            opt = fastmlp.Adam(t["lr"]) if t["opt"] == "adam" else fastmlp.SGD(t["lr"], momentum=t["momentum"])
            n = np.asarray(X).shape[0] if np.asarray(X).ndim else 0
            order = np.random.default_rng(t["seed"]).permutation(max(n, 1))[:n] if n else np.arange(0)
            got = net.train_epoch(X, y, loss, opt, batch_size=t["batch_size"], order=order if n else None, l2=t["l2"])
    except (TypeError, ValueError) as exc:
        assert err is not None, f"unexpected {type(exc).__name__}: {exc}"
        assert isinstance(exc, err[0]) and err[1] in str(exc), f"expected {err}, got {type(exc).__name__}: {exc}"
        np.testing.assert_array_equal(net.params, before)  # a failed call changes nothing
        return "error"
    assert err is None, f"expected {err}, the call succeeded"
    with np.errstate(all="ignore"):  # valid but extreme targets (1e300) overflow the loss to inf, in both
        return _compare(spec, net, X, y, got, W, b, order if spec["method"] == "train_epoch" else None)


def _compare(spec, net, X, y, got, W, b, order):
    loss = spec.get("loss")
    dtype = net.dtype
    Xv = np.asarray(np.asarray(X), dtype=dtype)
    act, out = spec["net"]["activation"], spec["net"]["output"]
    if spec["method"] == "forward":
        _close(got, ref.predict(W, b, Xv, act, out), dtype, "forward")
        return "ok"
    Y = ref.to_targets(
        np.asarray(y).astype(np.int64) if np.asarray(y).dtype.kind == "b" and loss == "log_loss" else np.asarray(y),
        loss,
        net.n_outputs,
        dtype,
    )
    if spec["method"] == "loss_and_grad":
        value, gW, gb = ref.loss_and_grad(W, b, Xv, Y, loss, act, out)
        _close(got, value, dtype, "loss")
        for l, (g1, g2) in enumerate(zip(net.weight_grads + net.bias_grads, gW + gb)):
            _close(g1, g2, dtype, f"grad {l}")
        return "ok"
    t = spec["train"]
    ref_opt = ref.Adam(t["lr"]) if t["opt"] == "adam" else ref.SGD(t["lr"], momentum=t["momentum"])
    want = ref.train_epoch(W, b, Xv, Y, loss, ref_opt, t["batch_size"], order, act, out, l2=t["l2"])
    # Adam divides by √v: where a float32 gradient is tiny (a saturated tanh,
    # 1 − a² from a ≈ 1) its relative error is large and so is that of the
    # step, whose size is bounded by about lr per step. So float32 parameters
    # after Adam may differ by up to 2·lr per step; everything else is exact.
    # The epoch loss sums each batch's loss taken after the previous steps, so
    # it inherits that drift: seen 1.5 % (4 rows, batch 1, lr 0.1, inputs ×10,
    # a saturated tanh output); it gets 5 % per step of such drift, capped at
    # its own size.
    n_steps = -(-len(Xv) // t["batch_size"])
    drift = 2.0 * t["lr"] * n_steps if (dtype == np.float32 and t["opt"] == "adam") else 0.0
    loss_drift = min(1.0, 0.05 * (n_steps - 1)) * abs(float(want)) if drift else 0.0
    _close(got, want, dtype, "epoch loss", steps=2, drift=loss_drift)
    for l, (p1, p2) in enumerate(zip(net.weights + net.biases, W + b)):
        _close(p1, p2, dtype, f"param {l}", steps=2, drift=drift)
    return "ok"


def main(path):
    """Child process: run every spec in the JSON file; exit 1 on the first wrong outcome."""
    with open(path) as f:
        specs = json.load(f)
    outcomes = {}
    for i, spec in enumerate(specs):
        try:
            r = run_case(spec)
        except AssertionError as exc:
            print(f"case {i} failed: {exc}\n{json.dumps(spec)}", file=sys.stderr)
            return 1
        outcomes[r] = outcomes.get(r, 0) + 1
    print(json.dumps(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
