"""Fixtures shared across the suite. Integration tests ask for `rabbit`: it skips loudly
without a broker (fails under CI) and deletes everything the test declared."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.rabbit import Rabbit, TcpProxy, require_broker, unique_prefix


@pytest.fixture
def rabbit(request: pytest.FixtureRequest) -> Iterator[Rabbit]:
    require_broker()
    helper = Rabbit(unique_prefix(request.node.name))
    try:
        yield helper
    finally:
        helper.cleanup()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    require_broker()
    tcp = TcpProxy()
    try:
        yield tcp
    finally:
        tcp.close()
