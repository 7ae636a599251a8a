"""Batch scoring (function/batch/): sharding, the API's checks on file rows, atomic and idempotent
outputs, the manifest, the command line; on disk, on fake-gcs-server as N processes, and the
request Vertex AI's batch prediction sends, against the running container."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from function.batch.__main__ import parse_job
from function.batch.objects import contains, create, open_place
from function.batch.shards import LineReader, task_ranges
from function.batch.task import MANIFEST, Job, TooManyErrors, run_task
from function.core.errors import Conflict, InvalidInput
from function.core.signing import Trust
from function.core.storage import BATCH, Item, parse_uri
from function.core.store import ModelStore
from local import batch as local_batch
from tests.artifacts import publish_object
from tests.conftest import ROOT, Emulator, free_port, publish_to_gcs, run_service
from tests.inprocess import in_process
from tests.odd_models import FailingModel
from tests.support.churn import TARGET, notebook_pipeline
from training.__main__ import main as training
from training.churn import churn

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
KEY = "batch-test-key-0123456789"


# --- sharding -----------------------------------------------------------------------------


def lines_file(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Lines of many lengths, a CRLF one, an empty one, a long one and no final newline."""
    rng = np.random.default_rng(3)
    lines = [b"x" * int(n) for n in rng.integers(0, 40, 300)]
    lines[10], lines[20], lines[30] = b"crlf\r", b"", b"y" * 5000
    path = tmp_path / "lines.txt"
    path.write_bytes(b"\n".join(lines))  # the last line has no newline
    return path, lines


@pytest.mark.parametrize(
    "count, block",
    [
        (1, 4096),
        (2, 4096),
        (3, 4096),
        (7, 4096),
        (64, 4096),
        (20000, 4096),
        (3, 1),
        (7, 7),
        (64, 7),
        (1, 7),
    ],
)
def test_every_line_is_read_by_exactly_one_task(tmp_path: Path, count: int, block: int) -> None:
    path, lines = lines_file(tmp_path)
    place = open_place(path.as_uri())
    items = place.items()

    read, spans = [], []
    for index in range(count):
        for piece in task_ranges(items, index, count):
            reader = LineReader(place, piece, block)
            data = b"".join(b.data for b in reader.blocks())
            read.append(data)
            spans.append((reader.first, reader.last))
            assert reader.sha256 == hashlib.sha256(data).hexdigest()

    assert b"".join(read).split(b"\n") == lines
    assert spans[0][0] == 0 and spans[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous


def test_ranges_cover_every_file_byte_once_in_name_order() -> None:
    items = [
        Item("file:///a.csv", 10, "1"),
        Item("file:///b.csv", 0, "1"),
        Item("file:///c.csv", 25, "1"),
    ]

    covered = []
    for index in range(4):
        covered += [(r.item.uri, r.start, r.end) for r in task_ranges(items, index, 4)]

    # 35 bytes in four: [0, 8) [8, 17) [17, 26) [26, 35); c.csv starts at byte 10
    assert covered == [
        ("file:///a.csv", 0, 8),
        ("file:///a.csv", 8, 10),
        ("file:///c.csv", 0, 7),
        ("file:///c.csv", 7, 16),
        ("file:///c.csv", 16, 25),
    ]


# --- a user's model: categories, missing values, its own pipeline ---------------------------


@pytest.fixture(scope="module")
def churn_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, Any]:
    """The notebook pipeline of test_own_model, packaged and published: (MODEL_URI, pipeline,
    the frame of the rows it is asked about)."""
    tmp = tmp_path_factory.mktemp("churn-batch")
    churn(1000, seed=7).to_csv(data := tmp / "churn.csv", index=False)
    import pandas as pd

    frame = pd.read_csv(data)
    pipeline = notebook_pipeline(frame)
    joblib.dump(pipeline, fitted := tmp / "churn.joblib")
    package = ["package", str(fitted), "--data", str(data), "--target", TARGET, "--no-report"]
    assert training([*package, "--out", str(tmp / "artifact")]) == 0
    store = (tmp / "store").as_uri()
    publish = ["publish", "--store", store, str(tmp / "artifact"), "--version", "v1"]
    assert training([*publish, "--promote"]) == 0
    return f"{store}/churn", pipeline, frame.drop(columns=TARGET)


@pytest.fixture
def iris_uri(tmp_path: Path, iris_artifact: Path) -> str:
    """The Iris model published and promoted in a store under tmp_path: its MODEL_URI."""
    store = (tmp_path / "store").as_uri()
    assert training(["publish", "--store", store, str(iris_artifact), "--promote"]) == 0
    return f"{store}/iris"


def write_csv(path: Path, frame: Any) -> Path:
    frame.to_csv(path, index_label="customer")
    return path


def job(tmp_path: Path, model_uri: str, source: Path, out: str = "out", **kw: Any) -> Job:
    return Job(
        source.as_uri(),
        (tmp_path / out).as_uri(),
        model_uri,
        trust=Trust(allow_unsigned=True),
        **kw,
    )


