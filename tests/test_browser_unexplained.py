"""The prediction page on a model that cannot be explained (an SVC `train` made): it reads the
card's attribution record from GET /model, shows the reason, and never asks POST /explain (whose
422 would be a console error and EXPLAIN_COST tokens of the rate limit at every Predict).
Headless Chromium against the service as its own process, as tests/test_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from function.core.store import ModelStore
from tests.browser import errors_in_console, open_with_key, wait
from tests.conftest import KEY, Running, run_service
from training.__main__ import main


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("unexplained")
    artifact = tmp / "art"  # with its report: the card's attribution record
    assert main(["train", "--out", str(artifact), "--estimator", "sklearn.svm.SVC"]) == 0
    store = ModelStore((tmp / "store" / "iris").as_uri())
    store.promote(store.publish(artifact, "v1"))
    with run_service({"MODEL_URI": store.uri, "API_KEYS": KEY}, tmp) as service:
        yield service


def test_a_model_that_cannot_be_explained_is_not_asked_and_says_why(
    browser: Any, running: Running
) -> None:
    browser.get(running.url + "/ui/ui.css")  # the origin, for sessionStorage
    browser.get_log("browser")
    open_with_key(browser, running.url + "/")
    for _ in range(2):
        browser.find_element(By.ID, "predict-button").click()
        shown = wait(browser, lambda d: d.find_elements(By.ID, "why-not"), "the reason")[0].text
        browser.execute_script("document.getElementById('answer').replaceChildren()")

    assert "a model of kind SVC cannot be explained" in shown
    assert "GradientBoostingClassifier (binary only)" in shown
    assert errors_in_console(browser) == []  # no 422 from /explain
