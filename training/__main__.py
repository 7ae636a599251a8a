"""python -m training: train or package a model, publish, promote, rollback and list versions.

Each verb imports what it needs when it runs: publish, promote, rollback and list need only the
service's own packages (function/requirements.txt), so they run in the service image too (the
Compose mirror's `publish` service does; tests/test_training.py checks it), while train brings in
the training-only libraries.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from function.errors import ModelrunError
from function.store import ModelStore, check_version_id, model_root
from training.errors import EXIT_INTERRUPTED, TrainingError
from training.estimators import ESTIMATORS, parse_param


def main(argv: list[str] | None = None) -> int:
    """Run one verb; print a one-line error and return non-zero on failure."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ModelrunError as e:  # the store's, shared with the service
        print(f"error: {e}", file=sys.stderr)
        return TrainingError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _train(args: argparse.Namespace) -> None:
    from training.data import load_csv, load_iris
    from training.train import Options, parse_gate, train, write_artifact

    params = _read_params(args.params) if args.params else {}
    params.update(parse_param(p) for p in args.param)
    gates = [parse_gate(g) for g in args.gate]
    if args.min_accuracy is not None:
        gates.append(parse_gate(f"accuracy>={args.min_accuracy}"))
    if args.data and not args.target:
        raise TrainingError("--data needs --target COLUMN (the column to predict)")
    if args.target and not args.data:
        raise TrainingError("--target needs --data PATH.csv")
    data = load_csv(Path(args.data), args.target) if args.data else load_iris()
    name = args.name or (Path(args.data).stem if args.data else "iris")
    check_version_id(name)
    options = Options(
        name=name,
        estimator=args.estimator,
        params=params,
        seed=args.seed,
        test_size=args.test_size,
        cv=args.cv,
        impute=args.impute,
        gates=gates,
        onnx=args.onnx,
        report=args.report,
    )
    pipeline, metadata, extra = train(data, options)
    metadata = write_artifact(Path(args.out), pipeline, metadata, args.format, extra)
    holdout = ", ".join(f"{k}={v:.4f}" for k, v in metadata["metrics"]["holdout"].items())
    print(f"trained {name} ({args.estimator}) on {data.rows} rows: {holdout}")
    files = ", ".join(metadata["files"])
    print(f"wrote {files} and metadata.json to {args.out} (sha256 {metadata['sha256'][:12]}…)")
    _say_onnx(metadata)


def _package(args: argparse.Namespace) -> None:
    from training.data import load_csv
    from training.packager import package_file
    from training.train import parse_gate

    gates = [parse_gate(g) for g in args.gate]
    model_file = Path(args.model_file)
    data = load_csv(Path(args.data), args.target)
    name = args.name or model_file.stem
    metadata = package_file(
        model_file, data, Path(args.out), name, gates, args.format, args.onnx, args.report
    )
    scores = ", ".join(f"{k}={v:.4f}" for k, v in metadata["metrics"]["holdout"].items())
    print(f"packaged {name} ({metadata['estimator']}, {metadata['task']}) on {data.rows} rows: "
          f"{scores}")  # fmt: skip
    print(f"wrote {', '.join(metadata['files'])} and metadata.json to {args.out} "
          f"(sha256 {metadata['sha256'][:12]}…)")  # fmt: skip
    _say_onnx(metadata)


def _say_onnx(metadata: dict[str, Any]) -> None:
    onnx = metadata.get("onnx", {})
    if onnx and not onnx.get("verified"):
        print(f"no ONNX file: {onnx.get('reason') or 'it did not match the model closely enough'}")


def _publish(args: argparse.Namespace) -> None:
    from function.store import read_artifact_dir

    metadata, _ = read_artifact_dir(Path(args.dir))
    store = _store(args, metadata["name"])
    same = [
        v.version
        for v in store.versions()
        if (v.metadata or {}).get("sha256") == metadata["sha256"]
    ]
    if same and not args.force:
        raise TrainingError(
            f"this model (sha256 {metadata['sha256'][:12]}…) is already published in {store.uri} "
            f"as version {same[-1]}; promote that one, or pass --force to publish it again"
        )
    version = store.publish(Path(args.dir), args.version)
    print(f"published {store.uri}/versions/{version}")
    if args.promote:
        store.promote(version)
        print(f"promoted {version}: it is now current")


def _promote(args: argparse.Namespace) -> None:
    store = _store(args, args.name)
    before, _ = store.current()
    pointer = store.promote(args.version)
    if pointer == before:
        print(f"{args.version} is already current: nothing changed")
        return
    print(f"promoted {pointer['version']} (previous: {pointer['previous']})")


def _rollback(args: argparse.Namespace) -> None:
    pointer = _store(args, args.name).rollback()
    print(f"rolled back: {pointer['version']} is current again")


