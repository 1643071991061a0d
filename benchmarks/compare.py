#!/usr/bin/env python
"""Time one epoch of MLP training, a forward pass and a one-row call in fastmlp and its peers.

Peers (each optional: one not installed is a blank cell with a footnote):
fastmlp's Network and estimators; PyTorch eager, with a fused optimizer, under
``torch.compile`` (the model; and the whole train step with compiled
autograd); JAX (a jit-compiled step; a whole epoch as one ``lax.scan``); ONNX
Runtime and OpenVINO f32 (inference, on the network exported by
``fastmlp.export.to_onnx``); scikit-learn and fastmlp's NumPy reference.
Every peer starts from the same initial weights on the same data, and each
row carries a check: the loss after one in-order epoch over the first samples
(training) or the largest |output - fastmlp's| (inference, latency), so the
table shows that the peers computed the same thing.

Every (peer, workload, thread count) runs in a fresh worker subprocess, and
the peers of a (workload, thread count) run one after another: a worker is
started, warmed up, timed for all its repetitions and has exited before the
next one starts (--interleave: the old way, all peers' workers alive at once
and their repetitions interleaved).  Each row of the markdown table is
printed as soon as it is measured, and --json FILE is rewritten after every
row, so a timeout or a kill loses nothing already measured; the summary table
(fastmlp ÷ the best float32 peer) follows at the end.  --cpu avx2 forces the
AVX2 code paths of fastmlp, PyTorch and NumPy on an AVX-512 CPU (JAX, ONNX
Runtime and OpenVINO cannot be forced: they run natively and are marked so).

    python benchmarks/compare.py --quick
    python benchmarks/compare.py --threads 1,2 --json out.json --plot out.png
    python benchmarks/compare.py --cpu avx2 --json avx2.json
    python benchmarks/compare.py --worker torch mnist-sgd --threads 1   # one JSON line
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# --cpu CLASS: the environment that makes every peer run that instruction-set class.
CPU_ENV = {
    "avx2": {
        "FASTMLP_CPU": "avx2",  # fastmlp's avx2 core (dispatch build)
        "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own kernels
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # PyTorch's MKL GEMM
        "OPENBLAS_CORETYPE": "Haswell",
    }
}  # NumPy's OpenBLAS (an AVX2 core type)
GEMM_LIBS = ("fastmlp", "numpy", "torch")  # one worker each, one after another
SETTLE_S = 0.05  # pause between timed runs so the previous worker's threads go idle
# The check column: a peer is marked when its check differs from fastmlp's by more than this.
LOSS_RTOL = 1e-3  # training: |loss - fastmlp's loss| / fastmlp's loss after the check epoch
OUTPUT_ATOL = 1e-4  # inference, latency: max |output - fastmlp's output| (softmax probabilities)


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple[int, ...]
    activation: str
    output: str  # "softmax" (log_loss) or "identity" (squared_error)
    optimizer: tuple  # ("sgd", lr, momentum) or ("adam", lr)
    batch: int
    samples: int  # full run (for a timed workload: the most it may use; latency: calls per repetition)
    quick_samples: int
    warmup_steps: int = 8
    inference: bool = False  # forward only
    latency: bool = False  # forward only, one row per call: reported in µs per call
    timed: bool = False  # full run: as many steps as fit in --wide-seconds
    check_samples: int = 64  # the check: one in-order epoch over these (training) or their outputs

    @property
    def loss(self) -> str:
        return "log_loss" if self.output == "softmax" else "squared_error"

    @property
    def n_weights(self) -> int:
        return sum(a * b for a, b in pairwise(self.sizes))

    @property
    def flops_per_sample(self) -> int:
        """Forward 2·n_weights; training adds the two backward GEMMs: 6·n_weights."""
        return (2 if self.inference else 6) * self.n_weights


MNIST = (784, 256, 128, 10)
SGD = ("sgd", 0.01, 0.9)
WORKLOADS = {
    w.name: w
    for w in (
        Workload("small", (32, 64, 64, 1), "tanh", "identity", SGD, 32, 20_000, 20_000, check_samples=4096),
        Workload("mnist-sgd", MNIST, "relu", "softmax", SGD, 128, 60_000, 16_384, check_samples=4096),
        Workload("mnist-adam", MNIST, "relu", "softmax", ("adam", 1e-3), 128, 60_000, 16_384, check_samples=4096),
        Workload(
            "wide",
            (1024, 4096, 4096, 1024),
            "relu",
            "identity",
            SGD,
            512,
            16_384,
            1_024,
            warmup_steps=1,
            timed=True,
            check_samples=1024,
        ),
        Workload("inference", MNIST, "relu", "softmax", SGD, 1024, 61_440, 20_480, warmup_steps=2, inference=True),
        Workload(
            "latency", MNIST, "relu", "softmax", SGD, 1, 2_000, 300, warmup_steps=200, inference=True, latency=True
        ),
    )
}


def make_data(w: Workload, n: int):
    """Gaussian inputs; targets from a fixed random projection (learnable, seed 0)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, w.sizes[0]), dtype=np.float32)
    proj = rng.standard_normal((w.sizes[0], w.sizes[-1]), dtype=np.float32)
    T = X @ (proj / np.float32(math.sqrt(w.sizes[0])))
    if w.loss == "log_loss":
        return X, T.argmax(axis=1).astype(np.int64)
    return X, np.tanh(T)


def initial_params(w: Workload) -> list[tuple[np.ndarray, np.ndarray]]:
    """The initial weights every peer starts from: Glorot-uniform W (n_in, n_out) and b, float32, seed 1."""
    rng = np.random.default_rng(1)
    params = []
    for a, b in pairwise(w.sizes):
        bound = math.sqrt(6.0 / (a + b))
        params.append(
            (rng.uniform(-bound, bound, (a, b)).astype(np.float32), rng.uniform(-0.1, 0.1, b).astype(np.float32))
        )
    return params


def check_loss(w: Workload, out: np.ndarray, y: np.ndarray) -> float:
    """The loss the peers minimize, computed alike for all from their outputs (float64).

    log_loss: mean over rows of -log p[y]; squared_error: sum((a - y)²) / (2 n k),
    fastmlp's definition (torch's MSELoss / 2).
    """
    out = np.asarray(out, dtype=np.float64).reshape(len(y), -1)
    if w.loss == "log_loss":
        return float(-np.mean(np.log(np.maximum(out[np.arange(len(y)), y], 1e-300))))
    return float(np.mean((out - np.asarray(y, dtype=np.float64).reshape(out.shape)) ** 2) / 2)


# --------------------------------------------------------------------------- peers


class NotAvailable(Exception):
    """The peer is not installed or cannot run this workload: a blank cell with a footnote."""


