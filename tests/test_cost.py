"""tests/perf/cost.py's model of the bill: its rules, on figures made up for the purpose."""

from __future__ import annotations

import argparse

import pytest

from tests.perf.cost import SHAPES, Instance, Prices, cloud_run, price

FIGURES = {"cpu_ms_per_request": 1.0, "p50_ms": 1.0, "cold_start_s": 1.0, "pss_mb": 100.0}


def test_a_request_is_billed_its_time_rounded_up_to_100_ms() -> None:
    rate, hours = SHAPES["one request a minute"]
    fast = cloud_run(FIGURES, rate, hours, Prices(), Instance())
    slower = cloud_run({**FIGURES, "p50_ms": 80.0}, rate, hours, Prices(), Instance())
    longer = cloud_run({**FIGURES, "p50_ms": 150.0}, rate, hours, Prices(), Instance())

    assert fast["usd_per_million"] == slower["usd_per_million"]  # both one 100 ms slot
    assert longer["usd_per_million"] > fast["usd_per_million"]  # two slots


@pytest.mark.parametrize("text", ["-1", "nan", "inf"])
def test_a_price_is_a_finite_number_not_below_zero(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="finite number of dollars"):
        price(text)
    assert price("0.000024") == 0.000024
