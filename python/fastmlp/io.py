"""Saving and loading fitted estimators, and handing them to scikit-learn.

The file is a NumPy ``.npz`` archive, readable with NumPy alone:

- ``__fastmlp__``: a 0-d unicode array holding JSON metadata: ``format``
  (``"fastmlp.estimator"``), ``version`` (:data:`FORMAT_VERSION`), the
  estimator's ``class``, its constructor ``params`` and its scalar fitted
  attributes (with the optimizer's step count and kind);
- ``coefs_0``, ``coefs_1``, ..., ``intercepts_0``, ...: the weights;
- ``classes_``, ``loss_curve_``, ``validation_scores_``,
  ``validation_loss_curve_``, ``feature_names_in_`` where they exist;
- ``optimizer_velocity``, ``optimizer_m``, ``optimizer_v``, ``optimizer_G``:
  the stochastic optimizer's state, so that ``partial_fit`` continues as if
  never saved;
- a network of layers (``normalization``, ``residual`` or ``layers`` set; version 3): the
  attribute ``layers`` (its spec, :func:`fastmlp.layers.to_spec`, the output Dense included),
  ``layer_params`` (all its parameters, flat) and ``layer_state`` (its running statistics);
  ``coefs_l``/``intercepts_l`` are then its Dense layers' weights. Files of plain networks
  stay version 2, readable by older fastmlp; a version 3 file fails there ("upgrade fastmlp").

``params`` are typed (version 2): JSON's scalars and lists as they are, and
``{"tuple": [...]}``, ``{"dict": [[key, value], ...]}``, ``{"type": name}``
(a NumPy scalar type), ``{"dtype": name}`` and ``{"layers": spec}`` (a list of
:mod:`fastmlp.layers` layers) for what JSON cannot say, so
``get_params()`` round-trips (``(64,)`` stays a tuple, ``{2: 5.0}`` keeps its
int key). ``callbacks`` (code) and a ``RandomState`` ``random_state`` are
saved as None.

Loading never unpickles (``allow_pickle=False``) and reads only regular
files; a file that is not such an archive, or is damaged, raises
``ValueError`` saying so. Writing is atomic: a temporary file in the same
folder, flushed and fsync'ed, given the mode ``open()`` would give (an
existing file's mode, else 0o666 less the umask), then renamed over the
target; a symbolic link is followed, its target replaced and the link kept.
"""

from __future__ import annotations

import json
import numbers
import os
import stat
import tempfile
import warnings
import zipfile
from typing import Any

import numpy as np

from . import layers as _layers
from ._names import OPTIMIZER_STATE

FORMAT = "fastmlp.estimator"
FORMAT_VERSION = 3  # 2: typed params, optimizer state; 3: a network of layers (written only for one)

_OPTIMIZER_ARRAYS = OPTIMIZER_STATE  # ("velocity", "m", "v", "G"): the core's kOptimizers


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.dtype, type)):
        return np.dtype(value).name
    if isinstance(value, tuple):
        return list(value)
    return value


def _encode(value: Any) -> Any:
    """A parameter value as typed JSON (see the module docstring); TypeError for what has no encoding."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, _layers.Layer) for v in value):
        return {"layers": _layers.to_spec(value)}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, type) and issubclass(value, np.generic):
        return {"type": np.dtype(value).name}
    if isinstance(value, np.dtype):
        return {"dtype": value.name}
    raise TypeError(f"{type(value).__name__} has no encoding")


def _decode(value: Any) -> Any:
    """The inverse of _encode; ValueError for anything _encode does not write."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError(f"a typed parameter value must have one key, got {sorted(value)}")
    ((tag, body),) = value.items()
    if tag == "tuple" and isinstance(body, list):
        return tuple(_decode(v) for v in body)
    if tag == "dict" and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body):
        try:
            return {_decode(k): _decode(v) for k, v in body}
        except TypeError as exc:  # an unhashable key
            raise ValueError(f"a dict parameter has an invalid key: {exc}") from None
    if tag == "layers" and isinstance(body, list):
        return _layers.from_spec(body)
    if tag in ("type", "dtype") and body in ("float32", "float64"):
        return np.dtype(body).type if tag == "type" else np.dtype(body)
    raise ValueError(f"unknown typed parameter value {value!r}")


