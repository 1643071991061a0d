"""benchmarks/tabular.py: the protocol's pure functions (split, subsample, scores, summary, tables) on made-up data,
and its run end to end on a tiny synthetic data set written here (no network, no shared data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tabular.py"


@pytest.fixture(scope="module")
def tab():
    yield load_script(SCRIPT, "fastmlp_bench_tabular")
    del sys.modules["fastmlp_bench_tabular"]


def test_stratified_split_keeps_each_class_share_and_is_seeded(tab):
    y = np.array([0] * 50 + [1] * 30 + [2] * 7 + [3] * 2 + [4])  # 90 rows, one class of a single row
    train, test = tab.split_indices(y, "classification", seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))  # a partition
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    counts = {c: int(np.sum(y[test] == c)) for c in range(5)}
    # round(0.2 n) per class, at least one where a class has two rows, never all of a class
    assert counts == {0: 10, 1: 6, 2: 1, 3: 1, 4: 0}
    again = tab.split_indices(y, "classification", seed=3)
    other = tab.split_indices(y, "classification", seed=4)
    assert np.array_equal(again[1], test) and not np.array_equal(other[1], test)


def test_regression_split_is_a_seeded_80_20_permutation(tab):
    y = np.linspace(0.0, 1.0, 101)
    train, test = tab.split_indices(y, "regression", seed=0)
    assert len(test) == 20 and len(train) == 81
    assert not set(train) & set(test)
    assert not np.array_equal(test, np.arange(81, 101))  # shuffled, not the tail
    assert np.array_equal(tab.split_indices(y, "regression", seed=0)[1], test)


def test_subsample_is_stratified_and_keeps_everything_when_small(tab):
    y = np.array([0] * 900 + [1] * 100)
    keep = tab.subsample_indices(y, "classification", 200, seed=0)
    assert len(keep) == 200 and int(np.sum(y[keep] == 1)) == 20
    assert np.array_equal(tab.subsample_indices(y, "classification", None, seed=0), np.arange(1000))
    assert np.array_equal(tab.subsample_indices(y, "regression", 5000, seed=0), np.arange(1000))


def test_bad_arguments_are_named(tab):
    with pytest.raises(ValueError, match="task must be"):
        tab.split_indices(np.arange(10), "ranking", seed=0)
    with pytest.raises(ValueError, match="test_fraction"):
        tab.split_indices(np.arange(10), "regression", seed=0, test_fraction=1.0)
    with pytest.raises(ValueError, match="y_true and y_pred"):
        tab.score("regression", np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="model must be one of"):
        tab.make_model("catboost", "regression", 0, 1, None)


def test_scores(tab):
    assert tab.score("classification", np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == {"accuracy": 0.75}
    s = tab.score("regression", np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    assert s["rmse"] == pytest.approx(1.0)  # sqrt(4 / 4)
    assert s["r2"] == pytest.approx(1.0 - 4.0 / 5.0)  # SST = 2.25 + 0.25 + 0.25 + 2.25


def result(tab, ds, task, model, seed, value, seconds=1.0, error=""):
    scores = {} if error else {"accuracy": value} if task == "classification" else {"rmse": value, "r2": 0.5}
    return tab.Result(ds, task, model, seed, scores, seconds, error)


def test_summary_normalized_scores_and_table(tab):
    rs = [
        result(tab, "a", "classification", "m1", 0, 0.80, 2.0),
        result(tab, "a", "classification", "m1", 1, 0.90, 4.0),  # mean 0.85, std 0.0707
        result(tab, "a", "classification", "m2", 0, 0.68, 1.0),
        result(tab, "r", "regression", "m1", 0, 2.0),
        result(tab, "r", "regression", "m2", 0, 1.0),  # the lower RMSE wins
        result(tab, "b", "classification", "m1", 0, 0.5),
        result(tab, "b", "classification", "m2", 0, 0.0, error="RuntimeError: boom"),
    ]
    summary = tab.summarize(rs)
    a1 = summary[("a", "m1")]
    assert a1["accuracy"] == pytest.approx(0.85) and a1["accuracy_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert a1["fit_seconds"] == pytest.approx(3.0) and a1["seeds"] == 2
    assert summary[("b", "m2")]["errors"] == ["RuntimeError: boom"] and "accuracy" not in summary[("b", "m2")]
    norm = tab.normalized_scores(summary)
    assert norm[("a", "m1")] == 1.0 and norm[("a", "m2")] == pytest.approx(0.8)
    assert norm[("r", "m2")] == 1.0 and norm[("r", "m1")] == pytest.approx(0.5)  # best RMSE ÷ RMSE
    assert ("b", "m2") not in norm

    lines = tab.render_markdown(summary, ["a", "b", "r", "absent"], ["m1", "m2"])
    split = lines.index("| data set | m1 | m2 |")  # the fit-time table's header
    rows = {
        ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")] for ln in lines[:split] if "|" in ln
    }
    assert rows["a"][1:] == ["accuracy", "**0.8500 ± 0.0707**", "0.6800"]  # one seed: no spread to show
    assert rows["r"][1:] == ["RMSE (R²)", "2.0000 (R² 0.500)", "**1.0000 (R² 0.500)**"]
    assert rows["b"][3] == "error"
    assert "absent" not in rows
    # m1: (1 + 1 + 0.5) / 3; m2 scored on 2 of the 3 sets: (0.8 + 1) / 2, said so
    assert rows["mean normalized score"][2:] == ["0.8333", "0.9000 (2 sets)"]
    assert rows["data sets won"][2:] == ["2", "1"]
    fit = lines[split:]
    assert "| a | 3.00 | 1.00 |" in fit and "| b | 1.00 | error |" in fit and "| r | 1.00 | 1.00 |" in fit


def test_missing_data_folder_exits_with_a_clear_message(tab, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tab.main(["--data", str(tmp_path), "--quick"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"no tabular data at {tmp_path / 'tabular'}" in err and "--data" in err


def write_toy_data(root: Path) -> None:
    """``root/tabular``: a classification set (a categorical column, missing values) and a regression set, 120 rows
    each, with the manifest that names them."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 120
    x1 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    x2 = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))  # missing values
    label = np.where(x1 + (colour == "red") > 0.5, "yes", "no")
    folder = root / "tabular"
    folder.mkdir()
    pd.DataFrame({"x1": x1, "colour": colour, "x2": x2, "label": label}).to_csv(folder / "toy.csv.gz", index=False)
    y = 2 * x1 + (colour == "blue") + rng.normal(scale=0.1, size=n)
    pd.DataFrame({"x1": x1, "colour": colour, "y": y}).to_csv(folder / "toyreg.csv.gz", index=False)
    manifest = {
        "toy": {"file": "toy.csv.gz", "target": "label", "task": "classification", "categorical": ["colour"]},
        "toyreg": {"file": "toyreg.csv.gz", "target": "y", "task": "regression", "categorical": ["colour"]},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def run_toy(tab, tmp_path, capsys, models: list[str], seeds: str) -> dict:
    write_toy_data(tmp_path)
    out = tmp_path / "out.json"
    rc = tab.main(["--data", str(tmp_path), "--models", ",".join(models), "--seeds", seeds, "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| toy | accuracy |" in text and "| toyreg | RMSE (R²) |" in text
    report = json.loads(out.read_text())
    ran = [m for m in models if tab.missing_package(m) is None]
    assert {r["model"] for r in report["results"]} == set(ran)
    assert len(report["results"]) == 2 * len(ran) * len(seeds.split(","))
    for r in report["results"]:
        assert not r["error"] and r["fit_seconds"] > 0
        if r["task"] == "classification":
            assert 0.7 < r["scores"]["accuracy"] <= 1.0  # 24 test rows of a learnable rule
        else:
            assert r["scores"]["r2"] > 0.5
    return report


def test_end_to_end_on_a_tiny_synthetic_data_set(tab, tmp_path, capsys):
    pytest.importorskip("sklearn")
    report = run_toy(tab, tmp_path, capsys, ["fastmlp-mlp", "sklearn-mlp"], "0,1")
    assert report["meta"]["seeds"] == [0, 1]
    # fastmlp's MLP keeps scikit-learn's parity promise inside the same pipeline: the same scores
    by = {(r["dataset"], r["model"], r["seed"]): r["scores"] for r in report["results"]}
    for ds in ("toy", "toyreg"):
        for seed in (0, 1):
            for k, v in by[(ds, "sklearn-mlp", seed)].items():
                assert by[(ds, "fastmlp-mlp", seed)][k] == pytest.approx(v, abs=1e-3)


def test_fastmlp_tabular_runs_on_the_toy_data_as_a_dataframe(tab, tmp_path, capsys):
    run_toy(tab, tmp_path, capsys, ["fastmlp-tabular"], "0")


@pytest.mark.slow
def test_every_installed_peer_runs_on_the_toy_data(tab, tmp_path, capsys):
    pytest.importorskip("sklearn")
    run_toy(tab, tmp_path, capsys, list(tab.MODELS), "0")
