"""Live quality: each version's answers joined with the labels given later (live_query.py),
measured with training's own metrics and judged by the model's own gates."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from function.core.metadata import Metadata
from training.live_query import Joined
from training.train import OPERATORS, Gate, holdout_metrics, parse_gate


@dataclass(frozen=True)
class Quality:
    """One version's live quality in one role (its answers, or its shadow's)."""

    version: str
    role: str
    answered: int
    labelled: int
    metrics: dict[str, float] | None  # None: fewer labels than asked for
    holdout: dict[str, float]
    gates: list[str]
    failed: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        return self.labelled / self.answered if self.answered else 0.0

    @property
    def judged(self) -> bool:
        return self.metrics is not None

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "role": self.role, "answered": self.answered,
                "labelled": self.labelled, "coverage": self.coverage, "metrics": self.metrics,
                "holdout": self.holdout, "gates": self.gates, "failed": self.failed}  # fmt: skip


def live_gates(metadata: Metadata, extra: Sequence[Gate] = ()) -> list[Gate]:
    """The gates training applied to this version, and any given now. A cross-validated gate
    (cv_accuracy>=0.9) is the author's floor for that metric: live, it applies to the metric
    itself, the only estimate there is."""
    gates = [parse_gate(g) for g in metadata.raw.get("gates", [])] + list(extra)
    return [Gate(g.metric.removeprefix("cv_"), g.op, g.threshold) for g in gates]


def measure(
    joined: Iterable[Joined],
    metadata_of: Callable[[str], Metadata],
    extra_gates: Sequence[Gate] = (),
    min_labels: int = 1,
) -> list[Quality]:
    """Each (version, role)'s metrics over its labelled rows, beside its hold-out figures, with
    the gates it fails; `metadata_of(version)` gives a version's metadata."""
    groups: dict[tuple[str, str], tuple[int, list[str], list[str]]] = {}
    for row in joined:
        answered, truths, predicted = groups.setdefault(
            (row.version, row.role), (row.answered, [], [])
        )
        if row.truth is not None and row.predicted is not None:
            truths.append(row.truth)
            predicted.append(row.predicted)
    found = []
    for (version, role), (answered, truths, predicted) in sorted(groups.items()):
        metadata = metadata_of(version)
        task = metadata.task
        gates = live_gates(metadata, extra_gates)
        metrics = None
        failed: list[str] = []
        if len(truths) >= min_labels and truths:
            with warnings.catch_warnings():  # a class not seen live is an ordinary case here
                warnings.simplefilter("ignore", UserWarning)
                metrics = holdout_metrics(task, *_values(task, truths, predicted))
            failed = [str(g) for g in gates if g.metric in metrics
                      and not OPERATORS[g.op](metrics[g.metric], g.threshold)]  # fmt: skip
        found.append(Quality(version, role, answered, len(truths), metrics,
                             dict(metadata.raw["metrics"]["holdout"]), [str(g) for g in gates],
                             failed))  # fmt: skip
    return found


def _values(task: str, truths: list[str], predicted: list[str]) -> tuple[list[Any], list[Any]]:
    """Labels as one canonical text each (1 and 1.0 alike), or values as numbers."""
    if task == "regression":
        return [float(t) for t in truths], [float(p) for p in predicted]
    return [_label(t) for t in truths], [_label(p) for p in predicted]


def _label(text: str) -> str:
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if math.isfinite(number) and number.is_integer() else text


def table(found: Sequence[Quality], min_labels: int) -> list[str]:
    """The report's lines: per version and role, each metric live beside its hold-out value."""
    lines = []
    for q in found:
        head = (f"{q.version} ({q.role}): {q.answered} rows answered, {q.labelled} labelled "
                f"({q.coverage:.1%})")  # fmt: skip
        if not q.judged:
            lines.append(f"{head}: too few labels to judge (fewer than {min_labels})")
            continue
        verdict = (
            f"below its gates: {', '.join(q.failed)}"
            if q.failed
            else (f"meets its gates ({', '.join(q.gates)})" if q.gates else "no gates")
        )
        lines.append(f"{head}: {verdict}")
        lines.append(f"  {'metric':<18} {'live':>10} {'hold-out':>10}")
        assert q.metrics is not None
        for name, value in q.metrics.items():
            holdout = q.holdout.get(name)
            shown = f"{holdout:>10.4f}" if holdout is not None else f"{'-':>10}"
            lines.append(f"  {name:<18} {value:>10.4f} {shown}")
    return lines