def _params(est_params: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for key, value in est_params.items():
        if key == "callbacks":
            value = None  # code is not data: callbacks are not saved
        elif key == "random_state" and not isinstance(value, (int, np.integer, type(None))):
            value = None
        try:
            params[key] = _encode(value)
        except TypeError as exc:
            raise ValueError(f"cannot save parameter {key}={value!r}: {exc}") from None
    return params


def save(est: Any, path: Any) -> None:
    """Writes the fitted estimator `est` to `path` (see the module docstring for the format).

    What is written is ``est.get_model_state()`` (the estimator decides what its state is); this
    module only knows how it is laid out in the file.
    """
    if not hasattr(est, "coefs_"):
        raise ValueError(f"save needs a fitted estimator; this {type(est).__name__} is not fitted yet")
    state = est.get_model_state()  # coefs_ set by hand are checked here
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION if "layers" in state["attributes"] else 2,  # older fastmlp reads 2
        "class": type(est).__name__,
        "params": _params(state["params"]),
        "attributes": {},
    }
    from . import __version__

    meta["fastmlp_version"] = __version__
    meta["attributes"] = {name: _jsonable(value) for name, value in state["attributes"].items()}
    arrays: dict[str, np.ndarray] = dict(state["arrays"])
    arrays["__fastmlp__"] = np.array(json.dumps(meta))
    _atomic_savez(_path_str(path), arrays)


def _path_str(path: Any) -> str:
    """str, bytes or os.PathLike as a str path (TypeError naming `path` otherwise)."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str, bytes or os.PathLike, got {type(path).__name__}") from None


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:  # read without changing it (os.umask would, for every thread)
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    path = os.path.realpath(path)  # through symbolic links: the target is replaced, the link kept
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)  # an existing file keeps its mode
    except FileNotFoundError:
        mode = 0o666 & ~_umask()  # what open() would create
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            np.savez(f, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays with allow_pickle: bool too
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
_INT_ATTRS = (
    "n_iter_",
    "t_",
    "n_layers_",
    "n_outputs_",
    "n_features_in_",
    "_epoch_clock",
    "_no_improvement_count",
    "_noise_seed",
    "_training_steps",
)
_FLOAT_ATTRS = ("loss_", "best_loss_", "best_validation_score_", "_sgd_lr")
_STR_ATTRS = ("out_activation_", "_fit_dtype", "_loss_name")
_Y_TYPES = ("binary", "multiclass", "multilabel-indicator")


def _headers(zf: zipfile.ZipFile, file_size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each member's declared (shape, dtype), read from its .npy header alone.

    Every member must be stored uncompressed (as ``np.savez`` writes), lie
    within the file's `file_size` bytes (its declared size, compressed and
    not, counted from its offset; all members together too) and hold exactly
    the bytes its header declares, so no array is larger than the file
    itself: forged sizes, however consistent, cannot make ``load`` allocate more.
    """
    out = {}
    total = 0
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise ValueError(f"unexpected member {info.filename!r}")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"member {info.filename!r} is compressed; fastmlp writes stored members")
        total += info.file_size
        if (
            info.file_size != info.compress_size
            or info.header_offset + info.compress_size > file_size
            or total > file_size
        ):
            raise ValueError(
                f"member {info.filename!r} declares {info.file_size} bytes ({info.compress_size} "
                f"stored, at offset {info.header_offset}), more than the file's {file_size} bytes hold"
            )
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"member {info.filename!r} has .npy version {version}")
            offset = f.tell()
        if dtype.hasobject or dtype.kind not in "biufU" or dtype.fields is not None:
            raise ValueError(f"member {info.filename!r} has dtype {dtype}; expected numbers or text")
        count = 1
        for n in shape:
            count *= int(n)
        if count * dtype.itemsize != info.file_size - offset:
            raise ValueError(
                f"member {info.filename!r} declares shape {shape} of {dtype} "
                f"({count * dtype.itemsize} bytes) but holds {info.file_size - offset} bytes"
            )
        out[info.filename[:-4]] = (tuple(int(n) for n in shape), dtype)
    return out


