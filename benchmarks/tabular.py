#!/usr/bin/env python
"""Tabular benchmark: one fixed protocol, the ten data sets of ``shared/data/tabular``, fastmlp beside its peers.

The protocol (issue 24), the same for every model:

- **Data.** Each data set of ``manifest.json`` as it comes: its categorical columns (the manifest's list) as pandas
  ``category``, every other feature numeric, missing values left missing. Class labels are coded 0..k-1 (sorted). The
  two price targets (``ames``, ``Sacramento``) are modelled and scored as log(price), the usual practice (the
  data's README); every other target is used as given.
- **Split.** One 80/20 train/test split with a seed (``--split-seed``, default 0): stratified by class for
  classification (each class contributes round(0.2 × its count) test rows, at least one when it has two rows or
  more), a plain random permutation for regression. The split is computed with NumPy here, not with a library
  function, so that it stays the same across scikit-learn versions. ``--max-rows`` first draws a subsample the same
  way (stratified for classification).
- **Seeds.** Every model is fitted on the same split with each model seed (three by default: 0, 1, 2); the spread
  reported is the spread over model seeds, not over splits.
- **Scores.** Test accuracy for classification; test RMSE and R² for regression. Fit time is the wall time of
  ``fit`` (preprocessing included), on ``--threads`` threads (default 2).
- **Normalized score** (the issue's target metric): on each data set, score ÷ the best model's score, or for
  regression best RMSE ÷ RMSE; 1 is the best model of the run.

Models (each optional: one whose package is missing is skipped with a note):

- ``hgb``: scikit-learn's ``HistGradientBoosting{Classifier,Regressor}``, native categorical support
  (``categorical_features="from_dtype"``), defaults otherwise.
- ``xgboost``: ``XGB{Classifier,Regressor}(tree_method="hist", enable_categorical=True)``.
- ``lightgbm``: ``LGBM{Classifier,Regressor}`` (pandas categories used natively).
- ``sklearn-mlp``: scikit-learn's ``MLP{Classifier,Regressor}`` with its defaults in the standard pipeline: numeric
  columns median-imputed and standardized, categorical ones one-hot encoded (missing is its own category, unseen
  ones ignored); the regression target standardized (``TransformedTargetRegressor``).
- ``fastmlp-mlp``: fastmlp's ``MLPClassifier``/``MLPRegressor`` with the same defaults in the same pipeline: the
  baseline that a tabular estimator of fastmlp has to beat.
- ``fastmlp-tabular``: fastmlp's ``TabularClassifier``/``TabularRegressor`` with their defaults, given the DataFrame
  as it is (their own preprocessing, no pipeline).
- ``realmlp``: ``pytabkit``'s ``RealMLP_TD_{Classifier,Regressor}`` (on the CPU, its defaults, its own preprocessing
  of the DataFrame), if installed; numeric missing values median-imputed first, since it refuses them.

    python benchmarks/tabular.py --quick                       # 1 seed, at most 2,000 rows per data set
    python benchmarks/tabular.py --json tabular.json           # the full protocol: 3 seeds, every row
    python benchmarks/tabular.py --datasets concrete,ames --models hgb,fastmlp-mlp --seeds 0
    FASTMLP_DATA=/path/to/data python benchmarks/tabular.py    # data/tabular/ under that folder

Install the peers with ``pip install '.[bench-tabular]'``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOG_TARGETS = frozenset({"ames", "Sacramento"})  # prices: modelled and scored as log(price)
TEST_FRACTION = 0.2
MODELS = ("hgb", "xgboost", "lightgbm", "sklearn-mlp", "fastmlp-mlp", "fastmlp-tabular", "realmlp")
QUICK_MAX_ROWS = 2000


# model → the package it needs (a model whose package is missing is skipped with a note)
PACKAGES = {"hgb": "sklearn", "xgboost": "xgboost", "lightgbm": "lightgbm", "sklearn-mlp": "sklearn",
            "fastmlp-mlp": "fastmlp", "fastmlp-tabular": "fastmlp", "realmlp": "pytabkit"}  # fmt: skip


def missing_package(model: str) -> str | None:
    """The package ``model`` needs when it is not installed, else None."""
    import importlib.util

    need = [PACKAGES[model]] + (["sklearn"] if model == "fastmlp-mlp" else [])  # the pipeline is scikit-learn's
    return next((pkg for pkg in need if importlib.util.find_spec(pkg) is None), None)


# ---------------------------------------------------------------------------------------------------------------
# The protocol's pure functions: split, subsample, scores, summary, tables (tested on made-up data).


def _check_task(task: str) -> None:
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")


def split_indices(
    y: np.ndarray, task: str, seed: int, test_fraction: float = TEST_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """The protocol's train/test split: sorted (train, test) row indices.

    Classification: stratified; each class with n rows gives round(test_fraction × n) rows to the test set (at
    least one when n ≥ 2, at most n − 1). Regression: the first round(test_fraction × n) rows of a permutation.
    Both drawn from ``np.random.default_rng(seed)``, so the split depends on the seed and the data only.
    """
    _check_task(task)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    y = np.asarray(y)
    n = len(y)
    if n < 2:
        raise ValueError(f"y must have at least 2 rows to split, got {n}")
    rng = np.random.default_rng(seed)
    if task == "regression":
        order = rng.permutation(n)
        n_test = min(max(round(test_fraction * n), 1), n - 1)
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    test = []
    for label in np.unique(y):  # sorted: the same draw order on every machine
        rows = np.flatnonzero(y == label)
        k = round(test_fraction * len(rows))
        k = min(max(k, 1 if len(rows) >= 2 else 0), len(rows) - 1)
        test.append(rng.permutation(rows)[:k])
    test_idx = np.sort(np.concatenate(test))
    mask = np.ones(n, dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def subsample_indices(y: np.ndarray, task: str, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` rows (all when None or enough): the same stratified draw as the
    split for classification (every class keeps its share, at least two rows where it has them)."""
    _check_task(task)
    y = np.asarray(y)
    n = len(y)
    if max_rows is None or max_rows >= n:
        return np.arange(n)
    if max_rows < 2:
        raise ValueError(f"max_rows must be at least 2, got {max_rows}")
    _, keep = split_indices(y, task, seed, test_fraction=max_rows / n)
    return keep


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Test scores: ``{"accuracy"}`` for classification, ``{"rmse", "r2"}`` for regression."""
    _check_task(task)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true and y_pred must be 1-D of one nonzero length, got {y_true.shape} and {y_pred.shape}")
    if task == "classification":
        return {"accuracy": float(np.mean(y_true == y_pred))}
    err = y_true.astype(float) - y_pred.astype(float)
    sse = float(err @ err)
    sst = float(np.sum((y_true - y_true.mean()) ** 2))
    return {"rmse": math.sqrt(sse / len(err)), "r2": 1.0 - sse / sst if sst > 0 else float("nan")}


def primary_metric(task: str) -> str:
    """The score a table shows and normalizes: accuracy (higher is better) or RMSE (lower is better)."""
    _check_task(task)
    return "accuracy" if task == "classification" else "rmse"


@dataclass
class Result:
    """One fit: a model on a data set with one seed (``error`` set when it failed)."""

    dataset: str
    task: str
    model: str
    seed: int
    scores: dict[str, float] = field(default_factory=dict)
    fit_seconds: float = float("nan")
    error: str = ""


def summarize(results: Sequence[Result]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (data set, model): the mean and sample std over seeds of each score, the mean fit seconds, the seed
    count, and the errors (a model with any failed seed has no scores)."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.model), []).append(r)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, rs in groups.items():
        errors = [r.error for r in rs if r.error]
        entry: dict[str, Any] = {"task": rs[0].task, "seeds": len(rs), "errors": errors}
        if not errors:
            for metric in rs[0].scores:
                values = np.array([r.scores[metric] for r in rs], dtype=float)
                entry[metric] = float(values.mean())
                entry[metric + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            entry["fit_seconds"] = float(np.mean([r.fit_seconds for r in rs]))
        out[key] = entry
    return out


def normalized_scores(summary: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Per (data set, model): mean score ÷ the data set's best (accuracy), or best RMSE ÷ RMSE (regression)."""
    best: dict[str, float] = {}
    for (ds, _), e in summary.items():
        metric = primary_metric(e["task"])
        if metric in e:
            v = e[metric]
            if ds not in best or (v > best[ds] if metric == "accuracy" else v < best[ds]):
                best[ds] = v
    out = {}
    for (ds, model), e in summary.items():
        metric = primary_metric(e["task"])
        if metric in e:
            v = e[metric]
            out[(ds, model)] = v / best[ds] if metric == "accuracy" else best[ds] / v
    return out


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    if entry["errors"]:
        return "error"
    metric = primary_metric(entry["task"])
    text = f"{entry[metric]:.4f}" + (f" ± {entry[metric + '_std']:.4f}" if entry["seeds"] > 1 else "")
    if entry["task"] == "regression":
        text += f" (R² {entry['r2']:.3f})"
    return text


