"""Harnesses the test modules share: a test module imports these (or tests/conftest.py,
tests/inprocess.py, tests/artifacts.py, tests/zoo.py, ...), never another test module."""
