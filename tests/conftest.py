"""Shared fixtures: a real exportd server on 127.0.0.1:0 and the reference table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from exportd.client import ExportClient
from exportd.server.app import RunningServer, create_server
from exportd.server.config import ServerConfig
from support import ServerFactory, reference_table


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with config overrides; every one is stopped at the end of the test."""
    started: list[RunningServer] = []

    def factory(**overrides: object) -> RunningServer:
        base = ServerConfig(port=0, data_dir=tmp_path / "data", grace_period=0.0, min_free_bytes=0)
        server = create_server(replace(base, **overrides))  # type: ignore[arg-type]
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop(0)


@pytest.fixture
def server(make_server: ServerFactory) -> RunningServer:
    return make_server()


@pytest.fixture
def client(server: RunningServer) -> Iterator[ExportClient]:
    with ExportClient(server.target) as c:
        yield c


@pytest.fixture
def table() -> pa.Table:
    return reference_table(2_000)
