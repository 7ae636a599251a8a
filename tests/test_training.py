"""The training CLI: train, gate, determinism, the user's CSV, publish/promote/rollback/list."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pytest

from function.core.config import usable_cpus
from tests.conftest import PYTHON, ROOT, free_port, run_training
from training.__main__ import main
from training.errors import EXIT_GATE


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def classification_csv(path: Path, rows_per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    lines = ["size,weight,label"]
    for label, centre in (("small", 1.0), ("large", 5.0)):
        for _ in range(rows_per_class):
            lines.append(f"{centre + rng.normal():.3f},{centre * 2 + rng.normal():.3f},{label}")
    return write_csv(path, "\n".join(lines) + "\n")


def regression_csv(path: Path) -> Path:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, 60)
    rows = "\n".join(f"{a:.4f},{3 * a + 1 + rng.normal(scale=0.1):.4f}" for a in x)
    return write_csv(path, "x,price\n" + rows + "\n")


def test_train_writes_model_and_complete_metadata(iris_artifact: Path) -> None:
    metadata = json.loads((iris_artifact / "metadata.json").read_text())

    for field in (
        "name",
        "version",
        "created_at",
        "sha256",
        "estimator",
        "params",
        "feature_names",
        "class_names",
        "metrics",
        "dataset",
        "versions",
        "git_commit",
    ):
        assert field in metadata, field
    assert metadata["feature_names"] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert metadata["class_names"] == ["setosa", "versicolor", "virginica"]
    assert metadata["metrics"]["holdout"]["accuracy"] > 0.85
    assert metadata["metrics"]["cv"]["accuracy"]["folds"] == 5
    assert metadata["dataset"]["rows"] == 150
    assert set(metadata["versions"]) == {"python", "sklearn", "numpy", "joblib"}
    assert (
        joblib.load(iris_artifact / "model.joblib").predict([[5.1, 3.5, 1.4, 0.2]])[0] == "setosa"
    )


def test_same_data_and_seed_give_same_metrics_and_predictions(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert (
            main(
                [
                    "train",
                    "--estimator",
                    "random_forest",
                    "--param",
                    "n_estimators=15",
                    "--seed",
                    "7",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        model = joblib.load(out / "model.joblib")
        X = load_iris().data
        runs.append(
            (
                json.loads((out / "metadata.json").read_text())["metrics"],
                model.predict(X).tolist(),
                model.predict_proba(X).tolist(),
            )
        )

    assert runs[0] == runs[1]


def test_a_different_seed_changes_the_split(tmp_path: Path) -> None:
    outs = []
    for seed in ("1", "2"):
        main(["train", "--seed", seed, "--out", str(tmp_path / seed)])
        outs.append(json.loads((tmp_path / seed / "metadata.json").read_text())["metrics"])

    assert outs[0] != outs[1]


def test_failed_gate_exits_non_zero_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gated"

    code = main(["train", "--min-accuracy", "0.999", "--out", str(out)])

    assert code == EXIT_GATE
    assert "quality gate accuracy>=0.999 failed" in capsys.readouterr().err
    assert not out.exists()


def test_gate_on_a_cross_validated_metric(tmp_path: Path) -> None:
    assert main(["train", "--gate", "cv_f1_macro>=0.5", "--out", str(tmp_path / "ok")]) == 0
    metadata = json.loads((tmp_path / "ok" / "metadata.json").read_text())
    assert metadata["gates"] == ["cv_f1_macro>=0.5"]


@pytest.mark.parametrize(
    "gate, message",
    [
        ("rmse>=100", "lower rmse is better, so a gate sets its ceiling; use rmse<=100"),
        ("cv_mae>5", "lower cv_mae is better"),
        ("accuracy<=0.9", "higher accuracy is better, so a gate sets its floor; use accuracy>=0.9"),
        ("r2<0.5", "higher r2 is better"),
    ],
)
def test_an_upside_down_gate_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gate: str, message: str
) -> None:
    code = main(["train", "--gate", gate, "--out", str(tmp_path / "out")])

    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_ceiling_gate_refuses_a_regressor_over_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: rmse>=100 passed a model with rmse 30,420; rmse<=100 refuses it."""
    data = regression_csv(tmp_path / "prices.csv")
    base = ["train", "--data", str(data), "--target", "price", "--estimator", "ridge"]

    refused = main([*base, "--gate", "rmse<=0.001", "--out", str(tmp_path / "tight")])
    passed = main([*base, "--gate", "rmse<=1e9", "--out", str(tmp_path / "loose")])

    assert (refused, passed) == (EXIT_GATE, 0)
    assert "quality gate rmse<=0.001 failed" in capsys.readouterr().err