def answers(output: str) -> dict[str, list[str]]:
    place = open_place(output)
    rows = local_batch.results(place)
    assert len({r[0] for r in rows}) == len(rows), "a row was answered twice"
    return {r[0]: r[1:] for r in rows}


def test_shards_equal_one_task_and_the_pipeline_itself(
    tmp_path: Path, churn_store: tuple[str, Any, Any]
) -> None:
    model_uri, pipeline, frame = churn_store
    source = write_csv(tmp_path / "rows.csv", frame)

    for index in range(3):
        run_task(
            job(
                tmp_path,
                model_uri,
                source,
                "sharded",
                id_column="customer",
                task_index=index,
                task_count=3,
                block_bytes=4096,
            )
        )
    run_task(job(tmp_path, model_uri, source, "single", id_column="customer"))

    sharded, single = (
        answers((tmp_path / "sharded").as_uri()),
        answers((tmp_path / "single").as_uri()),
    )
    assert sharded == single
    proba = pipeline.predict_proba(frame)
    expected = {
        str(i): [str(label), *map(float, p)]
        for i, label, p in zip(frame.index, pipeline.predict(frame), proba, strict=True)
    }
    assert {k: v[0] for k, v in sharded.items()} == {k: v[0] for k, v in expected.items()}
    got = np.array([[float(x) for x in sharded[k][1:]] for k in expected])
    assert np.allclose(got, np.array([v[1:] for v in expected.values()]), rtol=0, atol=1e-12)


def test_the_manifest_counts_rows_and_digests_each_part_and_range(
    tmp_path: Path, churn_store: tuple[str, Any, Any]
) -> None:
    model_uri, _, frame = churn_store
    source = write_csv(tmp_path / "rows.csv", frame)
    out = tmp_path / "out"

    for index in (1, 0):  # the last to finish writes it, whichever index that is
        run_task(job(tmp_path, model_uri, source, task_index=index, task_count=2))
        assert (out / MANIFEST).exists() is (index == 0)

    manifest = json.loads((out / MANIFEST).read_text())
    data = source.read_bytes()
    assert manifest["model"]["version"] == "v1" and manifest["tasks"] == 2
    assert manifest["rows"] == manifest["scored"] == len(frame) and manifest["errors"] == 0
    ranges = [r for part in manifest["parts"] for r in part["read"]]
    assert ranges[0]["start"] == 0 and ranges[-1]["end"] == len(data)
    for r in ranges:
        assert r["sha256"] == hashlib.sha256(data[r["start"] : r["end"]]).hexdigest()
    for part in manifest["parts"]:
        written = (out / part["results"]["name"]).read_bytes()
        assert part["results"]["sha256"] == hashlib.sha256(written).hexdigest()
        assert part["results"]["rows"] == written.count(b"\n") - 1  # less the header
    # Nothing else: no empty _tmp/ (where objects were written before being published)
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST,
        "_tasks",
        "errors-00000-of-00002.jsonl",
        "errors-00001-of-00002.jsonl",
        "part-00000-of-00002.csv",
        "part-00001-of-00002.csv",
    ]


# --- bad rows -------------------------------------------------------------------------------

# A CSV cell, the JSON value it stands for: the API's answer to that value is the batch's.
BAD_CELLS = [
    ("plan", "enterprise", "enterprise"),
    ("plan", "", None),
    ("seats", "2.5", 2.5),
    ("seats", "two", "two"),
    ("has_discount", "yes", "yes"),
    ("monthly_spend", "1e301", 1e301),
    ("tenure_months", "inf", float("inf")),
]


def test_a_bad_cell_gets_the_apis_message_and_the_other_rows_go_on(
    tmp_path: Path, churn_store: tuple[str, Any, Any]
) -> None:
    model_uri, pipeline, frame = churn_store
    rows = frame.iloc[: len(BAD_CELLS) * 3].copy().astype(object)
    bad_at = {3 * k + 1: cell for k, cell in enumerate(BAD_CELLS)}
    for i, (column, text, _) in bad_at.items():
        rows.iloc[i, rows.columns.get_loc(column)] = text
    source = write_csv(tmp_path / "rows.csv", rows)

    run_task(job(tmp_path, model_uri, source, id_column="customer", max_error_share=1.0))

    errors = {e["customer"]: e for e in local_batch.errors(open_place((tmp_path / "out").as_uri()))}
    assert sorted(errors) == sorted(str(rows.index[i]) for i in bad_at)
    good = frame.iloc[[i for i in range(len(rows)) if i not in bad_at]]
    assert {k: v[0] for k, v in answers((tmp_path / "out").as_uri()).items()} == {
        str(i): str(label) for i, label in zip(good.index, pipeline.predict(good), strict=True)
    }
    with in_process({"MODEL_URI": model_uri, "API_KEYS": KEY}) as api:
        for i, (column, _, value) in bad_at.items():
            error = errors[str(rows.index[i])]
            if value == float("inf"):  # JSON has no infinity: the API never sees one
                assert error["detail"] == f"expected a finite number for {column}, got Infinity"
                continue
            row = {**json.loads(frame.iloc[[i]].to_json(orient="records"))[0], column: value}
            problem = api.client.post("/predict", json=row, headers={"X-API-Key": KEY}).get_json()
            assert problem["status"] == 422
            assert (error["field"], f"{error['field']}: {error['detail']}") == (
                problem["field"],
                problem["detail"],
            )