def render_markdown(summary: dict[tuple[str, str], dict[str, Any]], datasets: Sequence[str],
                    models: Sequence[str]) -> list[str]:  # fmt: skip
    """The report: scores (mean ± std over seeds; regression: RMSE with the mean R²), the mean normalized score and
    the number of data sets each model wins, then the mean fit seconds."""
    norm = normalized_scores(summary)
    head = "| data set | metric | " + " | ".join(models) + " |"
    rule = "|---|---|" + "---:|" * len(models)
    lines = ["Test score (mean ± sample std over model seeds, when more than one; accuracy ↑, RMSE ↓; best in bold):",
             "", head, rule]  # fmt: skip
    for ds in datasets:
        entries = [summary.get((ds, m)) for m in models]
        task = next((e["task"] for e in entries if e is not None), None)
        if task is None:
            continue
        metric = "accuracy" if task == "classification" else "RMSE (R²)"
        cells = []
        for m, e in zip(models, entries):
            c = _cell(e)
            cells.append(f"**{c}**" if norm.get((ds, m)) == 1.0 else c)
        lines.append(f"| {ds} | {metric} | " + " | ".join(cells) + " |")
    mean_norm = []
    for m in models:
        vals = [norm[(ds, m)] for ds in datasets if (ds, m) in norm]
        n_ds = sum(1 for ds in datasets if any(k[0] == ds for k in summary))
        mean_norm.append(
            f"{np.mean(vals):.4f}" + ("" if len(vals) == n_ds else f" ({len(vals)} sets)") if vals else "–"
        )
    lines.append("| mean normalized score | score ÷ best | " + " | ".join(mean_norm) + " |")
    wins = [str(sum(1 for ds in datasets if norm.get((ds, m)) == 1.0)) for m in models]
    lines.append("| data sets won | | " + " | ".join(wins) + " |")
    lines += ["", "Fit seconds (mean over model seeds; preprocessing included):", "",
              "| data set | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]  # fmt: skip
    for ds in datasets:
        entries = [summary.get((ds, m)) for m in models]
        if all(e is None for e in entries):
            continue
        cells = ["–" if e is None else "error" if e["errors"] else f"{e['fit_seconds']:.2f}" for e in entries]
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Data


def data_dir(root: Path) -> Path:
    """``root/tabular``, or a clear exit (status 2) when it or its manifest is missing."""
    folder = root / "tabular"
    if not (folder / "manifest.json").is_file():
        print(
            f"tabular.py: no tabular data at {folder} (manifest.json missing). The ten data sets live in the "
            "project's shared/data/tabular folder, which is not part of the repository; pass --data DIR (the folder "
            "that holds tabular/) or set FASTMLP_DATA.",
            file=sys.stderr,
        )
        sys.exit(2)
    return folder


def load_dataset(folder: Path, name: str, info: dict[str, Any]) -> tuple[Any, np.ndarray]:
    """The features as a pandas DataFrame (categorical columns as ``category``, the rest float) and the target:
    class codes 0..k-1 (sorted labels) or floats (log for LOG_TARGETS)."""
    import pandas as pd

    frame = pd.read_csv(folder / info["file"])
    target = info["target"]
    if target not in frame.columns:
        raise ValueError(f"{name}: target column {target!r} is not in {info['file']}")
    y_raw = frame.pop(target)
    for col in frame.columns:
        frame[col] = frame[col].astype("category") if col in info["categorical"] else frame[col].astype(float)
    if info["task"] == "classification":
        _, codes = np.unique(y_raw.astype(str).to_numpy(), return_inverse=True)
        return frame, codes.astype(np.int64)
    y = y_raw.to_numpy(dtype=float)
    return frame, np.log(y) if name in LOG_TARGETS else y


# ---------------------------------------------------------------------------------------------------------------
# Models


def _mlp_pipeline(estimator: Any, task: str, frame: Any) -> Any:
    """The standard pipeline: numeric median-imputed and standardized, categorical one-hot; the regression target
    standardized."""
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = [c for c in frame.columns if str(frame[c].dtype) == "category"]
    nums = [c for c in frame.columns if c not in cats]
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), nums),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cats),
        ]
    )
    model = make_pipeline(pre, estimator)
    return model if task == "classification" else TransformedTargetRegressor(model, transformer=StandardScaler())


