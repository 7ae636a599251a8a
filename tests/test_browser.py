"""The pages in a real browser: headless Chromium (Debian's, driven by selenium through
chromedriver) against the service as its own process, serving a mixed-type churn model with its
training report. Skipped without Chromium on a laptop, never in CI (.ci/run installs it).

Screenshots of each view are saved under the module's temporary folder (printed at the end)."""

from __future__ import annotations

import csv
import http.server
import io
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from function.core import rollout
from function.core.store import ModelStore
from tests.browser import axe_source, axe_violations, errors_in_console, open_with_key, wait
from tests.conftest import KEY, Running, free_port, run_service
from training.__main__ import main
from training.churn import churn

AUTH = {"X-API-Key": KEY}
TRACKED = {
    "run_id": "739e3e7b3cb4447fb599763b193dde86",
    "experiment_id": "1",
    "experiment": "churn",
    "tracking_uri": "http://127.0.0.1:5000",
    "run_url": "http://127.0.0.1:5000/#/experiments/1/runs/739e3e7b3cb4447fb599763b193dde86",
    "model_uri": "models:/m-abd90d652fa247d6b075af0f84f16102",
    "version": "20261130T191249Z-f1452bb6",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("churn-data") / "churn.csv"
    churn(800, seed=3).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def running(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The churn model with its report, promoted twice (v2 is current, v1 its history), and v3
    in a shadow rollout (it answers nothing)."""
    tmp = tmp_path_factory.mktemp("browser")
    args = ["--data", str(data), "--target", "churned", "--cv", "2", "--impute", "median"]
    assert main(["train", *args, "--out", str(tmp / "art")]) == 0
    # The record `train --mlflow` adds (tests/test_tracking.py writes it against a real server).
    metadata = json.loads((tmp / "art" / "metadata.json").read_text())
    metadata["mlflow"] = TRACKED
    (tmp / "art" / "metadata.json").write_text(json.dumps(metadata))
    store = ModelStore((tmp / "store" / "churn").as_uri())
    for version in ("v1", "v2"):
        store.publish(tmp / "art", version)
        store.promote(version)
    rollout.start(store, store.publish(tmp / "art", "v3"), "shadow")
    with run_service({"MODEL_URI": store.uri, "API_KEYS": KEY}, tmp) as service:
        yield service


@pytest.fixture(scope="module")
def other_origin() -> Iterator[str]:
    """Another origin (another port) serving a script, and a page without a CSP that loads it."""
    files = {
        "/evil.js": (b"window.__evil = true;", "text/javascript"),
        "/open.html": (b'<script src="/evil.js"></script>', "text/html"),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, kind = files.get(self.path, (b"", "text/plain"))
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    print(f"\nscreenshots: {folder}")


@pytest.fixture
def page(browser: Any, running: Running, screenshots: Path, request: Any) -> Iterator[Any]:
    """The browser on a blank tab of the service's origin, its log read; a screenshot after."""
    browser.get(running.url + "/ui/ui.css")  # the origin, so that sessionStorage can be set
    browser.execute_script("sessionStorage.clear(); localStorage.clear();")
    browser.get_log("browser")
    yield browser
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    shot = screenshots / f"{name}.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")


def csp_refusals(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


def text(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def api_predict(running: Running, rows: list[dict[str, Any]]) -> dict[str, Any]:
    response = running.post("/predict", json={"instances": rows}, headers=AUTH)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_page_loads_without_errors_and_builds_its_form_from_the_schema(
    page: Any, running: Running
) -> None:
    page.get(running.url + "/")
    wait(page, lambda d: "ready" in text(d, "served-model"), "the service's readiness")
    # Before any key: ready, but not which model (an unkeyed caller is not told)
    assert text(page, "served-model") == "ready; enter a key to see which model"
    assert not page.find_element(By.ID, "predict-button").is_enabled()

    key_field = page.find_element(By.ID, "api-key")
    key_field.send_keys(KEY, Keys.ENTER)  # the keyboard alone
    wait(page, lambda d: d.find_element(By.ID, "predict-button").is_enabled(), "the form")
    assert text(page, "served-model") == "churn, version v2"

    model = running.get("/model", headers=AUTH).json()
    for feature in model["features"]:
        field = page.find_element(By.NAME, feature["name"])
        label = page.find_element(By.CSS_SELECTOR, f'label[for="{field.get_attribute("id")}"]')
        assert label.text == feature["name"]
        if feature["type"] == "category":
            options = [o.get_attribute("value") for o in Select(field).options]
            assert options == [""] * feature["nullable"] + feature["categories"]  # "" is missing
        else:
            assert field.tag_name == ("select" if feature["type"] == "boolean" else "input")
        example = model["input_example"][feature["name"]]
        shown = (
            ""
            if example is None
            else str(example).lower()
            if example in (True, False)
            else str(example)
        )
        assert field.get_attribute("value") == shown
    assert errors_in_console(page) == []
    # The key is kept in this tab only and never travels in a URL.
    assert page.execute_script("return sessionStorage.getItem('modelrun.apiKey')") == KEY
    assert page.execute_script("return localStorage.length") == 0
    urls = page.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert any(u.endswith("/model") for u in urls)
    assert not any(KEY in u for u in [*urls, page.current_url])


def test_a_prediction_through_the_form_is_the_apis_answer(page: Any, running: Running) -> None:
    open_with_key(page, running.url + "/")
    Select(page.find_element(By.NAME, "country")).select_by_value("DE")
    Select(page.find_element(By.NAME, "plan")).select_by_value("team")
    Select(page.find_element(By.NAME, "has_discount")).select_by_value("true")
    for name, value in (("seats", "7"), ("monthly_spend", ""), ("tenure_months", "3")):
        field = page.find_element(By.NAME, name)
        field.clear()
        if value:
            field.send_keys(value)
    page.find_element(By.NAME, "tenure_months").send_keys(Keys.ENTER)  # Enter submits

    wait(page, lambda d: d.find_elements(By.ID, "prediction"), "the answer")
    row = {"country": "DE", "plan": "team", "seats": 7, "monthly_spend": None,
           "tenure_months": 3, "has_discount": True}  # fmt: skip
    expected = api_predict(running, [row])
    assert text(page, "prediction") == str(expected["predictions"][0])
    bars = page.find_elements(By.CSS_SELECTOR, "#panel-predict .bars li")
    shown = {
        bar.find_element(By.CLASS_NAME, "label").text: bar.find_element(By.CLASS_NAME, "value").text
        for bar in bars
    }
    assert shown == {c: f"{100 * p:.1f} %" for c, p in expected["probabilities"][0].items()}
    # The answer's X-Request-Id, by which its payload record and feedback find it.
    assert re.fullmatch(r"Request id: [0-9a-f]{32}", text(page, "request-id"))
    assert errors_in_console(page) == []


def test_a_wrong_key_is_refused_next_to_the_key_field(page: Any, running: Running) -> None:
    page.get(running.url + "/")
    page.find_element(By.ID, "api-key").send_keys("wrong-key-0123456789abcdef", Keys.ENTER)

    wait(page, lambda d: text(d, "key-error"), "the key's error")
    assert text(page, "key-error").startswith("The key was refused")
    assert "HTTP 401" in text(page, "key-error")
    assert page.find_element(By.ID, "api-key").get_attribute("aria-invalid") == "true"
    assert not page.find_element(By.ID, "predict-button").is_enabled()


def test_an_api_error_is_shown_next_to_the_field_it_names(page: Any, running: Running) -> None:
    open_with_key(page, running.url + "/")
    seats = page.find_element(By.NAME, "seats")
    seats.clear()
    seats.send_keys("2.5")
    page.find_element(By.ID, "predict-button").click()

    wait(page, lambda d: text(d, "feature-seats-error"), "the field's error")
    example = running.get("/model", headers=AUTH).json()["input_example"]
    refused = running.post(
        "/predict", json={"instances": [{**example, "seats": 2.5}]}, headers=AUTH
    )
    assert refused.status_code == 422
    assert text(page, "feature-seats-error") == refused.json()["detail"]
    assert seats.get_attribute("aria-invalid") == "true"
    assert page.switch_to.active_element == seats
    assert text(page, "predict-error") == ""


def test_a_batch_csv_is_scored_shown_and_downloadable(
    page: Any, running: Running, data: Path, tmp_path: Path
) -> None:
    """A real file: an id column and the label beside the features, as the batch command
    takes it (the id copied, the rest ignored and listed once)."""
    frame = churn(40, seed=11)
    frame.insert(0, "customer", [f"c-{i:03d}" for i in range(40)])
    frame["seats"] = frame["seats"].astype(object)
    frame.loc[5, "seats"] = "many"  # refused: the table says why, the others are scored
    upload = tmp_path / "rows.csv"
    frame.to_csv(upload, index=False)
    open_with_key(page, running.url + "/#batch")
    assert page.find_element(By.ID, "panel-batch").is_displayed()
    assert not page.find_element(By.ID, "batch-download").is_displayed()  # nothing scored yet

    page.find_element(By.ID, "batch-file").send_keys(str(upload))
    wait(page, lambda d: d.find_element(By.ID, "batch-csv").get_attribute("value"), "the file")
    choices = Select(page.find_element(By.ID, "batch-id"))
    assert [o.get_attribute("value") for o in choices.options] == ["", "customer", "churned"]
    choices.select_by_value("customer")
    page.find_element(By.ID, "batch-button").click()
    wait(page, lambda d: "rows scored" in text(d, "batch-summary"), "the batch")

    assert text(page, "batch-summary") == (
        "39 rows scored, 1 refused. Ignored columns (not features of this model): churned."
    )
    link = page.find_element(By.ID, "batch-download")
    assert link.is_displayed()
    assert link.get_attribute("href").startswith("blob:")
    page.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    link.click()
    saved = tmp_path / "predictions.csv"
    wait(page, lambda d: saved.exists() and saved.stat().st_size > 0, "the download")
    out = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert len(out) == 40
    assert [r["customer"] for r in out] == frame["customer"].tolist()
    assert "expected an integer for seats" in out[5]["error"]
    good = [i for i in range(40) if i != 5]
    features = frame.drop(columns=["customer", "churned"])
    rows = json.loads(features.iloc[good].to_json(orient="records"))
    expected = api_predict(running, rows)
    assert [out[i]["prediction"] for i in good] == [str(p) for p in expected["predictions"]]
    for i, probabilities in zip(good, expected["probabilities"], strict=True):
        for label, p in probabilities.items():
            assert float(out[i][f"probability_{label}"]) == p  # the shortest text of the float
    table_rows = page.find_elements(By.CSS_SELECTOR, "#batch-table tbody tr")
    assert len(table_rows) == 40
    assert table_rows[0].find_element(By.TAG_NAME, "th").text == "c-000"
    assert "refused" in table_rows[5].get_attribute("class")


def test_the_model_card_shows_metrics_plots_digests_and_history(
    page: Any, running: Running
) -> None:
    open_with_key(page, running.url + "/model/card")
    assert page.find_element(By.ID, "panel-card").is_displayed()
    model = running.get("/model", headers=AUTH).json()
    plots = [name for name in model["report"]["files"] if name.endswith(".png")]
    wait(
        page,
        lambda d: (
            d.execute_script(
                "return [...document.querySelectorAll('#card img')]"
                ".filter((i) => i.complete && i.naturalWidth > 0).length"
            )
            == len(plots)
        ),
        "every plot",
    )

    card = text(page, "card")
    for value in model["metrics"]["holdout"].values():
        assert f"{value:.4f}" in card
    calibration = model["calibration"]  # a classifier's, measured at training
    trusted = "trusted:" if calibration["trusted"] else "not trusted:"
    assert (
        f"expected calibration error {calibration['ece']:.4f} on the hold-out (15 bins); {trusted}"
        in card
    )
    for name, entry in model["files"].items():
        assert name in card and entry["sha256"] in card
    assert "previous version\nv1" in card
    assert "candidate\nv3\nmode\nshadow: scores every request without answering" in card
    assert "on this instance\nloaded beside this version" in card
    assert model["onnx"]["reason"] in card
    assert model["dataset"]["sha256"] in card
    assert "Download report.html" in card
    run = page.find_element(By.LINK_TEXT, f"{TRACKED['run_id']} (experiment churn)")
    assert run.get_attribute("href") == TRACKED["run_url"]
    # The drift baseline, bin by bin, from the verified baseline.json.
    baseline = running.get("/model/files/baseline.json", headers=AUTH).json()
    records = [*baseline["features"], baseline["prediction"]]
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".baseline ul")) == len(records),
         "the training distribution")  # fmt: skip
    headings = [h.text for h in page.find_elements(By.CSS_SELECTOR, ".baseline h3")]
    assert headings == [r["name"] for r in baseline["features"]] + [
        "Predictions on the hold-out rows"
    ]
    for record, bars in zip(
        records, page.find_elements(By.CSS_SELECTOR, ".baseline ul"), strict=True
    ):
        shown = [
            li.find_element(By.CLASS_NAME, "label").text
            for li in bars.find_elements(By.TAG_NAME, "li")
        ]
        assert shown == record["labels"]
    assert errors_in_console(page) == []


