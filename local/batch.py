"""`make batch`: a batch job as Cloud Run Jobs runs it, as N local processes on the GCS emulator.

Starts fake-gcs-server, publishes the default Iris model into it, writes a generated CSV with a
few bad rows, then runs the job three ways and checks them against each other:
1. N tasks at once, each told CLOUD_RUN_TASK_INDEX and CLOUD_RUN_TASK_COUNT as Cloud Run does;
2. one task over the whole file;
3. N tasks again into a new prefix, one of them killed half-way first and the job rerun.
The union of the shards must equal the single task's result row for row, and the model's own
predictions; the killed run must end with no duplicate and the same bytes; the errors files
and the manifest must count the bad rows.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from function.batch.objects import open_place
from function.batch.task import MANIFEST
from function.core.storage import Storage, read_or_none
from local.mirror import ROOT, fake_gcs_command, free_port, stop, wait_for

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BAD_ROWS = {  # a line's text, and the field the errors file must name
    "abc,3.0,1.4,0.2": "sepal_length",
    ",3.0,1.4,0.2": "sepal_length",
    "5.1,3.0,1.4": None,
    "5.1,3.0,1.4,1e999": "petal_width",
}


def generated_csv(rows: int, seed: int = 7, bad_every: int = 5000) -> bytes:
    """Iris-like rows (and a bad one every `bad_every`), with a header and an id column."""
    rng = np.random.default_rng(seed)
    X = rng.normal([5.8, 3.0, 3.7, 1.2], [0.8, 0.4, 1.7, 0.7], size=(rows, 4)).round(2)
    bad = list(BAD_ROWS)
    out = io.StringIO()
    out.write("id," + ",".join(FEATURES) + "\n")
    for i, row in enumerate(X.tolist()):
        values = bad[(i // bad_every) % len(bad)] if i % bad_every == bad_every - 1 else None
        out.write(f"r{i}," + (values or ",".join(map(repr, row))) + "\n")
    return out.getvalue().encode()


def task_command(input_uri: str, output_uri: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "function.batch",
        "--input",
        input_uri,
        "--output",
        output_uri,
        *extra,
    ]


def run_tasks(
    env: dict[str, str], input_uri: str, output_uri: str, count: int, *extra: str
) -> list[int]:
    """Run a job's `count` tasks at once, as Cloud Run Jobs does; return their exit codes."""
    children = [
        subprocess.Popen(
            task_command(input_uri, output_uri, *extra),
            env={**env, "CLOUD_RUN_TASK_INDEX": str(i), "CLOUD_RUN_TASK_COUNT": str(count)},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(count)
    ]
    codes = []
    for child in children:
        _, err = child.communicate()
        if child.returncode not in (0, 3):
            sys.stderr.write(err.decode())
        codes.append(child.returncode)
    return codes


def kill_midway(
    env: dict[str, str], input_uri: str, output_uri: str, index: int, count: int, *extra: str
) -> None:
    """Start one task and kill it (SIGKILL, as a lost instance) once it has scored a block."""
    child = subprocess.Popen(
        task_command(
            input_uri, output_uri, "--progress-rows", "1", "--block-bytes", "65536", *extra
        ),
        env={**env, "CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_COUNT": str(count)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if b'"rows_per_second"' in line:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()


def results(place: Storage) -> list[list[str]]:
    """Every answer row under an output prefix (the parts' rows, headers dropped)."""
    rows: list[list[str]] = []
    for name in place.keys("part-"):
        rows += list(csv.reader(io.StringIO((read_or_none(place, name) or b"").decode())))[1:]
    return rows


def errors(place: Storage) -> list[dict[str, Any]]:
    found = []
    for name in place.keys("errors-"):
        found += [orjson.loads(line) for line in (read_or_none(place, name) or b"").splitlines()]
    return found


def same_answers(ours: list[list[str]], theirs: list[list[str]]) -> bool:
    """The same rows with the same labels, and probabilities equal to within 1e-12: a block of
    rows and a single row go through BLAS in different orders, which moves the last bits."""
    mine, other = {r[0]: r[1:] for r in ours}, {r[0]: r[1:] for r in theirs}
    if mine.keys() != other.keys() or any(mine[k][0] != other[k][0] for k in mine):
        return False
    keys = sorted(mine)
    a = np.array([[float(v) for v in mine[k][1:]] for k in keys])
    b = np.array([[float(v) for v in other[k][1:]] for k in keys])
    return bool(np.allclose(a, b, rtol=0, atol=1e-12))


def expected(model_file: Path, data: bytes) -> list[list[str]]:
    """The model's own answers for the good rows of the generated file, as result rows."""
    import joblib

    model = joblib.load(model_file)
    rows = list(csv.reader(io.StringIO(data.decode())))[1:]
    good = [r for r in rows if ",".join(r[1:]) not in BAD_ROWS]
    X = np.array([[float(v) for v in r[1:]] for r in good])
    labels, proba = model.predict(X), model.predict_proba(X)
    return [
        [r[0], str(label), *map(repr, p.tolist())]
        for r, label, p in zip(good, labels, proba, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        gcs = subprocess.Popen(
            fake_gcs_command(port, Path(tmp), "batch"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/storage/v1/b")
            os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
            check(ROOT / "artifacts" / "iris", args.rows, args.tasks)
        finally:
            stop(gcs)


def check(artifact: Path, rows: int, tasks: int) -> None:
    from google.cloud import storage

    from function.core.store import ModelStore
    from local.serve import trusted_key
    from training.signers import open_signer

    model_uri = "gs://batch/models/iris"
    target = ModelStore(model_uri)
    # Signed as `modelrun publish` signs, with the key trusted_key trusts.
    signer = open_signer(os.environ.get("MODELRUN_SIGNING_KEY") or None)
    target.promote(target.publish(artifact, "v1", signer))
    data = generated_csv(rows)
    storage.Client().bucket("batch").blob("input/rows.csv").upload_from_string(data)
    env = {**os.environ, **trusted_key(os.environ), "MODEL_URI": model_uri, "PYTHONPATH": str(ROOT)}
    input_uri, extra = "gs://batch/input/rows.csv", ("--id-column", "id")
    print(f"{rows} rows ({len(data) / 1e6:.1f} MB), {tasks} tasks, on fake-gcs-server")

    started = time.monotonic()
    codes = run_tasks(env, input_uri, "gs://batch/out/sharded", tasks, *extra)
    seconds = time.monotonic() - started
    print(
        f"1. {tasks} tasks at once: exit codes {codes}, {seconds:.1f} s "
        f"({rows / seconds:,.0f} rows/s overall)"
    )
    sharded = open_place("gs://batch/out/sharded")
    single = open_place("gs://batch/out/single")
    assert run_tasks(env, input_uri, single.uri, 1, *extra) == [0]
    union, whole = results(sharded), results(single)
    assert len({r[0] for r in union}) == len(union), "a row was scored twice"
    truth = expected(artifact / "model.joblib", data)
    assert same_answers(union, whole), "the shards' union differs from one task's result"
    assert same_answers(union, truth), "the shards' answers differ from the model's own"
    print(
        f"2. the union of the shards equals one task's result and the model's own answers "
        f"({len(union)} rows)"
    )

    retried = open_place("gs://batch/out/retried")
    kill_midway(env, input_uri, retried.uri, 1, tasks, *extra)
    killed = read_or_none(retried, f"_tasks/00001-of-{tasks:05d}.json")
    assert killed is None, "the kill came too late"
    run_tasks(env, input_uri, retried.uri, tasks, *extra)
    assert [read_or_none(retried, n) for n in retried.keys("part-")] == [
        read_or_none(sharded, n) for n in sharded.keys("part-")
    ], "the rerun job's parts differ from an uninterrupted run's"
    print("3. a task killed half-way, then the job rerun: the same parts, no duplicate")

    found = errors(sharded)
    manifest = orjson.loads(read_or_none(sharded, MANIFEST) or b"{}")
    bad = sum(1 for line in data.decode().splitlines()[1:] if line.split(",", 1)[1] in BAD_ROWS)
    assert len(found) == bad == manifest["errors"], (len(found), bad, manifest["errors"])
    assert manifest["rows"] == rows and manifest["scored"] == rows - bad
    print(
        f"4. the errors files hold the {bad} bad rows, each with its field; the manifest "
        f"counts {manifest['rows']} rows, {manifest['errors']} refused"
    )


if __name__ == "__main__":
    main()
