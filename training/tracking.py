"""Experiment tracking in MLflow, when asked: `train` and `package` with MLFLOW_TRACKING_URI set
(or --mlflow URI) log one run each.

The run holds the estimator and its parameters, modelrun's settings (seed, split, gates), the
metrics, the dataset's digest, source and row counts, the artifact's files (the training report
and its plots among them) and the model itself with a signature and an input example. It is
tagged with the version id `publish` will give the artifact, and the artifact's metadata names
the run ("mlflow"), so `/model` links a served version back to it.

MLflow is imported here only, and only when tracking is on: without a URI nothing changes.
A server that cannot be reached fails the command before training, in one line naming it; with
--mlflow-optional it is a warning, and training goes on untracked.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from function.core.artifact import METADATA_FILE
from function.core.store import default_version
from training.errors import GateFailed, TrainingError, reason
from training.train import flat_metrics

# What `train` or `package` builds before writing: the fitted model, its metadata, extra files.
Built = tuple[Any, dict[str, Any], dict[str, bytes]]
# Schemes a tracking URI may have; a bare "host:port" would be taken by MLflow for a folder.
SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
MODEL_NAME = "model"  # where the model sits in the run, as mlflow.sklearn users expect


def check_uri(uri: str) -> str:
    """Return the URI, or raise naming what is wrong with it."""
    scheme = urlsplit(uri).scheme.split("+")[0]  # postgresql+psycopg2://
    if uri == "databricks" or scheme in SCHEMES:
        return uri
    raise TrainingError(
        f"MLflow tracking URI {shown(uri)!r} has no known scheme: give http://HOST:PORT "
        f"(a tracking server), or one of {', '.join(s + '://' for s in SCHEMES)}"
    )


def shown(uri: str) -> str:
    """The URI without what may be a secret (user:password@, a query, a fragment)."""
    parts = urlsplit(uri)
    if not parts.netloc:
        return urlunsplit(parts._replace(query="", fragment=""))
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host, query="", fragment=""))


class Run:
    """One MLflow run, started; every call to MLflow goes through `_call`."""

    def __init__(self, uri: str, optional: bool, experiment: Any, run: Any) -> None:
        self.uri, self.optional = uri, optional
        self.experiment_id, self.experiment = experiment.experiment_id, experiment.name
        self.run_id = run.info.run_id
        self.model_uri: str | None = None
        self.broken = False  # optional tracking that failed mid-way: the rest is skipped

    @property
    def url(self) -> str | None:
        """The run's page in the MLflow UI, for a tracking server."""
        if urlsplit(self.uri).scheme not in ("http", "https"):
            return None
        return (
            f"{shown(self.uri).rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        )

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        if self.broken:
            return None
        try:
            return action()
        except Exception as e:  # MLflow's, requests', the server's: all mean "not tracked"
            line = f"MLflow tracking server {shown(self.uri)} failed to {what}: {reason(e)}"
            if not self.optional:
                raise TrainingError(line) from e
            print(f"warning: {line}; going on without tracking", file=sys.stderr)
            self.broken = True
            return None

    def record(self, metadata: dict[str, Any], failure: str | None = None) -> None:
        """Log the parameters, settings, dataset, gates and metrics of a built model."""
        import mlflow

        tags = {
            "modelrun.model": metadata["name"],
            "modelrun.gates_passed": "false" if failure else "true",
        }
        if failure:
            tags["modelrun.gate_failure"] = failure
        if metadata.get("git_commit"):
            tags["mlflow.source.git.commit"] = metadata["git_commit"]
        self._call("record the parameters", lambda: mlflow.log_params(params(metadata)))
        self._call("record the dataset", lambda: mlflow.log_input(**dataset(metadata)))
        self._call("record the metrics", lambda: mlflow.log_metrics(flat_metrics(metadata)))
        self._call("record the tags", lambda: mlflow.set_tags(tags))

    def log_model(self, model: Any, metadata: dict[str, Any]) -> None:
        """Log the model with mlflow.sklearn, its signature inferred from the input example."""
        import mlflow

        example = input_example(metadata)

        def log() -> Any:
            import skops.io

            # MLflow hints that whole-number columns cannot hold gaps: modelrun's own schema
            # (metadata "features") checks them, gaps included, before the model runs.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
                signature = mlflow.models.infer_signature(example, model.predict(example))
            return mlflow.sklearn.log_model(
                model,
                name=MODEL_NAME,
                signature=signature,
                input_example=example,
                # MLflow's own default, skops (loading runs no pickled code), with the types it
                # must trust named: scikit-learn's, numpy's and scipy's, as train and package
                # allow no other.
                serialization_format="skops",
                skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
                # Named here: MLflow would otherwise infer them by loading the model in a
                # subprocess, which takes seconds.
                pip_requirements=requirements(),
            )

        logged = self._call("log the model", log)
        self.model_uri = logged.model_uri if logged is not None else None

    def stamp(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """The artifact's metadata naming this run and the version id it is tagged with."""
        if self.broken:
            return metadata
        record = {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "experiment": self.experiment,
            "tracking_uri": shown(self.uri),
            "run_url": self.url,
            "model_uri": self.model_uri,
            "version": default_version(metadata["sha256"]),
        }
        return {**metadata, "mlflow": record}

    def log_files(self, out: Path, metadata: dict[str, Any]) -> None:
        """Log the artifact as written (model, metadata, report and plots) and its tags."""
        import mlflow

        def upload() -> None:
            for name in [*metadata["files"], METADATA_FILE]:
                mlflow.log_artifact(str(out / name), "modelrun")

        self._call("upload the artifact's files", upload)
        tags = {"modelrun.sha256": metadata["sha256"]}
        if "mlflow" in metadata:
            tags["modelrun.version"] = metadata["mlflow"]["version"]
        self._call("record the tags", lambda: mlflow.set_tags(tags))

    @contextlib.contextmanager
    def ending(self) -> Iterator[None]:
        """End the run FINISHED, or FAILED (KILLED on Ctrl-C) when the block raises; a failure
        to mark it so never hides why the block raised."""
        import mlflow

        try:
            yield
        except BaseException as e:
            with contextlib.suppress(TrainingError):
                status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
                self._call("end the run", lambda: mlflow.end_run(status))
            raise
        self._call("end the run", lambda: mlflow.end_run("FINISHED"))


def start(uri: str | None, name: str, label: str, optional: bool, timeout: float) -> Run | None:
    """Start a run in the experiment `name` (created if new), or return None when tracking is
    off, or optional and the server cannot be reached."""
    if not uri:
        return None
    check_uri(uri)
    # MLflow retries a refused connection for minutes by default; a user's own setting stays.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    # Nor does modelrun report usage to MLflow's makers on the user's behalf. (Its telemetry
    # thread also edits os.environ while the first request copies it: a KeyError, seen here.)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", f"{timeout:g}")
    try:
        import mlflow
    except ImportError as e:
        _untracked(
            f"tracking in {shown(uri)} needs the MLflow client, which is not installed: "
            "pip install -r training/tracking-requirements.txt (make install has it)", optional, e
        )  # fmt: skip
        return None
    try:
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment(name)
        run = mlflow.start_run(experiment_id=experiment.experiment_id, run_name=label)
    except Exception as e:  # MLflow's, requests', the server's: all mean "cannot track"
        _untracked(
            f"MLflow tracking server {shown(uri)} cannot be reached: {reason(e)}", optional, e
        )
        return None
    return Run(uri, optional, experiment, run)


def _untracked(line: str, optional: bool, cause: Exception) -> None:
    """Raise the line, or with --mlflow-optional print it as a warning (training goes on)."""
    if not optional:
        raise TrainingError(f"{line} (--mlflow-optional trains without tracking)") from cause
    print(f"warning: {line}; training without tracking", file=sys.stderr)


def write_tracked(
    run: Run | None,
    build: Callable[[], Built],
    write: Callable[[Any, dict[str, Any], dict[str, bytes], Any], dict[str, Any]],
    out: Path,
) -> dict[str, Any]:
    """Build the model, then write its artifact (write(model, metadata, extra, stamp)); with a
    run, log each step to it, a gate's refusal included, and end it."""
    if run is None:
        return write(*build(), None)
    with run.ending():
        try:
            model, metadata, extra = build()
        except GateFailed as e:
            if e.metadata is not None:
                run.record(e.metadata, failure=str(e))
            raise
        run.record(metadata)
        run.log_model(model, metadata)
        written = write(model, metadata, extra, run.stamp)
        run.log_files(out, written)
        return written


def params(metadata: dict[str, Any]) -> dict[str, str]:
    """The estimator's parameters by their own names (as mlflow.sklearn.autolog logs them),
    and modelrun's settings and dataset under "modelrun."."""
    dataset = metadata["dataset"]
    training = metadata.get("training", {})
    ours = {
        "estimator": metadata["estimator_name"],
        "estimator_class": metadata["estimator"],
        "pipeline": " > ".join(metadata["pipeline"]),
        "seed": training.get("seed"),
        "test_size": training.get("test_size"),
        "cv_folds": training.get("cv"),
        "gates": " ".join(metadata["gates"]) or "none",
        "packaged_from": metadata.get("packaged", {}).get("from"),
        **{f"dataset.{key}": value for key, value in dataset.items()},
    }
    logged = {
        **{str(k): v for k, v in metadata["params"].items()},
        **{f"modelrun.{k}": v for k, v in ours.items() if v is not None},
    }
    return {key: _text(value) for key, value in logged.items()}


def dataset(metadata: dict[str, Any]) -> dict[str, Any]:
    """The data trained on, as MLflow's UI lists a run's datasets: its source, name and digest
    (the head of modelrun's sha256; MLflow keeps 36 characters at most) and its row counts. The
    rows themselves stay where they are."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    data = metadata["dataset"]
    local = Path(data["source"]).is_file()
    if local:
        with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways"
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(Path(data["source"]).resolve()))
    else:  # Iris from scikit-learn, or a DataFrame given to training.package
        source = CodeDatasetSource({"modelrun.dataset.source": data["source"]})
    counts = {k: str(v) for k, v in data.items() if k.endswith("rows") or k == "target"}
    name = Path(data["source"]).name if local else data["source"]
    return {
        # MetaDataset declares `profile` abstract, yet MLflow builds it as is: a dataset known by
        # its source, name and digest alone.
        "dataset": MetaDataset(source, name=name, digest=data["sha256"][:12]),  # type: ignore[abstract]
        "context": "training",
        "tags": counts,
    }


def input_example(metadata: dict[str, Any]) -> Any:
    """The metadata's example row in the shape the model takes: a float64 matrix of one row
    for an all-numeric array model, else a one-row DataFrame with the training dtypes."""
    import numpy as np
    import pandas as pd

    row = metadata["input_example"]
    names = metadata["feature_names"]
    features = metadata["features"]
    if metadata["input"] == "array" and all(f["type"] == "number" for f in features):
        return np.array([[row[name] for name in names]], dtype=np.float64)
    frame = pd.DataFrame([{name: row[name] for name in names}])
    dtypes = {f["name"]: f["dtype"] for f in features if f.get("dtype")}
    with contextlib.suppress(TypeError, ValueError):  # a dtype pandas cannot give one row
        frame = frame.astype(dtypes)
    return frame


def requirements() -> list[str]:
    """The packages the logged model loads with, at the versions it was built with."""
    import importlib.metadata

    packages = ["scikit-learn", "numpy", "scipy", "pandas", "skops"]
    return [f"{p}=={importlib.metadata.version(p)}" for p in packages]


def _text(value: Any) -> str:
    """A parameter's value as MLflow keeps it: text (None, True, 1.0 as Python writes them; lists
    and objects as JSON), at most 6,000 characters."""
    scalar = value is None or isinstance(value, (bool, int, float, str))
    text = str(value) if scalar else json.dumps(value, default=str)
    return text[:6000]
