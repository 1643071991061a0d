"""Saving and loading fitted estimators, and handing them to scikit-learn.

The file is a NumPy ``.npz`` archive, readable with NumPy alone:

- ``__fastmlp__``: a 0-d unicode array holding JSON metadata: ``format``
  (``"fastmlp.estimator"``), ``version`` (:data:`FORMAT_VERSION`), the
  estimator's ``class``, its constructor ``params`` and its scalar fitted
  attributes;
- ``coefs_0``, ``coefs_1``, ..., ``intercepts_0``, ...: the weights;
- ``classes_``, ``loss_curve_``, ``validation_scores_``,
  ``validation_loss_curve_``, ``feature_names_in_`` where they exist.

Loading never unpickles (``allow_pickle=False``); a file that is not such an
archive, or is damaged, raises ``ValueError`` saying so. Writing is atomic: a
temporary file in the same folder, flushed and fsync'ed, then renamed over
the target.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

FORMAT = "fastmlp.estimator"
FORMAT_VERSION = 1

_SCALARS = ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_", "n_features_in_", "loss_",
            "best_loss_", "best_validation_score_", "_fit_dtype", "_loss_name", "_epoch_clock",
            "_no_improvement_count")
_ARRAYS = ("loss_curve_", "validation_scores_", "validation_loss_curve_", "feature_names_in_")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.dtype) or isinstance(value, type):
        return np.dtype(value).name
    if isinstance(value, tuple):
        return list(value)
    return value


def _params(est: Any) -> dict[str, Any]:
    params = {}
    for key, value in est.get_params(deep=False).items():
        if key == "callbacks":
            value = None  # code is not data: callbacks are not saved
        elif key == "random_state" and not isinstance(value, (int, np.integer, type(None))):
            value = None
        value = _jsonable(value)
        try:
            json.dumps(value)
        except TypeError:
            raise ValueError(f"cannot save parameter {key}={value!r}: it is not JSON data") from None
        params[key] = value
    return params


def save(est: Any, path: Any) -> None:
    """Writes the fitted estimator `est` to `path` (see the module docstring for the format)."""
    if not hasattr(est, "coefs_"):
        raise ValueError(f"save needs a fitted estimator; this {type(est).__name__} is not fitted yet")
    est._network()  # coefs_ set by hand are checked here
    meta: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "class": type(est).__name__,
                            "params": _params(est), "attributes": {}}
    from . import __version__
    meta["fastmlp_version"] = __version__
    for name in _SCALARS:
        if hasattr(est, name):
            meta["attributes"][name] = _jsonable(getattr(est, name))
    arrays: dict[str, np.ndarray] = {}
    for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        arrays[f"coefs_{i}"] = np.array(w)
        arrays[f"intercepts_{i}"] = np.array(b)
    for name in _ARRAYS:
        value = getattr(est, name, None)
        if value is not None:
            arrays[name] = np.asarray(value, dtype=str if name == "feature_names_in_" else None)
    if hasattr(est, "classes_"):
        classes = np.asarray(est.classes_)
        if classes.dtype.kind == "O":
            if not all(isinstance(c, str) for c in classes):
                raise ValueError("cannot save classes_ of mixed or non-string Python objects")
            classes = classes.astype(str)
        arrays["classes_"] = classes
        meta["attributes"]["y_type"] = est._label_coder.y_type_
        meta["attributes"]["classes_dtype"] = str(np.asarray(est.classes_).dtype)
    arrays["__fastmlp__"] = np.array(json.dumps(meta))
    _atomic_savez(os.fspath(path), arrays)


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    with _suppress():  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)


def load(path: Any) -> Any:
    """Reads an estimator written by ``save``; never unpickles.

    Raises
    ------
    ValueError
        If `path` is not a fastmlp model file, is damaged, or was written by a
        newer format version.
    """
    from .estimators import MLPClassifier, MLPRegressor
    from ._labels import LabelCoder
    path = os.fspath(path)
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            if "__fastmlp__" not in z.files:
                raise ValueError(f"{path!r} is not a fastmlp model file (no __fastmlp__ metadata)")
            meta = json.loads(str(z["__fastmlp__"][()]))
            data = {k: z[k] for k in z.files if k != "__fastmlp__"}
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path!r} is not a readable fastmlp model file: {exc}") from None
    except ValueError as exc:
        if "fastmlp" in str(exc):
            raise
        raise ValueError(f"{path!r} is not a readable fastmlp model file: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastmlp model file (format {meta.get('format')!r} if a dict)")
    if not isinstance(meta.get("version"), int) or meta["version"] > FORMAT_VERSION:
        raise ValueError(f"{path!r} has format version {meta.get('version')!r}; this fastmlp reads up to "
                         f"{FORMAT_VERSION}: upgrade fastmlp")
    classes = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}
    if meta.get("class") not in classes:
        raise ValueError(f"{path!r} holds an unknown estimator class {meta.get('class')!r}")
    try:
        est = classes[meta["class"]](**meta["params"])
        attrs = meta["attributes"]
        for name in _SCALARS:
            if name in attrs:
                setattr(est, name, attrs[name])
        n = sum(1 for k in data if k.startswith("coefs_"))
        est.coefs_ = [data[f"coefs_{i}"] for i in range(n)]
        est.intercepts_ = [data[f"intercepts_{i}"] for i in range(n)]
        for name in ("loss_curve_", "validation_scores_", "validation_loss_curve_"):
            setattr(est, name, data[name].tolist() if name in data else None)
        if "feature_names_in_" in data:
            est.feature_names_in_ = data["feature_names_in_"].astype(object)
        if "classes_" in data:
            cls = data["classes_"]
            if attrs.get("classes_dtype") == "object":
                cls = cls.astype(object)
            est._label_coder = LabelCoder(cls, attrs["y_type"])
            est.classes_ = est._label_coder.classes_
        if est.solver not in ("lbfgs",) and getattr(est, "loss_curve_", None) is None:
            est.loss_curve_ = []
        est._network()  # checks that the weights chain
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path!r} is a damaged fastmlp model file: {exc}") from None
    return est


def to_sklearn(est: Any) -> Any:
    """A fitted scikit-learn MLPClassifier/MLPRegressor with `est`'s weights and attributes.

    Parameters scikit-learn lacks are dropped; a solver or learning_rate it
    lacks becomes ``'adam'`` / ``'constant'`` (they matter only for further
    training). ``activation='leaky_relu'`` has no scikit-learn equivalent and
    raises ``ValueError``.
    """
    try:
        from sklearn import neural_network
        from sklearn.preprocessing import LabelBinarizer
    except ImportError:
        raise ImportError("to_sklearn needs scikit-learn: pip install scikit-learn") from None
    if not hasattr(est, "coefs_"):
        raise ValueError(f"to_sklearn needs a fitted estimator; this {type(est).__name__} is not fitted yet")
    if est.activation == "leaky_relu":
        raise ValueError("activation='leaky_relu' has no scikit-learn equivalent")
    cls = getattr(neural_network, type(est).__name__)
    known = cls().get_params()
    params = {k: v for k, v in est.get_params(deep=False).items() if k in known}
    if params.get("solver") not in ("sgd", "adam", "lbfgs"):
        params["solver"] = "adam"
    if params.get("learning_rate") not in ("constant", "invscaling", "adaptive"):
        params["learning_rate"] = "constant"
    sk = cls(**params)
    est._network()
    sk.coefs_ = [np.array(c) for c in est.coefs_]
    sk.intercepts_ = [np.array(b) for b in est.intercepts_]
    for name in ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_", "n_features_in_", "loss_",
                 "loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_", "feature_names_in_"):
        if hasattr(est, name):
            value = getattr(est, name)
            setattr(sk, name, list(value) if isinstance(value, list) else value)
    if hasattr(est, "classes_"):
        lb = LabelBinarizer()
        if est._label_coder.y_type_ == "multilabel-indicator":
            lb.fit(np.eye(len(est.classes_), dtype=int))
        else:
            lb.fit(est.classes_)
        sk._label_binarizer = lb
        sk.classes_ = lb.classes_
    return sk