def require(module: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.split(".")[0] == e.name.split(".")[0]:
            raise NotAvailable(f"{e.name} is not installed") from e
        raise


def import_fastmlp(threads: int):
    fastmlp = require("fastmlp")
    fastmlp.set_num_threads(threads)
    return fastmlp


def fastmlp_variant(fastmlp) -> str:
    sel = getattr(fastmlp, "_selection", None)
    return getattr(sel, "variant", "") or "?"


def torch_capability(torch) -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - an old torch
        return "?"


def load_reference():
    """fastmlp.reference, or the file in this checkout when fastmlp is not importable."""
    try:
        from fastmlp import reference

        return reference
    except Exception:  # noqa: BLE001 - not installed, or its compiled core is broken: the file still works
        pass
    path = REPO / "python" / "fastmlp" / "reference.py"
    if not path.exists():
        raise NotAvailable(f"fastmlp.reference not importable and {path} missing")
    spec = importlib.util.spec_from_file_location("fastmlp_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Peer:
    """One library's way to train an epoch and predict; subclasses import lazily.

    Every peer starts from ``params`` (:func:`initial_params`). ``train_epoch``
    with ``shuffle=False`` visits the samples in order (the check epoch);
    ``predict`` returns the output after the output activation, finished
    (no asynchronous work left); ``output`` turns it into a NumPy array.
    """

    version = ""
    training = True  # trains (the training workloads)
    inference = True  # predicts (inference, latency)
    native_only = False  # ignores --cpu's forcing variables (its own CPU dispatch, no switch)

    def __init__(self, w: Workload, threads: int, params: list):
        self.w = w

    def prepare(self, X, y):
        return X, y

    def rows(self, X) -> list:
        """X's rows (a NumPy array) one by one, as 1-row inputs of predict (latency), made before the timing."""
        return [np.ascontiguousarray(X[i : i + 1]) for i in range(len(X))]

    def train_epoch(self, X, y, shuffle: bool = True):
        raise NotImplementedError

    def predict(self, X):
        raise NotImplementedError

    def output(self, out) -> np.ndarray:
        return np.asarray(out)

    def describe(self) -> dict:
        return {}


def torch_optimizer(torch, w: Workload, params, **options):
    kind, lr, *rest = w.optimizer
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=rest[0], **options)
    return torch.optim.Adam(params, lr=lr, **options)


class TorchPeer(Peer):
    """PyTorch eager: nn.Sequential, zero_grad/backward/step, batches from a randperm."""

    training_only = False

    compiles = False  # torch.compile: its compile workers must not outlive the compilation

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        if self.compiles:  # compile in-process: inductor's pool of compile subprocesses otherwise stays
            os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # alive beside the timed run (2x slower)
        torch = self.torch = require("torch")
        self.version = torch.__version__
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[w.activation]
        layers = []
        for W, b in params:
            linear = torch.nn.Linear(*W.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.T.copy()))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, act()]
        self.model = torch.nn.Sequential(*layers[:-1])
        self.opt = self.make_optimizer()
        # fastmlp's losses: mean cross-entropy; squared error sum((a - y)²) / (2 n k) = MSELoss / 2
        if w.loss == "log_loss":
            self.loss_fn = torch.nn.CrossEntropyLoss()
        else:
            mse = torch.nn.MSELoss()
            self.loss_fn = lambda out, y: 0.5 * mse(out, y)
        self.step = self.make_step()
        self.forward = self.model

    def make_optimizer(self):
        return torch_optimizer(self.torch, self.w, self.model.parameters())

    def make_step(self):
        def step(xb, yb):
            self.opt.zero_grad()
            loss = self.loss_fn(self.model(xb), yb)
            loss.backward()
            self.opt.step()

        return step

    def prepare(self, X, y):
        return self.torch.from_numpy(X), self.torch.from_numpy(y)

    def rows(self, X):
        return [self.torch.from_numpy(np.ascontiguousarray(X[i : i + 1])) for i in range(len(X))]

    def describe(self):
        return {"cpu_capability": torch_capability(self.torch)}

    def train_epoch(self, X, y, shuffle=True):
        n, b = len(X), self.w.batch
        perm = self.torch.randperm(n) if shuffle else None
        for i in range(0, n, b):
            if perm is None:
                self.step(X[i : i + b], y[i : i + b])
            else:
                idx = perm[i : i + b]
                self.step(X[idx], y[idx])

    def predict(self, X):
        with self.torch.inference_mode():
            out = self.forward(X)
            return self.torch.softmax(out, dim=1) if self.w.output == "softmax" else out

    def output(self, out):
        return out.detach().numpy()


class TorchFusedPeer(TorchPeer):
    """PyTorch eager with a fused optimizer: ``fused=True``, or ``foreach=True`` where this build
    has no fused CPU kernel (describe() says which ran)."""

    inference = False  # the same forward as `torch`

    def make_optimizer(self):
        torch = self.torch
        probe = torch.nn.Parameter(torch.zeros(2))
        probe.grad = torch.zeros(2)
        try:  # one step on a scratch parameter: a build without the fused CPU kernel raises here, not later
            torch_optimizer(torch, self.w, [probe], fused=True).step()
            self.fused = "fused=True"
        except (RuntimeError, ValueError, TypeError):
            self.fused = "foreach=True"
            return torch_optimizer(torch, self.w, self.model.parameters(), foreach=True)
        return torch_optimizer(torch, self.w, self.model.parameters(), fused=True)

    def describe(self):
        return {**super().describe(), "optimizer": self.fused}


class TorchBf16Peer(TorchPeer):
    """PyTorch eager under CPU autocast to bfloat16 (``torch.autocast("cpu", dtype=torch.bfloat16)``):
    the linear layers in bf16, float32 master weights and optimizer (PyTorch's mixed precision)."""

    def make_step(self):
        torch = self.torch

        def step(xb, yb):
            self.opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = self.model(xb)
            loss = self.loss_fn(out.float(), yb)
            loss.backward()
            self.opt.step()

        return step

    def predict(self, X):
        torch = self.torch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.forward(X).float()
            return torch.softmax(out, dim=1) if self.w.output == "softmax" else out


class TorchCompilePeer(TorchPeer):
    """``torch.compile(model)`` (mode default): forward and its backward compiled (AOTAutograd), eager optimizer."""

    compiles = True

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        self.forward = self.torch.compile(self.model)
        self.compiled = self.torch.compile(self.model)

    def make_step(self):
        def step(xb, yb):
            self.opt.zero_grad()
            loss = self.loss_fn(self.compiled(xb), yb)
            loss.backward()
            self.opt.step()

        return step


class TorchCompileStepPeer(TorchPeer):
    """The whole train step (forward, loss, backward, optimizer step) under ``torch.compile``,
    with ``torch._dynamo.config.compiled_autograd = True`` (the backward traced too)."""

    inference = False  # its forward is torch-compile's
    compiles = True

    def make_step(self):
        torch = self.torch
        torch._dynamo.config.compiled_autograd = True

        def step(xb, yb):
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(xb), yb)
            loss.backward()
            self.opt.step()

        return torch.compile(step)


def xla_flags(threads: int) -> str:
    """XLA's CPU thread option for `threads`, appended to the caller's XLA_FLAGS (once)."""
    own = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
    have = os.environ.get("XLA_FLAGS", "")
    return have if own in have.split() else f"{have} {own}".strip()


