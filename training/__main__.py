"""modelrun (or python -m training): train or package a model, publish, promote, rollback and
list versions, roll a version out beside the current one (shadow or canary), decided by metrics;
serve a model on this machine, and score files (the batch command).

Each verb imports what it needs when it runs: publish, promote, rollback and list need only the
service's own packages (function/requirements.txt), so they run in the service image too (the
Compose mirror's `publish` service does; tests/test_training.py checks it), while train brings in
the training-only libraries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from function.core.errors import ModelrunError
from function.core.storage import STORE, FileLocation, parse_uri
from function.core.store import ModelStore, check_version_id, model_root, store_models
from function.core.threads import limit_native_threads
from training.errors import (
    EXIT_GATE,
    EXIT_INTERRUPTED,
    EXIT_PIPE_CLOSED,
    EXIT_ROLLOUT_ABORTED,
    EXIT_ROLLOUT_UNDECIDED,
    TrainingError,
)
from training.estimators import ESTIMATORS, parse_param


def main(argv: list[str] | None = None) -> int:
    """Run one verb; print a one-line error and return non-zero on failure."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
    except BrokenPipeError:
        return _reader_gone()


def _run(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSED_ON:  # their flags are theirs, --help included
        return int(PASSED_ON[argv[0]](argv[1:]) or 0)
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


def _reader_gone() -> int:
    """The reader of stdout left (`| head -3`): stop quietly, as a command killed by SIGPIPE
    would, without Python's traceback at exit when it flushes stdout again (the docs' recipe,
    docs.python.org/3/library/signal.html, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE_CLOSED


def _train(args: argparse.Namespace) -> None:
    limit_native_threads()  # before scikit-learn loads its OpenMP runtime: function/core/threads.py
    from training.data import load_csv, load_iris
    from training.tracking import write_tracked
    from training.train import Options, parse_gate, train

    if args.params_key and not args.params:
        raise TrainingError("--params-key needs --params FILE")
    params = _read_params(args.params, args.params_key) if args.params else {}
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
    run = _tracking(args, name, args.estimator)
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
    metadata = write_tracked(run, lambda: train(data, options), _writer(args), Path(args.out))
    holdout = ", ".join(f"{k}={v:.4f}" for k, v in metadata["metrics"]["holdout"].items())
    print(f"trained {name} ({args.estimator}) on {data.rows} rows: {holdout}")
    files = ", ".join(metadata["files"])
    print(f"wrote {files} and metadata.json to {args.out} (sha256 {metadata['sha256'][:12]}…)")
    _say_tracked(metadata)
    _say_runtime(metadata)
    _write_metrics(args, metadata)


def _package(args: argparse.Namespace) -> None:
    limit_native_threads()
    from training.data import load_csv
    from training.packager import build_package, load_estimator
    from training.tracking import write_tracked
    from training.train import parse_gate

    gates = [parse_gate(g) for g in args.gate]
    model_file = Path(args.model_file)
    data = load_csv(Path(args.data), args.target)
    name = args.name or model_file.stem
    check_version_id(name)
    estimator = load_estimator(model_file)
    run = _tracking(args, name, f"packaged {model_file.name}")

    def build() -> Any:
        return build_package(estimator, data, name, gates, args.onnx, str(model_file), args.report)

    metadata = write_tracked(run, build, _writer(args), Path(args.out))
    scores = ", ".join(f"{k}={v:.4f}" for k, v in metadata["metrics"]["holdout"].items())
    print(f"packaged {name} ({metadata['estimator']}, {metadata['task']}) on {data.rows} rows: "
          f"{scores}")  # fmt: skip
    print(f"wrote {', '.join(metadata['files'])} and metadata.json to {args.out} "
          f"(sha256 {metadata['sha256'][:12]}…)")  # fmt: skip
    _say_tracked(metadata)
    _say_runtime(metadata)
    _write_metrics(args, metadata)


def _write_metrics(args: argparse.Namespace, metadata: dict[str, Any]) -> None:
    from training.train import flat_metrics

    if args.metrics_file:
        path = Path(args.metrics_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(flat_metrics(metadata), indent=2) + "\n")


def _tracking(args: argparse.Namespace, name: str, label: str) -> Any:
    """The MLflow run this command logs to (training.tracking), or None when tracking is off."""
    if not args.mlflow:
        return None  # MLflow is not imported
    from training import tracking

    return tracking.start(args.mlflow, name, label, args.mlflow_optional, args.mlflow_timeout)


def _writer(args: argparse.Namespace) -> Any:
    """write_artifact into --out in --format, as write_tracked calls it."""
    from training.train import write_artifact

    def write(model: Any, metadata: dict[str, Any], extra: dict[str, bytes], stamp: Any) -> Any:
        return write_artifact(Path(args.out), model, metadata, args.format, extra, stamp)

    return write


def _say_tracked(metadata: dict[str, Any]) -> None:
    tracked = metadata.get("mlflow")
    if tracked:
        where = (
            tracked["run_url"] or f"{tracked['tracking_uri']} (experiment {tracked['experiment']})"
        )
        print(f"tracked in MLflow as run {tracked['run_id']}, tagged modelrun.version="
              f"{tracked['version']}: {where}")  # fmt: skip


def _say_runtime(metadata: dict[str, Any]) -> None:
    """Which runtime serves the version with MODEL_RUNTIME=auto (ONNX, then numpy, where
    verified at packaging), and why not each faster one before it."""
    for name, file in (("onnx", "ONNX file"), ("numpy", "numpy file")):
        record = metadata.get(name, {})
        if record.get("verified"):
            print(f"served by the {name} runtime: its {file} was verified against scikit-learn")
            return
        if record:
            reason = record.get("reason") or "it did not match the model closely enough"
            print(f"no {file}: {reason}")
    print("served by scikit-learn")


def _publish(args: argparse.Namespace) -> None:
    from function.core.store import read_artifact_dir

    metadata, _ = read_artifact_dir(Path(args.dir))
    store = _store(args, metadata.name, verified=True)
    same = [
        v.version for v in store.versions() if v.metadata and v.metadata.sha256 == metadata.sha256
    ]
    if same and not args.force:
        raise TrainingError(
            f"this model (sha256 {metadata.sha256[:12]}…) is already published in {store.uri} "
            f"as version {same[-1]}; promote that one, or pass --force to publish it again"
        )
    tracked = metadata.raw.get("mlflow") or {}
    # A tracked artifact's run is tagged with the version id chosen when it was trained: that is
    # its id here, unless --version names another or a forced copy needs a new one.
    planned = None if same else tracked.get("version")
    from training.signers import open_signer

    signer = open_signer(args.signing_key)
    version = store.publish(Path(args.dir), args.version or planned, signer)
    run = f" (MLflow run {tracked['run_id']})" if tracked else ""
    print(f"published {store.uri}/versions/{version}{run}")
    print(f"signed by {signer.key}")
    if tracked and version != tracked["version"]:
        print(f"note: MLflow run {tracked['run_id']} is tagged modelrun.version="
              f"{tracked['version']}, not {version}", file=sys.stderr)  # fmt: skip
    if args.promote:
        store.promote(version)
        print(f"promoted {version}: it is now current")


def _promote(args: argparse.Namespace) -> None:
    store = _store(args, args.name, verified=True)
    before, _ = store.current()
    pointer = store.promote(args.version)
    if pointer == before:
        print(f"{args.version} is already current: nothing changed")
        return
    print(f"promoted {pointer.version} (previous: {pointer.previous})")


def _rollback(args: argparse.Namespace) -> None:
    pointer = _store(args, args.name, verified=True).rollback()
    print(f"rolled back: {pointer.version} is current again")


def _list(args: argparse.Namespace) -> None:
    from function.core import rollout

    if args.name is None:
        _list_models(args)
        return
    store = _store(args, args.name, verified=True)
    versions = store.versions()
    if not versions:  # a misspelt name, most likely: a script must be able to tell
        models = store_models(args.store, args.timeout)
        there = f"models there: {', '.join(models)}" if models else "the store holds no model"
        raise TrainingError(f"no versions of {args.name!r} in {args.store} ({there})")
    pointer, _ = store.current()
    current = pointer.version if pointer else None
    active = rollout.active(store)
    candidate = {active.version: active.describe()} if active else {}
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "version": v.version,
                        "current": v.version == current,
                        "rollout": candidate.get(v.version),
                        "complete": v.complete,
                        "refused": v.refused,
                        "metadata": v.metadata and v.metadata.to_json(),
                    }
                    for v in versions
                ],
                indent=2,
            )
        )
        return
    for v in versions:
        mark = "*" if v.version == current else "~" if v.version in candidate else " "
        if v.refused is not None:  # as the service would: never promotable, never served
            print(f"{mark} {v.version}  REFUSED: {v.refused}")
            continue
        if v.metadata is None:
            print(f"{mark} {v.version}  INCOMPLETE (interrupted publish; never promotable)")
            continue
        holdout = v.metadata.raw["metrics"]["holdout"]
        scores = "  ".join(f"{k}={val:.4f}" for k, val in holdout.items())
        rolling = f"  (candidate: {candidate[v.version]})" if v.version in candidate else ""
        print(f"{mark} {v.version}  {v.metadata.estimator:<28} {scores}{rolling}")


def _list_models(args: argparse.Namespace) -> None:
    """Every model in the store, with its current version and how many versions it has."""
    location = parse_uri(args.store, STORE)
    if isinstance(location, FileLocation) and not location.path.is_dir():
        raise TrainingError(f"no store at {args.store}: nothing was ever published there")
    models = []
    for name in store_models(args.store, args.timeout):
        store = _store(args, name)
        pointer, _ = store.current()
        models.append(
            {
                "name": name,
                "current": pointer.version if pointer else None,
                "versions": len(store.versions()),
            }
        )
    if args.json:
        print(json.dumps(models, indent=2))
        return
    if not models:
        print(f"no models in {args.store}")
    for m in models:
        current = m["current"] or "none current"
        count = f"{m['versions']} version{'s' * (m['versions'] != 1)}"
        print(f"{m['name']:<24} {current}  ({count}; --name {m['name']} lists them)")


def _serve(argv: list[str]) -> None:
    from local.serve import main as serve

    serve(argv, prog=f"{_prog()} serve")


def _batch(argv: list[str]) -> int:
    from function.batch.__main__ import main as batch

    return batch(argv, prog=f"{_prog()} batch")


def _prog() -> str:
    """`modelrun` (the console command) or `python -m training`: the same verbs."""
    return "modelrun" if Path(sys.argv[0]).name == "modelrun" else "python -m training"


# Two commands of their own, reached as verbs too: every argument after the verb is theirs.
PASSED_ON = {"serve": _serve, "batch": _batch}


def _rollout_start(args: argparse.Namespace) -> None:
    from function.core import rollout

    store = _store(args, args.name, verified=True)
    mode, percent = ("canary", args.canary) if args.canary is not None else ("shadow", args.shadow)
    started = rollout.start(store, args.version, mode, percent, args.model_memory_mb)
    print(
        f"started a {started.describe()} rollout of {started.version} beside {started.current}: "
        "instances load it at their next refresh"
    )


def _rollout_status(args: argparse.Namespace) -> int:
    from function.core import rollout

    store = _store(args, args.name)
    state, _ = rollout.read_state(store)
    active = state.active
    if active is None:
        ended = ""
        if state.history:
            last = state.history[0]
            ended = f" (the last, of {last.version}, was {last.outcome} at {last.ended_at})"
        print(f"no rollout in progress in {store.uri}{ended}")
        return 0
    current = _compared_with(store, active)
    if not args.json:
        print(f"rollout of {active.version}: {active.describe()} since {active.started_at}, "
              f"beside {current}")  # fmt: skip
    if not args.prometheus:
        print("no comparison: give --prometheus URL (or set PROMETHEUS_URL)")
        return 0
    args.show = not args.json
    verdict, figures = _judge(args, active, current)
    if args.json:
        print(json.dumps({"rollout": active.__dict__, "versions": figures,
                          "checks": [c.__dict__ for c in verdict.checks],
                          "decision": verdict.decision}, indent=2))  # fmt: skip
        return 0
    for check in verdict.checks:
        print(f"  {check.name:<10} {check.state:<5} {check.detail}")
    print(f"verdict: {verdict.decision}")
    return 0


def _compared_with(store: ModelStore, active: Any) -> str:
    """The version a candidate is compared with: the current one now (the one current when the
    rollout started, if nothing is)."""
    pointer, _ = store.current()
    return pointer.version if pointer else str(active.current)


def _judge(args: argparse.Namespace, active: Any, current: str) -> tuple[Any, list[dict[str, Any]]]:
    """Read the figures from Prometheus; print each version's line; return the verdict."""
    from training import verdict

    prometheus = verdict.Prometheus(args.prometheus)
    span = verdict.span_of(active, args.window)
    mine, theirs = verdict.figures(prometheus, active, current, span)
    criteria = verdict.Criteria(
        args.min_requests, args.max_error_increase, args.max_latency_ratio, args.min_agreement
    )
    if args.show:
        print(f"  {current} (current): {verdict.describe(mine)}")
        print(f"  {active.version} (candidate, {theirs.role}): {verdict.describe(theirs)}")
    figures = [verdict.as_json(mine), verdict.as_json(theirs)]
    return verdict.judge(mine, theirs, criteria, active.mode == "shadow"), figures


def _rollout_promote(args: argparse.Namespace) -> int:
    from function.core import rollout

    store = _store(args, args.name, verified=True)
    if args.auto:
        return _promote_on_metrics(args, store)
    ended = rollout.promote(store)
    print(f"promoted {ended.version}: it is current (was {ended.current}) and the rollout ended")
    return 0


def _promote_on_metrics(args: argparse.Namespace, store: ModelStore) -> int:
    """Promote when every criterion passes, abort when one fails clearly, else wait (up to
    --wait seconds, asking again every --every seconds)."""
    from function.core import rollout

    if not args.prometheus:
        raise TrainingError("--auto decides on metrics: give --prometheus URL (or PROMETHEUS_URL)")
    if args.require_live_quality and not (args.records or args.bigquery):
        raise TrainingError(
            "--require-live-quality reads the candidate's labelled answers: give --records "
            "file:///DIR or --bigquery PROJECT.DATASET"
        )
    args.show = False  # one line: the decision and its reasons
    deadline = time.monotonic() + args.wait
    while True:
        active = rollout.active(store)
        if active is None:
            raise TrainingError(f"no rollout is in progress in {store.uri}")
        verdict, _ = _judge(args, active, _compared_with(store, active))
        if args.require_live_quality:
            verdict = _with_live_quality(args, store, active.version, verdict)
        reasons = "; ".join(f"{c.name} {c.state}: {c.detail}" for c in verdict.checks)
        if verdict.decision == "promote":
            rollout.promote(store, judged=active)
            print(f"promoted {active.version} on metrics ({reasons})")
            return 0
        if verdict.decision == "abort":
            rollout.abort(store, judged=active)
            failed = "; ".join(f"{c.name}: {c.detail}" for c in verdict.checks if c.state == "fail")
            print(f"aborted the rollout of {active.version}: {failed}")
            return EXIT_ROLLOUT_ABORTED
        if time.monotonic() + args.every > deadline:
            print(f"no decision yet on {active.version}, nothing changed ({reasons})")
            return EXIT_ROLLOUT_UNDECIDED
        time.sleep(args.every)


def _with_live_quality(
    args: argparse.Namespace, store: ModelStore, version: str, verdict: Any
) -> Any:
    """The verdict with one more check: the candidate's live quality (evaluate's, over its
    answers or its shadow's) meets its gates. Too few labels yet is a wait, never a promotion."""
    from training import verdict as judging

    found, _ = _live_quality(args, store.name, version)
    judged = [q for q in found if q.judged]
    if any(q.failed for q in judged):
        failed = "; ".join(f"{q.role} below {', '.join(q.failed)}" for q in judged if q.failed)
        check = judging.Check("live", "fail", f"{version}'s labelled answers: {failed}")
    elif judged:
        shown = "; ".join(
            f"{q.role} {q.labelled} labels, "
            + ", ".join(f"{m}={v:.4f}" for m, v in (q.metrics or {}).items())
            for q in judged
        )
        check = judging.Check("live", "pass", shown)
    else:
        labelled = max((q.labelled for q in found), default=0)
        check = judging.Check(
            "live", "wait", f"{labelled} labelled rows of {version}, fewer than {args.min_labels}"
        )
    return judging.Verdict([*verdict.checks, check])


def _rollout_abort(args: argparse.Namespace) -> None:
    from function.core import rollout

    ended = rollout.abort(_store(args, args.name))
    print(f"aborted the rollout of {ended.version}: {ended.current} stays current")


def _evaluate(args: argparse.Namespace) -> int:
    """Join each version's answers with the labels given later; report its metrics beside its
    hold-out figures; exit EXIT_GATE when one is below its gates."""
    found, source = _live_quality(args, args.name, args.version)
    since = _since(args).isoformat().replace("+00:00", "Z")
    if args.json:
        print(json.dumps({"model": args.name, "since": since, "source": source,
                          "versions": [q.as_json() for q in found]}, indent=2))  # fmt: skip
    else:
        print(f"live quality of {args.name} since {since} ({source})")
        if not found:
            print("no answers recorded in that window")
        from training.live import table

        for line in table(found, args.min_labels):
            print(line)
    return EXIT_GATE if any(q.failed for q in found) else 0


def _live_quality(
    args: argparse.Namespace, name: str, version: str | None
) -> tuple[list[Any], str]:
    """Each version's (or one version's) live quality from --records or --bigquery, and a line
    naming where the records came from."""
    from training import live_query
    from training.live import measure
    from training.train import parse_gate

    since = _since(args)
    if args.records:
        local = live_query.read_folder(args.records)
        joined = live_query.query_local(local.records, name, since)
        source = (f"{len(local.records)} records in {local.files} files under {args.records}, "
                  f"{local.bad_lines} bad lines skipped")  # fmt: skip
    else:
        joined = live_query.query_bigquery(args.bigquery, name, since)
        source = f"BigQuery {args.bigquery}.{live_query.SINK_TABLE}"
    if version is not None:
        joined = [j for j in joined if j.version == version]
    store = _store(args, name)
    gates = [parse_gate(g) for g in args.gate]
    # The document as written: measure reads its metrics and gates, which Metadata does not model.
    return measure(joined, store.metadata, gates, args.min_labels), source


def _since(args: argparse.Namespace) -> Any:
    """The window's start: --since (a date or an ISO time, UTC unless it says), else --days ago."""
    from datetime import UTC, datetime, timedelta

    if args.since:
        try:
            start = datetime.fromisoformat(args.since)
        except ValueError:
            raise TrainingError(
                f"--since {args.since!r} is not a date or time (2026-12-01, 2026-12-01T08:00Z)"
            ) from None
        return start if start.tzinfo else start.replace(tzinfo=UTC)
    return datetime.now(UTC) - timedelta(days=args.days)


def _store(args: argparse.Namespace, name: str, verified: bool = False) -> ModelStore:
    """The versions of one model: its root in the store --store names. `verified`: for a verb
    that points at a version or shows one, which verifies every version it reads as the service
    would (training/signers.py's verifying_trust), and refuses it with the service's reason."""
    trust = None
    if verified:
        from training.signers import verifying_trust

        trust = verifying_trust(os.environ, args.signing_key)
    return ModelStore(model_root(args.store, name), timeout=args.timeout, trust=trust)


def _public_key(args: argparse.Namespace) -> None:
    from training.signers import open_signer

    print(open_signer(args.signing_key).public_pem(), end="")


def _read_params(path: str, key: str | None = None) -> dict[str, Any]:
    """Estimator parameters from a JSON or YAML file (.yaml, .yml: DVC's params.yaml), the whole
    file or its section `key` (dotted: train.params)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise TrainingError(f"cannot read params file {path}: {e.strerror}") from e
    if Path(path).suffix in (".yaml", ".yml"):
        import yaml

        try:
            params = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise TrainingError(
                f"params file {path} is not valid YAML: {' '.join(str(e).split())}"
            ) from e
    else:
        try:
            params = json.loads(text)
        except ValueError as e:
            raise TrainingError(f"params file {path} is not valid JSON: {e}") from e
    for part in key.split(".") if key else []:
        if not isinstance(params, dict) or part not in params:
            raise TrainingError(f"params file {path} has no section {key!r} (no {part!r})")
        params = params[part]
    if params is None:  # an empty section: no parameters
        return {}
    if not isinstance(params, dict):
        where = f"section {key!r} of params file {path}" if key else f"params file {path}"
        raise TrainingError(f"{where} must hold a mapping of name: value")
    return params


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__)
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
        p.add_argument(
            "--metrics-file",
            metavar="PATH",
            help="also write the metrics here as flat JSON (accuracy, cv_accuracy, "
            "cv_accuracy_std…: the names --gate takes), for `dvc metrics`",
        )
        p.add_argument(
            "--mlflow",
            default=os.environ.get("MLFLOW_TRACKING_URI") or None,
            metavar="URI",
            help="log a run to this MLflow tracking server (default: MLFLOW_TRACKING_URI; "
            "unset: no tracking, and MLflow is not imported)",
        )
        p.add_argument(
            "--mlflow-optional",
            action="store_true",
            help="if the tracking server cannot be reached, warn and go on without tracking",
        )
        p.add_argument(
            "--mlflow-timeout",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="each request to the tracking server (MLFLOW_HTTP_REQUEST_TIMEOUT, if set, wins)",
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
    train.add_argument("--params", help="JSON or YAML file of estimator parameters")
    train.add_argument(
        "--params-key",
        metavar="SECTION",
        help="the section of --params that holds them, dotted (train.params in DVC's params.yaml)",
    )
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

    def signing_key_arg(p: argparse.ArgumentParser, verifies: bool = True) -> None:
        p.add_argument(
            "--signing-key",
            default=os.environ.get("MODELRUN_SIGNING_KEY") or None,
            help="a Cloud KMS key version (projects/.../cryptoKeyVersions/N) or a PEM private key "
            "file (default: MODELRUN_SIGNING_KEY, else the development key "
            ".modelrun/dev-signing-key.pem, made on first use)"
            + (
                "; versions are verified with MODEL_PUBLIC_KEY, else with this key's public half"
                if verifies
                else ""
            ),
        )

    publish = verbs.add_parser("publish", help="upload an artifact folder as a new version")
    store_args(publish, name_required=False)
    publish.add_argument("dir", help="a folder written by `train`")
    publish.add_argument("--version", help="version id (default: UTC time + digest)")
    publish.add_argument("--promote", action="store_true", help="make it current")
    publish.add_argument(
        "--force", action="store_true", help="publish even if the same model is already a version"
    )
    signing_key_arg(publish)  # signs the version (and verifies the others it reads)
    publish.set_defaults(run=_publish)

    promote = verbs.add_parser("promote", help="make a version current")
    store_args(promote)
    promote.add_argument("version")
    signing_key_arg(promote)
    promote.set_defaults(run=_promote)

    rollback = verbs.add_parser("rollback", help="go back to the previously current version")
    store_args(rollback)
    signing_key_arg(rollback)
    rollback.set_defaults(run=_rollback)

    listing = verbs.add_parser(
        "list",
        help="list a model's versions, marking the current one with * (without --name: "
        "the store's models)",
    )
    store_args(listing, name_required=False)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    signing_key_arg(listing)
    listing.set_defaults(run=_list)

    public_key = verbs.add_parser(
        "public-key",
        help="print the public half of the signing key in use (PEM), as MODEL_PUBLIC_KEY takes it",
    )
    signing_key_arg(public_key, verifies=False)
    public_key.set_defaults(run=_public_key)

    rollout = verbs.add_parser(
        "rollout", help="shadow or canary a version beside the current one; promote or abort it"
    )
    actions = rollout.add_subparsers(required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start a rollout of a published version")
    store_args(start)
    start.add_argument("version")
    how = start.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--shadow",
        type=_percent,
        nargs="?",
        const=100.0,
        metavar="PERCENT",
        help="score live traffic without answering it: every request, or this share of them",
    )
    how.add_argument(
        "--canary", type=_percent, metavar="PERCENT", help="answer this share of clients"
    )
    start.add_argument(
        "--model-memory-mb",
        type=float,
        default=float(os.environ.get("MODEL_MEMORY_MB") or 0),
        help="refuse a candidate that, beside the current model, would exceed this in each "
        "worker (the service's MODEL_MEMORY_MB; default: that variable, else no limit)",
    )
    signing_key_arg(start)
    start.set_defaults(run=_rollout_start)

    def metric_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--prometheus",
            default=os.environ.get("PROMETHEUS_URL"),
            help="Prometheus API URL (default: PROMETHEUS_URL)",
        )
        p.add_argument(
            "--window",
            help="count only the last DURATION of the rollout, e.g. 1h (default: all of it; "
            "never before its start)",
        )
        p.add_argument("--min-requests", type=int, default=300)
        p.add_argument("--max-error-increase", type=float, default=0.01)
        p.add_argument("--max-latency-ratio", type=float, default=1.25)
        p.add_argument("--min-agreement", type=float, default=0.95)

    def live_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        source = p.add_mutually_exclusive_group(required=required)
        source.add_argument(
            "--records",
            metavar="file:///DIR",
            help="the payload records kept offline (the service's PAYLOAD_DIR): its *.jsonl files",
        )
        source.add_argument(
            "--bigquery",
            metavar="PROJECT.DATASET",
            help="the dataset the stack's log sink writes (stack output payloadDataset)",
        )
        window = p.add_mutually_exclusive_group()
        window.add_argument("--since", help="from this date or time (UTC unless it says)")
        window.add_argument("--days", type=float, default=7.0, help="the last N days (default 7)")
        p.add_argument(
            "--min-labels",
            type=int,
            default=30,
            help="judge a version only on at least this many labelled rows (default 30)",
        )
        p.add_argument("--gate", action="append", default=[], metavar="METRIC>=VALUE",
                       help="a gate besides the version's own (repeat)")  # fmt: skip

    status = actions.add_parser("status", help="the rollout, and its comparison from Prometheus")
    store_args(status)
    metric_args(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=_rollout_status)

    finish = actions.add_parser("promote", help="make the candidate current; end the rollout")
    store_args(finish)
    metric_args(finish)
    finish.add_argument(
        "--auto",
        action="store_true",
        help="only if every criterion passes; abort if one fails clearly",
    )
    finish.add_argument(
        "--wait", type=float, default=0.0, help="with --auto: keep asking this many seconds"
    )
    finish.add_argument("--every", type=float, default=15.0, help="with --wait: seconds between")
    finish.add_argument(
        "--require-live-quality",
        action="store_true",
        help="with --auto: also require the candidate's live quality (as `evaluate` measures it "
        "from --records or --bigquery) to meet its gates; too few labels yet: no promotion",
    )
    live_args(finish, required=False)
    signing_key_arg(finish)
    finish.set_defaults(run=_rollout_promote)

    abort = actions.add_parser("abort", help="drop the candidate; end the rollout")
    store_args(abort)
    abort.set_defaults(run=_rollout_abort)

    evaluate = verbs.add_parser(
        "evaluate",
        help="live quality: answers joined with the labels sent to /feedback, measured as at "
        "training, beside the hold-out figures; exits 3 below the model's gates",
    )
    store_args(evaluate)
    live_args(evaluate)
    evaluate.add_argument("--version", help="only this version (default: every one answering)")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.set_defaults(run=_evaluate)

    # Listed for --help; _run hands them their arguments before this parser sees them.
    verbs.add_parser("serve", help="serve a model on this machine, as `make serve` (MODEL, "
                     "MODEL_URI, STORE, PORT: `modelrun serve --help`)")  # fmt: skip
    verbs.add_parser("batch", help="score CSV or JSON Lines files as one task of a batch job "
                     "(`modelrun batch --help`)")  # fmt: skip
    return parser


def _percent(text: str) -> float:
    from function.core.rollout import parse_percent

    try:
        return parse_percent(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


if __name__ == "__main__":
    sys.exit(main())
