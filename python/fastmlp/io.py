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


# The largest metadata JSON accepted (a saved model's is a few KiB).
_MAX_META_BYTES = 1 << 20
_INT_ATTRS = ("n_iter_", "t_", "n_layers_", "n_outputs_", "n_features_in_", "_epoch_clock", "_no_improvement_count")
_FLOAT_ATTRS = ("loss_", "best_loss_", "best_validation_score_")
_STR_ATTRS = ("out_activation_", "_fit_dtype", "_loss_name")
_Y_TYPES = ("binary", "multiclass", "multilabel-indicator")


def _headers(zf: zipfile.ZipFile) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each member's declared (shape, dtype), read from its .npy header alone.

    Every member must be stored uncompressed (as ``np.savez`` writes) and hold
    exactly the bytes its header declares, so no array is larger than the file
    itself: a forged header cannot make ``load`` allocate more.
    """
    out = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise ValueError(f"unexpected member {info.filename!r}")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"member {info.filename!r} is compressed; fastmlp writes stored members")
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"member {info.filename!r} has .npy version {version}")
            offset = f.tell()
        if dtype.hasobject or dtype.kind not in "biufU" or dtype.fields is not None:
            raise ValueError(f"member {info.filename!r} has dtype {dtype}; expected numbers or text")
        count = 1
        for n in shape:
            count *= int(n)
        if count * dtype.itemsize != info.file_size - offset:
            raise ValueError(f"member {info.filename!r} declares shape {shape} of {dtype} "
                             f"({count * dtype.itemsize} bytes) but holds {info.file_size - offset} bytes")
        out[info.filename[:-4]] = (tuple(int(n) for n in shape), dtype)
    return out


def _expected(meta: dict[str, Any], headers: dict[str, Any]) -> None:
    """The members and their shapes must be those the metadata describes, and nothing else."""
    attrs = meta["attributes"]
    if not isinstance(attrs, dict) or not isinstance(meta.get("params"), dict):
        raise ValueError("metadata 'attributes' and 'params' must be JSON objects")
    for name in _INT_ATTRS:
        if name in attrs and (not isinstance(attrs[name], int) or isinstance(attrs[name], bool) or attrs[name] < 0):
            raise ValueError(f"attribute {name} must be an int >= 0, got {attrs[name]!r}")
    for name in _FLOAT_ATTRS:
        if name in attrs and attrs[name] is not None and (
                isinstance(attrs[name], bool) or not isinstance(attrs[name], (int, float))):
            raise ValueError(f"attribute {name} must be a number or null, got {attrs[name]!r}")
    for name in _STR_ATTRS:
        if name in attrs and not isinstance(attrs[name], str):
            raise ValueError(f"attribute {name} must be a string, got {attrs[name]!r}")
    if attrs.get("_fit_dtype", "float64") not in ("float32", "float64"):
        raise ValueError(f"attribute _fit_dtype must be 'float32' or 'float64', got {attrs['_fit_dtype']!r}")
    hidden = meta["params"].get("hidden_layer_sizes", [100])
    hidden = hidden if isinstance(hidden, list) else [hidden]
    units = [attrs.get("n_features_in_"), *hidden, attrs.get("n_outputs_")]
    if not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in units):
        raise ValueError(f"layer sizes {units} (n_features_in_, hidden_layer_sizes, n_outputs_) must be ints >= 1")
    fit_dtype = np.dtype(attrs.get("_fit_dtype", "float64"))
    want: dict[str, Any] = {}
    for i, (a, b) in enumerate(zip(units[:-1], units[1:])):
        want[f"coefs_{i}"], want[f"intercepts_{i}"] = (a, b), (b,)
    for name, shape in want.items():
        if name not in headers:
            raise ValueError(f"missing array {name}")
        if headers[name] != (shape, fit_dtype) and headers[name][0] == shape:
            raise ValueError(f"{name} has dtype {headers[name][1]}, expected {fit_dtype}")
        if headers[name][0] != shape:
            raise ValueError(f"{name} has shape {headers[name][0]}, the metadata says {shape}")
    optional = {"loss_curve_": "f", "validation_scores_": "f", "validation_loss_curve_": "f",
                "feature_names_in_": "U", "classes_": "biufU"}
    for name, (shape, dtype) in headers.items():
        if name in want or name == "__fastmlp__":
            continue
        if name not in optional:
            raise ValueError(f"unexpected array {name!r}")
        if len(shape) != 1 or dtype.kind not in optional[name]:
            raise ValueError(f"{name} must be 1-D of kind {optional[name]!r}, got shape {shape} and dtype {dtype}")
    if "feature_names_in_" in headers and headers["feature_names_in_"][0] != (units[0],):
        raise ValueError(f"feature_names_in_ has shape {headers['feature_names_in_'][0]}, expected ({units[0]},)")
    if meta.get("class") == "MLPClassifier":
        if "classes_" not in headers or attrs.get("y_type") not in _Y_TYPES:
            raise ValueError("a classifier needs classes_ and a y_type of " + ", ".join(_Y_TYPES))
        n_classes = headers["classes_"][0][0]
        need = 1 if attrs["y_type"] == "binary" else n_classes
        if attrs["n_outputs_"] != need or n_classes < 1 or (attrs["y_type"] == "binary" and n_classes > 2):
            raise ValueError(f"{n_classes} classes_ of y_type {attrs['y_type']!r} do not fit "
                             f"{attrs['n_outputs_']} outputs")


def load(path: Any) -> Any:
    """Reads an estimator written by ``save``; never unpickles.

    Before any array is read, the .npy headers are checked against the
    metadata (format, version, the layer shapes it implies, dtypes, no extra
    arrays, each array exactly the bytes it declares): a damaged or forged
    file fails with ``ValueError`` having allocated no more than its own size.

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
        with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            headers = _headers(zf)
            if "__fastmlp__" not in headers:
                raise ValueError(f"{path!r} is not a fastmlp model file (no __fastmlp__ metadata)")
            shape, dtype = headers["__fastmlp__"]
            if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * _MAX_META_BYTES:
                raise ValueError(f"__fastmlp__ must be a 0-d string of at most {_MAX_META_BYTES} characters, "
                                 f"got shape {shape} and dtype {dtype}")
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                meta = json.loads(str(z["__fastmlp__"][()]))
                if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                    raise ValueError(f"{path!r} is not a fastmlp model file (format "
                                     f"{meta.get('format') if isinstance(meta, dict) else meta!r})")
                version = meta.get("version")
                if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                    raise ValueError(f"{path!r} has an invalid format version {version!r}")
                if version > FORMAT_VERSION:
                    raise ValueError(f"{path!r} has format version {version!r}; this fastmlp reads up to "
                                     f"{FORMAT_VERSION}: upgrade fastmlp")
                _expected(meta, headers)
                data = {k: z[k] for k in headers if k != "__fastmlp__"}
    except (FileNotFoundError, IsADirectoryError, PermissionError, MemoryError):
        raise
    except ValueError as exc:
        if str(exc).startswith(repr(path)):
            raise
        raise ValueError(f"{path!r} is a damaged fastmlp model file: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever parsing an untrusted file raises (zip, .npy header, JSON)
        raise ValueError(f"{path!r} is not a readable fastmlp model file: {type(exc).__name__}: {exc}") from None
    classes = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}
    if not isinstance(meta.get("class"), str) or meta["class"] not in classes:
        raise ValueError(f"{path!r} holds an unknown estimator class {meta.get('class')!r}")
    try:
        est = classes[meta["class"]](**meta["params"])
        est._check_params()
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
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{path!r} is a damaged fastmlp model file: {type(exc).__name__}: {exc}") from None
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
