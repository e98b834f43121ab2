"""The suite's own layout: every test file has a layer in tests/conftest.py, and the registered markers are the
layers (``--strict-markers`` refuses any other)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LAYERS, TEST_FILE_LAYERS

TESTS = Path(__file__).resolve().parent


def test_every_test_file_is_in_the_layer_table() -> None:
    files = {p.name for p in TESTS.glob("test_*.py")}
    assert sorted(files - set(TEST_FILE_LAYERS)) == [], "add these files to TEST_FILE_LAYERS in tests/conftest.py"
    assert sorted(set(TEST_FILE_LAYERS) - files) == [], "these files are gone: remove them from TEST_FILE_LAYERS"
    assert set(TEST_FILE_LAYERS.values()) <= set(LAYERS)


def test_the_layers_are_the_registered_markers(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert set(LAYERS) <= registered