def test_lines_that_are_not_rows_are_refused_one_by_one(tmp_path: Path, iris_uri: str) -> None:
    source = tmp_path / "rows.csv"
    source.write_bytes(
        b"sepal_length,sepal_width,petal_length,petal_width\r\n"
        b"5.1,3.5,1.4,0.2\r\n5.1,3.5,1.4\r\n\r\n5.1,3.5,1.4,0.2,9\r\n"
        b"\xff,1,1,1\r\n6.0,2.9,4.5,1.5"
    )

    run_task(job(tmp_path, iris_uri, source, max_error_share=1.0))

    errors = local_batch.errors(open_place((tmp_path / "out").as_uri()))
    assert [(e["line"], e["detail"]) for e in errors] == [
        (3, "expected 4 values (the header's), got 3"),
        (5, "expected 4 values (the header's), got 5"),
        (6, "the line is not UTF-8 text"),
    ]
    assert sorted(answers((tmp_path / "out").as_uri())) == ["2", "7"]  # line 4 is blank


def test_too_many_bad_rows_fail_the_task_after_writing_them(
    tmp_path: Path, churn_store: tuple[str, Any, Any]
) -> None:
    model_uri, _, frame = churn_store
    rows = frame.iloc[:100].copy()
    rows["plan"] = ["enterprise"] * 3 + list(rows["plan"][3:])
    source = write_csv(tmp_path / "rows.csv", rows)

    with pytest.raises(TooManyErrors, match=r"3 of 100 rows \(3.00%\) .* 2.00%"):
        run_task(job(tmp_path, model_uri, source, max_error_share=0.02))
    with pytest.raises(TooManyErrors):  # a retry finds the task done, and the same share
        run_task(job(tmp_path, model_uri, source, max_error_share=0.02))
    run_task(job(tmp_path, model_uri, source, max_error_share=0.03))

    assert len(local_batch.errors(open_place((tmp_path / "out").as_uri()))) == 3


# --- reruns ---------------------------------------------------------------------------------


def test_a_rerun_rewrites_nothing_and_another_model_is_refused(
    tmp_path: Path, iris_artifact: Path
) -> None:
    store = (tmp_path / "store").as_uri()
    assert (
        training(["publish", "--store", store, str(iris_artifact), "--version", "v1", "--promote"])
        == 0
    )
    source = tmp_path / "rows.csv"
    source.write_text(
        "sepal_length,sepal_width,petal_length,petal_width\n" + "5.1,3.5,1.4,0.2\n" * 50
    )
    out = tmp_path / "out"
    run_task(job(tmp_path, f"{store}/iris", source))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}

    run_task(job(tmp_path, f"{store}/iris", source))
    assert {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()
    } == before

    other = tmp_path / "other"
    assert training(["train", "--out", str(other), "--seed", "9", "--no-report", "--no-onnx"]) == 0
    assert training(["publish", "--store", store, str(other), "--version", "v2", "--promote"]) == 0
    with pytest.raises(Conflict, match="model version v1 there, v2 here"):
        run_task(job(tmp_path, f"{store}/iris", source))
    assert {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()
    } == before


@pytest.mark.slow
def test_a_killed_tasks_leftovers_are_replaced_not_kept(tmp_path: Path, iris_uri: str) -> None:
    source = tmp_path / "rows.csv"
    source.write_bytes(local_batch.generated_csv(40_000))
    env = {**os.environ, "MODEL_URI": iris_uri}
    out = (tmp_path / "out").as_uri()

    local_batch.kill_midway(env, source.as_uri(), out, 0, 1)
    leftovers = list((tmp_path / "out" / "_tmp").iterdir())
    assert leftovers and not (tmp_path / "out" / "part-00000-of-00001.csv").exists()
    assert all(p.name.endswith(".modelrun-tmp") for p in leftovers)  # the lifecycle rule's
    assert local_batch.run_tasks(env, source.as_uri(), out, 1) == [0]

    assert not any(p.exists() for p in leftovers)
    assert not (tmp_path / "out" / "_tmp").exists()
    assert len(answers(out)) == 40_000 - 8  # the generated file's bad rows


# --- JSON Lines, and Vertex AI's batch prediction ---------------------------------------------


