"""`make screenshots`: the README's pictures of the pages, taken in headless Chromium.

Trains the churn example (mixed types, a training report), serves it as the container does, fills
the form, predicts, and saves docs/images/page.png, docs/images/card.png,
docs/images/baseline.png and docs/images/rollout.png (a candidate in shadow), then
docs/images/mlflow.png (a tracked run in MLflow's UI), reduced to a small palette so that they
stay small in the repository.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from function.core import rollout
from function.core.store import ModelStore
from local import tracking
from tests.browser import chrome, open_with_key, wait
from tests.conftest import KEY, ROOT, free_port, run_service
from training.__main__ import main as training
from training.churn import churn

IMAGES = ROOT / "docs" / "images"


def save(driver: object, path: Path, height: int) -> None:
    driver.set_window_size(1100, height)  # type: ignore[attr-defined]
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} kB)")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        churn(2000, seed=7).to_csv(tmp / "churn.csv", index=False)
        args = ["--data", str(tmp / "churn.csv"), "--target", "churned", "--impute", "median"]
        assert training(["train", *args, "--out", str(tmp / "art")]) == 0
        store = ModelStore((tmp / "store" / "churn").as_uri())
        version = store.publish(tmp / "art")
        store.promote(version)
        # A candidate in shadow beside it, for the model card's Rollout section.
        boosted = [*args, "--estimator", "hist_gradient_boosting", "--out", str(tmp / "hgb")]
        assert training(["train", *boosted]) == 0
        rollout.start(store, store.publish(tmp / "hgb"), "shadow")
        with run_service({"MODEL_URI": store.uri, "API_KEYS": KEY}, tmp) as service:
            driver = chrome()
            try:
                driver.get(service.url + "/ui/ui.css")  # the origin, for sessionStorage
                open_with_key(driver, service.url + "/", KEY)
                Select(driver.find_element(By.NAME, "plan")).select_by_value("pro")
                driver.find_element(By.ID, "predict-button").click()
                wait(driver, lambda d: d.find_elements(By.ID, "prediction"), "the answer")
                IMAGES.mkdir(exist_ok=True)
                save(driver, IMAGES / "page.png", 900)
                driver.find_element(By.ID, "tab-card").click()
                wait(
                    driver,
                    lambda d: len(d.find_elements(By.CSS_SELECTOR, "#card img")) >= 4,
                    "the plots",
                )
                heading = driver.find_elements(By.XPATH, "//h2[text()='Training report']")
                driver.execute_script("arguments[0].scrollIntoView()", heading[0])
                save(driver, IMAGES / "card.png", 900)
                wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".baseline ul"), "bins")
                heading = driver.find_elements(By.XPATH, "//h2[text()='Training distribution']")
                driver.execute_script("arguments[0].scrollIntoView()", heading[0])
                save(driver, IMAGES / "baseline.png", 700)
                heading = driver.find_elements(By.XPATH, "//h2[text()='Rollout']")
                driver.execute_script("arguments[0].scrollIntoView()", heading[0])
                save(driver, IMAGES / "rollout.png", 420)
            finally:
                driver.quit()
        mlflow_run(tmp)


def mlflow_run(tmp: Path) -> None:
    """docs/images/mlflow.png: the run `train --mlflow` logged, in MLflow's own UI, from the
    pinned server (`make tracking`'s)."""
    if not tracking.MLFLOW.exists():
        print(f"no docs/images/mlflow.png: {tracking.MLFLOW} is missing (`make tracking`)")
        return
    port = free_port()
    with tracking.server(tracking.command(tmp / "mlflow", port), tmp / "mlflow.log", port) as url:
        args = ["--data", str(tmp / "churn.csv"), "--target", "churned", "--gate",
                "accuracy>=0.7", "--estimator", "hist_gradient_boosting"]  # fmt: skip
        args += ["--out", str(tmp / "tracked")]
        assert training(["train", *args, "--mlflow", url]) == 0
        run = json.loads((tmp / "tracked" / "metadata.json").read_text())["mlflow"]
        driver = chrome()
        try:
            driver.set_window_size(1100, 1000)
            driver.get(run["run_url"])
            wait(driver, lambda d: d.find_elements(By.XPATH, "//*[text()='churn.csv']"), "the run")
            # The assistant panel MLflow opens beside the run is not about the run.
            for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
                close.click()
            save(driver, IMAGES / "mlflow.png", 1000)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