def test_the_tabs_work_from_the_keyboard(page: Any, running: Running) -> None:
    open_with_key(page, running.url + "/")
    page.find_element(By.ID, "tab-predict").click()

    page.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    assert page.switch_to.active_element.get_attribute("id") == "tab-batch"
    assert page.find_element(By.ID, "panel-batch").is_displayed()
    assert not page.find_element(By.ID, "panel-predict").is_displayed()
    assert page.current_url == running.url + "/#batch"
    page.switch_to.active_element.send_keys(Keys.END)
    assert page.current_url == running.url + "/model/card"
    page.switch_to.active_element.send_keys(Keys.HOME)
    assert page.find_element(By.ID, "tab-predict").get_attribute("aria-selected") == "true"


def test_the_csp_refuses_scripts_from_elsewhere_inline_and_eval(
    page: Any, running: Running, other_origin: str
) -> None:
    # The control: without modelrun's CSP the same script runs.
    page.get(other_origin + "/open.html")
    wait(page, lambda d: d.execute_script("return window.__evil === true"), "the control")

    page.get(running.url + "/")
    page.get_log("browser")
    page.execute_script(
        "const s = document.createElement('script'); s.src = arguments[0];"
        "document.head.append(s);"
        "const i = document.createElement('script'); i.textContent = 'window.__inline = true';"
        "document.head.append(i);",
        other_origin + "/evil.js",
    )
    refused = wait(page, csp_refusals, "the CSP's refusals")
    assert any("evil.js" in e["message"] for e in refused)
    # Code from strings (setTimeout's string form is eval) and inline handlers are refused too.
    # (The test's own execute_script runs through the driver, which CSP does not govern.)
    page.execute_script(
        "setTimeout('window.__eval = true', 0);"
        "document.body.setAttribute('onclick', 'window.__handler = true'); document.body.click();"
    )
    seen: list[str] = []

    def both_refused(driver: Any) -> bool:
        seen.extend(e["message"] for e in csp_refusals(driver))
        return any("Evaluating a string" in m for m in seen) and any(
            "inline event handler" in m for m in seen
        )

    wait(page, both_refused, "the refusals of eval and of the handler")
    assert page.execute_script(
        "return [window.__evil, window.__inline, window.__eval, window.__handler]"
    ) == [None, None, None, None]