def _fitted_hidden(meta: dict[str, Any], headers: dict[str, Any]) -> list[Any]:
    """The fitted hidden layers' widths: n_layers_ - 2 of them, read along the chain of the
    coefs_ headers (the fitted shapes: ``hidden_layer_sizes`` may have been changed by
    ``set_params`` after the fit, for the next one); files without n_layers_, from the params."""
    n_layers = meta["attributes"].get("n_layers_")
    if n_layers is None:
        hidden = meta["params"].get("hidden_layer_sizes", [100])
        return list(hidden) if isinstance(hidden, (list, tuple)) else [hidden]
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or not 2 <= n_layers <= len(headers):
        raise ValueError(f"attribute n_layers_ must be an int in [2, {len(headers)}], got {n_layers!r}")
    hidden = []
    for i in range(n_layers - 2):
        shape = headers.get(f"coefs_{i}", ((),))[0]
        if len(shape) != 2:
            raise ValueError(f"missing array coefs_{i}, or not 2-D")
        hidden.append(shape[1])
    return hidden


def _expected(meta: dict[str, Any], headers: dict[str, Any]) -> None:
    """The members and their shapes must be those the metadata describes, and nothing else."""
    attrs = meta["attributes"]
    if not isinstance(attrs, dict) or not isinstance(meta.get("params"), dict):
        raise ValueError("metadata 'attributes' and 'params' must be JSON objects")
    for name in _INT_ATTRS:
        if name in attrs and (not isinstance(attrs[name], int) or isinstance(attrs[name], bool) or attrs[name] < 0):
            raise ValueError(f"attribute {name} must be an int >= 0, got {attrs[name]!r}")
    for name in _FLOAT_ATTRS:
        if (
            name in attrs
            and attrs[name] is not None
            and (isinstance(attrs[name], bool) or not isinstance(attrs[name], (int, float)))
        ):
            raise ValueError(f"attribute {name} must be a number or null, got {attrs[name]!r}")
    for name in _STR_ATTRS:
        if name in attrs and not isinstance(attrs[name], str):
            raise ValueError(f"attribute {name} must be a string, got {attrs[name]!r}")
    if attrs.get("_fit_dtype", "float64") not in ("float32", "float64"):
        raise ValueError(f"attribute _fit_dtype must be 'float32' or 'float64', got {attrs['_fit_dtype']!r}")
    fit_dtype = np.dtype(attrs.get("_fit_dtype", "float64"))
    want: dict[str, Any] = {}
    units: list[Any]
    if "layers" in attrs:  # a network of layers (version 3): the spec gives every array's shape
        if meta.get("version", 0) < 3:
            raise ValueError("attribute layers needs format version 3")
        n_in = attrs.get("n_features_in_")
        if not isinstance(n_in, int) or isinstance(n_in, bool) or n_in < 1:
            raise ValueError(f"attribute n_features_in_ must be an int >= 1, got {n_in!r}")
        shapes = _layers.shapes(attrs["layers"], n_in)
        if shapes.n_outputs != attrs.get("n_outputs_"):
            raise ValueError(
                f"the layers output {shapes.n_outputs} values, n_outputs_ says {attrs.get('n_outputs_')!r}"
            )
        dense = [(s.n_in, s.n_out) for s in shapes.layers if s.kind == "dense"]
        units = [n_in, *(b for _, b in dense)]
        for i, (a, b) in enumerate(dense):
            want[f"coefs_{i}"], want[f"intercepts_{i}"] = (a, b), (b,)
        want["layer_params"], want["layer_state"] = (shapes.n_params,), (shapes.n_state,)
        n_params = shapes.n_params
    else:
        units = [attrs.get("n_features_in_"), *_fitted_hidden(meta, headers), attrs.get("n_outputs_")]
        if not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in units):
            raise ValueError(f"layer sizes {units} (n_features_in_, hidden_layer_sizes, n_outputs_) must be ints >= 1")
        for i, (a, b) in enumerate(zip(units[:-1], units[1:])):
            want[f"coefs_{i}"], want[f"intercepts_{i}"] = (a, b), (b,)
        n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    for name, shape in want.items():
        if name not in headers:
            raise ValueError(f"missing array {name}")
        if headers[name] != (shape, fit_dtype) and headers[name][0] == shape:
            raise ValueError(f"{name} has dtype {headers[name][1]}, expected {fit_dtype}")
        if headers[name][0] != shape:
            raise ValueError(f"{name} has shape {headers[name][0]}, the metadata says {shape}")
    optional = {
        "loss_curve_": "f",
        "validation_scores_": "f",
        "validation_loss_curve_": "f",
        "feature_names_in_": "U",
        "classes_": "biufU",
    }
    optional.update({f"optimizer_{name}": "f" for name in _OPTIMIZER_ARRAYS})
    for name, (shape, dtype) in headers.items():
        if name in want or name == "__fastmlp__":
            continue
        if name not in optional:
            raise ValueError(f"unexpected array {name!r}")
        if len(shape) != 1 or dtype.kind not in optional[name]:
            raise ValueError(f"{name} must be 1-D of kind {optional[name]!r}, got shape {shape} and dtype {dtype}")
    opt = attrs.get("optimizer")
    if opt is not None and (
        not isinstance(opt, dict)
        or not isinstance(opt.get("kind"), str)
        or opt.get("dtype") != fit_dtype.name
        or not isinstance(opt.get("t", 0), int)
        or isinstance(opt.get("t", 0), bool)
        or opt.get("t", 0) < 0
    ):
        raise ValueError(f"attribute optimizer must be {{kind, dtype: {fit_dtype.name!r}[, t >= 0]}}, got {opt!r}")
    for name in _OPTIMIZER_ARRAYS:
        key = f"optimizer_{name}"
        if key in headers and (
            opt is None or headers[key][1] != fit_dtype or headers[key][0] not in ((n_params,), (0,))
        ):
            raise ValueError(
                f"{key} must be of shape ({n_params},) or (0,) and dtype {fit_dtype} beside an "
                f"optimizer attribute, got {headers[key]}"
            )
    if "feature_names_in_" in headers and headers["feature_names_in_"][0] != (units[0],):
        raise ValueError(f"feature_names_in_ has shape {headers['feature_names_in_'][0]}, expected ({units[0]},)")
    if meta.get("class") == "MLPClassifier":
        if "classes_" not in headers or attrs.get("y_type") not in _Y_TYPES:
            raise ValueError("a classifier needs classes_ and a y_type of " + ", ".join(_Y_TYPES))
        n_classes = headers["classes_"][0][0]
        need = 1 if attrs["y_type"] == "binary" else n_classes
        if attrs["n_outputs_"] != need or n_classes < 1 or (attrs["y_type"] == "binary" and n_classes > 2):
            raise ValueError(
                f"{n_classes} classes_ of y_type {attrs['y_type']!r} do not fit {attrs['n_outputs_']} outputs"
            )


