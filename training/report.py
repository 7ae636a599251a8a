"""The training report: how the model does on rows it was not fitted on, as plots and one page.

Written into the artifact beside the model, each file listed in metadata.files with its digest,
so a version's report is verified like its model. Plots are drawn on matplotlib Figures with the
Agg canvas (no pyplot, no display); the page has no scripts and no inline styles, so it can be
served under a strict Content-Security-Policy.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from typing import Any

import numpy as np

from training.progress import step

REPORT_FILE = "report.html"
DPI = 72
IMPORTANCE_REPEATS = 5
# Importance is measured on at most this many of the rows (a random sample, as scikit-learn's
# max_samples draws it): 5 shuffles of each feature of a 10,000-row hold-out cost seconds, and
# the ranking is as clear on 2,000.
IMPORTANCE_ROWS = 2000


def build_report(
    pipeline: Any,
    X: Any,
    y: Any,
    metadata: dict[str, Any],
    seed: int,
    background: Callable[[], Any] | None = None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Return the report's files (report.html and its PNGs) and a summary for metadata.json:
    the permutation importance of each feature on these rows, beside its mean |attribution|
    (the explanations' global importance, against `background`: the rows a linear model is
    explained against), and the plots' names."""
    classifier = metadata["task"] == "classification"
    with step("report: plots"):
        predicted = pipeline.predict(X)
        plots = _classifier_plots(pipeline, X, y, predicted) if classifier else _regressor_plots(
            y, predicted)  # fmt: skip
    rows = min(len(y), IMPORTANCE_ROWS)
    with step(f"report: permutation importance ({IMPORTANCE_REPEATS} shuffles of {rows} rows)"):
        importance = _importance(pipeline, X, y, metadata["feature_names"], seed)
    plots["permutation_importance.png"] = _importance_plot(importance)
    with step(f"report: mean |attribution| of each feature ({rows} rows explained)"):
        attribution = attribution_importance(pipeline, X, metadata, seed, background)
    summary = {
        "files": [REPORT_FILE, *plots],
        "permutation_importance": importance,
        "attribution_importance": attribution,
    }
    page = _page(metadata, list(plots), importance, attribution)
    return {REPORT_FILE: page, **plots}, summary