def test_users_own_csv_classification(tmp_path: Path) -> None:
    data = classification_csv(tmp_path / "sizes.csv")
    out = tmp_path / "sizes"

    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--target",
                "label",
                "--out",
                str(out),
                "--estimator",
                "gradient_boosting",
                "--param",
                "n_estimators=10",
            ]
        )
        == 0
    )

    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["name"] == "sizes"
    assert metadata["feature_names"] == ["size", "weight"]
    assert metadata["class_names"] == ["large", "small"]
    assert metadata["dataset"]["source"] == str(data)
    assert len(metadata["dataset"]["sha256"]) == 64


def test_users_own_csv_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, 60)
    rows = "\n".join(f"{a:.4f},{3 * a + 1 + rng.normal(scale=0.1):.4f}" for a in x)
    data = write_csv(tmp_path / "line.csv", "x,y\n" + rows + "\n")
    out = tmp_path / "line"

    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--target",
                "y",
                "--estimator",
                "ridge",
                "--gate",
                "r2>=0.95",
                "--out",
                str(out),
            ]
        )
        == 0
    )

    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["task"] == "regression"
    assert metadata["class_names"] == []
    assert set(metadata["metrics"]["holdout"]) == {"r2", "rmse", "mae"}


def test_missing_values_can_be_imputed(tmp_path: Path) -> None:
    data = classification_csv(tmp_path / "holes.csv")
    text = data.read_text().splitlines()
    text[3] = "," + text[3].split(",", 1)[1]
    data.write_text("\n".join(text) + "\n")

    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--target",
                "label",
                "--impute",
                "median",
                "--out",
                str(tmp_path / "imputed"),
            ]
        )
        == 0
    )
    metadata = json.loads((tmp_path / "imputed" / "metadata.json").read_text())
    assert metadata["pipeline"][0] == "impute"


@pytest.mark.parametrize(
    "csv, args, message",
    [
        (None, ["--data", "{dir}/absent.csv", "--target", "y"], "absent.csv does not exist"),
        ("a,b\n1,2\n", ["--target", "c"], "has no column 'c'; its columns are: a, b"),
        ("a,b,label\n1,,p\n2,,q\n", ["--target", "label"], "column(s) b have no values at all"),
        ("a,a,label\n1,2,p\n", ["--target", "label"], "column name(s) a appear more than once"),
        ("label\np\nq\n", ["--target", "label"], "no feature columns"),
        ("", ["--target", "label"], "not a readable CSV"),
        ("a,b,label\n", ["--target", "label"], "has a header but no rows of data"),
        (  # whole-number prices with a classifier: not 2,000 one-row "classes"
            "x,price\n" + "".join(f"{i},{1000 + 7 * i}\n" for i in range(200)),
            ["--target", "price"],
            "target 'price' looks continuous (200 distinct values in 200 rows); use a regression",
        ),
        ("a,label\n1,p\n2,p\n3,p\n", ["--target", "label"], "single class"),
        ("a,label\n1,p\n2,q\n3,p\n4,q\n", ["--target", "label"], "too few rows per class"),
        ("a,label\n1,p\n,q\n", ["--target", "label"], "column(s) a have missing values"),
        ("a,label\n1,p\n2,\n", ["--target", "label"], "target column 'label' is empty in 1 row"),
        ("a,label\ninf,p\n2,q\n", ["--target", "label"], "column(s) a hold infinite values"),
        ("a,y\n1,0.5\n2,1.7\n3,2.2\n", ["--target", "y"], "holds continuous numbers"),
        (None, ["--estimator", "svm"], "unknown estimator 'svm'; only scikit-learn's estimators"),
        (None, ["--estimator", "xgboost.XGBClassifier"], "only scikit-learn's estimators can be"),
        (None, ["--estimator", "sklearn.svm.NoSuchThing"], "scikit-learn has no class"),
        (None, ["--estimator", "sklearn.preprocessing.StandardScaler"], "not a scikit-learn clas"),
        (None, ["--param", "colour=red"], "has no parameter(s) colour"),
        (None, ["--param", "C=-1"], "cannot be trained with these parameters"),
        (None, ["--param", "novalue"], "must look like KEY=VALUE"),
        (None, ["--gate", "accuracy=0.9"], "must look like METRIC>=VALUE"),
        (None, ["--gate", "auc>=0.9"], "names an unknown metric"),
        (None, ["--cv", "1"], "at least 2 folds"),
        (None, ["--test-size", "1.5"], "between 0 and 1"),
        (None, ["--target", "x"], "--target needs --data"),
        (None, ["--data", "{dir}/x.csv"], "--data needs --target"),
        (None, ["--params", "{dir}/absent.json"], "cannot read params file"),
        (None, ["--name", "../evil"], "is invalid"),
    ],
)
def test_bad_input_is_named_with_a_non_zero_exit(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    csv: str | None,
    args: list[str],
    message: str,
) -> None:
    argv = [a.format(dir=tmp_path) for a in args]
    if csv is not None:
        argv = ["--data", str(write_csv(tmp_path / "data.csv", csv)), *argv]

    code = main(["train", *argv, "--out", str(tmp_path / "out")])

    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_params_file_is_read(tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"n_estimators": 5, "max_depth": 2}))

    assert (
        main(
            [
                "train",
                "--estimator",
                "random_forest",
                "--params",
                str(params),
                "--out",
                str(tmp_path / "rf"),
            ]
        )
        == 0
    )
    metadata = json.loads((tmp_path / "rf" / "metadata.json").read_text())
    assert metadata["params"]["n_estimators"] == 5
    assert metadata["params"]["max_depth"] == 2