def limit_affinity(threads: int) -> str:
    """Restrict this process to `threads` CPUs (what bounds XLA's CPU thread pool); the CPUs kept."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
    return ",".join(map(str, sorted(os.sched_getaffinity(0))))


class JaxPeer(Peer):
    """JAX: one ``jax.jit`` train step (value_and_grad + the optimizer, fastmlp's formulas), the
    batch gathered inside the step from a host permutation; ``jax-scan`` runs the epoch's full
    batches as one ``lax.scan`` (the last, partial, batch through the step)."""

    native_only = True
    scan = False

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        # XLA sizes its CPU thread pool from the CPUs it may run on: the affinity is what limits it
        self.cpus = limit_affinity(threads)
        jax = self.jax = require("jax")
        jnp = self.jnp = jax.numpy
        self.version = jax.__version__
        self.params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params]
        self.rng = np.random.default_rng(0)
        act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[w.activation]
        kind, lr, *rest = w.optimizer

        def logits(p, X):
            for W, b in p[:-1]:
                X = act(X @ W + b)
            W, b = p[-1]
            return X @ W + b

        def loss(p, X, y):
            z = logits(p, X)
            if w.loss == "log_loss":
                return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))
            return 0.5 * jnp.mean((z - y) ** 2)

        if kind == "sgd":  # v ← μv − ηg, p ← p + v
            state0 = jax.tree_util.tree_map(jnp.zeros_like, self.params)

            def update(p, s, g):
                s = jax.tree_util.tree_map(lambda v, gi: rest[0] * v - lr * gi, s, g)
                return jax.tree_util.tree_map(lambda pi, v: pi + v, p, s), s

        else:  # Adam as fastmlp: p ← p − η √(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε)
            zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, self.params)  # noqa: E731 - two distinct buffers
            state0 = (zeros(), zeros(), jnp.zeros((), jnp.float32))

            def update(p, s, g):
                m, v, t = s
                t = t + 1
                m = jax.tree_util.tree_map(lambda mi, gi: 0.9 * mi + 0.1 * gi, m, g)
                v = jax.tree_util.tree_map(lambda vi, gi: 0.999 * vi + 0.001 * gi * gi, v, g)
                rate = lr * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
                p = jax.tree_util.tree_map(lambda pi, mi, vi: pi - rate * mi / (jnp.sqrt(vi) + 1e-8), p, m, v)
                return p, (m, v, t)

        self.state = state0

        def step(p, s, X, y, idx):
            g = jax.grad(loss)(p, X[idx], y[idx])
            return update(p, s, g)

        def epoch(p, s, X, y, idx):  # idx: (steps, batch)
            def body(carry, rows):
                return step(*carry, X, y, rows), None

            return jax.lax.scan(body, (p, s), idx)[0]

        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.epoch = jax.jit(epoch, donate_argnums=(0, 1))
        out = jax.nn.softmax if w.output == "softmax" else (lambda z: z)
        self.forward = jax.jit(lambda p, X: out(logits(p, X)))

    def prepare(self, X, y):
        y = y.astype(np.int32) if self.w.loss == "log_loss" else y
        return self.jax.device_put(X), self.jax.device_put(y)

    def rows(self, X):
        return [self.jax.device_put(np.asarray(X[i : i + 1])) for i in range(len(X))]

    def train_epoch(self, X, y, shuffle=True):
        n, b = len(X), self.w.batch
        order = (self.rng.permutation(n) if shuffle else np.arange(n)).astype(np.int32)
        full = n // b * b
        p, s = self.params, self.state
        if self.scan and full:
            p, s = self.epoch(p, s, X, y, order[:full].reshape(-1, b))
            start = full
        else:
            start = 0
        for i in range(start, n, b):
            p, s = self.step(p, s, X, y, order[i : i + b])
        self.params, self.state = self.jax.block_until_ready((p, s))

    def predict(self, X):
        return self.forward(self.params, X).block_until_ready()

    def describe(self):
        return {"devices": str(self.jax.devices()), "cpus": self.cpus, "xla_flags": os.environ.get("XLA_FLAGS", "")}


class JaxScanPeer(JaxPeer):
    inference = False  # the same forward as `jax`
    scan = True


def export_onnx(w: Workload, params: list, threads: int) -> str:
    """The network with `params`, exported by ``fastmlp.export.to_onnx`` to a temporary file."""
    fastmlp = require("fastmlp")
    require("onnx")
    from fastmlp.export import to_onnx

    net = fastmlp.Network(list(w.sizes), activation=w.activation, output_activation=w.output, dtype="float32")
    for l, (W, b) in enumerate(params):
        net.weights[l][...] = W
        net.biases[l][...] = b
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    to_onnx(net, path)
    return path


class OrtPeer(Peer):
    """ONNX Runtime's CPU provider, ``intra_op_num_threads`` = the thread count, all graph optimizations."""

    training = False
    native_only = True

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        ort = require("onnxruntime")
        self.version = ort.__version__
        path = export_onnx(w, params, threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        os.unlink(path)

    def predict(self, X):
        return self.session.run(["Y"], {"X": X})[0]

    def describe(self):
        return {"providers": self.session.get_providers()}


class OpenVinoPeer(Peer):
    """OpenVINO's CPU plugin, ``INFERENCE_PRECISION_HINT`` f32 (no bf16), ``INFERENCE_NUM_THREADS``."""

    training = False
    native_only = True
    precision_hint = "f32"

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        ov = require("openvino")
        self.version = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()
        path = export_onnx(w, params, threads)
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": self.precision_hint, "INFERENCE_NUM_THREADS": threads}
        self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        os.unlink(path)
        self.request = self.compiled.create_infer_request()

    def predict(self, X):
        self.request.infer({0: X})
        return self.request.get_output_tensor(0).data

    def output(self, out):
        return np.array(out)  # a view of the request's buffer, overwritten by the next call

    def describe(self):
        return {
            k: str(self.compiled.get_property(k))
            for k in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT")
        }


class OpenVinoBf16Peer(OpenVinoPeer):
    """OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT`` bf16 (its default on CPUs with AMX)."""

    precision_hint = "bf16"


class EstimatorPeer(Peer):
    """scikit-learn's MLPClassifier/MLPRegressor API: one fit() with max_iter=1 is one epoch.

    warm_start=True so that a timed fit continues from the warm-up's weights
    instead of re-initialising them: the time is the epoch's, not the set-up's.
    A first fit on 1,024 samples makes the estimator (classes, shapes), then its
    coefs_/intercepts_ are overwritten with the common initial weights.
    """

    def load(self, threads):
        sklearn = require("sklearn")
        self.version = sklearn.__version__
        return require("sklearn.neural_network")

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        module = self.load(threads)
        cls = module.MLPClassifier if w.loss == "log_loss" else module.MLPRegressor
        kind, lr, *rest = w.optimizer
        if kind == "sgd" and w.loss == "squared_error":  # scikit-learn's gradient is k times fastmlp's
            lr /= w.sizes[-1]  # (the sum over the k outputs): the same SGD steps at lr / k
        solver = (
            {"solver": "sgd", "momentum": rest[0], "nesterovs_momentum": False, "learning_rate": "constant"}
            if kind == "sgd"
            else {"solver": "adam"}
        )
        self.est = cls(
            hidden_layer_sizes=w.sizes[1:-1],
            activation=w.activation,
            learning_rate_init=lr,
            batch_size=min(w.batch, 200) if w.latency else w.batch,
            alpha=0.0,
            tol=0.0,
            max_iter=1,
            shuffle=True,
            random_state=0,
            warm_start=True,
            **solver,
        )
        self.params = params

    def prepare(self, X, y):
        y = y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y
        self.train_epoch(X[:1024], y[:1024])  # makes the estimator; its weights are replaced below
        for l, (W, b) in enumerate(self.params):
            self.est.coefs_[l][...] = W
            self.est.intercepts_[l][...] = b
        return X, y

    def train_epoch(self, X, y, shuffle=True):
        self.est.shuffle = shuffle
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Mm]aximum iterations")
            self.est.fit(X, y)

    def predict(self, X):
        return self.est.predict_proba(X) if self.w.loss == "log_loss" else self.est.predict(X)

    def describe(self):
        coefs = getattr(self.est, "coefs_", None)
        return {"coef_dtype": str(coefs[0].dtype)} if coefs else {}


class FastmlpEstimatorPeer(EstimatorPeer):
    def load(self, threads):
        fastmlp = import_fastmlp(threads)
        self.version = getattr(fastmlp, "__version__", "")
        if not hasattr(fastmlp, "MLPClassifier"):
            raise NotAvailable("fastmlp has no MLPClassifier yet")
        return fastmlp


class FastmlpPeer(Peer):
    precision = None  # the products' precision: None (float32) or "bf16"

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        fastmlp = self.fastmlp = import_fastmlp(threads)
        self.version = getattr(fastmlp, "__version__", "")
        options = {} if self.precision is None else {"precision": self.precision}
        self.net = fastmlp.Network(
            list(w.sizes), activation=w.activation, output_activation=w.output, dtype="float32", seed=0, **options
        )
        for l, (W, b) in enumerate(params):
            self.net.weights[l][...] = W
            self.net.biases[l][...] = b
        kind, lr, *rest = w.optimizer
        self.opt = fastmlp.SGD(lr=lr, momentum=rest[0], nesterov=False) if kind == "sgd" else fastmlp.Adam(lr=lr)

    def train_epoch(self, X, y, shuffle=True):
        self.net.train_epoch(X, y, loss=self.w.loss, optimizer=self.opt, batch_size=self.w.batch, shuffle=shuffle)

    def predict(self, X):
        return self.net.forward(X)

    def describe(self):
        info = {
            "dtype": str(getattr(self.net, "dtype", "?")),
            "fastmlp_threads": getattr(self.fastmlp, "get_num_threads", lambda: None)(),
            "variant": fastmlp_variant(self.fastmlp),
        }
        if self.precision is not None:
            info["bf16_kernel"] = self.fastmlp._core.build_info().get("bf16_kernel", "?")
        return info


class FastmlpBf16Peer(FastmlpPeer):
    """fastmlp with ``precision="bf16"``: bf16 operands, float32 accumulation (describe() names the kernel)."""

    precision = "bf16"

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        if not hasattr(self.net, "precision"):
            raise NotAvailable("this fastmlp has no precision='bf16'")


class NumpyPeer(Peer):
    """fastmlp.reference: the NumPy oracle."""

    def __init__(self, w, threads, params):
        super().__init__(w, threads, params)
        self.ref = load_reference()
        self.version = np.__version__
        self.rng = np.random.default_rng(0)
        self.weights = [W.copy() for W, _ in params]
        self.biases = [b.copy() for _, b in params]
        kind, lr, *rest = w.optimizer
        self.opt = self.ref.SGD(lr, rest[0], False) if kind == "sgd" else self.ref.Adam(lr)

    def prepare(self, X, y):
        if self.w.loss == "log_loss":
            y = np.eye(self.w.sizes[-1], dtype=np.float32)[y]
        return X, y

    def train_epoch(self, X, y, shuffle=True):
        order = self.rng.permutation(len(X)) if shuffle else np.arange(len(X))
        self.ref.train_epoch(
            self.weights,
            self.biases,
            X,
            y,
            self.w.loss,
            self.opt,
            self.w.batch,
            order,
            self.w.activation,
            self.w.output,
        )

    def predict(self, X):
        return self.ref.predict(self.weights, self.biases, X, self.w.activation, self.w.output)


PEERS = {
    "fastmlp": FastmlpPeer,
    "fastmlp-est": FastmlpEstimatorPeer,
    "torch": TorchPeer,
    "torch-fused": TorchFusedPeer,
    "torch-compile": TorchCompilePeer,
    "torch-compile-step": TorchCompileStepPeer,
    "jax": JaxPeer,
    "jax-scan": JaxScanPeer,
    "onnxruntime": OrtPeer,
    "openvino": OpenVinoPeer,
    "sklearn": EstimatorPeer,
    "numpy": NumpyPeer,
    "fastmlp-bf16": FastmlpBf16Peer,
    "torch-bf16": TorchBf16Peer,
    "openvino-bf16": OpenVinoBf16Peer,
}
PEER_NAMES = tuple(PEERS)
# The bfloat16 rows: never a float32 "best peer"; their own table (bf16_table), not in the default run.
BF16 = ("fastmlp-bf16", "torch-bf16", "openvino-bf16")
DEFAULT_PEERS = [p for p in PEER_NAMES if p not in BF16]
# Not peers: fastmlp itself and its own estimator (the "best peer" is chosen among the others).
OURS = ("fastmlp", "fastmlp-est")
# The latency workload's peers (the deployment paths); the estimators' single-row overhead is another issue's.
LATENCY_PEERS = ("fastmlp", "torch", "torch-compile", "jax", "onnxruntime", "openvino", "numpy", *BF16)


def applies(peer: str, w: Workload) -> bool:
    """Whether `peer` runs workload `w` (a peer that does not is left out, not an n/a row)."""
    cls = PEERS[peer]
    if w.latency and peer not in LATENCY_PEERS:
        return False
    return cls.inference if w.inference else cls.training


# --------------------------------------------------------------------------- worker side


class Bench:
    """Data and model of one peer on one workload; checks it, then times whole runs of it."""

    def __init__(self, peer: str, w: Workload, threads: int, quick: bool, seconds: float):
        self.w = w
        self.pool = w.quick_samples if quick else w.samples
        self.n = self.pool
        self.seconds = seconds if (w.timed and not quick) else 0.0
        self.n_check = min(w.check_samples // (4 if quick and not w.inference else 1), self.pool)
        X, y = make_data(w, max(self.pool, self.n_check))
        self.peer = PEERS[peer](w, threads, initial_params(w))
        self.y_check = y[: self.n_check]
        self.X, self.y = self.peer.prepare(X, y)
        self.X_rows = self.peer.rows(X[: self.pool]) if w.latency else None

    def steps(self, n: int) -> int:
        return -(-n // self.w.batch)

    def check(self) -> dict:
        """Before any other step: training, one in-order epoch over the first n_check samples from the
        initial weights, then the loss on them; inference, the outputs for the first n_check rows
        (latency: one row per call)."""
        n, w = self.n_check, self.w
        if not w.inference:
            self.peer.train_epoch(self.X[:n], self.y[:n], shuffle=False)
            return {"check_loss": check_loss(w, self.peer.output(self.peer.predict(self.X[:n])), self.y_check)}
        if w.latency:
            out = np.concatenate([self.peer.output(self.peer.predict(r)).reshape(1, -1) for r in self.X_rows[:n]])
        else:
            out = self.peer.output(self.peer.predict(self.X[:n]))
        out = np.asarray(out, dtype=np.float64).reshape(n, -1)
        return {"check_output": out.ravel().tolist(), "check_loss": check_loss(w, out, self.y_check)}

    def _run(self, n: int) -> tuple[float, float]:
        """Wall and CPU seconds (all threads) of one pass over the first n samples."""
        b = self.w.batch
        start, cpu = time.perf_counter(), time.process_time()
        if self.w.latency:
            for row in self.X_rows[:n]:
                self.peer.predict(row)
        elif self.w.inference:
            for i in range(0, n, b):
                self.peer.predict(self.X[i : i + b])
        else:
            self.peer.train_epoch(self.X[:n], self.y[:n])
        return time.perf_counter() - start, time.process_time() - cpu

    def warmup(self) -> dict:
        check = self.check()
        # the warm-up ends with a batch of the size the timed epoch ends with (compiled peers specialize on it)
        n = min(self.pool, self.w.warmup_steps * self.w.batch)
        n = min(self.pool, n + self.pool % self.w.batch) if self.pool % self.w.batch else n
        self._run(n)
        if self.seconds:  # size the timed epoch from a second, warm, run
            per_step = self._run(n)[0] / self.steps(n)
            fit = max(1, min(int(self.seconds / per_step), self.pool // self.w.batch))
            self.n = fit * self.w.batch
        return {
            "version": self.peer.version,
            "samples_per_rep": self.n,
            "blas_threads": blas_threads(),
            **self.peer.describe(),
            **check,
        }

    def run_once(self) -> dict:
        seconds, cpu_seconds = self._run(self.n)
        return {"seconds": seconds, "cpu_seconds": cpu_seconds, "samples": self.n, "steps": self.steps(self.n)}


def blas_threads() -> dict:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    return {f"{i['internal_api']}:{Path(i['filepath']).name}": i["num_threads"] for i in threadpool_info()}


def protocol_stream():
    """Private stdout for the JSON lines; fd 1 becomes stderr so stray prints cannot interfere."""
    out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    return send


def worker_env(threads: int, cpu: str | None = None) -> dict:
    """This environment plus the thread-count variables (XLA's too) and --cpu's forcing variables."""
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}, "XLA_FLAGS": xla_flags(threads)}
    if cpu:
        env.update(CPU_ENV[cpu])
    return env


def inherited_forcing() -> dict:
    """Forcing variables already set in the caller's environment (they reach the workers)."""
    names = sorted({n for forcing in CPU_ENV.values() for n in forcing})
    return {n: os.environ[n] for n in names if n in os.environ}


def ensure_worker_env(threads: int, cpu: str | None):
    """Re-exec with the thread (and --cpu) variables set: BLAS reads them when numpy loads."""
    env = worker_env(threads, cpu)
    if any(os.environ.get(k) != env.get(k) for k in (*THREAD_VARS, "XLA_FLAGS", *CPU_ENV.get(cpu or "", {}))):
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def worker_main(args) -> int:
    ensure_worker_env(args.threads, args.cpu)
    send = protocol_stream()
    peer, workload = args.worker
    if not applies(peer, WORKLOADS[workload]):
        send({"status": "n/a", "reason": f"{peer} does not run the {workload} workload"})
        return 0
    try:
        bench = Bench(peer, WORKLOADS[workload], args.threads, args.quick, args.wide_seconds)
    except NotAvailable as e:
        send({"status": "n/a", "reason": str(e)})
        return 0
    if not args.serve:  # stand-alone: warm up, time the repetitions, one JSON line
        info = bench.warmup()
        reps = [bench.run_once() for _ in range(args.reps)]
        row = Row(workload, args.threads, peer, info=info, reps=reps)
        send({**asdict(row), **row.summary()})
        return 0
    send({"status": "loaded"})
    for line in sys.stdin:  # serve the driver: "warmup" once, then "run" per repetition
        command = line.strip()
        if command == "warmup":
            send({"status": "ready", **bench.warmup()})
        elif command == "run":
            send(bench.run_once())
        else:
            break
    return 0


def gemm_worker_main(args) -> int:
    """Best float32 GFLOP/s of one library's n×n product at n = 1024 and 2048.

    numpy: ``a @ b``; torch: ``torch.mm``; fastmlp: ``Network([n, n]).forward(X)``
    with identity activations (one n³ GEMM plus a bias add).  One library per
    process, so no other library's idle threads spin beside it.
    """
    ensure_worker_env(args.threads, args.cpu)
    send = protocol_stream()
    lib = args.gemm_worker
    rng = np.random.default_rng(0)
    try:
        if lib == "numpy":

            def product(n):
                b = rng.standard_normal((n, n), dtype=np.float32)
                return lambda a: a @ b

            info = {"version": np.__version__, "blas": blas_info()}
        elif lib == "torch":
            torch = require("torch")
            torch.set_num_threads(args.threads)

            def product(n):
                b = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
                return lambda a: torch.mm(a, b)

            info = {"version": torch.__version__, "cpu_capability": torch_capability(torch)}
        else:
            fastmlp = import_fastmlp(args.threads)

            def product(n):
                net = fastmlp.Network(
                    [n, n], activation="identity", output_activation="identity", dtype="float32", seed=0
                )
                return net.forward

            info = {"version": getattr(fastmlp, "__version__", ""), "variant": fastmlp_variant(fastmlp)}
    except NotAvailable as e:
        send({"status": "n/a", "reason": str(e)})
        return 0
    result = {}
    for n in (1024, 2048):
        a = rng.standard_normal((n, n), dtype=np.float32)
        if lib == "torch":
            a = torch.from_numpy(a)
        mm = product(n)
        mm(a)
        tries = (4 if n == 2048 else 12) // (2 if args.quick else 1)
        best = min(timed(mm, a) for _ in range(tries))
        result[f"{lib} {n}³"] = 2 * n**3 / best / 1e9
    send({"status": "ok", "gflops": result, "info": info})
    return 0


def blas_info() -> list:
    """threadpoolctl's view of the loaded BLAS (its architecture shows OPENBLAS_CORETYPE)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in threadpool_info()
    ]


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- driver side


class WorkerError(Exception):
    pass


class Worker:
    """A worker subprocess answering one JSON line per request, each within a timeout."""

    def __init__(self, argv: list[str], threads: int, timeout: float, cpu: str | None = None):
        self.timeout = timeout
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        argv = [*argv, "--cpu", cpu] if cpu else argv
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=worker_env(threads, cpu),
        )

    def request(self, command: str | None = None) -> dict:
        try:
            if command:
                self.proc.stdin.write(command + "\n")
                self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died; readline below reports how
        if not select.select([self.proc.stdout], [], [], self.timeout)[0]:
            self.close(kill=True)
            raise WorkerError(f"timed out after {self.timeout:g} s")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise WorkerError(f"exited with status {code}: {self.stderr_tail()}")
        return json.loads(line)

    def stderr_tail(self) -> str:
        """The worker's last exception line ("...Error: ..."), else its last line of stderr."""
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        errors = [x for x in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", x)]
        return (errors or lines or ["(no output)"])[-1]

    def close(self, kill: bool = False):
        if kill and self.proc.poll() is None:
            self.proc.kill()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@dataclass
class Row:
    workload: str
    threads: int
    peer: str
    status: str = "ok"  # ok | n/a | error
    reason: str = ""
    info: dict = field(default_factory=dict)
    reps: list = field(default_factory=list)
    check: dict = field(default_factory=dict)  # check_result() against fastmlp's row

    def fail(self, status: str, reason: str):
        self.status, self.reason = status, reason

    def summary(self) -> dict:
        if self.status != "ok" or not self.reps:
            return {}
        w = WORKLOADS[self.workload]
        rate = statistics.median(r["samples"] / r["seconds"] for r in self.reps)
        step = statistics.median(r["seconds"] / r["steps"] for r in self.reps)
        return {"samples_per_s": rate, "ms_per_step": 1e3 * step, "gflops": w.flops_per_sample * rate / 1e9}


def check_result(w: Workload, info: dict, ours: dict | None) -> dict:
    """This peer's check against fastmlp's (``ours``: fastmlp's worker info, or None).

    Training: the loss after the in-order check epoch, within LOSS_RTOL of
    fastmlp's. Inference and latency: max |output - fastmlp's output| on the
    check rows, within OUTPUT_ATOL. ``ok`` is None where there is nothing to
    compare with (no fastmlp row, or the peer did not report a check).
    """
    ours = ours or {}
    if w.inference:
        mine, theirs = info.get("check_output"), ours.get("check_output")
        if mine is None or theirs is None or len(mine) != len(theirs):
            return {"kind": "max |Δ|", "value": None, "ok": None}
        diff = float(np.max(np.abs(np.asarray(mine) - np.asarray(theirs))))
        return {"kind": "max |Δ|", "value": diff, "ok": bool(diff <= OUTPUT_ATOL)}
    loss, ref = info.get("check_loss"), ours.get("check_loss")
    ok = None if loss is None or ref is None else bool(abs(loss - ref) <= LOSS_RTOL * abs(ref))
    return {"kind": "loss", "value": loss, "ok": ok}


def best_peer(
    rates: dict[str, float | None], excluded: set[str] | frozenset[str] = frozenset()
) -> tuple[str | None, float | None]:
    """The fastest peer (highest samples/s or calls/s) that counts, and its rate.

    fastmlp's own rows (OURS), peers without a rate (n/a, error) and
    `excluded` (failed their check, or not forced under --cpu) do not count.
    """
    eligible = {p: r for p, r in rates.items() if r and p not in OURS and p not in BF16 and p not in excluded}
    if not eligible:
        return None, None
    name = max(eligible, key=eligible.get)
    return name, eligible[name]


def ratio_to_best(
    rates: dict[str, float | None], excluded: set[str] | frozenset[str] = frozenset()
) -> tuple[str | None, float | None]:
    """(the best peer, fastmlp's rate ÷ its rate): above 1, fastmlp is faster (latency too: calls/s)."""
    name, rate = best_peer(rates, excluded)
    ours = rates.get("fastmlp")
    return name, (ours / rate if ours and rate else None)


def run_group(w: Workload, threads: int, peers: list[str], args) -> list[Row]:
    """Start the peers' workers, warm each up in turn, then interleave the repetitions.

    With one peer (the default, see run_workload) this is: start its worker,
    warm up, time all repetitions, wait for the worker to exit.
    """
    rows = {p: Row(w.name, threads, p) for p in peers}
    flags = ["--threads", str(threads), "--wide-seconds", str(args.wide_seconds), "--serve"]
    flags += ["--quick"] if args.quick else []
    workers = {p: Worker(["--worker", p, w.name, *flags], threads, args.timeout, args.cpu) for p in peers}

    def ask(p, command=None):
        try:
            return workers[p].request(command)
        except WorkerError as e:
            rows[p].fail("error", str(e))
            workers.pop(p).close()

    try:
        for p in peers:  # loading runs concurrently; warm-ups (which may calibrate) one by one
            msg = ask(p)
            if msg and msg["status"] == "n/a":
                rows[p].fail("n/a", msg["reason"])
                workers.pop(p).close()
        for p in list(workers):
            msg = ask(p, "warmup")
            if msg:
                rows[p].info = {k: v for k, v in msg.items() if k != "status"}
        for rep in range(args.reps):  # rotate the order so no peer always runs first
            alive = list(workers)
            k = rep % len(alive) if alive else 0
            for p in alive[k:] + alive[:k]:
                time.sleep(SETTLE_S)
                msg = ask(p, "run")
                if msg:
                    rows[p].reps.append(msg)
    finally:  # also on KeyboardInterrupt: no worker outlives the driver
        for worker in workers.values():
            worker.close(kill=sys.exc_info()[0] is not None)
    return list(rows.values())


def run_workload(w: Workload, threads: int, peers: list[str], args, emit) -> list[Row]:
    """All peers on one (workload, thread count); emit(row) as each row is complete.

    Default: the peers strictly one after another, each worker gone before the
    next starts. --interleave: all workers at once, repetitions interleaved.
    """
    if args.interleave:
        rows = run_group(w, threads, peers, args)
        for row in rows:
            emit(row)
        return rows
    rows = []
    for p in peers:
        time.sleep(SETTLE_S)
        rows += run_group(w, threads, [p], args)
        emit(rows[-1])
    return rows


def measure_gemm(threads: int, args) -> dict:
    """{"gflops": {"lib n³": GFLOP/s}, "info": {lib: ...}}; the libraries one after another."""
    out = {"gflops": {}, "info": {}}
    for lib in GEMM_LIBS:
        argv = ["--gemm-worker", lib, "--threads", str(threads)] + (["--quick"] if args.quick else [])
        worker = Worker(argv, threads, args.timeout, args.cpu)
        try:
            msg = worker.request()
        except WorkerError as e:
            print(f"GEMM peak ({lib}, {threads} threads): {e}", file=sys.stderr)
            continue
        finally:
            worker.close()
        if msg.get("status") == "ok":
            out["gflops"].update(msg["gflops"])
            out["info"][lib] = msg["info"]
        else:
            print(f"GEMM peak ({lib}, {threads} threads): {msg.get('reason')}", file=sys.stderr)
    return out


def check_cpu_forcing(cpu: str) -> dict:
    """What --cpu's environment makes each library choose; SystemExit if fastmlp cannot comply."""
    probe = r"""
import json, sys
out = {}
try:
    import fastmlp
    out["fastmlp"] = fastmlp._selection.variant
except ModuleNotFoundError:
    out["fastmlp"] = "not installed"
except ImportError as e:
    print(json.dumps({"fastmlp_error": str(e)})); sys.exit(0)
try:
    import torch
    out["torch"] = torch.backends.cpu.get_cpu_capability()
except Exception:
    out["torch"] = "n/a"
try:
    from threadpoolctl import threadpool_info
    out["numpy"] = ", ".join(dict.fromkeys(f"{i['internal_api']} {i.get('architecture')}"
                             for i in threadpool_info() if i["user_api"] == "blas")) or "?"
except ImportError:
    out["numpy"] = "? (threadpoolctl not installed)"
print(json.dumps(out))
"""
    run = subprocess.run(
        [sys.executable, "-c", probe], env=worker_env(1, cpu), capture_output=True, text=True, timeout=300
    )
    try:
        found = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        sys.exit(f"--cpu {cpu}: the probe of the forced environment failed: {run.stderr.strip()}")
    if "fastmlp_error" in found:
        sys.exit(
            f"--cpu {cpu}: the installed fastmlp has no {cpu} variant it can load "
            f"({found['fastmlp_error']}). Install a build with CPU variants: "
            "pip install . -C cmake.define.FASTMLP_DISPATCH=ON (or the wheel)."
        )
    return found


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    """lscpu's "Model name" (/proc/cpuinfo's "model name" where lscpu is missing)."""
    if shutil.which("lscpu"):
        try:
            out = subprocess.run(
                ["lscpu"], capture_output=True, text=True, timeout=30, env={**os.environ, "LC_ALL": "C"}
            )
            for line in out.stdout.splitlines():
                if line.startswith("Model name:"):
                    return line.split(":", 1)[1].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Distributions whose versions the header lists (the workers' own are in each row's info).
DISTRIBUTIONS = (
    ("torch", "torch"),
    ("jax", "jax"),
    ("jaxlib", "jaxlib"),
    ("onnxruntime", "onnxruntime"),
    ("openvino", "openvino"),
    ("sklearn", "scikit-learn"),
    ("fastmlp", "fastmlp"),
)


def versions() -> dict:
    """Installed versions, as the driver sees them (the workers' own are in each row's info)."""
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for name, dist in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "n/a"
    return found


FASTMLP_PROBE = r"""
import json
try:
    import fastmlp
    from fastmlp import _config, _core
except ImportError as e:
    print(json.dumps({"error": str(e)})); raise SystemExit(0)
c = _config.config()
info = _core.build_info()
out = {k: c.get(k) for k in ("fastmlp", "variant", "module", "variant_reason", "gemm")}
for source in (c, info):  # a "gemm kernel" entry (the GEMM layer), wherever it is reported
    out.update({k: str(v) for k, v in source.items() if ("gemm" in k or "kernel" in k) and k not in out})
print(json.dumps(out))
"""


def probe_fastmlp(threads: int, cpu: str | None) -> dict:
    """What fastmlp runs in the workers' environment: variant (and why), the GEMM (and any "gemm
    kernel" entry of build_info), from ``fastmlp._config.config()`` in a child process."""
    try:
        run = subprocess.run(
            [sys.executable, "-c", FASTMLP_PROBE],
            env=worker_env(threads, cpu),
            capture_output=True,
            text=True,
            timeout=300,
        )
        return json.loads(run.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, IndexError, json.JSONDecodeError) as e:
        return {"error": f"the fastmlp probe failed: {e}"}


def fmt(x: float, digits: int = 3) -> str:
    if not x:
        return ""
    if x >= 10**digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def gemm_table(gemm: dict) -> list[str]:
    """One line per thread count: each library's rate, the peers' peak, fastmlp's share of it."""
    kinds = sorted({k for g in gemm.values() for k in g["gflops"]})
    if not kinds:
        return ["float32 GEMM peak: not measured (see stderr)"]
    lines = [
        "float32 n×n·n×n products, GFLOP/s (best of a few; fastmlp: "
        "`Network([n, n], identity).forward(X)`, one GEMM plus a bias add; "
        "peak: the best of NumPy and PyTorch):",
        "",
        "| threads | " + " | ".join(kinds) + " | peak | fastmlp 1024³ / 2048³ vs peak |",
        "|---:|" + "---:|" * (len(kinds) + 2),
    ]
    for t, g in gemm.items():
        rates, top = g["gflops"], peak(gemm, t)
        mine = [rates.get(f"fastmlp {n}³") for n in (1024, 2048)]
        share = " / ".join(f"{100 * m / top:.0f}%" if m else "–" for m in mine) if top and any(mine) else "–"
        cells = [fmt(rates[k]) if k in rates else "–" for k in kinds] + [fmt(top) or "–", share]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def peak(gemm: dict, threads: int) -> float:
    """The best float32 GEMM rate of the peers' BLAS (NumPy, PyTorch) at this thread count."""
    rates = gemm.get(threads, {}).get("gflops", {})
    return max((v for k, v in rates.items() if not k.startswith("fastmlp")), default=0.0)


RESULTS_HEADER = [
    "| workload | threads | peer | samples/s | ms/step | GFLOP/s | % GEMM peak | check | fastmlp/peer |",
    "|---|---:|---|---:|---:|---:|---:|---:|---:|",
]
FAILED = " ✗"  # a check beyond tolerance


def check_cell(check: dict) -> str:
    """The check column: the loss after the check epoch, or max |output - fastmlp's|; ✗ beyond tolerance."""
    value = check.get("value")
    if value is None:
        return ""
    text = f"{value:.5g}" if check["kind"] == "loss" else ("0" if value == 0 else f"{value:.1e}")
    return text + (FAILED if check.get("ok") is False else "")


def result_line(gemm: dict, r: Row, ours: float | None) -> str:
    """One table row; ours: fastmlp Network's samples/s on the same (workload, threads)."""
    s = r.summary()
    if not s:
        return f"| {r.workload} | {r.threads} | {r.peer} | {r.status} | | | | | |"
    p = peak(gemm, r.threads)
    pct = f"{100 * s['gflops'] / p:.0f}%" if p else "–"
    ratio = f"{ours / s['samples_per_s']:.2f}×" if ours else "–"
    return (
        f"| {r.workload} | {r.threads} | {r.peer} | {fmt(s['samples_per_s'])} | "
        f"{fmt(s['ms_per_step'])} | {fmt(s['gflops'])} | {pct} | {check_cell(r.check)} | {ratio} |"
    )


def results_table(gemm: dict, rows: list[Row]) -> list[str]:
    """The whole results table at once (rows are printed one by one during a run)."""
    ours = {(r.workload, r.threads): r.summary().get("samples_per_s") for r in rows if r.peer == "fastmlp"}
    lines = list(RESULTS_HEADER)
    lines += [result_line(gemm, r, ours.get((r.workload, r.threads))) for r in rows]
    notes = failure_notes(rows)
    return lines + ([""] + notes if notes else [])


def failure_notes(rows: list[Row]) -> list[str]:
    return [f"- {r.workload}, {r.threads} thread(s), {r.peer}: {r.status}: {r.reason}" for r in rows if not r.summary()]


SUPERSCRIPTS = "¹²³⁴⁵⁶⁷⁸⁹"


def footnote_mark(k: int) -> str:
    return "".join(SUPERSCRIPTS[int(d) - 1] if d != "0" else "⁰" for d in str(k + 1))


def summary_table(rows: list[Row], forced: str | None = None) -> list[str]:
    """One line per (workload, threads): each peer's samples/s (latency: µs per call), the best
    float32 peer and fastmlp ÷ it.

    A peer that did not run (not installed, error) is a blank cell with a
    footnote; one that does not apply to the workload is "–"; a check beyond
    tolerance is marked ✗ and that peer does not count as the best. Under
    --cpu, the peers that cannot be forced (native_only) are marked and do
    not count either.
    """
    peers = [p for p in PEER_NAMES if p not in BF16 and any(r.peer == p for r in rows)]
    if not peers:
        return []
    native = {p for p in peers if PEERS[p].native_only} if forced else set()
    names = [f"{p} (native)" if p in native else p for p in peers]
    lines = [
        "fastmlp ÷ the best float32 peer (samples/s; latency: µs per call, lower is faster — its ratio is "
        "still fastmlp's speed ÷ the best peer's, above 1 fastmlp is faster):",
        "",
        "| workload | threads | " + " | ".join(names) + " | best peer | fastmlp ÷ best |",
        "|---|---:|" + "---:|" * len(peers) + "---|---:|",
    ]
    notes: dict[str, str] = {}
    for key in dict.fromkeys((r.workload, r.threads) for r in rows):
        group = {r.peer: r for r in rows if (r.workload, r.threads) == key}
        latency = WORKLOADS[key[0]].latency
        rates = {p: r.summary().get("samples_per_s") for p, r in group.items()}
        failed = {p for p, r in group.items() if r.check.get("ok") is False}
        best, ratio = ratio_to_best(rates, failed | native)
        cells = []
        for p in peers:
            r = group.get(p)
            if r is None:
                cells.append("–")
            elif not rates.get(p):
                reason = f"{p}: {r.status}: {r.reason}"
                mark = notes.setdefault(reason, footnote_mark(len(notes)))
                cells.append(mark)
            else:
                rate = rates[p]
                text = fmt(1e6 / rate) if latency else fmt(rate)
                cells.append(text + (FAILED if p in failed else ""))
        ratio_text = f"**{ratio:.2f}×**" if ratio else ""
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + f" | {best or ''} | {ratio_text} |")
    lines += ["", *[f"{mark} {reason}" for reason, mark in notes.items()]] if notes else []
    if any(r.check.get("ok") is False for r in rows):
        lines += [
            "",
            f"{FAILED.strip()}: the check differs from fastmlp's beyond tolerance (loss rtol {LOSS_RTOL:g}, "
            f"outputs atol {OUTPUT_ATOL:g}): not counted as the best peer.",
        ]
    if native:
        lines += [
            "",
            f"(native): {', '.join(sorted(native))} cannot be forced to {forced}; not counted as the best peer.",
        ]
    return lines


def bf16_table(rows: list[Row]) -> list[str]:
    """The bfloat16 rows (when run): fastmlp-bf16 ÷ fastmlp float32, and ÷ the best bf16 peer."""
    if not any(r.peer in BF16 for r in rows):
        return []
    lines = [
        "",
        "bfloat16 (samples/s; latency: µs per call): fastmlp precision='bf16' ÷ fastmlp float32, and ÷ the "
        "best bf16 peer; the check column of the results compares with fastmlp float32:",
        "",
        "| workload | threads | fastmlp f32 | " + " | ".join(BF16) + " | bf16 ÷ f32 | best bf16 peer | bf16 ÷ best |",
        "|---|---:|---:|" + "---:|" * len(BF16) + "---:|---|---:|",
    ]
    for key in dict.fromkeys((r.workload, r.threads) for r in rows):
        group = {r.peer: r for r in rows if (r.workload, r.threads) == key}
        if not any(p in group for p in BF16):
            continue
        latency = WORKLOADS[key[0]].latency
        rates = {p: r.summary().get("samples_per_s") for p, r in group.items()}
        cell = [
            "" if not rates.get(p) else fmt(1e6 / rates[p]) if latency else fmt(rates[p]) for p in ("fastmlp", *BF16)
        ]
        ours, f32 = rates.get("fastmlp-bf16"), rates.get("fastmlp")
        peers = {p: r for p, r in rates.items() if p in BF16 and p != "fastmlp-bf16" and r}
        best = max(peers, key=peers.get) if peers else None
        vs_f32 = f"{ours / f32:.2f}×" if ours and f32 else ""
        vs_best = f"**{ours / peers[best]:.2f}×**" if ours and best else ""
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cell) + f" | {vs_f32} | {best or ''} | {vs_best} |")
    return lines


def header(meta: dict) -> list[str]:
    forced = meta.get("cpu_forced")
    cpu = (
        f" — **forced {forced['class']}**: " + ", ".join(f"{k} {v}" for k, v in forced.items() if k != "class")
        if forced
        else ""
    )
    line = (
        f"fastmlp benchmark — {meta['date']} — {meta['cpu']} ({meta['cpus']} CPUs){cpu} — "
        + ", ".join(f"{k} {x}" for k, x in meta["versions"].items())
        + f" — {'quick' if meta['quick'] else 'full'} run, median of {meta['reps']}, "
        + ("peers interleaved" if meta["interleave"] else "peers one at a time")
    )
    inherited = meta.get("inherited_env")
    if inherited and not forced:
        line += " — set in the environment: " + ", ".join(f"{k}={v}" for k, v in inherited.items())
    load = meta["load_average"][0]  # before the run, so none of it is ours
    busy = (
        [
            f"**Warning:** the load average was {load:.1f} on {meta['cpus']} CPUs when the run "
            "started: other processes compete for the cores; timings are unreliable.",
            "",
        ]
        if load > meta["cpus"] / 2
        else []
    )
    fm = meta.get("fastmlp") or {}
    if "error" in fm:
        ran = f"fastmlp: not importable ({fm['error']})"
    else:
        kernel = "; ".join(
            f"{k}: {v}" for k, v in fm.items() if k not in ("fastmlp", "variant", "module", "variant_reason", "gemm")
        )
        ran = (
            f"fastmlp ran: variant **{fm.get('variant')}** ({fm.get('module')}; {fm.get('variant_reason')}); "
            f"gemm: {fm.get('gemm')}" + (f"; {kernel}" if kernel else "")
        )
    threads = ", ".join(map(str, meta["threads"]))
    lines = [line, "", f"CPU: {meta['cpu']}; threads per run: {threads} (of {meta['cpus']} CPUs).", "", ran, ""]
    return lines + busy


def render(meta: dict, gemm: dict, rows: list[Row]) -> str:
    """The complete report (what a run prints, piece by piece)."""
    tables = (
        gemm_table(gemm)
        + [""]
        + results_table(gemm, rows)
        + [""]
        + summary_table(rows, meta.get("cpu_forced") and meta["cpu_forced"]["class"])
        + bf16_table(rows)
    )
    return "\n".join(header(meta) + tables)


def plot(path: str, rows: list[Row], threads: list[int]):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot {path}: matplotlib is not installed (pip install matplotlib); no chart written", file=sys.stderr)
        return
    workloads = list(dict.fromkeys(r.workload for r in rows))
    peers = list(dict.fromkeys(r.peer for r in rows if r.summary()))
    if not peers:
        print(f"--plot {path}: no successful rows; no chart written", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False)
    width = 0.8 / len(peers)
    for ax, t in zip(axes[0], threads, strict=True):
        for j, p in enumerate(peers):
            rate = {r.workload: r.summary().get("samples_per_s", 0) for r in rows if r.peer == p and r.threads == t}
            ax.bar(
                [i + j * width for i in range(len(workloads))], [rate.get(wl, 0) for wl in workloads], width, label=p
            )
        ax.set_xticks([i + width * (len(peers) - 1) / 2 for i in range(len(workloads))])
        ax.set_xticklabels(workloads)
        ax.set_yscale("log")
        ax.set_ylabel("samples/s (log)")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(peers))
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------- main


