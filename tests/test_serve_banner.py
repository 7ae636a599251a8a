"""`make serve`'s banner (local/serve.py): its rate-limit line says what was set."""

from __future__ import annotations

import pytest

from local.serve import rate_limit_line


@pytest.mark.parametrize("rate", ["", "0", " 0.0 "])
def test_no_rate_says_off_and_how_to_set_one(rate: str) -> None:
    line = rate_limit_line(rate)
    assert "off in development" in line and "set RATE_LIMIT_PER_SECOND to test one" in line


def test_a_rate_set_is_shown_without_the_hint_to_set_one() -> None:
    line = rate_limit_line("5")
    assert line == "rate limit: 5 requests/s per key (RATE_LIMIT_PER_SECOND)"
    assert "to test one" not in line


def test_the_payload_line_says_where_records_go_or_that_they_are_off() -> None:
    from local.serve import payload_line

    assert payload_line("", "/p") == payload_line("0", "/p")
    assert "off" in payload_line("0", "/p")
    on = payload_line("0.5", "/tmp/records")
    assert "0.5" in on and "/tmp/records" in on and "off" not in on
