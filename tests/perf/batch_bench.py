"""Batch scoring against the straightforward script a user would write instead.

    make bench-batch            # 3 alternating rounds, and a 2 GB file for memory
    make bench-batch QUICK=1    # 1 round, smaller files, a 256 MB file for memory

The peer (tests/perf/batch_baseline.py) is what the issue names: `pandas.read_csv` of the whole
file, `predict_proba` on all of it, `to_csv` of the answers. Both run as one process on the same
CSV file and the same joblib model: the Iris logistic regression (modelrun takes its verified
ONNX file, as MODEL_RUNTIME=auto does) and the mixed-type one-hot + HistGradientBoosting pipeline
of `make bench`. Each run's wall time, CPU time (user + system, from wait4) and peak RSS are read
from the kernel; rows/s per vCPU is rows over CPU seconds. Then modelrun alone scores a file of
--gb gigabytes built from the same rows, to show its peak RSS does not grow with the input.
Writes tests/perf/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from local.mirror import ROOT
from tests.perf.bench import package_mixed
from training.__main__ import main as training

PERF = ROOT / "tests" / "perf"
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def run(command: list[str]) -> dict[str, float]:
    """Run a command to its end: its wall and CPU seconds (wait4) and peak RSS in MiB.

    The peak is the process's own VmHWM, read while it runs (a running maximum, so the last
    reading is its peak): wait4's ru_maxrss would count the pages this big process shares with
    the child between fork and exec."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_kib = 0
    status_file = Path(f"/proc/{child.pid}/status")
    while True:
        try:
            text = status_file.read_text()
            if (found := re.search(r"VmHWM:\s+(\d+) kB", text)) and "python" in text:
                peak_kib = max(peak_kib, int(found.group(1)))
        except OSError:
            pass
        done, status, usage = os.wait4(child.pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - started
    if status != 0:
        error = child.stderr.read().decode() if child.stderr else ""
        raise SystemExit(f"{' '.join(command[:4])} failed: {error}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "rss_mib": peak_kib / 1024}


def iris_csv(path: Path, rows: int) -> None:
    rng = np.random.default_rng(11)
    X = rng.normal([5.8, 3.0, 3.7, 1.2], [0.8, 0.4, 1.7, 0.7], size=(rows, 4)).round(2)
    import pandas as pd

    pd.DataFrame(X, columns=IRIS).to_csv(path, index=False)


def churn_csv(path: Path, rows: int) -> None:
    from training.churn import churn

    churn(rows, seed=3).drop(columns="churned").to_csv(path, index=False)


def grown(source: Path, target: Path, size: int) -> int:
    """`source`'s rows repeated until the file holds `size` bytes; return its row count."""
    header, body = source.read_bytes().split(b"\n", 1)
    with open(target, "wb") as f:
        f.write(header + b"\n")
        written = 0
        while written < size:
            f.write(body)
            written += len(body)
    return (written // len(body)) * body.count(b"\n")


def publish(artifact: Path, store: Path, name: str) -> str:
    uri = f"{store.as_uri()}/{name}"
    assert training(["publish", "--store", store.as_uri(), "--name", name, str(artifact),
                     "--promote"]) == 0  # fmt: skip
    return uri


def ours(model_uri: str, source: Path, out: Path) -> list[str]:
    flags = ["--input", source.as_uri(), "--output", out.as_uri(), "--model", model_uri]
    return [sys.executable, "-m", "function.batch", *flags, "--progress-rows", "100000000"]


def theirs(joblib_file: Path, source: Path, out: Path) -> list[str]:
    return [sys.executable, str(PERF / "batch_baseline.py"), str(joblib_file), str(source),
            str(out / "answers.csv")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") == "1")
    parser.add_argument("--gb", type=float, default=None, help="the memory run's file size")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    sizes = {"lr": 500_000, "mixed": 100_000} if args.quick else {"lr": 2_000_000, "mixed": 500_000}
    gigabytes = args.gb or (0.25 if args.quick else 2.0)
    results: dict[str, Any] = {"rounds": rounds, "rows": sizes, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        artifacts = {"lr": tmp / "lr", "mixed": tmp / "mixed"}
        assert training(["train", "--out", str(artifacts["lr"]), "--no-report"]) == 0
        package_mixed(artifacts["mixed"])
        uris = {
            m: publish(a, tmp / "store", "iris" if m == "lr" else "churn")
            for m, a in artifacts.items()
        }
        files = {"lr": tmp / "iris.csv", "mixed": tmp / "churn.csv"}
        iris_csv(files["lr"], sizes["lr"])
        churn_csv(files["mixed"], sizes["mixed"])
        for model in artifacts:
            samples: dict[str, list[dict[str, float]]] = {"modelrun": [], "pandas": []}
            for round_ in range(rounds):
                for name in ("modelrun", "pandas"):  # A B A B
                    out = tmp / f"out-{model}-{name}-{round_}"
                    out.mkdir()
                    joblib_file = artifacts[model] / "model.joblib"
                    command = (
                        ours(uris[model], files[model], out)
                        if name == "modelrun"
                        else theirs(joblib_file, files[model], out)
                    )
                    print(f"round {round_ + 1}/{rounds}: {name} {model}", flush=True)
                    samples[name].append(run(command))
            results[model] = summary(samples, sizes[model])
        big = tmp / "big.csv"
        rows = grown(files["lr"], big, int(gigabytes * 1e9))
        print(f"modelrun on a {big.stat().st_size / 1e9:.2f} GB file ({rows} rows)", flush=True)
        figures = run(ours(uris["lr"], big, tmp / "out-big"))
        results["memory"] = {
            "file_gb": big.stat().st_size / 1e9,
            "rows": rows,
            "rss_mib": figures["rss_mib"],
            "rss_mib_small_file": results["lr"]["modelrun"]["rss_mib"],
            "rows_per_s": rows / figures["wall_s"],
        }
    report(results)


def summary(samples: dict[str, list[dict[str, float]]], rows: int) -> dict[str, Any]:
    """Medians per side, rows/s (wall and per vCPU), and modelrun / pandas ratios."""
    sides = {}
    for name, runs in samples.items():
        wall = statistics.median(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        sides[name] = {"wall_s": wall, "cpu_s": cpu, "rows_per_s": rows / wall,
                       "rows_per_cpu_s": rows / cpu,
                       "rss_mib": statistics.median(r["rss_mib"] for r in runs)}  # fmt: skip
    ours, theirs = sides["modelrun"], sides["pandas"]
    return {
        **sides,
        "ratio_rows_per_s": ours["rows_per_s"] / theirs["rows_per_s"],
        "ratio_rows_per_cpu_s": ours["rows_per_cpu_s"] / theirs["rows_per_cpu_s"],
        "ratio_rss": ours["rss_mib"] / theirs["rss_mib"],
    }


def report(results: dict[str, Any]) -> None:
    print(f"\nbatch scoring, one process each, medians of {results['rounds']} round(s):")
    print(f"{'model':<7}{'rows':>10}{'side':>10}{'rows/s':>11}{'rows/s/vCPU':>13}{'peak RSS':>10}")
    for model in ("lr", "mixed"):
        for side in ("modelrun", "pandas"):
            f = results[model][side]
            print(f"{model:<7}{results['rows'][model]:>10}{side:>10}{f['rows_per_s']:>11,.0f}"
                  f"{f['rows_per_cpu_s']:>13,.0f}{f['rss_mib']:>8.0f}Mi")  # fmt: skip
        r = results[model]
        ratios = (r["ratio_rows_per_s"], r["ratio_rows_per_cpu_s"], r["ratio_rss"])
        print(f"{'':<17}{'ratio':>10}{ratios[0]:>10.2f}x{ratios[1]:>12.2f}x{ratios[2]:>9.2f}x"
              "  (goal: >= 1x speed)")  # fmt: skip
    m = results["memory"]
    print(
        f"\nmemory: a {m['file_gb']:.2f} GB file ({m['rows']:,} rows) scored at "
        f"{m['rows_per_s']:,.0f} rows/s with a peak RSS of {m['rss_mib']:.0f} MiB "
        f"({m['rss_mib_small_file']:.0f} MiB on the {results['rows']['lr']:,}-row file)"
    )
    out = PERF / "results" / "batch.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