def csv_choice(choices):
    def parse(text):
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def thread_list(text):
    return sorted({int(x) for x in text.split(",")})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sample counts, 2 repetitions (for the tests)")
    p.add_argument(
        "--threads", default=f"1,{os.cpu_count()}", help="comma-separated thread counts (default: 1,cpu_count)"
    )
    p.add_argument("--peers", type=csv_choice(PEER_NAMES), default=DEFAULT_PEERS)
    p.add_argument("--workloads", type=csv_choice(list(WORKLOADS)), default=list(WORKLOADS))
    p.add_argument("--reps", type=int, default=0, help="timed repetitions (default 3, quick 2)")
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds a worker may take to start, warm up, or run one repetition",
    )
    p.add_argument(
        "--wide-seconds",
        type=float,
        default=10.0,
        help="full run: time one 'wide' repetition may take (sets its sample count)",
    )
    p.add_argument(
        "--interleave",
        action="store_true",
        help="keep all peers' workers alive and interleave their repetitions (the old "
        "way; default: peers one at a time, each worker gone before the next)",
    )
    p.add_argument(
        "--cpu",
        choices=sorted(CPU_ENV),
        default=None,
        help="force this instruction-set class on every peer (fastmlp: FASTMLP_CPU, "
        "PyTorch: ATEN_CPU_CAPABILITY + MKL_ENABLE_INSTRUCTIONS, NumPy: "
        "OPENBLAS_CORETYPE); fastmlp needs the dispatch build",
    )
    p.add_argument("--json", metavar="FILE", help="write all raw results as JSON (rewritten after every row)")
    p.add_argument("--plot", metavar="FILE.png", help="draw samples/s bars (needs matplotlib)")
    p.add_argument(
        "--worker", nargs=2, metavar=("PEER", "WORKLOAD"), help="run one peer on one workload and print one JSON line"
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--gemm-worker", choices=GEMM_LIBS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker and (args.worker[0] not in PEERS or args.worker[1] not in WORKLOADS):
        p.error(f"--worker PEER WORKLOAD: PEER in {list(PEERS)}, WORKLOAD in {list(WORKLOADS)}")
    return args


def say(*lines: str):
    """Print to stdout and flush at once: a killed run keeps what it printed."""
    print("\n".join(lines), flush=True)


def write_json(path: str, meta: dict, gemm: dict, rows: list[Row], workloads: list[str]):
    """Rewrite the whole file (to a temporary name, then rename: never half-written)."""
    raw = {
        "meta": meta,
        "gemm": gemm,
        "workloads": {n: asdict(WORKLOADS[n]) for n in workloads},
        "results": [{**asdict(r), **r.summary()} for r in rows],
    }
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(raw, indent=2))
    tmp.replace(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.reps = args.reps or (2 if args.quick else 3)
    if args.worker or args.gemm_worker:
        args.threads = int(args.threads)
        return worker_main(args) if args.worker else gemm_worker_main(args)
    threads = thread_list(args.threads)
    # fastmlp first, so that every other row's ratio is known when that row is printed
    peers = sorted(args.peers, key=lambda p: p != "fastmlp")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "versions": versions(),
        "quick": args.quick,
        "reps": args.reps,
        "threads": threads,
        "interleave": args.interleave,
        "cpu_forced": None,
        "complete": False,
        "wall_s": 0.0,
        "load_average": [load_before, load_before],
    }
    meta["inherited_env"] = inherited_forcing()
    meta["fastmlp"] = probe_fastmlp(threads[0], args.cpu)
    if args.cpu:
        meta["cpu_forced"] = {"class": args.cpu, **check_cpu_forcing(args.cpu)}
        meta["cpu_env"] = CPU_ENV[args.cpu]
    gemm, rows = {}, []

    def save():
        meta["wall_s"] = time.perf_counter() - start
        meta["load_average"][1] = os.getloadavg()[0]
        if args.json:
            write_json(args.json, meta, gemm, rows, args.workloads)

    say(*header(meta))
    for t in threads:
        gemm[t] = measure_gemm(t, args)
        save()
    print(f"[{time.perf_counter() - start:6.1f} s] GEMM peak measured", file=sys.stderr)
    say(*gemm_table(gemm), "", *RESULTS_HEADER)
    ours, ours_info = {}, {}

    def emit(row: Row):
        rows.append(row)
        key = (row.workload, row.threads)
        if row.peer == "fastmlp":
            ours[key] = row.summary().get("samples_per_s")
            ours_info[key] = dict(row.info)
        row.check = check_result(WORKLOADS[row.workload], row.info, ours_info.get(key))
        row.info.pop("check_output", None)  # compared; the JSON keeps the result, not the 640 numbers
        say(result_line(gemm, row, ours.get(key)))
        if not row.summary():
            print(f"  {row.workload}, {row.threads} thread(s), {row.peer}: {row.status}: {row.reason}", file=sys.stderr)
        save()

    for name in args.workloads:
        for t in threads:
            run_workload(WORKLOADS[name], t, [p for p in peers if applies(p, WORKLOADS[name])], args, emit)
            print(f"[{time.perf_counter() - start:6.1f} s] {name}, {t} thread(s) done", file=sys.stderr)
    notes = failure_notes(rows)
    if notes:
        say("", *notes)
    say("", *summary_table(rows, args.cpu), *bf16_table(rows))
    meta["complete"] = True
    save()
    print(f"\ntotal wall time {meta['wall_s']:.0f} s", file=sys.stderr)
    if args.plot:
        plot(args.plot, rows, threads)
    ours_rows = [r for r in rows if r.peer.startswith("fastmlp")]
    return 1 if ours_rows and all(r.status != "ok" for r in ours_rows) else 0


if __name__ == "__main__":
    sys.exit(main())