def _list(args: argparse.Namespace) -> None:
    store = _store(args, args.name)
    pointer, _ = store.current()
    current = pointer["version"] if pointer else None
    versions = store.versions()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "version": v.version,
                        "current": v.version == current,
                        "complete": v.complete,
                        "metadata": v.metadata,
                    }
                    for v in versions
                ],
                indent=2,
            )
        )
        return
    if not versions:
        print(f"no versions in {store.uri}")
    for v in versions:
        mark = "*" if v.version == current else " "
        if v.metadata is None:
            print(f"{mark} {v.version}  INCOMPLETE (interrupted publish; never promotable)")
            continue
        holdout = v.metadata["metrics"]["holdout"]
        scores = "  ".join(f"{k}={val:.4f}" for k, val in holdout.items())
        print(f"{mark} {v.version}  {v.metadata['estimator']:<28} {scores}")


def _store(args: argparse.Namespace, name: str) -> ModelStore:
    """The versions of one model: its root in the store --store names."""
    return ModelStore(model_root(args.store, name), timeout=args.timeout)


def _read_params(path: str) -> dict[str, Any]:
    try:
        params = json.loads(Path(path).read_text())
    except OSError as e:
        raise TrainingError(f"cannot read params file {path}: {e.strerror}") from e
    except ValueError as e:
        raise TrainingError(f"params file {path} is not valid JSON: {e}") from e
    if not isinstance(params, dict):
        raise TrainingError(f"params file {path} must hold a JSON object of name: value")
    return params


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    verbs = parser.add_subparsers(required=True, metavar="VERB")

    def artifact_args(p: argparse.ArgumentParser, gate_help: str) -> None:
        p.add_argument("--gate", action="append", default=[], metavar="METRIC>=VALUE",
                       help=gate_help)  # fmt: skip
        p.add_argument(
            "--format",
            choices=["joblib", "skops"],
            default="joblib",
            help="model serialisation: joblib (pickle) or skops (no arbitrary code on load)",
        )
        p.add_argument(
            "--no-onnx",
            dest="onnx",
            action="store_false",
            help="skip the verified ONNX export (by default written when the model converts)",
        )
        p.add_argument(
            "--no-report",
            dest="report",
            action="store_false",
            help="skip the training report (report.html and its plots)",
        )

    train = verbs.add_parser("train", help="train, evaluate and gate a model; write an artifact")
    train.add_argument("--data", help="CSV file (default: Iris, bundled with scikit-learn)")
    train.add_argument("--target", help="the CSV column to predict")
    train.add_argument("--name", help="model name (default: iris, or the CSV file's stem)")
    train.add_argument(
        "--estimator",
        default="logistic_regression",
        help=f"one of: {', '.join(ESTIMATORS)}; or a scikit-learn class path (sklearn.svm.SVC)",
    )
    train.add_argument("--params", help="JSON file of estimator parameters")
    train.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="one parameter (repeat)"
    )
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--test-size", type=float, default=0.2, help="hold-out fraction")
    train.add_argument("--cv", type=int, default=5, help="cross-validation folds")
    train.add_argument(
        "--impute",
        choices=["mean", "median"],
        help="fill missing numbers (default: refuse, unless the estimator handles them)",
    )
    artifact_args(train, "quality gate on a hold-out metric (or cv_METRIC); repeat for several")
    train.add_argument("--min-accuracy", type=float, help="shorthand for --gate accuracy>=VALUE")
    train.add_argument("--out", default="artifacts/iris", help="output folder")
    train.set_defaults(run=_train)

    package = verbs.add_parser(
        "package", help="package a model you fitted yourself (joblib or skops file)"
    )
    package.add_argument("model_file", help="a fitted scikit-learn estimator or pipeline")
    package.add_argument("--data", required=True, help="CSV to evaluate it on (and infer types)")
    package.add_argument("--target", required=True, help="the CSV column it predicts")
    package.add_argument("--name", help="model name (default: the model file's stem)")
    package.add_argument("--out", required=True, help="output folder")
    artifact_args(package, "quality gate on a metric over the data given; repeat for several")
    package.set_defaults(run=_package)

    def store_args(p: argparse.ArgumentParser, name_required: bool = True) -> None:
        p.add_argument("--store", required=True, help="gs://BUCKET/PREFIX or file:///ABS/PATH")
        p.add_argument("--name", required=name_required, help="model name")
        p.add_argument("--timeout", type=float, default=30.0, help="store timeout in seconds")

    publish = verbs.add_parser("publish", help="upload an artifact folder as a new version")
    store_args(publish, name_required=False)
    publish.add_argument("dir", help="a folder written by `train`")
    publish.add_argument("--version", help="version id (default: UTC time + digest)")
    publish.add_argument("--promote", action="store_true", help="make it current")
    publish.add_argument(
        "--force", action="store_true", help="publish even if the same model is already a version"
    )
    publish.set_defaults(run=_publish)

    promote = verbs.add_parser("promote", help="make a version current")
    store_args(promote)
    promote.add_argument("version")
    promote.set_defaults(run=_promote)

    rollback = verbs.add_parser("rollback", help="go back to the previously current version")
    store_args(rollback)
    rollback.set_defaults(run=_rollback)

    listing = verbs.add_parser("list", help="list versions, marking the current one with *")
    store_args(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=_list)
    return parser


if __name__ == "__main__":
    sys.exit(main())
