"""One model, every path: the conformance matrix.

Every model of the zoo (tests/zoo.py: packaged on a hold-out, or trained by `train`, on real
public tables) is published and served in process, and the same hold-out rows go through every
path a prediction can take. Each cell's labels, probabilities and values must equal the
artifact's own `predict`/`predict_proba` on those rows as the user holds them: to the bit on the
scikit-learn and numpy paths, within the tolerance the metadata states on ONNX. A cell that
cannot work is declared in the zoo with its reason, and checked to be refused with it. The
README's support table is rendered from the same declarations
(`test_the_readme_shows_the_support_table`).

In process wherever a server adds nothing: the real handler behind Flask's test client
(tests/inprocess.py), the batch task as a function on files. The page's Batch tab runs in
Chromium against the same handler served over a socket (tests/test_browser.py's harness).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.batch.task import Job, run_task
from function.core import rollout
from function.core.signing import Trust
from function.core.store import ModelStore
from function.service.protocols.v2_tensors import INPUT
from tests.conftest import KEY, wait_until
from tests.inprocess import InProcess, in_process
from tests.zoo import PATHS, ZOO, Entry, Made, Refused, make, support_table

AUTH = {"X-API-Key": KEY}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@contextlib.contextmanager
def served(made: Made, tmp: Path, **settings: str) -> Iterator[tuple[InProcess, ModelStore]]:
    """The artifact published as v1 and current in a folder store, served in process."""
    name = json.loads((made.artifact / "metadata.json").read_text())["name"]
    store = ModelStore((tmp / "store" / name).as_uri(), timeout=5)
    store.promote(store.publish(made.artifact, "v1"))
    # scikit-learn answers unless asked: "auto" would serve a verified ONNX export, which
    # answers within its tolerance, and has a cell of its own.
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "RATE_LIMIT_PER_SECOND": "0",
           "MODEL_RUNTIME": "sklearn",
           "MODEL_REFRESH_SECONDS": "0.1", "AIP_PREDICT_ROUTE": "/vertex/predict",
           "AIP_HEALTH_ROUTE": "/vertex/health", **settings}  # fmt: skip
    with in_process(env) as app:
        yield app, store


def json_rows(made: Made) -> list[dict[str, Any]]:
    """The rows as a client sends them: objects by name, null where a value is missing, every
    number to its last bit (pandas' to_json keeps 10 digits)."""
    import pandas as pd

    columns = {
        name: [None if pd.isna(v) else v for v in made.rows[name].astype(object).tolist()]
        for name in made.rows.columns
    }
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


def check_native(made: Made, answer: dict[str, Any]) -> None:
    assert answer["predictions"] == made.labels
    if made.probabilities is None:
        assert "probabilities" not in answer
        return
    classes = list(answer["probabilities"][0])
    got = np.array([[p[c] for c in classes] for p in answer["probabilities"]])
    assert np.array_equal(got, made.probabilities)


def post(app: InProcess, path: str, body: Any, **headers: str) -> dict[str, Any]:
    response = app.client.post(path, json=body, headers={**AUTH, **headers})
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def v2_inputs(app: InProcess, made: Made) -> list[dict[str, Any]]:
    """One tensor per feature, each of the datatype the model's v2 metadata names."""
    metadata = app.client.get(v2_path(app), headers=AUTH).get_json()
    rows = json_rows(made)
    if metadata["inputs"][0]["name"] == INPUT:  # all numbers: one [rows, features] tensor
        names = metadata["parameters"]["feature_names"]
        flat = [r[n] for r in rows for n in names]
        return [{"name": INPUT, "shape": [len(rows), len(names)], "datatype": "FP64",
                 "data": flat}]  # fmt: skip
    return [
        {"name": t["name"], "shape": [len(rows)], "datatype": t["datatype"],
         "data": [r[t["name"]] for r in rows]}
        for t in metadata["inputs"]
    ]  # fmt: skip


def v2_path(app: InProcess) -> str:
    return f"/v2/models/{app.client.get('/model', headers=AUTH).get_json()['name']}"


def check_v2(made: Made, answer: dict[str, Any], classes: list[str] | None) -> None:
    outputs = {o["name"]: o for o in answer["outputs"]}
    labels = outputs["predict"]["data"]
    if outputs["predict"]["datatype"] == "BYTES":  # labels of other types go as text
        assert labels == [str(x) for x in made.labels]
    else:
        assert labels == made.labels
    if made.probabilities is None:
        assert "predict_proba" not in outputs
        return
    got = np.reshape(outputs["predict_proba"]["data"], made.probabilities.shape)
    assert np.array_equal(got, made.probabilities)
    assert classes is not None  # the metadata names each probability column's class


def binary_body(inputs: list[dict[str, Any]], outputs: list[str]) -> tuple[bytes, int]:
    """The tensors as tritonclient sends them by default: binary, after the JSON header. A
    missing number is NaN (binary has no null); rows with a missing category cannot be sent."""
    import tritonclient.http as triton

    tensors = []
    for tensor in inputs:
        values = tensor["data"]
        datatype = tensor["datatype"]
        if datatype == "BYTES":
            array = np.array(values, dtype=object)
        elif datatype == "BOOL":
            array = np.array(values, dtype=bool)
        else:
            array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            array = array.astype({"INT64": np.int64}.get(datatype, np.float64), copy=False)
        array = array.reshape(tensor["shape"])
        t = triton.InferInput(tensor["name"], list(array.shape), datatype)
        t.set_data_from_numpy(array)  # binary_data=True
        tensors.append(t)
    body, length = triton.InferenceServerClient.generate_request_body(
        tensors, outputs=[triton.InferRequestedOutput(n, binary_data=False) for n in outputs]
    )  # fmt: skip
    return body, int(length or 0)


def sendable_in_binary(made: Made, inputs: list[dict[str, Any]]) -> list[int]:
    """The rows binary can carry: no missing category, no missing whole number or boolean."""
    kinds = {t["name"]: t["datatype"] for t in inputs}
    rows = json_rows(made)
    return [
        i for i, row in enumerate(rows)
        if all(row[n] is not None or kinds.get(n, "FP64") in ("FP64", "FP32") for n in row)
    ]  # fmt: skip


def subset(made: Made, keep: list[int]) -> Made:
    probabilities = None if made.probabilities is None else made.probabilities[keep]
    return Made(
        made.artifact, made.rows.iloc[keep].reset_index(drop=True), made.extra.iloc[keep],
        None, [made.labels[i] for i in keep], probabilities,
    )  # fmt: skip


def run_batch(
    app_store: ModelStore, made: Made, tmp: Path, form: str, runtime: str = "sklearn"
) -> list[dict[str, str]]:
    """The batch command's task on a file holding an id, the features and the target."""
    frame = made.rows.copy()
    frame.insert(0, "rid", [f"r{i}" for i in range(len(frame))])
    frame = frame.join(made.extra)
    source = tmp / f"in-{form}" / f"rows.{form}"
    source.parent.mkdir()
    if form == "csv":
        frame.to_csv(source, index=False)
    else:
        extra = made.extra.astype(object).to_dict("records")
        lines = [
            json.dumps({"rid": f"r{i}", **row, **extra[i]}) for i, row in enumerate(json_rows(made))
        ]
        source.write_text("\n".join(lines) + "\n")
    out = tmp / f"out-{form}"
    run_task(Job(source.as_uri(), out.as_uri(), app_store.uri, id_column="rid", runtime=runtime,
                 trust=Trust(allow_unsigned=True)))  # fmt: skip
    return list(csv.DictReader(io.StringIO((out / "part-00000-of-00001.csv").read_text())))


def check_batch(made: Made, scored: list[dict[str, str]]) -> None:
    assert [r["rid"] for r in scored] == [f"r{i}" for i in range(len(made.labels))]
    if isinstance(made.labels[0], float):  # a regressor: its number, to the bit
        assert [float(r["prediction"]) for r in scored] == made.labels
    else:
        assert [r["prediction"] for r in scored] == [str(x) for x in made.labels]
    columns = [c for c in scored[0] if c.startswith("probability_")]
    if made.probabilities is None:
        assert columns == []
        return
    got = np.array([[float(r[c]) for c in columns] for r in scored])
    assert np.array_equal(got, made.probabilities)


@pytest.mark.parametrize("item", ZOO, ids=[e.name for e in ZOO])
def test_every_path_gives_the_pipelines_own_answer(
    item: Entry, zoo_dir: Path, tmp_path: Path
) -> None:
    made = make(item, zoo_dir)
    metadata = json.loads((made.artifact / "metadata.json").read_text())
    for feature in metadata["features"]:  # the schema comes from the model, not the hold-out
        if feature["type"] == "category":
            assert feature["categories_from"] == "model", feature
    if item.holdout_lacks:
        column, value = item.holdout_lacks
        assert value not in made.rows[column].astype(str).tolist()
        assert value in next(f for f in metadata["features"] if f["name"] == column)["categories"]

    with served(made, tmp_path) as (app, store):
        rows = json_rows(made)
        names = metadata["feature_names"]
        check_native(made, post(app, "/predict", {"instances": rows}))
        positional = [[r[n] for n in names] for r in rows]
        check_native(made, post(app, "/predict", {"instances": positional}))
        vertex = post(app, "/vertex/predict", {"instances": rows})
        assert vertex["predictions"] == made.labels

        inputs = v2_inputs(app, made)
        v2_metadata = app.client.get(v2_path(app), headers=AUTH).get_json()
        proba = [o for o in v2_metadata["outputs"] if o["name"] == "predict_proba"]
        classes = proba[0]["parameters"]["classes"] if proba else None
        if classes is not None:
            assert classes == metadata["class_names"]
        wanted = ["predict", *(["predict_proba"] if classes is not None else [])]
        body = {"inputs": inputs, "outputs": [{"name": n} for n in wanted]}
        check_v2(made, post(app, f"{v2_path(app)}/infer", body), classes)

        keep = sendable_in_binary(made, inputs)
        assert len(keep) >= len(rows) // 2
        part = subset(made, keep)
        data, length = binary_body(v2_inputs(app, part), wanted)
        response = app.client.post(
            f"{v2_path(app)}/infer", data=data,
            headers={**AUTH, "Inference-Header-Content-Length": str(length)},
        )  # fmt: skip
        assert response.status_code == 200, response.get_json()
        check_v2(part, response.get_json(), classes)

        check_batch(made, run_batch(store, made, tmp_path, "csv"))
        check_batch(made, run_batch(store, made, tmp_path, "jsonl"))

        # The same version published again as a candidate: as a shadow it agrees on every row
        # with no difference; as a 100 % canary it answers, exactly.
        store.publish(made.artifact, "v2")
        rollout.start(store, "v2", "shadow", 100)
        wait_until(lambda: app.service.loader.state.candidate is not None, 10, "the shadow")
        check_native(made, post(app, "/predict", {"instances": rows}))
        wait_until(lambda: shadow_rows(app) == len(rows), 10, "the shadow's rows")
        assert metric(app, "modelrun_shadow_agreed_total") == len(rows)
        assert metric(app, "modelrun_shadow_difference_total") == 0
        rollout.abort(store)
        wait_until(lambda: app.service.loader.state.candidate is None, 10, "the shadow dropped")
        rollout.start(store, "v2", "canary", 100)
        wait_until(lambda: app.service.loader.state.candidate is not None, 10, "the canary")
        response = app.client.post("/predict", json={"instances": rows}, headers=AUTH)
        assert response.headers["X-Model-Version"] == "v2"
        check_native(made, response.get_json())

    check_onnx(item, made, metadata, tmp_path)
    check_numpy(item, made, metadata, tmp_path)


def shadow_rows(app: InProcess) -> float:
    return metric(app, "modelrun_shadow_rows_total")


def metric(app: InProcess, name: str) -> float:
    page = app.client.get("/metrics", headers=AUTH).get_data(as_text=True)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def check_onnx(item: Entry, made: Made, metadata: dict[str, Any], tmp: Path) -> None:
    """ONNX where it is exported, within its stated tolerance; else the stated reason."""
    onnx = metadata["onnx"]
    expected = item.expected("onnx")
    if isinstance(expected, Refused):
        assert not onnx["exported"] and expected.because in onnx["reason"], onnx
        return
    assert expected == "tolerance"
    assert onnx["exported"] and onnx["verified"], onnx
    with served(made, tmp / "onnx", MODEL_RUNTIME="onnx") as (app, _):
        answer = post(app, "/predict", {"instances": json_rows(made)})
    assert answer["model"]["version"] == "v1"
    if isinstance(made.labels[0], float):
        assert np.allclose(answer["predictions"], made.labels, rtol=0, atol=onnx["tolerance"])
    else:
        assert answer["predictions"] == made.labels
    if made.probabilities is None:  # an SVC's graph outputs scores there, never served
        assert "probabilities" not in answer
    else:
        classes = list(answer["probabilities"][0])
        got = np.array([[p[c] for c in classes] for p in answer["probabilities"]])
        assert np.abs(got - made.probabilities).max() <= onnx["tolerance"]


def check_numpy(item: Entry, made: Made, metadata: dict[str, Any], tmp: Path) -> None:
    """The numpy runtime where it is compiled, to the last bit (served, and as the batch job);
    else the stated reason."""
    compiled = metadata["numpy"]
    expected = item.expected("numpy")
    if isinstance(expected, Refused):
        assert not compiled["verified"] and expected.because in compiled["reason"], compiled
        return
    assert compiled["verified"] and compiled["tolerance"] == 0.0, compiled
    with served(made, tmp / "numpy", MODEL_RUNTIME="numpy") as (app, store):
        assert app.client.get("/model", headers=AUTH).get_json()["runtime"] == "numpy"
        check_native(made, post(app, "/predict", {"instances": json_rows(made)}))
        check_batch(made, run_batch(store, made, tmp / "numpy", "csv", runtime="numpy"))


def test_the_readme_shows_the_support_table() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- support-table -->\n") + len("<!-- support-table -->\n")
    end = readme.index("<!-- /support-table -->")
    assert readme[start:end] == support_table(), (
        "the README's support table differs from tests/zoo.py's declarations: "
        "`.venv/bin/python -m tests.zoo` prints it"
    )


def test_every_path_is_in_the_table() -> None:
    assert list(PATHS) == [
        "rows", "objects", "vertex", "v2_json", "v2_binary", "batch_csv", "batch_jsonl",
        "batch_tab", "shadow", "canary", "onnx", "numpy",
    ]  # fmt: skip
    for item in ZOO:
        assert set(item.expect) <= set(PATHS), item.name


# --- the page's Batch tab, in Chromium ------------------------------------------------------


@contextlib.contextmanager
def over_a_socket(app: InProcess) -> Iterator[str]:
    """The in-process handler served on a loopback port (werkzeug), for a browser to load."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app.client.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.mark.parametrize("item", ZOO, ids=[e.name for e in ZOO])
def test_the_batch_tab_gives_the_pipelines_own_answer(
    item: Entry, zoo_dir: Path, tmp_path: Path, browser: Any
) -> None:
    """A CSV with an id and the target beside the features, uploaded as a user would; the
    download's answers are the pipeline's own."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.browser import open_with_key, wait

    made = make(item, zoo_dir)
    upload = tmp_path / "rows.csv"
    frame = made.rows.copy()
    frame.insert(0, "rid", [f"r{i}" for i in range(len(frame))])
    frame.join(made.extra).to_csv(upload, index=False)
    with served(made, tmp_path) as (app, _), over_a_socket(app) as url:
        browser.get(url + "/ui/ui.css")  # the origin, for sessionStorage
        open_with_key(browser, url + "/#batch")
        browser.find_element(By.ID, "batch-file").send_keys(str(upload))
        wait(browser, lambda d: len(Select(d.find_element(By.ID, "batch-id")).options) > 1,
             "the id column offered")  # fmt: skip
        Select(browser.find_element(By.ID, "batch-id")).select_by_value("rid")
        browser.find_element(By.ID, "batch-button").click()
        wait(browser, lambda d: "rows scored" in d.find_element(By.ID, "batch-summary").text,
             "the batch")  # fmt: skip
        summary = browser.find_element(By.ID, "batch-summary").text
        assert summary.startswith(f"{len(made.labels)} rows scored, 0 refused."), summary
        assert summary.endswith(f"(not features of this model): {made.extra.columns[0]}.")
        # The download, saved as a user saves it (the page's CSP lets no script fetch it).
        downloads = tmp_path / "downloads"
        browser.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        browser.find_element(By.ID, "batch-download").click()
        saved = downloads / "predictions.csv"
        wait(browser, lambda d: saved.exists() and saved.stat().st_size > 0, "the download")
        csv_text = saved.read_text()
    scored = list(csv.DictReader(io.StringIO(csv_text)))
    check_batch(made, scored)
    assert all(r["error"] == "" for r in scored)
