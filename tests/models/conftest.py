"""Fixtures for the model-supply tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from supply_helpers import FileServer

from onnxkit.models.cache import Cache


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(5)


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "home")