def test_params_from_a_yaml_section_and_metrics_as_flat_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DVC's params.yaml holds the estimator's parameters in a section; `dvc metrics` reads a
    flat file with the names --gate takes."""
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  params:\n    n_estimators: 5\n    max_depth: 2\n")
    out, metrics = tmp_path / "rf", tmp_path / "m" / "metrics.json"

    code = main(["train", "--estimator", "random_forest", "--params", str(params),
                 "--params-key", "train.params", "--out", str(out), "--no-report", "--no-onnx",
                 "--metrics-file", str(metrics)])  # fmt: skip

    assert code == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert (metadata["params"]["n_estimators"], metadata["params"]["max_depth"]) == (5, 2)
    written = json.loads(metrics.read_text())
    assert written["accuracy"] == metadata["metrics"]["holdout"]["accuracy"]
    assert written["cv_f1_macro_std"] == metadata["metrics"]["cv"]["f1_macro"]["std"]
    capsys.readouterr()
    for args, message in [
        (["--params-key", "train.params"], "--params-key needs --params FILE"),
        (["--params", str(params), "--params-key", "train.nope"], "has no section 'train.nope'"),
        (["--params", str(params), "--params-key", "train.params.max_depth"], "must hold a map"),
    ]:
        assert main(["train", *args, "--out", str(tmp_path / "never")]) == 1
        assert message in capsys.readouterr().err
    params.write_text("train: [unclosed\n")
    assert main(["train", "--params", str(params), "--out", str(tmp_path / "never")]) == 1
    assert "is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_publish_promote_rollback_list(
    tmp_path: Path, iris_artifact: Path, forest_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = (tmp_path / "models").as_uri()
    assert (
        main(["publish", "--store", store, str(iris_artifact), "--version", "lr", "--promote"]) == 0
    )
    assert main(["publish", "--store", store, str(forest_artifact), "--version", "rf"]) == 0
    assert main(["promote", "--store", store, "--name", "iris", "rf"]) == 0
    capsys.readouterr()

    assert main(["list", "--store", store, "--name", "iris"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith("  lr ") and "LogisticRegression" in listing[0]
    assert listing[1].startswith("* rf ") and "RandomForestClassifier" in listing[1]

    assert main(["rollback", "--store", store, "--name", "iris"]) == 0
    assert main(["list", "--store", store, "--name", "iris", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert [(v["version"], v["current"]) for v in listed] == [("lr", True), ("rf", False)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["promote", "--store", "{store}", "--name", "iris", "nope"], "version nope is missing"),
        (["rollback", "--store", "{store}", "--name", "iris"], "no earlier version"),
        (["publish", "--store", "s3://x", "{artifact}"], "must start with gs:// or file://"),
        (["list", "--store", "gs://b/models", "--name", "iris", "--timeout", "1"], "cannot reach"),
    ],
)
def test_store_verbs_name_what_went_wrong(
    tmp_path: Path,
    iris_artifact: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nobody there
    argv = [a.format(store=(tmp_path / "m").as_uri(), artifact=iris_artifact) for a in argv]

    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_promote_of_the_current_version_says_so_and_rollback_then_refuses(
    tmp_path: Path, iris_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = (tmp_path / "m").as_uri()
    main(["publish", "--store", store, str(iris_artifact), "--version", "v1", "--promote"])
    capsys.readouterr()

    assert main(["promote", "--store", store, "--name", "iris", "v1"]) == 0
    assert capsys.readouterr().out == "v1 is already current: nothing changed\n"
    assert main(["rollback", "--store", store, "--name", "iris"]) == 1
    assert "no earlier version to roll back to" in capsys.readouterr().err


@pytest.mark.slow
def test_store_verbs_need_only_the_service_packages(tmp_path: Path, iris_artifact: Path) -> None:
    """publish, promote, rollback and list run in the service image (Compose's `publish`
    service does): with the training-only libraries made unimportable, they still work."""
    training_only = ["pandas", "skl2onnx", "onnx", "pulumi", "pulumi_gcp", "mypy", "hypothesis"]
    runner = (
        f"import sys; sys.modules.update(dict.fromkeys({training_only!r}));"
        "from training.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    store = (tmp_path / "m").as_uri()
    verbs = [
        ["publish", "--store", store, str(iris_artifact), "--version", "v1"],
        ["publish", "--store", store, str(iris_artifact), "--version", "v2", "--force"],
        ["promote", "--store", store, "--name", "iris", "v1"],
        ["promote", "--store", store, "--name", "iris", "v2"],
        ["rollback", "--store", store, "--name", "iris"],
        ["list", "--store", store, "--name", "iris"],
    ]
    for argv in verbs:
        result = subprocess.run(
            [PYTHON, "-c", runner, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (argv, result.stderr)


def test_too_few_rows_lists_ten_classes_and_counts_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f"{i},{'c' + str(i % 15)}\n" for i in range(30))  # 15 classes of 2 rows
    data = write_csv(tmp_path / "few.csv", "a,label\n" + rows)

    main(["train", "--data", str(data), "--target", "label", "--out", str(tmp_path / "o")])

    err = capsys.readouterr().err
    assert "too few rows per class" in err
    assert "and 5 more" in err
    assert len(err) < 500


def test_publishing_a_model_already_in_the_store_names_its_version(
    tmp_path: Path, iris_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = (tmp_path / "m").as_uri()
    assert main(["publish", "--store", store, str(iris_artifact), "--version", "first"]) == 0
    capsys.readouterr()

    refused = main(["publish", "--store", store, str(iris_artifact)])
    err = capsys.readouterr().err
    forced = main(
        ["publish", "--store", store, str(iris_artifact), "--version", "again", "--force"]
    )

    assert refused == 1
    assert "already published" in err and "as version first" in err and "--force" in err
    assert forced == 0


def test_versions_published_in_the_same_second_list_in_publication_order(
    tmp_path: Path, iris_artifact: Path
) -> None:
    from function.core.store import ModelStore

    store = ModelStore((tmp_path / "iris").as_uri())
    for version in ("zz-first", "aa-second", "mm-third"):  # ids sort the other way round
        store.publish(iris_artifact, version)

    assert [v.version for v in store.versions()] == ["zz-first", "aa-second", "mm-third"]


@pytest.mark.slow
def test_module_entry_point_runs_as_a_process(tmp_path: Path) -> None:
    result = run_training("train", "--data", str(tmp_path / "nope.csv"), "--target", "y")

    assert result.returncode == 1
    assert result.stderr.strip() == f"error: data file {tmp_path / 'nope.csv'} does not exist"


# `python -m training` with every HistGradientBoosting fit recording the native threads it runs
# with: OpenMP's (what the estimator asks _openmp_effective_n_threads for) and every pool loaded.
PROBED_TRAINING = """
import json, os, sys
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
from threadpoolctl import threadpool_info