PAGES_TO_SCAN = [
    ("/", None),
    ("/#batch", None),
    ("/model/card", "#card img"),
]


@pytest.mark.parametrize(("path", "ready"), PAGES_TO_SCAN)
def test_the_pages_pass_an_accessibility_scan(
    page: Any, running: Running, path: str, ready: str | None
) -> None:
    source = axe_source()
    open_with_key(page, running.url + path)
    if ready:
        wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, ready), ready)

    assert axe_violations(page, source) == []


def test_the_api_docs_try_it_out_with_the_key(page: Any, running: Running) -> None:
    open_with_key(page, running.url + "/")  # the key the docs use: this tab's
    page.get(running.url + "/docs")
    operation = wait(
        page, lambda d: d.find_elements(By.ID, "operations-default-predict"), "Swagger UI"
    )[0]
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    execute = wait(
        page, lambda d: d.find_elements(By.CSS_SELECTOR, ".execute-wrapper .execute"), "Execute"
    )[0]
    execute.click()

    status = wait(
        page,
        lambda d: d.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"
        ),
        "the response",
    )[0]
    assert status.text == "200"
    body = page.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text
    assert json.loads(body)["model"] == {"name": "churn", "version": "v2"}
    assert errors_in_console(page) == []
    assert axe_violations(page, axe_source()) == []  # with the request and its answer shown


