"""Shared pytest fixtures: a real ``tritonserver`` per model repository, started once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wsi_tumor.errors import ServerError
from wsi_tumor.serving.local_server import LocalTritonServer, find_tritonserver

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

StartServer = Callable[[Path], LocalTritonServer]


@pytest.fixture(scope="session")
def triton_server_factory() -> Iterator[StartServer]:
    """Start (once per repository) a real tritonserver on free ports; stop all at the end.

    Fails, rather than skips, when the binary is missing: ``make setup`` installs it and a
    silently skipped server test would hide that.
    """
    try:
        find_tritonserver()
    except ServerError as exc:
        pytest.fail(str(exc))
    servers: dict[Path, LocalTritonServer] = {}

    def start(repository: Path) -> LocalTritonServer:
        key = Path(repository).resolve()
        server = servers.get(key)
        if server is None or not server.running:
            server = LocalTritonServer(key).start()
            servers[key] = server
        return server

    try:
        yield start
    finally:
        for server in servers.values():
            server.stop()