def _classifier_plots(pipeline: Any, X: Any, y: Any, predicted: Any) -> dict[str, bytes]:
    from sklearn.metrics import ConfusionMatrixDisplay, precision_recall_fscore_support

    classes = list(pipeline.classes_)
    plots = {}
    figure, ax = _figure()
    ConfusionMatrixDisplay.from_predictions(y, predicted, labels=classes, ax=ax, colorbar=False)
    ax.set_title("Confusion matrix")
    plots["confusion_matrix.png"] = _png(figure)

    precision, recall, _, _ = precision_recall_fscore_support(
        y, predicted, labels=classes, zero_division=0
    )
    figure, ax = _figure()
    where = np.arange(len(classes))
    ax.bar(where - 0.2, precision, 0.4, label="precision")
    ax.bar(where + 0.2, recall, 0.4, label="recall")
    ax.set_xticks(where, [str(c) for c in classes], rotation=30 if len(classes) > 4 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_title("Precision and recall per class")
    ax.legend(loc="lower right")
    plots["precision_recall_per_class.png"] = _png(figure)

    if not hasattr(pipeline, "predict_proba"):
        return plots
    probabilities = pipeline.predict_proba(X)
    if len(classes) == 2:
        from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

        positive = classes[1]
        curves = [
            ("roc_curve.png", "ROC curve", RocCurveDisplay),
            ("precision_recall_curve.png", "Precision-recall curve", PrecisionRecallDisplay),
        ]
        for name, title, display in curves:
            figure, ax = _figure()
            display.from_predictions(y, probabilities[:, 1], pos_label=positive, ax=ax)
            ax.set_title(f"{title} (positive class: {positive})")
            plots[name] = _png(figure)
    plots["calibration.png"] = _calibration_plot(y, probabilities, classes)
    return plots


def _calibration_plot(y: Any, probabilities: np.ndarray, classes: list[Any]) -> bytes:
    """Reliability of each class's probability (one-vs-rest): predicted against observed."""
    from sklearn.calibration import calibration_curve

    figure, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    shown = classes[1:] if len(classes) == 2 else classes
    for k, label in enumerate(classes):
        if label not in shown:
            continue
        truth = np.asarray(y) == label
        if truth.all() or not truth.any():
            continue
        observed, mean_predicted = calibration_curve(truth, probabilities[:, k], n_bins=5)
        ax.plot(mean_predicted, observed, marker="o", label=str(label))
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Calibration")
    ax.legend(loc="upper left")
    return _png(figure)


def _regressor_plots(y: Any, predicted: Any) -> dict[str, bytes]:
    from sklearn.metrics import PredictionErrorDisplay

    plots = {}
    views = [
        ("residuals.png", "Residuals", "residual_vs_predicted"),
        ("predicted_vs_actual.png", "Predicted against actual", "actual_vs_predicted"),
    ]
    for name, title, kind in views:
        figure, ax = _figure()
        PredictionErrorDisplay.from_predictions(y, predicted, kind=kind, ax=ax)
        ax.set_title(title)
        plots[name] = _png(figure)
    return plots


def _importance(
    pipeline: Any, X: Any, y: Any, names: list[str], seed: int
) -> dict[str, dict[str, float]]:
    """How much the model's score drops when each feature's values are shuffled."""
    from sklearn.inspection import permutation_importance

    result = permutation_importance(
        pipeline,
        X,
        y,
        n_repeats=IMPORTANCE_REPEATS,
        random_state=seed,
        max_samples=min(1.0, IMPORTANCE_ROWS / len(y)),
    )
    return {
        name: {"mean": float(mean), "std": float(std)}
        for name, mean, std in zip(
            names, result.importances_mean, result.importances_std, strict=True
        )
    }


def attribution_importance(
    pipeline: Any,
    X: Any,
    metadata: dict[str, Any],
    seed: int,
    background: Callable[[], Any] | None,
) -> dict[str, Any]:
    """Each feature's mean |attribution| over (a sample of) these rows, each row's predicted
    class explained as POST /explain explains it, in its units; or why the model has none. A
    report never fails training for it: any failure is recorded as the reason."""
    from function.core.explain import NotExplainable, build, final_estimator
    from function.core.predict import Instances

    names = metadata["feature_names"]
    rows = len(X)
    if rows > IMPORTANCE_ROWS:
        chosen = np.sort(np.random.default_rng(seed).permutation(rows)[:IMPORTANCE_ROWS])
        X = X.iloc[chosen] if hasattr(X, "iloc") else X[chosen]
    if background is None:

        def background() -> Any:
            kind = type(final_estimator(pipeline)).__name__
            raise NotExplainable(kind, "no background rows were given to explain a linear model")

    try:
        explainer = build(pipeline, len(names), background, lambda: X)
        explanation = explainer.explain(Instances(X, where="row {}"), None)
    except NotExplainable as e:
        return {"explained": False, "reason": str(e)}
    except Exception as e:  # the card goes without the column; training goes on
        return {"explained": False, "reason": f"the explanation failed: {type(e).__name__}: {e}"}
    means = np.abs(explanation.attributions).mean(axis=0)
    return {
        "explained": True,
        "units": explainer.units,
        "method": f"{explainer.describe()['explainer']}, {explainer.describe()['variant']}",
        "rows": len(X),
        "mean_abs": {name: float(m) for name, m in zip(names, means, strict=True)},
    }


def _importance_plot(importance: dict[str, dict[str, float]]) -> bytes:
    ordered = sorted(importance.items(), key=lambda item: item[1]["mean"])
    figure, ax = _figure(height=max(2.5, 0.35 * len(ordered) + 1))
    ax.barh(
        [name for name, _ in ordered],
        [value["mean"] for _, value in ordered],
        xerr=[value["std"] for _, value in ordered],
    )
    ax.set_xlabel("score drop when shuffled (mean ± std)")
    ax.set_title("Permutation feature importance")
    return _png(figure)


def _figure(height: float = 4.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, height), dpi=DPI, layout="constrained")
    return figure, figure.subplots()


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _page(
    metadata: dict[str, Any],
    plots: list[str],
    importance: dict[str, dict[str, float]],
    attribution: dict[str, Any],
) -> bytes:
    """One static page: what was trained on what, its metrics and gates, and the plots."""
    e = html.escape
    dataset = metadata["dataset"]
    holdout = metadata["metrics"]["holdout"]
    cv = metadata["metrics"].get("cv") or {}
    rows = "".join(
        f"<tr><th>{e(name)}</th><td>{value:.4f}</td><td>{_cv(cv.get(name))}</td></tr>"
        for name, value in holdout.items()
    )
    ranked = sorted(importance.items(), key=lambda item: -item[1]["mean"])
    mean_abs = attribution.get("mean_abs", {})
    features = "".join(
        f"<tr><th>{e(name)}</th><td>{value['mean']:.4f} ± {value['std']:.4f}</td>"
        f"<td>{_attribution_cell(mean_abs.get(name))}</td></tr>"
        for name, value in ranked
    )
    explained = (
        f"Mean |attribution|: {e(attribution['method'])}, in {e(attribution['units'])} units, "
        f"over {attribution['rows']} rows, each row's predicted class explained."
        if attribution.get("explained")
        else f"No attributions: {e(str(attribution.get('reason', '')))}"
    )
    images = "".join(
        f'<figure><img src="{e(name)}" alt="{e(name.removesuffix(".png").replace("_", " "))}">'
        f"</figure>"
        for name in plots
    )
    gates = ", ".join(metadata.get("gates") or []) or "none"
    evaluated = metadata["metrics"].get("evaluated_on") or (
        f"the {dataset.get('test_rows')} hold-out rows, which it was not fitted on"
    )
    title = f"{metadata['name']}: {metadata['estimator']}"
    text = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Training report: {e(title)}</title>
</head>
<body>
<h1>Training report: {e(title)}</h1>
<p>Task: {e(metadata["task"])}. Data: {e(str(dataset["source"]))} ({dataset["rows"]} rows,
target {e(str(dataset["target"]))}, sha256 {e(str(dataset["sha256"])[:12])}…). Metrics, plots and
importances are on {e(evaluated)}. Gates passed: {e(gates)}.
Created {e(str(metadata["created_at"]))}.</p>
<h2>Metrics</h2>
<table>
<thead><tr><th>metric</th><th>hold-out</th><th>cross-validated</th></tr></thead>
<tbody>{rows}</tbody>
</table>
<h2>Feature importance</h2>
<p>{explained}</p>
<table>
<thead><tr><th>feature</th><th>permutation: score drop (mean ± std)</th>
<th>mean |attribution|</th></tr></thead>
<tbody>{features}</tbody>
</table>
<h2>Plots</h2>
{images}
</body>
</html>
"""
    return text.encode()


def _attribution_cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _cv(value: dict[str, float] | None) -> str:
    return f"{value['mean']:.4f} ± {value['std']:.4f}" if value else "—"