def test_the_docs_page_passes_an_accessibility_scan(page: Any, running: Running) -> None:
    source = axe_source()
    page.get(running.url + "/docs")
    wait(page, lambda d: d.find_elements(By.ID, "operations-default-predict"), "Swagger UI")

    assert axe_violations(page, source) == []


def test_why_this_answer_shows_the_explanations_signed_bars_largest_first(
    page: Any, running: Running
) -> None:
    open_with_key(page, running.url + "/")
    Select(page.find_element(By.NAME, "plan")).select_by_value("free")
    page.find_element(By.ID, "predict-button").click()

    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#why li"), "the explanation's bars")
    form = {f["name"]: f for f in running.get("/model", headers=AUTH).json()["features"]}
    row = {name: page.find_element(By.NAME, name).get_attribute("value") for name in form}
    typed = {
        name: (None if value == "" else value == "true" if form[name]["type"] == "boolean"
               else float(value) if form[name]["type"] in ("number", "integer") else value)
        for name, value in row.items()
    }  # fmt: skip
    response = running.post("/explain", json={"instances": [typed]}, headers=AUTH)
    assert response.status_code == 200, response.text
    expected = response.json()["explanations"][0]["attributions"][0]["featureAttributions"]
    bars = page.find_elements(By.CSS_SELECTOR, "#why li")
    labels = [bar.find_element(By.CLASS_NAME, "label").text for bar in bars]
    assert labels == sorted(expected, key=lambda n: -abs(expected[n]))  # largest first
    for bar in bars:
        value = expected[bar.find_element(By.CLASS_NAME, "label").text]
        fill = bar.find_element(By.CLASS_NAME, "fill")
        assert ("down" if value < 0 else "up") in fill.get_attribute("class").split()
        shown = bar.find_element(By.CLASS_NAME, "value").text.replace("−", "-")
        assert float(shown) == pytest.approx(value, rel=1e-2, abs=1e-12)
    widths = [bar.find_element(By.CLASS_NAME, "fill").size["width"] for bar in bars]
    assert widths == sorted(widths, reverse=True)  # sized through the CSSOM, under the CSP
    assert csp_refusals(page) == [] and errors_in_console(page) == []
    page.execute_script("document.getElementById('why').scrollIntoView()")  # for the screenshot


def test_the_model_card_shows_mean_absolute_attribution_beside_permutation_importance(
    page: Any, running: Running
) -> None:
    open_with_key(page, running.url + "/model/card")
    caption = "Permutation importance on the hold-out set"
    wait(page, lambda d: [c for c in d.find_elements(By.TAG_NAME, "caption")
                          if c.text.startswith(caption)], "the importance table")  # fmt: skip
    table = next(
        t for t in page.find_elements(By.TAG_NAME, "table")
        if t.find_element(By.TAG_NAME, "caption").text.startswith(caption)
    )  # fmt: skip
    heads = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    assert heads == ["feature", "mean", "std", "mean |attribution|"]
    report = running.get("/model", headers=AUTH).json()["report"]["attribution_importance"]
    shown = {
        tr.find_element(By.TAG_NAME, "th").text: tr.find_elements(By.TAG_NAME, "td")[2].text
        for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert report["explained"] and set(shown) == set(report["mean_abs"])
    for name, value in report["mean_abs"].items():
        assert float(shown[name]) == pytest.approx(value, rel=1e-3, abs=1e-4)