def make_model(name: str, task: str, seed: int, threads: int, frame: Any) -> Any:
    """An unfitted model: a scikit-learn-style estimator that takes the DataFrame."""
    _check_task(task)
    clf = task == "classification"
    if name == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        cls = HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor
        return cls(categorical_features="from_dtype", random_state=seed)
    if name == "xgboost":
        import xgboost

        cls = xgboost.XGBClassifier if clf else xgboost.XGBRegressor
        return cls(tree_method="hist", enable_categorical=True, random_state=seed, n_jobs=threads)
    if name == "lightgbm":
        import lightgbm

        cls = lightgbm.LGBMClassifier if clf else lightgbm.LGBMRegressor
        return cls(random_state=seed, n_jobs=threads, verbose=-1)
    if name == "sklearn-mlp":
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        return _mlp_pipeline((MLPClassifier if clf else MLPRegressor)(random_state=seed), task, frame)
    if name == "fastmlp-mlp":
        import fastmlp

        cls = fastmlp.MLPClassifier if clf else fastmlp.MLPRegressor
        return _mlp_pipeline(cls(random_state=seed, n_threads=threads), task, frame)
    if name == "fastmlp-tabular":
        import fastmlp

        cls = fastmlp.TabularClassifier if clf else fastmlp.TabularRegressor
        return cls(random_state=seed, n_threads=threads)  # the DataFrame as it is: no pipeline
    if name == "realmlp":
        import pytabkit
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline

        cls = pytabkit.RealMLP_TD_Classifier if clf else pytabkit.RealMLP_TD_Regressor
        # RealMLP refuses missing numeric values: median-imputed, everything else passed through as it is
        nums = [c for c in frame.columns if str(frame[c].dtype) != "category"]
        impute = ColumnTransformer([("num", SimpleImputer(strategy="median"), nums)], remainder="passthrough",
                                   verbose_feature_names_out=False).set_output(transform="pandas")  # fmt: skip
        return make_pipeline(impute, cls(device="cpu", random_state=seed, n_threads=threads, verbosity=0))
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")