def load(path: Any) -> Any:
    """Reads an estimator written by ``save``, or a :class:`fastmlp.Network` written by
    ``Network.save`` (the file's metadata says which: the same as ``Network.load``); never unpickles.

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
    from .estimators import MLPClassifier, MLPRegressor  # lazy: the estimators import scikit-learn

    path = _path_str(path)
    try:
        with _open_regular(path) as f, zipfile.ZipFile(f) as zf:
            headers = _headers(zf, os.fstat(f.fileno()).st_size)
            meta = _metadata(path, f, headers, FORMAT, "model")
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                version = meta.get("version")
                if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                    raise ValueError(f"{path!r} has an invalid format version {version!r}")
                if version > FORMAT_VERSION:
                    raise ValueError(
                        f"{path!r} has format version {version!r}; this fastmlp reads up to "
                        f"{FORMAT_VERSION}: upgrade fastmlp"
                    )
                if version >= 2 and isinstance(meta.get("params"), dict):
                    meta["params"] = {k: _decode(v) for k, v in meta["params"].items()}
                _expected(meta, headers)
                data = {k: z[k] for k in headers if k != "__fastmlp__"}
    except _NetworkFile:
        from .network import Network

        return Network.load(path)
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
        est.set_model_state({"attributes": meta["attributes"], "arrays": data})
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{path!r} is a damaged fastmlp model file: {type(exc).__name__}: {exc}") from None
    return est


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an uncomparable value is a changed one
        return False


def _metadata(path: str, f: Any, headers: dict[str, Any], fmt: str, what: str) -> dict[str, Any]:
    """The __fastmlp__ metadata of the open archive `f`: a JSON object of format `fmt`, read
    only after its header says it is a 0-d string of bounded size."""
    if "__fastmlp__" not in headers:
        raise ValueError(f"{path!r} is not a fastmlp {what} file (no __fastmlp__ metadata)")
    shape, dtype = headers["__fastmlp__"]
    if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * _MAX_META_BYTES:
        raise ValueError(
            f"__fastmlp__ must be a 0-d string of at most {_MAX_META_BYTES} characters, "
            f"got shape {shape} and dtype {dtype}"
        )
    f.seek(0)
    with np.load(f, allow_pickle=False) as z:
        meta = json.loads(str(z["__fastmlp__"][()]))
    if isinstance(meta, dict) and fmt == NETWORK_FORMAT and meta.get("format") == FORMAT:
        raise ValueError(
            f"{path!r} is not a fastmlp network file but an estimator's (format {FORMAT!r}): read it with fastmlp.load"
        )
    if isinstance(meta, dict) and fmt == FORMAT and meta.get("format") == NETWORK_FORMAT:
        raise _NetworkFile(path)
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ValueError(
            f"{path!r} is not a fastmlp {what} file (format {meta.get('format') if isinstance(meta, dict) else meta!r})"
        )
    return meta


class _NetworkFile(Exception):
    """load() met a Network's file: it is read by Network.load instead."""


