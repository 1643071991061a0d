"""Writes the model files that the C++ loader's test (cpp/tests/test_io.cpp) reads: models trained
and saved by Python, their inputs and Python's outputs as CSV, and foreign files it must refuse.

    python tests/cpp_models.py FOLDER

Per model NAME: NAME.npz, NAME.X.csv (inputs), NAME.expected.csv (Python's predict_proba for a
classifier, predict as (n, n_outputs) for a regressor, forward for a Network; 17 digits) and
NAME.info.txt (dtype, then the estimator class, the y_type and the classes_, one per line).
Foreign and forged files: foreign.npz (np.savez without metadata), compressed.npz
(np.savez_compressed of a model's arrays), forged_shape.npz (metadata whose n_features_in_ the
weights do not have), forged_sizes.npz (a network's layer sizes far beyond its params),
forged_layers.npz (a network of layers whose dense layer is far wider than its params).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

import fastmlp


def write(folder: Path, name: str, model, X: np.ndarray) -> None:
    model.save(folder / f"{name}.npz")
    np.savetxt(folder / f"{name}.X.csv", X, delimiter=",", fmt="%.17g")
    if isinstance(model, fastmlp.Network):
        out, info = model.forward(X), [model.dtype.name, "", ""]
    elif isinstance(model, fastmlp.MLPClassifier):
        y_type = model.get_model_state()["attributes"]["y_type"]
        out = model.predict_proba(X)
        info = [model.fitted_network().dtype.name, "MLPClassifier", y_type, *map(str, model.classes_)]
    else:
        out = model.predict(X).reshape(len(X), -1)
        info = [model.fitted_network().dtype.name, "MLPRegressor", ""]
    np.savetxt(folder / f"{name}.expected.csv", out, delimiter=",", fmt="%.17g")
    (folder / f"{name}.info.txt").write_text("\n".join(info) + "\n", encoding="utf-8")


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 5))
    k = np.argmax(X[:, :3], axis=1)
    fit_kw = dict(max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastmlp.ConvergenceWarning)
        models = {
            # float64, string labels (one not ASCII), two hidden layers of different activations
            "clf_str": fastmlp.MLPClassifier(
                hidden_layer_sizes=(8, 6), activation=["tanh", "leaky_relu"], **fit_kw
            ).fit(X, np.array(["ant", "bee", "émeu"])[k]),
            "clf_binary": fastmlp.MLPClassifier(hidden_layer_sizes=(6,), activation="logistic", **fit_kw).fit(
                X, np.where(X[:, 0] > 0, 7, -3)
            ),
            "clf_f32": fastmlp.MLPClassifier(hidden_layer_sizes=(10,), dtype="float32", **fit_kw).fit(X, k),
            "reg": fastmlp.MLPRegressor(hidden_layer_sizes=(9,), **fit_kw).fit(X, X[:, :2] @ [[1.0, 0.5], [-2.0, 1.0]]),
        }
    for name, model in models.items():
        write(folder, name, model, X[:20])
    net = fastmlp.Network([5, 7, 4], activation="relu", output_activation="softmax", dtype="float64", seed=3)
    write(folder, "net", net, X[:20])
    # A network of layers (an embedding of column 2, batch and layer norm, a residual block), trained
    # so that its running statistics are not their initial values.
    from fastmlp.layers import Activation, BatchNorm, Dense, Embedding, LayerNorm, Residual

    layered = fastmlp.Network(
        5,
        layers=[
            Embedding([2], [3], [2]),
            Dense(6),
            BatchNorm(),
            Activation("gelu"),
            Residual([LayerNorm(), Dense(6), Activation("silu")]),
            Dense(3),
        ],
        output_activation="softmax",
        dtype="float64",
        seed=4,
    )
    XL = X.copy()
    XL[:, 2] = np.arange(len(XL)) % 3
    layered.train_epoch(XL, np.eye(3)[k], "log_loss", fastmlp.SGD(lr=0.1), batch_size=10)
    write(folder, "layers", layered, XL[:20])
    np.savez(folder / "foreign.npz", weights=np.ones((3, 3)))
    with np.load(folder / "clf_str.npz", allow_pickle=False) as z:
        arrays = dict(z)
    np.savez_compressed(folder / "compressed.npz", **arrays)
    meta = json.loads(str(arrays["__fastmlp__"]))
    meta["attributes"]["n_features_in_"] = 6
    np.savez(folder / "forged_shape.npz", **{**arrays, "__fastmlp__": np.array(json.dumps(meta))})
    with np.load(folder / "net.npz", allow_pickle=False) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["__fastmlp__"]))
    meta["layer_sizes"] = [5, 10**9, 10**9, 4]
    np.savez(folder / "forged_sizes.npz", **{**arrays, "__fastmlp__": np.array(json.dumps(meta))})
    with np.load(folder / "layers.npz", allow_pickle=False) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["__fastmlp__"]))
    meta["config"]["layers"][1]["units"] = 10**12
    np.savez(folder / "forged_layers.npz", **{**arrays, "__fastmlp__": np.array(json.dumps(meta))})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