def test_json_lines_take_objects_and_lists_with_nulls_and_absent_keys(
    tmp_path: Path, churn_store: tuple[str, Any, Any]
) -> None:
    model_uri, pipeline, frame = churn_store
    rows = json.loads(frame.iloc[:6].to_json(orient="records"))
    rows[1]["monthly_spend"] = None
    del rows[2]["monthly_spend"]  # nullable: may be absent
    lines = [json.dumps(r) for r in rows[:4]] + [
        json.dumps(list(rows[4].values())),
        "{not json",
        json.dumps({**rows[5], "plan": None}),
    ]
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(lines) + "\n")

    run_task(job(tmp_path, model_uri, source, max_error_share=1.0))

    import pandas as pd

    good = pd.DataFrame(rows[:5]).astype({"monthly_spend": float})
    assert {k: v[0] for k, v in answers((tmp_path / "out").as_uri()).items()} == {
        str(n): str(label) for n, label in zip(range(1, 6), pipeline.predict(good), strict=True)
    }
    errors = local_batch.errors(open_place((tmp_path / "out").as_uri()))
    assert [(e["line"], e["field"]) for e in errors] == [(6, None), (7, "plan")]
    assert errors[0]["detail"].startswith("not valid JSON")


def test_vertex_batch_prediction_requests_are_answered_as_batch_scores_them(
    gcs_emulator: Emulator, iris_artifact: Path, tmp_path: Path
) -> None:
    """Vertex AI's batch prediction reads JSON Lines and sends the container its lines as
    `instances` (cloud.google.com/vertex-ai/docs/predictions/get-batch-predictions: "jsonl"
    input, each line one instance; the request body is {"instances": [...]} at
    AIP_PREDICT_ROUTE). The same file through function.batch gives the same answers."""
    uri = publish_to_gcs(gcs_emulator, iris_artifact, f"vertex-batch-{time.monotonic_ns()}")
    lines = [
        "[5.1, 3.5, 1.4, 0.2]",
        '{"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}',
        "[5.9, 3.0, 4.2, 1.5]",
    ]
    source = tmp_path / "instances.jsonl"
    source.write_text("\n".join(lines) + "\n")
    port = free_port()
    env = {
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": "/health",
        "AIP_STORAGE_URI": uri,
        "AIP_PREDICT_ROUTE": "/predict",
        "STORAGE_EMULATOR_HOST": gcs_emulator.host,
    }

    with run_service(env, tmp_path, port=port) as running:
        vertex = running.post("/predict", json={"instances": [json.loads(x) for x in lines]})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.host)
        run_task(
            Job(source.as_uri(), (tmp_path / "out").as_uri(), uri, trust=Trust(allow_unsigned=True))
        )

    assert vertex.status_code == 200
    scored = answers((tmp_path / "out").as_uri())
    assert [scored[str(n)][0] for n in (1, 2, 3)] == vertex.json()["predictions"]


# --- the command line, and N processes on fake-gcs-server -----------------------------------


def batch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "function.batch", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


FILES = ["--input", "file:///x.csv", "--output", "file:///o"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (FILES, "--model (or MODEL_URI)"),
        ([*FILES, "--model", "file:///m", "--task-index", "3", "--task-count", "3"],
         "task 3 of 3 does not exist"),
        ([*FILES, "--model", "file:///m", "--model-version", "../x"], "version"),
        ([*FILES, "--model", "file:///m", "--max-error-share", "2"], "--max-error-share"),
        ([*FILES, "--model", "file:///m", "--output", "file:///o/{execution}"],
         "CLOUD_RUN_EXECUTION is not set"),
    ],
)  # fmt: skip
def test_a_bad_flag_exits_2_naming_it(args: list[str], message: str) -> None:
    done = batch(*args, env={"MODEL_URI": ""})
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.slow
def test_a_missing_input_is_one_line_and_exit_1(tmp_path: Path, iris_uri: str) -> None:
    done = batch(
        "--input",
        (tmp_path / "none").as_uri(),
        "--output",
        (tmp_path / "o").as_uri(),
        "--model",
        iris_uri,
    )
    assert done.returncode == 1
    [line] = done.stdout.splitlines()
    assert json.loads(line)["severity"] == "ERROR" and "does not exist" in line
    assert "Traceback" not in done.stdout + done.stderr


