"""A synthetic customer-churn table for examples, tests and the bench: mixed types, gaps, a rare
category. python -m training.churn --out churn.csv [--rows 5000] [--seed 7]

Columns: country (text, one of them rare), plan (text), seats (whole number), monthly_spend
(number, about 5 % missing), tenure_months (whole number), has_discount (boolean), and the target
churned (0 or 1), which depends on all of them plus noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

COUNTRIES = ["FR", "DE", "ES", "IT", "GB", "LU"]
COUNTRY_SHARES = [0.3, 0.25, 0.17, 0.15, 0.127, 0.003]  # LU: a handful of rows in thousands
PLANS = ["free", "pro", "team"]


def churn(rows: int = 5000, seed: int = 7) -> Any:
    """The table as a pandas DataFrame, the same for the same rows and seed."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    country = rng.choice(COUNTRIES, rows, p=COUNTRY_SHARES)
    plan = rng.choice(PLANS, rows, p=[0.5, 0.35, 0.15])
    seats = np.where(plan == "team", rng.integers(3, 60, rows), rng.integers(1, 4, rows))
    tenure = rng.integers(0, 72, rows)
    discount = rng.random(rows) < 0.3
    base = np.select([plan == "free", plan == "pro"], [0.0, 29.0], 12.0 * seats)
    spend = np.round(base + rng.gamma(2.0, 8.0, rows), 2)
    score = (
        1.2 * (plan == "free") - 0.02 * tenure - 0.6 * discount + 0.004 * spend
        + 0.5 * np.isin(country, ["ES", "IT"]) - 0.03 * seats + rng.normal(0, 0.8, rows)
    )  # fmt: skip
    frame = pd.DataFrame(
        {
            "country": country,
            "plan": plan,
            "seats": seats,
            "monthly_spend": spend,
            "tenure_months": tenure,
            "has_discount": discount,
            "churned": (score > np.median(score)).astype(int),
        }
    )
    frame.loc[rng.random(rows) < 0.05, "monthly_spend"] = np.nan
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.churn", description=__doc__)
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    churn(args.rows, args.seed).to_csv(args.out, index=False)
    print(f"wrote {args.rows} rows to {args.out}")


if __name__ == "__main__":
    main()