NETWORK_FORMAT = "fastmlp.network"


def save_network(path: Any, meta: dict[str, Any], params: np.ndarray, state: np.ndarray | None = None) -> None:
    """Writes a ``Network``'s file: `meta` (layer sizes — for a network of layers, its input size
    and, in the configuration, its layers' JSON form —, dtype, seed, configuration) as JSON beside
    the flat `params` and, when it has any, the flat `state` (running statistics), atomically and
    with the modes and paths of :func:`save`."""
    from . import __version__

    meta = {"format": NETWORK_FORMAT, "version": 1, "fastmlp_version": __version__, **meta}
    arrays = {"__fastmlp__": np.array(json.dumps(meta)), "params": np.array(params)}
    if state is not None and state.size:
        arrays["state"] = np.array(state)
    _atomic_savez(_path_str(path), arrays)


def load_network(path: Any, build: Any) -> Any:
    """Reads a file written by :func:`save_network`: ``build(meta)`` makes the network, and
    ``params``' header is checked against it before the array is read; a damaged, forged or
    foreign file raises ``ValueError`` (never unpickles, reads regular files only)."""
    path = _path_str(path)
    try:
        with _open_regular(path) as f, zipfile.ZipFile(f) as zf:
            headers = _headers(zf, os.fstat(f.fileno()).st_size)
            meta = _metadata(path, f, headers, NETWORK_FORMAT, "network")
            if meta.get("version") != 1:
                raise ValueError(f"format version {meta.get('version')!r}; this fastmlp reads 1")
            if set(headers) not in ({"__fastmlp__", "params"}, {"__fastmlp__", "params", "state"}):
                raise ValueError(f"expected the arrays __fastmlp__, params (and state), found {sorted(headers)}")
            # before build allocates what meta declares
            _check_network_shapes(meta, headers["params"], headers.get("state", ((0,), headers["params"][1])))
            net = build(meta)
            if headers["params"] != ((net.n_params,), net.dtype):
                raise ValueError(f"params is {headers['params']}, expected ({net.n_params},) of {net.dtype}")
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                net.params[:] = z["params"]
                if net.state.size:
                    net.state[:] = z["state"]
    except (FileNotFoundError, IsADirectoryError, PermissionError, MemoryError):
        raise
    except ValueError as exc:
        if str(exc).startswith(repr(path)):  # already says which file and why
            raise
        raise ValueError(f"{path!r} is not a readable fastmlp network file: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever parsing an untrusted file raises
        raise ValueError(f"{path!r} is not a readable fastmlp network file: {type(exc).__name__}: {exc}") from None
    return net


def _check_network_shapes(
    meta: dict[str, Any], params: tuple[tuple[int, ...], np.dtype], state: tuple[tuple[int, ...], np.dtype]
) -> None:
    """The parameter (and state) count and dtype that the metadata's ``layer_sizes`` (or input
    size and layers) and ``dtype`` declare must be those of the stored ``params`` and ``state``
    (whose sizes the file's own size bounds): a forged file cannot make ``load`` build a network
    larger than itself."""
    sizes, dtype = meta.get("layer_sizes"), meta.get("dtype")
    config = meta.get("config")
    if isinstance(config, dict) and "layers" in config:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if not isinstance(sizes, int) or isinstance(sizes, bool):
            raise ValueError(f"layer_sizes of a network of layers must be its input size (an int), got {sizes!r}")
        shapes = _layers.shapes(config["layers"], sizes)
        for name, stored, count in (("params", params, shapes.n_params), ("state", state, shapes.n_state)):
            if stored != ((count,), np.dtype(dtype)):
                raise ValueError(f"{name} is {stored}, but the layers declare ({count},) of {dtype}")
        return
    if state[0] != (0,):
        raise ValueError(f"a network of layer_sizes has no state array, found one of shape {state[0]}")
    if (
        not isinstance(sizes, list)
        or len(sizes) < 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)
    ):
        raise ValueError(f"layer_sizes must be a list of at least 2 ints >= 1, got {sizes!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    count = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))  # Python ints: no overflow
    if params != ((count,), np.dtype(dtype)):
        raise ValueError(f"params is {params}, but layer_sizes {sizes} of {dtype} declare ({count},) of {dtype}")


def _open_regular(path: str) -> Any:
    """`path` opened for reading if it is a regular file; ValueError for a device, FIFO or socket
    (``/dev/zero`` would be read without end), IsADirectoryError for a folder, as open() raises."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))  # a FIFO: no wait
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", path)
        if not stat.S_ISREG(mode):
            raise ValueError(
                f"{path!r} is not a regular file (a device, FIFO or socket): fastmlp reads models "
                "from regular files only"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# scikit-learn's MLP activations (its ACTIVATIONS); fastmlp's others have no equivalent there.
_SKLEARN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


def to_sklearn(est: Any) -> Any:
    """A fitted scikit-learn MLPClassifier/MLPRegressor with `est`'s weights and attributes.

    Predictions are equal. Settings scikit-learn lacks matter only for further
    training, and are dropped with a ``UserWarning`` that names each one: a
    parameter of fastmlp's own set to other than its default (``l1``,
    ``clip_norm``, ``class_weight``, ...), and a solver or learning_rate
    scikit-learn lacks (it becomes ``'adam'`` / ``'constant'``). ``dtype``,
    ``n_threads`` and ``verbose=2``, which do not change what training
    computes beyond rounding, are dropped silently.
    An activation scikit-learn lacks (``'leaky_relu'``) has no equivalent and
    raises ``ValueError``.
    """
    try:
        from sklearn import neural_network
        from sklearn.preprocessing import LabelBinarizer
    except ImportError:
        raise ImportError("to_sklearn needs scikit-learn: pip install scikit-learn") from None
    if not hasattr(est, "coefs_"):
        raise ValueError(f"to_sklearn needs a fitted estimator; this {type(est).__name__} is not fitted yet")
    if getattr(est, "_layers_spec", None) is not None:
        raise ValueError(
            "a network of layers (normalization, residual or layers set) has no scikit-learn equivalent: "
            "scikit-learn's MLP has dense layers only"
        )
    activation = est.activation
    if isinstance(activation, (list, tuple)) and len(activation) == 0:  # no hidden layer: none is used
        activation = "relu"  # (the Glorot bound fastmlp drew with, scikit-learn's default)
    if isinstance(activation, (list, tuple)):  # one per hidden layer: scikit-learn has one for all
        if len(set(activation)) != 1:
            raise ValueError(
                f"activation={list(activation)!r} (one per hidden layer) has no scikit-learn "
                "equivalent: scikit-learn's MLP uses one activation for every hidden layer"
            )
        activation = activation[0]
    if activation not in _SKLEARN_ACTIVATIONS:
        raise ValueError(f"activation={activation!r} has no scikit-learn equivalent")
    cls = getattr(neural_network, type(est).__name__)
    known = cls().get_params()
    ours = est.get_params(deep=False)
    defaults = type(est)().get_params()
    harmless = ("dtype", "n_threads", "verbose", "distributed")
    dropped = [
        f"{k}={v!r}"
        for k, v in ours.items()
        if k not in known and k not in harmless and not _same_value(v, defaults[k])
    ]
    params = {k: v for k, v in ours.items() if k in known}
    params["activation"] = activation
    if params.get("solver") not in ("sgd", "adam", "lbfgs"):
        dropped.append(f"solver={params['solver']!r} (becomes 'adam')")
        params["solver"] = "adam"
    if "loss" in params and params["loss"] not in ("squared_error", "poisson"):  # the prediction is the same
        dropped.append(f"loss={params['loss']!r} (becomes 'squared_error')")
        params["loss"] = "squared_error"
    if params.get("learning_rate") not in ("constant", "invscaling", "adaptive"):
        dropped.append(f"learning_rate={params['learning_rate']!r} (becomes 'constant')")
        params["learning_rate"] = "constant"
    if isinstance(params.get("verbose"), numbers.Integral) and params["verbose"] == 2:
        params["verbose"] = True
    if dropped:
        warnings.warn(
            f"to_sklearn: scikit-learn's {cls.__name__} lacks {', '.join(dropped)}; predictions are "
            "the same, but further training (fit, partial_fit) would differ",
            UserWarning,
            stacklevel=3,
        )
    sk = cls(**params)
    y_type = est.get_model_state()["attributes"].get("y_type")  # checks coefs_ set by hand
    sk.coefs_ = [np.array(c) for c in est.coefs_]
    sk.intercepts_ = [np.array(b) for b in est.intercepts_]
    for name in (
        "n_iter_",
        "t_",
        "n_layers_",
        "n_outputs_",
        "out_activation_",
        "n_features_in_",
        "loss_",
        "loss_curve_",
        "best_loss_",
        "validation_scores_",
        "best_validation_score_",
        "feature_names_in_",
    ):
        if hasattr(est, name):
            value = getattr(est, name)
            setattr(sk, name, list(value) if isinstance(value, list) else value)
    if hasattr(est, "classes_"):
        lb = LabelBinarizer()
        if y_type == "multilabel-indicator":
            lb.fit(np.eye(len(est.classes_), dtype=int))
        else:
            lb.fit(est.classes_)
        sk._label_binarizer = lb
        sk.classes_ = lb.classes_
    return sk