fit = HistGradientBoostingClassifier.fit

def probed(self, X, y, **kw):
    seen = {"openmp": _openmp_effective_n_threads()}
    seen.update({pool["internal_api"]: pool["num_threads"] for pool in threadpool_info()})
    with open(os.environ["THREAD_PROBE"], "a") as out:
        out.write(json.dumps(seen) + "\\n")
    return fit(self, X, y, **kw)

HistGradientBoostingClassifier.fit = probed
from training.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(usable_cpus() < 2, reason="one CPU: OpenMP's default is one thread too")
@pytest.mark.parametrize(("told", "threads"), [(None, 1), ("2", 2)])
def test_training_runs_one_native_thread_unless_told(
    told: str | None, threads: int, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MLFLOW_"))}
    env["THREAD_PROBE"] = str(probe := tmp_path / "threads.jsonl")
    if told:
        env["OMP_NUM_THREADS"] = told  # the user's own setting wins
        # Idle threads sleep instead of spinning: the count is the same, without the spin's CPU
        # taken from the tests beside this one on two shared cores.
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    args = ["train", "--estimator", "hist_gradient_boosting", "--cv", "2", "--no-report",
            "--no-onnx", "--out", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(
        [PYTHON, "-c", PROBED_TRAINING, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    seen = [json.loads(line) for line in probe.read_text().splitlines()]
    assert len(seen) == 3  # two folds and the final fit
    assert {n for s in seen for n in s.values()} == {threads}  # OpenMP and BLAS alike
