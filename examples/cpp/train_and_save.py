"""The Python half of examples/cpp/predict.cpp: trains a classifier on scikit-learn's iris data
(string labels), saves it, and writes inputs for the C++ program; then checks its predictions.

    python examples/cpp/train_and_save.py OUT            # OUT/model.npz, OUT/X.csv, OUT/expected.csv
    ./predict OUT/model.npz OUT/X.csv > OUT/cpp.csv
    python examples/cpp/train_and_save.py OUT --compare OUT/cpp.csv   # exit 1 unless equal

expected.csv holds Python's predict and predict_proba in predict's format: label,p_0,p_1,...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris

import fastmlp


def train(out: Path) -> None:
    iris = load_iris()
    X, y = iris.data, iris.target_names[iris.target]  # 'setosa', 'versicolor', 'virginica'
    clf = fastmlp.MLPClassifier(hidden_layer_sizes=(16,), max_iter=3000, random_state=0).fit(X, y)
    out.mkdir(parents=True, exist_ok=True)
    clf.save(out / "model.npz")
    rows = X[::10]
    np.savetxt(out / "X.csv", rows, delimiter=",", fmt="%.17g")
    with open(out / "expected.csv", "w", encoding="utf-8") as f:
        for label, p in zip(clf.predict(rows), clf.predict_proba(rows)):
            f.write(",".join([str(label), *(f"{v:.17g}" for v in p)]) + "\n")
    print(
        f"saved {out / 'model.npz'} (training accuracy {clf.score(X, y):.3f}) and {len(rows)} rows in {out / 'X.csv'}"
    )


def compare(out: Path, predictions: Path) -> int:
    def read(path: Path) -> list[list[str]]:
        return [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()]

    want, got = read(out / "expected.csv"), read(predictions)
    labels_equal = [w[0] for w in want] == [g[0] for g in got]
    diff = max(abs(float(a) - float(b)) for w, g in zip(want, got) for a, b in zip(w[1:], g[1:])) if got else np.inf
    ok = len(want) == len(got) and labels_equal and diff <= 1e-12
    verdict = "ok" if ok else "FAIL"
    print(f"{len(got)} rows: labels {'equal' if labels_equal else 'DIFFER'}, max |Δp| = {diff:.3g}: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, metavar="PREDICTIONS")
    args = parser.parse_args()
    sys.exit(compare(args.out, args.compare) if args.compare else train(args.out))