def run_one(model: Any, task: str, x_train: Any, y_train: np.ndarray, x_test: Any, y_test: np.ndarray,
            threads: int) -> tuple[dict[str, float], float]:  # fmt: skip
    """Fit (timed) and score one model; scikit-learn's own threads (HGB's OpenMP, BLAS) limited to ``threads``."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        start = time.perf_counter()
        model.fit(x_train, y_train)
        seconds = time.perf_counter() - start
        pred = np.asarray(model.predict(x_test)).reshape(-1)
    return score(task, y_test, pred.astype(y_test.dtype)), seconds


# ---------------------------------------------------------------------------------------------------------------
# Driver


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("FASTMLP_DATA", DEFAULT_DATA)),
                   help="the folder that holds tabular/ (default: ../shared/data or $FASTMLP_DATA)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help=f"one seed, at most {QUICK_MAX_ROWS:,} rows per data set")
    p.add_argument("--datasets", type=_csv, default=None, help="comma-separated (default: all of the manifest)")
    p.add_argument("--models", type=_csv, default=list(MODELS), help=f"comma-separated of {', '.join(MODELS)}")
    p.add_argument("--seeds", type=lambda s: [int(t) for t in _csv(s)], default=None, help="model seeds (0,1,2)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=None, help="subsample each data set (stratified) to this size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="write every fit and the summary here")
    args = p.parse_args(argv)

    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)} (choose from {', '.join(MODELS)})")
    seeds = args.seeds if args.seeds is not None else [0] if args.quick else [0, 1, 2]
    max_rows = args.max_rows if args.max_rows is not None else QUICK_MAX_ROWS if args.quick else None
    folder = data_dir(args.data)
    manifest = json.loads((folder / "manifest.json").read_text())
    datasets = args.datasets if args.datasets is not None else sorted(manifest, key=str.lower)
    missing = [d for d in datasets if d not in manifest]
    if missing:
        p.error(f"--datasets: not in the manifest: {', '.join(missing)} (it has {', '.join(sorted(manifest))})")

    models, notes = [], []
    for m in args.models:
        pkg = missing_package(m)
        if pkg is None:
            models.append(m)
        else:
            notes.append(f"{m}: skipped, {pkg} is not installed")
    for n in notes:
        print(n, file=sys.stderr)

    mode = "quick" if args.quick else "full"
    rows = f"{max_rows:,}" if max_rows else "all"
    print(f"# Tabular benchmark: {mode} mode, model seeds {seeds}, split seed {args.split_seed}, at most {rows} rows,"
          f" {args.threads} threads, {cpu_model()}", flush=True)  # fmt: skip
    results: list[Result] = []
    for ds in datasets:
        info = manifest[ds]
        task = info["task"]
        frame, y = load_dataset(folder, ds, info)
        keep = subsample_indices(y, task, max_rows, args.split_seed)
        frame, y = frame.iloc[keep].reset_index(drop=True), y[keep]
        train, test = split_indices(y, task, args.split_seed)
        for m in models:
            for seed in seeds:
                r = Result(ds, task, m, seed)
                try:
                    with warnings.catch_warnings():  # ConvergenceWarning, a peer's deprecations: the score tells
                        warnings.simplefilter("ignore")
                        model = make_model(m, task, seed, args.threads, frame)
                        r.scores, r.fit_seconds = run_one(
                            model, task, frame.iloc[train], y[train], frame.iloc[test], y[test], args.threads
                        )
                except Exception as e:  # noqa: BLE001 — a peer's failure is a row of the report, not the end of the run
                    r.error = f"{type(e).__name__}: {e}"
                    print(f"{ds} {m} seed {seed}: {r.error}", file=sys.stderr)
                results.append(r)
                status = r.error or " ".join(f"{k}={v:.4f}" for k, v in r.scores.items())
                print(f"  {ds:18s} {m:12s} seed {seed}: {status} ({r.fit_seconds:.2f} s)", file=sys.stderr, flush=True)

    summary = summarize(results)
    lines = render_markdown(summary, datasets, models)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    print("\n".join(lines))
    if args.json is not None:
        meta = {"mode": "quick" if args.quick else "full", "seeds": seeds, "split_seed": args.split_seed,
                "max_rows": max_rows, "threads": args.threads, "cpu": cpu_model(), "skipped": notes}  # fmt: skip
        table = [{"dataset": d, "model": m, **e} for (d, m), e in summary.items()]
        args.json.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results], "summary": table},
                                        indent=1, allow_nan=True))  # fmt: skip
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
