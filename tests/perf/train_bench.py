"""What packaging and training cost on a real-sized mixed-type table, as a user runs them.

    make bench-train            # 3 rounds each
    make bench-train QUICK=1    # 1 round

`package`: the notebook pipeline (impute and one-hot in a ColumnTransformer, then
HistGradientBoosting; tests/test_own_model.py's) fitted on 10,000 churn rows and packaged from
its joblib file on another 10,000 with the command line, report and ONNX step included.
`train`: `train --estimator hist_gradient_boosting` on the 20,000-row CSV (5-fold
cross-validation, report included). Each is its own process; wall and CPU seconds come from the
kernel (wait4). The goal for `package` is 15 s here (issue 30). Writes
tests/perf/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib

from local.mirror import ROOT
from tests.support.churn import notebook_pipeline
from training.churn import churn

GOAL_PACKAGE_SECONDS = 15.0


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    rounds = 1 if parser.parse_args().quick else 3
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        table = churn(20_000, seed=3)
        fit, given = table.iloc[:10_000], table.iloc[10_000:]
        joblib.dump(notebook_pipeline(fit), tmp / "churn.joblib")
        given.to_csv(tmp / "given.csv", index=False)
        table.to_csv(tmp / "churn.csv", index=False)
        python = [sys.executable, "-m", "training"]
        commands = {
            "package 10,000 rows": [*python, "package", str(tmp / "churn.joblib"), "--data",
                                    str(tmp / "given.csv"), "--target", "churned", "--out"],
            "train 20,000 rows (hist_gradient_boosting, 5 folds)": [
                *python, "train", "--data", str(tmp / "churn.csv"), "--target", "churned",
                "--estimator", "hist_gradient_boosting", "--out"],
        }  # fmt: skip
        results = {}
        for name, command in commands.items():
            runs = [timed([*command, str(tmp / f"out-{k}")]) for k in range(rounds)]
            walls, cpus = [w for w, _ in runs], [c for _, c in runs]
            results[name] = {"wall_seconds": walls, "cpu_seconds": cpus}
            print(f"{name}: wall median {statistics.median(walls):.1f} s "
                  f"(runs {', '.join(f'{w:.1f}' for w in walls)}), "
                  f"CPU median {statistics.median(cpus):.1f} s")  # fmt: skip
    package = statistics.median(results["package 10,000 rows"]["wall_seconds"])
    print(f"package: {package:.1f} s against a goal of {GOAL_PACKAGE_SECONDS:.0f} s "
          f"({package / GOAL_PACKAGE_SECONDS:.2f}× the goal)")  # fmt: skip
    out = ROOT / "tests" / "perf" / "results" / "train.json"
    out.write_text(json.dumps({"rounds": rounds, "results": results}, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
