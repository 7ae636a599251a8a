"""function/core/logs.py: where the JSON log lines go."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from function.core.logs import setup_logging


def test_lines_go_to_stdout_as_it_is_when_they_are_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logging set up once under one stdout (a test's capture, closed after it) still writes
    after stdout was replaced: to the new one, never "--- Logging error ---" on stderr."""
    first, second, errors = io.StringIO(), io.StringIO(), io.StringIO()
    logger = logging.getLogger("modelrun")
    for attribute in ("handlers", "level", "propagate"):  # as other tests left it, after
        monkeypatch.setattr(logger, attribute, getattr(logger, attribute))
    monkeypatch.setattr(sys, "stderr", errors)
    monkeypatch.setattr(sys, "stdout", first)
    setup_logging("INFO")
    first.close()
    monkeypatch.setattr(sys, "stdout", second)
    logging.getLogger("modelrun.test").info("model %s loaded", "iris")

    assert json.loads(second.getvalue())["message"] == "model iris loaded"
    assert errors.getvalue() == ""