def test_n_processes_on_fake_gcs_server_as_cloud_run_jobs_runs_them(
    fake_gcs: Emulator, iris_artifact: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`make batch`'s checks, smaller: shards = one task = the model; a task killed half-way
    and the job rerun give the same bytes; the errors files and the manifest count the bad rows.
    (fake-gcs-server ignores ifGenerationMatch on copies: the check before the copy is what it
    enforces; see storage.GcsStorage.publish.)"""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.host)
    from google.cloud import storage

    bucket = storage.Client().bucket("batch")
    if not bucket.exists():
        bucket.create()

    local_batch.check(iris_artifact, rows=30_000, tasks=2)

    printed = capsys.readouterr().out
    assert "4. the errors files hold the 6 bad rows" in printed


def test_the_comparison_the_job_checks_rely_on_can_fail() -> None:
    rows = [["r1", "setosa", "0.9", "0.1"], ["r2", "virginica", "0.2", "0.8"]]

    assert local_batch.same_answers(rows, [list(r) for r in reversed(rows)])
    assert not local_batch.same_answers(rows, [rows[0], ["r2", "setosa", "0.2", "0.8"]])
    assert not local_batch.same_answers(rows, [rows[0], ["r2", "virginica", "0.2001", "0.8"]])
    assert not local_batch.same_answers(rows, rows[:1])


def test_the_output_may_name_the_execution_as_cloud_run_jobs_sets_it() -> None:
    from function.batch.__main__ import parse_job

    args = [
        "--input",
        "gs://b/input/",
        "--output",
        "gs://b/output/{execution}/",
        "--model",
        "gs://m/x",
    ]
    cloud_run = {"CLOUD_RUN_EXECUTION": "modelrun-dev-batch-x7k2p", "CLOUD_RUN_TASK_INDEX": "3"}
    job = parse_job(args, {**cloud_run, "CLOUD_RUN_TASK_COUNT": "10"})

    assert job.output == "gs://b/output/modelrun-dev-batch-x7k2p/"
    assert (job.task_index, job.task_count) == (3, 10)
    with pytest.raises(SystemExit):  # without it, an error naming the variable (exit 2)
        parse_job(args, {})


@pytest.mark.slow
def test_the_readmes_batch_command_runs_as_printed(tmp_path: Path, iris_artifact: Path) -> None:
    """The first block of the README's "Score a large file", run where $PWD holds the store
    `make serve` publishes into and a rows.csv with the id column it names, as a user's shell
    runs it: unsigned versions not allowed, so the signature is verified with the key the block
    names."""
    readme = (ROOT / "README.md").read_text().split("\n## Score a large file\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block is not None
    command = block.group(1)
    store = (tmp_path / ".modelrun" / "store").as_uri()
    assert training(["publish", "--store", store, str(iris_artifact), "--promote"]) == 0
    (tmp_path / "rows.csv").write_text("customer_id," + ",".join(IRIS) + "\nc1,5.1,3.5,1.4,0.2\n")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")

    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALLOW_UNSIGNED_MODELS": "false"}
    env.pop("MODEL_PUBLIC_KEY", None)
    done = subprocess.run(["bash", "-e", "-c", command], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert answers((tmp_path / "scored").as_uri())["c1"][0] == "setosa"


# --- more of what a user brings, and what can go wrong around the files ------------------------


def test_a_regressor_is_answered_with_its_number_alone(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    import training as package_api

    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X, y)
    package_api.package(model, X, y, out=tmp_path / "artifact", name="diabetes", report=False)
    store = (tmp_path / "store").as_uri()
    assert training(["publish", "--store", store, str(tmp_path / "artifact"), "--promote"]) == 0
    source = tmp_path / "rows.csv"
    rows = ["\n".join(",".join(map(repr, row)) for row in X[:50].tolist())]
    source.write_text(",".join(f"x{i}" for i in range(10)) + "\n" + rows[0] + "\n")

    run_task(job(tmp_path, f"{store}/diabetes", source))

    part = (tmp_path / "out" / "part-00000-of-00001.csv").read_text().splitlines()
    assert part[0] == "line,prediction"
    got = [float(line.split(",")[1]) for line in part[1:]]
    assert np.allclose(got, model.predict(X[:50]), rtol=1e-6)  # the verified ONNX file answers


@pytest.mark.slow
def test_progress_is_logged_as_cloud_logging_json(tmp_path: Path, iris_uri: str) -> None:
    source = tmp_path / "rows.csv"
    source.write_bytes(local_batch.generated_csv(30_000, bad_every=10**9))

    done = batch("--input", source.as_uri(), "--output", (tmp_path / "o").as_uri(), "--model",
                 iris_uri, "--progress-rows", "10000", "--block-bytes", "65536")  # fmt: skip

    lines = [json.loads(line) for line in done.stdout.splitlines()]
    progress = [x for x in lines if "eta_seconds" in x]
    assert done.returncode == 0 and len(progress) >= 2
    assert all(x["severity"] == "INFO" and x["time"].endswith("Z") for x in lines)
    assert all(x["rows_per_second"] > 0 and 0 < x["done"] <= 1 for x in progress)
    assert [x["rows"] for x in progress] == sorted(x["rows"] for x in progress)
    assert "rows/s" in progress[0]["message"] and "ETA" in progress[0]["message"]


def test_a_file_changed_after_it_was_listed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a\n1\n")
    place = open_place(path.as_uri())
    [item] = place.items()
    time.sleep(0.01)
    path.write_text("a\n2\n")

    with pytest.raises(Conflict, match="changed after the job listed it"):
        place.open_at(item.key, 0, item.version)


def test_an_object_is_published_whole_once_on_gcs(
    fake_gcs: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create-only rule on fake-gcs-server: the same bytes again are accepted (a rerun),
    other bytes refused and the first kept; no temporary object is left either way."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.host)
    place = open_place(f"gs://{fake_gcs.bucket}/create-{time.monotonic_ns()}")

    for data in (b"first" * 100_000, b"first" * 100_000):
        with create(place, "part.csv") as f:
            f.write(data)
    with (
        pytest.raises(Conflict, match="already exists with other contents"),
        create(place, "part.csv") as f,
    ):
        f.write(b"second")

    assert place.read("part.csv")[0] == b"first" * 100_000
    assert place.keys("") == ["part.csv"]


def test_a_folder_of_files_is_shared_out_and_each_row_named_by_file_and_line(
    tmp_path: Path, iris_uri: str
) -> None:
    folder = tmp_path / "in"
    (folder / "2026").mkdir(parents=True)
    files = {"a.csv": 3000, "2026/b.csv": 5000, "c.csv": 2}
    for name, rows in files.items():
        (folder / name).write_bytes(local_batch.generated_csv(rows, seed=len(name), bad_every=700))
    (folder / "_SUCCESS").write_text("")

    for index in range(3):
        run_task(job(tmp_path, iris_uri, folder, task_index=index, task_count=3,
                     block_bytes=8192, max_error_share=1.0))  # fmt: skip

    scored = answers((tmp_path / "out").as_uri())
    errors = local_batch.errors(open_place((tmp_path / "out").as_uri()))
    named = sorted(scored) + sorted(e["line"] for e in errors)
    assert sorted(named) == sorted(f"{n}:{line}" for n, rows in files.items()
                                   for line in range(2, rows + 2))  # fmt: skip
    for e in errors:  # the offset is where the refused line starts in its file
        data = Path(e["file"].removeprefix("file://")).read_bytes()
        line = int(e["line"].rsplit(":", 1)[1])
        assert data[e["offset"] :].split(b"\n", 1)[0] == data.split(b"\n")[line - 1]


def test_a_json_line_without_its_id_is_still_found_by_its_offset(
    tmp_path: Path, iris_uri: str
) -> None:
    first = b'{"id": "a", "sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, '
    a_list = b"[6.7, 3.0, 5.2, 2.3]"
    lines = [first + b'"petal_width": 0.2}', b'{"id": "b", "sepal_length": 5.1', a_list]
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    run_task(job(tmp_path, iris_uri, source, id_column="id", max_error_share=1.0))

    errors = local_batch.errors(open_place((tmp_path / "out").as_uri()))
    assert [(e["id"], e["offset"]) for e in errors] == [
        (None, len(lines[0]) + 1),  # not JSON: its id cannot be read
        (None, len(lines[0]) + len(lines[1]) + 2),  # a list has no id
    ]
    assert errors[1]["detail"] == "the row has no id: with --id-column every row needs one"
    assert list(answers((tmp_path / "out").as_uri())) == ["a"]


def test_an_input_changed_since_a_task_ran_is_refused(tmp_path: Path, iris_uri: str) -> None:
    source = tmp_path / "rows.csv"
    source.write_bytes(local_batch.generated_csv(100, bad_every=10**9))
    run_task(job(tmp_path, iris_uri, source, task_index=0, task_count=2))
    with open(source, "ab") as f:
        f.write(b"r100,5.0,3.0,1.5,0.2\n")

    with pytest.raises(Conflict, match="input files were listed with other sizes"):
        run_task(job(tmp_path, iris_uri, source, task_index=0, task_count=2))
    source.write_bytes(local_batch.generated_csv(100, bad_every=10**9))
    (tmp_path / "out" / "_tasks" / "00000-of-00002.json").unlink()  # as if it never ran
    run_task(job(tmp_path, iris_uri, source, task_index=1, task_count=2))
    with pytest.raises(Conflict, match="2 tasks there, 3 here"):  # parts would overlap
        run_task(job(tmp_path, iris_uri, source, task_index=0, task_count=3))


def test_a_csv_row_with_an_empty_id_is_refused(tmp_path: Path, iris_uri: str) -> None:
    source = tmp_path / "rows.csv"
    source.write_text("k," + ",".join(IRIS) + "\nx,5.1,3.5,1.4,0.2\n,5.1,3.5,1.4,0.2\n")

    run_task(job(tmp_path, iris_uri, source, id_column="k", max_error_share=1.0))

    [error] = local_batch.errors(open_place((tmp_path / "out").as_uri()))
    assert (error["k"], error["field"], error["offset"]) == (
        "",
        "k",
        source.read_text().index("\n,") + 1,
    )
    assert list(answers((tmp_path / "out").as_uri())) == ["x"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "env, message",
    [
        ({"CLOUD_RUN_TASK_INDEX": "x"}, "--task-index: invalid int value: 'x'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' must be one of"),
        ({"MODEL_RUNTIME": "onnx", "MODEL_SHA256": "a" * 64}, "MODEL_RUNTIME=onnx cannot honour"),
        ({"STORE_TIMEOUT_SECONDS": "0"}, "STORE_TIMEOUT_SECONDS='0' must be a positive"),
        ({"ALLOW_PICKLE": "maybe"}, "ALLOW_PICKLE is invalid"),
    ],
)
def test_a_bad_variable_exits_2_naming_it(env: dict[str, str], message: str) -> None:
    done = batch(*FILES, "--model", "file:///m", env=env)
    assert done.returncode == 2 and message in done.stderr, done.stderr


class Picky:
    """A classifier that refuses (ValueError) any row whose first value is negative, and gives
    no finite answer for one whose second is: what a model may still do to checked rows."""

    classes_ = np.array(["no", "yes"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if (X[:, 0] < 0).any():
            raise ValueError("negative input")
        p = np.where(X[:, 1] < 0, np.nan, 0.25)
        return np.column_stack([1 - p, p])


def test_rows_the_model_refuses_are_found_alone_and_the_rest_scored() -> None:
    from function.batch.rows import Rows, score
    from function.core.model import LoadedModel
    from function.core.schema import Schema
    from tests.support.metadata import metadata_for

    names = ["a", "b"]
    model = LoadedModel(Picky(), metadata_for(names), 0.0, schema=Schema.of_numbers(names))
    X = np.ones((1000, 2))
    X[[10, 500], 0] = -1.0  # refused by the model
    X[777, 1] = -1.0  # answered NaN
    ids = list(range(1000))

    scored = score(model, Rows(ids, [X[:, 0].copy(), X[:, 1].copy()]))

    assert [(k, e.detail.split(":")[0]) for k, _, e in scored.errors] == [
        (10, "the model cannot predict for this row"),
        (500, "the model cannot predict for this row"),
        (777, "the model gives no finite answer for this row"),
    ]
    assert scored.ids == [i for i in ids if i not in (10, 500, 777)]
    assert scored.prediction is not None and len(scored.prediction.labels) == 997


@pytest.mark.slow
def test_the_batch_needs_only_the_images_packages(tmp_path: Path, iris_uri: str) -> None:
    """The image installs function/requirements.txt alone: a task scores with every package
    that training and development add made unimportable."""
    from tests.support.requirements import IMPORT_NAMES, requirement_names

    image = requirement_names(ROOT / "function" / "requirements.txt")
    others = requirement_names(ROOT / "requirements.txt") - image
    modules = sorted({IMPORT_NAMES.get(n, n.replace("-", "_")) for n in others})
    source = tmp_path / "rows.csv"
    source.write_text(",".join(IRIS) + "\n5.1,3.5,1.4,0.2\n")
    script = (
        f"import sys; sys.modules.update(dict.fromkeys({modules!r}));"
        "from function.batch.__main__ import main;"
        f"sys.exit(main(['--input', {source.as_uri()!r}, '--output', "
        f"{(tmp_path / 'out').as_uri()!r}, '--model', {iris_uri!r}]))"
    )

    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip

    assert {"matplotlib", "skl2onnx", "pytest"} <= set(modules)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert answers((tmp_path / "out").as_uri())["2"][0] == "setosa"


def test_a_misspelt_header_is_refused_naming_the_column_not_scored_as_gaps(
    tmp_path: Path, churn_store: tuple[str, Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """country may be missing; a header saying `Country` would have scored every row as if no
    row had one. Columns that are not features are listed once, in the task's log."""
    model_uri, _, frame = churn_store
    typo = write_csv(tmp_path / "typo.csv", frame.rename(columns={"country": "Country"}))
    (tmp_path / "extra").mkdir()
    extra = write_csv(tmp_path / "extra" / "rows.csv", frame.assign(label="x"))

    with pytest.raises(InvalidInput, match=r"has no column country \(every feature needs its "
                       r"column; a missing value is an empty cell\); columns that are not "
                       r"features: Country"):  # fmt: skip
        run_task(job(tmp_path, model_uri, typo, id_column="customer"))
    with caplog.at_level("INFO", logger="modelrun.batch"):
        run_task(job(tmp_path, model_uri, extra, out="out-extra", id_column="customer"))
    said = [r.getMessage() for r in caplog.records if "not features" in r.getMessage()]
    assert said == [f"{extra.as_uri()}: columns that are not features, ignored: label"]


def test_plain_paths_are_local_files_as_package_and_publish_take_them(
    tmp_path: Path, iris_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parsed = parse_job(["--input", "in.csv", "--output", "out/", "--model", iris_uri], {})
    assert parsed.input == (tmp_path / "in.csv").as_uri()
    assert parsed.output == (tmp_path / "out").as_uri() + "/"


@pytest.mark.slow
def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path: Path, iris_artifact: Path) -> None:
    """A model that raises what no check foresaw (here a RuntimeError on every call after its
    warm-up): one log line naming it, exit 1, no traceback."""
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    publish_object(store, "v1", FailingModel(), iris_artifact, tmp_path)
    store.promote("v1")
    source = tmp_path / "rows.csv"
    source.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n")

    done = batch("--input", source.as_uri(), "--output", (tmp_path / "out").as_uri(),
                 "--model", store.uri)  # fmt: skip

    said = done.stdout + done.stderr  # the log is JSON lines on stdout, as Cloud Logging reads
    assert done.returncode == 1, said
    assert "Traceback" not in said
    (line,) = [entry for entry in said.splitlines() if "failed" in entry]
    assert "failed unexpectedly: RuntimeError: injected failure" in line


FORMULAS = ["=1+2", "+1+1", "-2+3", "@SUM(A1)", "\tx", '=HYPERLINK("http://x","y")']
NUMBERS = ["-5", "+1.5e3", "7", "-0.25"]


def test_ids_a_spreadsheet_would_run_are_written_as_text(tmp_path: Path, iris_uri: str) -> None:
    import csv
    import io

    text = io.StringIO()
    rows = csv.writer(text, lineterminator="\n")
    rows.writerow(["k", *IRIS])
    rows.writerows([i, 5.1, 3.5, 1.4, 0.2] for i in [*FORMULAS, *NUMBERS])
    (source := tmp_path / "rows.csv").write_text(text.getvalue())

    run_task(job(tmp_path, iris_uri, source, id_column="k"))

    written = set(answers((tmp_path / "out").as_uri()))
    assert written == {"'" + i for i in FORMULAS} | set(NUMBERS)


@pytest.mark.slow
@pytest.mark.parametrize(
    "value, cell",
    [
        *((text, "'" + text) for text in ["=1+2", "+1+1", "-2+3", "@x", "\tx"]),
        ("\r=1", '"\'\r=1"'),
        ("=a,b", '"\'=a,b"'),
        *((text, text) for text in [*NUMBERS, "a=b", "", "setosa"]),
        (-5, "-5"),
        (-0.5, "-0.5"),
        (None, ""),
    ],
)
def test_a_formula_cell_is_neutralised_in_the_batch_and_on_the_page(value: Any, cell: str) -> None:
    from function.batch.output import csv_text

    source = (ROOT / "function" / "service" / "ui" / "ui.js").read_text()
    found = re.search(r"^const FORMULA_START.*?^function csvCell.*?^}\n", source, re.S | re.M)
    assert found, "csvCell and its patterns, as ui.js defines them"
    script = (
        found[0] + "process.stdout.write(JSON.stringify(csvCell(JSON.parse(process.env.CELL))));"
    )
    page = subprocess.run(
        ["node", "-e", script],
        env={**os.environ, "CELL": json.dumps(value)},
        capture_output=True,
        text=True,
        check=True,
    )

    assert csv_text(value) == cell
    assert json.loads(page.stdout) == cell


INSIDE = [
    "{top}//in/out/",
    "{in}//out/",
    "{in}/./out",
    "{in}/out/",
    "{top}/other/../in/out",
    "{top}/link/out",
    "{in}",
]


@pytest.mark.parametrize("output", [*INSIDE, "./in/out", "in//out/", "./in"])
def test_an_output_inside_the_input_is_refused_however_it_is_spelt(
    tmp_path: Path, iris_uri: str, output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (inputs := tmp_path / "in").mkdir()
    (inputs / "rows.csv").write_text(",".join(IRIS) + "\n5.1,3.5,1.4,0.2\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "link").symlink_to(inputs)
    top = tmp_path.as_uri()
    monkeypatch.chdir(tmp_path)  # plain paths are relative to where the command runs
    named = output.format(top=top, **{"in": inputs.as_uri()})
    job = parse_job(["--input", "in/", "--output", named, "--model", iris_uri], {})

    with pytest.raises(InvalidInput, match="is inside --input"):
        run_task(job)
    assert [p.name for p in inputs.rglob("*")] == ["rows.csv"]


@pytest.mark.parametrize(
    "source, output, inside",
    [
        ("gs://b/in", "gs://b/in//out/", True),
        ("gs://b/in/", "gs://b/in/./out", True),
        ("gs://b//in", "gs://b/in/out", True),
        ("gs://b/in", "gs://b/in/", True),
        ("gs://b", "gs://b/out", True),
        ("gs://b/in", "gs://b/input-out", False),
        ("gs://b/in", "gs://c/in/out", False),
        ("gs://b/in/out", "gs://b/in", False),
        ("gs://b/in", "file:///b/in/out", False),
    ],
)
def test_a_gcs_prefix_contains_what_its_listing_would_read(
    source: str, output: str, inside: bool
) -> None:
    assert contains(parse_uri(source, BATCH), parse_uri(output, BATCH)) is inside
